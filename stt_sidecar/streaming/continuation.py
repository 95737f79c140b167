"""Continuations: an utterance that starts right after the last one is decoded after its audio.

An endpoint sometimes takes a pause inside a sentence for its end ("And Mr. John." ... "Dashwood
had then leisure to consider"). The first half's final is out; the second half, decoded alone,
starts mid-sentence, and tiny.en garbles such fragments ("Hari Vai.", "Add a merry de morr").
Whisper decodes them well with the words before them in its window, so when an utterance
starts within `STT_CONTINUATION_GAP_MS` of the last one's end, its final is decoded after the
last utterance's audio (at most `CONTEXT_AUDIO_S` of it) and keeps only the words Whisper
places in the new utterance. Measured offline with every inner pause of the pauses set taken
as an end (34 fragments, tiny.en): 24.2 % WER alone, 12.9 % decoded after the previous 10 s.

Streams that detect the language of each utterance decode it alone: the earlier audio
would decide the language of the new utterance too.

Audio is the context here, not text: the earlier finals as a prompt (`context.py`) made
tiny.en repeat them. A decode is done again on the utterance alone when:

- it loops over the longer audio, or its new words loop, or they are one sentence said twice
  (`context.said_twice`: tiny.en gave "Go forward 10 meters. Go forward 10 meters." for one,
  after "He was not an ill-disposed young man");
- it places no word in the new utterance;
- it places none in the earlier audio although that utterance's final had words: its word
  times are off (tiny.en put a lone "Ask", the previous utterance, after the boundary, and it
  came out twice: "Ask!", then "Ask... NOT!"). After an earlier utterance with no words
  (noise) no word there is expected.

A final decoded in a pause sometimes ends with a word not yet said: tiny.en completes "he was
not an ill-disposed young" to "... young man." and "than he" to "than he was.". When the
speaker then says it, the continuation hears it where it was said, after the boundary, and
would send it a second time. `echoed_words` finds such words: the new utterance starts with
the earlier final's last words, and the same decode ends the earlier audio with the word the
earlier final had before them. A speaker saying words again ("I said no. No!") is heard saying
them before the boundary too, and both are kept; so are the words of a final that held nothing
else ("No. No!"). Not checked: a continuation redone alone, and one decoded before the
earlier final is out (its own retry still queued).
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from ..audio_format import SAMPLE_RATE
from .encoder_windows import MARGIN_S, WINDOW_LIMIT_S
from .transcripts import comparable_word, with_words

if TYPE_CHECKING:
    from faster_whisper.transcribe import Segment, Word

    from .audio_input import SampleBuffer
    from .transcripts import FinalText

CONTEXT_AUDIO_S = 10.0  # of the last utterance, at most: ~2x the CPU of a fragment alone
MAX_GAP_FILL_S = 1.0  # silence put between the two, at most (the real gap was not kept)
# Context and utterance together stay in one Whisper window with the streaming window's margin:
# past it, faster-whisper would decode the tail as a fragment in a second window.
CONTINUATION_WINDOW_S = WINDOW_LIMIT_S - MARGIN_S


class PreviousUtterance:
    """The tail of a stream's last utterance, for the next one to be decoded after.

    Args:
        gap: longest pause, in samples, after which an utterance still counts as a
            continuation (from the last one's end of speech to the new one's onset); 0: never.
    """

    def __init__(self, gap: int) -> None:
        self._gap = gap
        self._audio: np.ndarray | None = None
        self._end = 0  # sample after its audio
        self._speech_end = 0
        self.final: asyncio.Task[FinalText | None] | None = None  # its final's decode

    def remember(
        self,
        buffer: SampleBuffer,
        start: int,
        end: int,
        speech_end: int,
        final: asyncio.Task[FinalText | None] | None = None,
    ) -> None:
        """The utterance that just closed: its audio `start..end` in `buffer` (the last
        CONTEXT_AUDIO_S of it is kept), its end of speech and its final's decode."""
        if self._gap <= 0:
            return
        self._audio = buffer.slice(max(start, end - int(CONTEXT_AUDIO_S * SAMPLE_RATE)), end)
        self._end = end
        self._speech_end = speech_end
        self.final = final

    def forget(self) -> None:
        self._audio = None
        self.final = None

    def context_for(self, start: int, onset: int, samples: int) -> np.ndarray | None:
        """Audio to decode before an utterance of `samples` whose audio starts at `start`
        (speech at `onset`): the end of the last utterance and the pause after it, as much as
        fits in CONTINUATION_WINDOW_S with it; None if it is no continuation (or there is no
        room for one)."""
        if self._audio is None or onset - self._speech_end > self._gap or start < self._end:
            return None
        gap = np.zeros(min(start - self._end, int(MAX_GAP_FILL_S * SAMPLE_RATE)), np.float32)
        room = int(CONTINUATION_WINDOW_S * SAMPLE_RATE) - samples
        keep = min(self._audio.size, room - gap.size)
        if keep < SAMPLE_RATE:  # less than a second of it is no context worth a decode
            return None
        return np.concatenate([self._audio[self._audio.size - keep :], gap])


def words_from(segments: list[Segment], boundary_s: float) -> list[Segment]:
    """The segments' words whose middle is at or after `boundary_s` (decode time), as
    segments: a word across the boundary belongs where most of it was said, and starts at the
    boundary (the earlier final ends before it)."""
    kept: list[Segment] = []
    for segment in segments:
        words = [w for w in segment.words or [] if _said_after(w, boundary_s)]
        if not words:
            continue
        if words[0].start < boundary_s:
            words[0] = dataclasses.replace(words[0], start=boundary_s)
        if len(words) < len(segment.words or []) or segment.start < boundary_s:
            segment = with_words(segment, words)
        kept.append(segment)
    return kept


def _said_after(word: Word, boundary_s: float) -> bool:
    """Whether most of `word` was said at or after `boundary_s`."""
    return (word.start + word.end) / 2 >= boundary_s


MAX_ECHOED_WORDS = 3  # a guessed completion is a word or two ("man.", "was.")


def echoed_words(segments: list[Segment], boundary_s: float, sent: list[str]) -> int:
    """How many words at the start of the new utterance the earlier final already sent as
    its last words (`sent`), guessed before they were said: this decode hears the earlier
    audio end with the word the earlier final had before them. 0 when there are none."""
    before: list[str] = []
    after: list[str] = []
    for segment in segments:
        for w in segment.words or ():
            word = comparable_word(w.word)
            if word:
                (after if _said_after(w, boundary_s) else before).append(word)
    sent = [word for word in map(comparable_word, sent) if word]
    for count in range(min(MAX_ECHOED_WORDS, len(after), len(sent)), 0, -1):
        said_before_guess = sent[-count - 1 : -count]  # []: the final sent nothing else
        if (
            after[:count] == sent[-count:]
            and said_before_guess
            and before[-1:] == said_before_guess
        ):
            return count
    return 0


def without_first_words(segments: list[Segment], count: int) -> list[Segment]:
    """`segments` without their first `count` words (words of punctuation alone are not
    counted, as in `echoed_words`, and go with them)."""
    if count <= 0:
        return segments
    kept: list[Segment] = []
    for segment in segments:
        words = list(segment.words or [])
        while words and (count > 0 or (not kept and not comparable_word(words[0].word))):
            count -= bool(comparable_word(words.pop(0).word))
        if not words:
            continue
        if len(words) < len(segment.words or []):
            segment = with_words(segment, words)
        kept.append(segment)
    return kept


def sent_word_list(final: asyncio.Task[FinalText | None] | None) -> list[str]:
    """The words an earlier utterance's final sent: none when it has not been decoded yet,
    failed or had none."""
    if final is None or not final.done() or final.cancelled() or final.exception() is not None:
        return []
    text = final.result()
    if text is None:
        return []
    return [w["word"] for w in text.words] if text.words else text.text.split()


def word_count(segments: list[Segment]) -> int:
    return sum(len(s.words or ()) for s in segments)


def sent_words(final: asyncio.Task[FinalText | None] | None) -> bool:
    """Whether an earlier utterance's final has words, or may still have (not decoded yet):
    a decode after its audio should then place some there."""
    if final is None or not final.done():
        return True
    return not final.cancelled() and final.exception() is None and final.result() is not None
