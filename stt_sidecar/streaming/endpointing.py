"""How much silence ends an utterance: fixed, or adapted to what the speaker said so far.

The final's decode starts speculatively early in a pause (`speculate_ms`), and with adaptive
endpointing its text picks the silence that ends the utterance:

- a finished sentence ("... for your country.", its stop decoded with a probability of
  at least 0.5) ends after `short_ms`: a turn is over, and a voice agent waiting on this final
  replies sooner;
- a visibly unfinished one (a trailing conjunction, article, preposition, filler or comma:
  "and mister john dashwood had then leisure to"), or one Whisper did not close with a stop,
  waits up to `long_ms` for the rest; so does a stop Whisper doubts (below 0.4: "He might
  even have been.", 0.30, said before "made amiable himself");
- up to `LONE_WORD_MAX_S` of speech Whisper made no words of yet waits `long_ms` too: most
  often a first short word said alone ("He ... might even have been made amiable himself"),
  which ended after the default silence lost it with its final. A cough or a breath just ends
  later, with no final; longer wordless sound (noise) keeps the default, so that noise does
  not hold utterances open;
- anything else (a stop Whisper is unsure of, 0.4 to 0.5) waits the configured `default_ms`,
  as the fixed endpoint does.

Once a pause passes `short_ms` the session waits for the speculative text before it looks
at later audio (`StreamSession._apply_windows`): the final is that decode, so waiting sends it
no later, and the decision depends on the words, not on whether the decode kept up with the
audio (a client sending faster than real time gets the same utterances). Without a text
(a failed decode, a flush), or when it takes more than 2 s (an overloaded decoder: a stream
must not fall behind real time), the pause is judged by `default_ms`. Held audio is bounded:
past 2 s of it the handler stops reading the client (backpressure, as for a backlog of finals).

With adaptive endpointing off the endpoint is `default_ms` and the speculation starts at
150 ms, exactly as before adaptive endpointing existed.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..audio_format import SAMPLE_RATE

if TYPE_CHECKING:
    from .transcripts import FinalText

# When the final's speculative decode starts, in both modes. Starting it at 100 ms instead
# gave its text sooner but cost words: conversation.wav WER 3.1 % -> 5.2 % (the decode hears
# too little of the pause after the last word), for ~50 ms.
SPECULATE_MS = 150
# Longest speech with no words yet that may be a first word said alone (see the docstring)
LONE_WORD_MAX_S = 1.0


class Endpoint(enum.Enum):
    """Which silence ends the utterance (the label of the /metrics counter)."""

    SHORT = "short"
    DEFAULT = "default"
    LONG = "long"


# Words a sentence does not end on, even when Whisper puts a stop after them ("I went to the.").
# Words that often do end one are left out: auxiliaries ("than he was."), particles ("come
# in."), "no", "so", "to", "for", "with", "from"... Without a stop any last word means LONG.
_CONJUNCTIONS = "and but or nor because if although though unless whether whereas than"
_ARTICLES = "a an the"
_PREPOSITIONS = "of into onto upon toward towards via per among during despite between"
_DETERMINERS = "my your our their"
_FILLERS = "um uh uhm er erm ah hmm mm mhm"
UNFINISHED_WORDS = frozenset(
    " ".join((_CONJUNCTIONS, _ARTICLES, _PREPOSITIONS, _DETERMINERS, _FILLERS)).split()
)
_UNFINISHED_PUNCTUATION = (",", ";", ":", "-", "\u2014", "\u2013", "...", "\u2026")
SENTENCE_STOPS = ".?!\u3002\uff1f\uff01"  # and the full-width ones
_SENTENCE_END = tuple(SENTENCE_STOPS)
WORD = re.compile(r"[\w']+")  # a word, for the text rules here and in context.py
# Whisper ends nearly every decode with a stop, fragments too ("And Mr. John."); how sure it is
# of that stop tells them apart (a word's probability in faster-whisper leaves out a stop
# decoded as a token of its own and merged into it: `transcripts.attach_sentence_stops`).
# At least even odds that the sentence ended: short. Below 0.4: long. Chosen on a held-out
# pauses set (bench/pauses_set.py --seed 2026 --rounds 6: 42 sentences, 60 pauses inside
# them), streamed through the session. There Whisper closed 39 true ends with a stop: 34
# scored at least 0.5, 1 below 0.4; and 30 inner pauses: 17 scored below 0.5, 10 below 0.4.
# Long below 0.5 would have ended 6 of the inner pauses fewer, and made 4 more true ends wait
# the long silence.
SHORT_MIN_STOP_CONFIDENCE = 0.5
LONG_BELOW_STOP_CONFIDENCE = 0.4
# When the stop has no probability of its own (Whisper wrote it in one token with a quote,
# `go."`, or it ended a segment dropped as not speech), the rule from before: the last word's
# probability, below this the default silence.
FINISHED_MIN_WORD_CONFIDENCE = 0.9


def classify(
    text: str | None,
    stop_confidence: float | None = None,
    last_word_confidence: float | None = None,
) -> Endpoint:
    """The endpoint a speculative transcript asks for (see the module docstring).

    Args:
        text: the speculative final's text: "" when Whisper heard no words in what may be a
            lone first word, None when there is no text to judge by (a failed decode, or
            longer wordless sound).
        stop_confidence: Whisper's probability for the stop that ends the text; None when it
            has none of its own.
        last_word_confidence: the last word's probability, judged instead when the stop has
            none; None when not known either, which does not hold a finished sentence back.
    """
    if text is None:
        return Endpoint.DEFAULT
    text = text.strip().strip("\"')]}")
    if not text:
        return Endpoint.LONG
    words = WORD.findall(text.lower())
    if text.endswith(_UNFINISHED_PUNCTUATION) or (words and words[-1] in UNFINISHED_WORDS):
        return Endpoint.LONG
    if not text.endswith(_SENTENCE_END):
        # Whisper closes what it hears as a sentence with a stop: without one it heard a part
        return Endpoint.LONG
    if stop_confidence is None:
        if last_word_confidence is None or last_word_confidence >= FINISHED_MIN_WORD_CONFIDENCE:
            return Endpoint.SHORT
        return Endpoint.DEFAULT
    if stop_confidence >= SHORT_MIN_STOP_CONFIDENCE:
        return Endpoint.SHORT
    if stop_confidence < LONG_BELOW_STOP_CONFIDENCE:
        return Endpoint.LONG  # a stop Whisper doubts this much is mostly a pause mid-sentence
    return Endpoint.DEFAULT


def speculative_endpoint(
    final: FinalText | None, *, failed: bool = False, speech_s: float = 0.0
) -> Endpoint:
    """The endpoint for an utterance from its speculative final, as the session applies it.

    Args:
        final: the decode's final; None when Whisper heard no words (or the decode failed).
        failed: the decode raised: no text to judge by.
        speech_s: how long the utterance has had speech; up to `LONE_WORD_MAX_S` with no
            words is a lone first word, maybe.
    """
    if final is None:
        lone_word = not failed and speech_s <= LONE_WORD_MAX_S
        return classify("" if lone_word else None)
    last_word = final.words[-1]["confidence"] if final.words else None
    return classify(final.text, final.stop_confidence, last_word)


@dataclass(frozen=True)
class EndpointPolicy:
    """Silences in samples at 16 kHz; `adaptive` False is the fixed endpoint of old."""

    adaptive: bool
    default: int
    short: int
    long: int
    speculate: int

    @classmethod
    def from_ms(
        cls, *, adaptive: bool, default_ms: int, short_ms: int, long_ms: int
    ) -> EndpointPolicy:
        def samples(ms: int) -> int:
            return int(ms / 1000 * SAMPLE_RATE)

        default = samples(default_ms)
        # fixed: every decision is the default silence
        short = min(samples(short_ms), default) if adaptive else default
        long = max(samples(long_ms), default) if adaptive else default
        return cls(
            adaptive=adaptive,
            default=default,
            short=short,
            long=long,
            speculate=min(samples(SPECULATE_MS), short),
        )

    def silence_for(self, endpoint: Endpoint) -> int:
        if endpoint is Endpoint.SHORT:
            return self.short
        if endpoint is Endpoint.LONG:
            return self.long
        return self.default
