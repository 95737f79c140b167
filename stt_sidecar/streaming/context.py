"""A stream's recent finals as Whisper's `initial_prompt` for its next final.

Whisper decodes far better knowing what came before (its long-form mode conditions each window
on the previous text). A stream decodes one utterance at a time, so it gets the same help by
prompting each final with the last few finals of the same stream: bounded, recent, and dropped
when it stops being the same conversation (a long silence, another language) or when it looks
like a repetition loop, which a prompt would otherwise feed back into the next decode.
"""

from __future__ import annotations

import collections

from faster_whisper.transcribe import get_compression_ratio

from ..whisper_options import COMPRESSION_RATIO_THRESHOLD
from .endpointing import WORD

MAX_CONTEXT_CHARS = 300  # ~70 tokens: a sentence or two, well under Whisper's 223-token prompt
RESET_AFTER_S = 20.0  # a silence this long starts a new context


def looks_repetitive(text: str) -> bool:
    """Whisper's own loop test: text that zlib squeezes this well repeats itself."""
    return bool(text) and get_compression_ratio(text) > COMPRESSION_RATIO_THRESHOLD


def said_twice(text: str) -> bool:
    """Text that is one run of 3 or more words said over again, and nothing else ("Go forward
    10 meters. Go forward 10 meters."): a loop too short for `looks_repetitive`."""
    words = WORD.findall(text.lower())
    return any(
        len(words) % size == 0 and words == words[:size] * (len(words) // size)
        for size in range(3, len(words) // 2 + 1)
    )


# A run of this many words said twice in one final is taken for a loop: tiny.en gave "What your
# country can do for you ask what you can do for your country You can do for you ask what you
# can do for your country?" for jfk.wav's second half, 25 words, too few for
# `looks_repetitive` or the word rate. People say such runs twice too ("I don't know what to
# do, I don't know what to do"); for a final that costs one more decode, whose words are sent.
REPEATED_RUN_WORDS = 6


def repeats_a_run(text: str) -> bool:
    """Whether a run of `REPEATED_RUN_WORDS` words comes twice in `text`, without overlap."""
    words = WORD.findall(text.lower())
    first_seen: dict[tuple[str, ...], int] = {}
    for i in range(len(words) - REPEATED_RUN_WORDS + 1):
        run = tuple(words[i : i + REPEATED_RUN_WORDS])
        seen = first_seen.setdefault(run, i)
        if i - seen >= REPEATED_RUN_WORDS:
            return True
    return False


MAX_WORDS_PER_S = 5.0  # fast speech is ~4 words/s: more is a decode running away


def runaway(text: str, seconds: float) -> bool:
    """A decode that loops or says more than the audio can hold (an interim is dropped)."""
    return looks_repetitive(text) or len(text.split()) > MAX_WORDS_PER_S * seconds + 4


def final_runaway(text: str, seconds: float) -> bool:
    """`runaway`, or a run of words said twice: a final is decoded again. Not for interims:
    a sentence really said twice would drop every interim after it until the final."""
    return runaway(text, seconds) or repeats_a_run(text)


class UtteranceContext:
    """The prompt for a stream's next final: the client's prompt, then its recent finals.

    Args:
        enabled: False keeps the client's prompt alone (each utterance decoded on its own).
        base_prompt: the `config` message's prompt, always first.
    """

    def __init__(self, *, enabled: bool, base_prompt: str | None) -> None:
        self.enabled = enabled
        self._base = base_prompt
        self._finals: collections.deque[str] = collections.deque()
        self._chars = 0
        self._language: str | None = None
        self._last_end = float("-inf")

    def prompt(self, utterance_start: float) -> str | None:
        """The prompt for an utterance starting at `utterance_start` (stream seconds)."""
        if utterance_start - self._last_end > RESET_AFTER_S:
            self._clear()
        if not self._finals:
            return self._base
        recent = " ".join(self._finals)
        if looks_repetitive(recent):
            # a speaker saying the same thing again and again: a prompt of it invites a loop
            recent = self._finals[-1]
        return f"{self._base} {recent}" if self._base else recent

    def add(self, text: str, end: float, language: str) -> None:
        """Remember a final that was sent."""
        if not self.enabled:
            return
        repetitive = looks_repetitive(text)
        if language != self._language or repetitive:
            self._clear()
        self._language = language
        self._last_end = end
        if repetitive:
            return
        self._finals.append(text)
        self._chars += len(text) + 1
        while self._chars > MAX_CONTEXT_CHARS and len(self._finals) > 1:
            self._chars -= len(self._finals.popleft()) + 1
        if self._chars > MAX_CONTEXT_CHARS:  # one long final: keep its end, at a word
            tail = self._finals[0][-MAX_CONTEXT_CHARS:]
            tail = tail.split(" ", 1)[-1] if " " in tail else tail
            self._finals[0] = tail
            self._chars = len(tail) + 1

    def _clear(self) -> None:
        self._finals.clear()
        self._chars = 0
