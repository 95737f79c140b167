"""Whisper options and result shaping for streaming interims and finals."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..audio_format import SAMPLE_RATE
from ..whisper_options import (
    APPEND_PUNCTUATIONS,
    LOG_PROB_THRESHOLD,
    NO_SPEECH_THRESHOLD,
    DecodeRequest,
    decode_options,
)
from ..words import word_dicts
from .endpointing import SENTENCE_STOPS
from .protocol import StreamConfig

if TYPE_CHECKING:
    from faster_whisper.transcribe import Segment, Word

_WORDLESS = re.compile(r"^[\W_]*$")


def _streaming_options(
    config: StreamConfig, *, word_timestamps: bool, **extra: Any
) -> dict[str, Any]:
    # The batch API's options (every one explicit), with what streaming does differently:
    # the utterance is already endpointed by our VAD, and one greedy pass keeps latency flat
    # (a temperature ladder would re-decode exactly the doubtful audio, under time pressure).
    return decode_options(
        DecodeRequest(
            language=config.language,
            task=config.task,
            word_timestamps=word_timestamps,
            initial_prompt=config.prompt,
            extra={
                "vad_filter": False,
                "temperature": [0.0],
                "hotwords": ", ".join(config.keywords) or None,
                **extra,
            },
        )
    )


# faster-whisper merges punctuation into the word before it and keeps that word's probability,
# so how sure Whisper is that a sentence ended would be lost. The final's decode keeps the
# sentence stops apart (`append_punctuations` without them) and `attach_sentence_stops` merges
# them afterwards, as faster-whisper does, keeping the stop's own probability aside.


def final_options(config: StreamConfig) -> dict[str, Any]:
    options = _streaming_options(config, word_timestamps=True)
    options["append_punctuations"] = "".join(
        c for c in options["append_punctuations"] if c not in SENTENCE_STOPS
    )
    return options


def attach_sentence_stops(segments: list[Segment]) -> tuple[list[Segment], float | None]:
    """The final decode's segments with each stop merged into the word before it, exactly where
    faster-whisper's `merge_punctuations` would have with the usual `append_punctuations`, and
    the probability of the stop that ends the decode: None when its last word is no stop of
    its own. `segments`: decoded with `final_options`, whose words keep stops apart.

    The words, their text and probabilities are what faster-whisper gives, with two rare
    exceptions: two of its timing fixes see the stop as the last word, so a last word's end can
    differ (a stop decoded as longer than twice the median word); and a stop and a closing
    quote decoded as two tokens stay a word of their own (`."`) where faster-whisper would have
    merged both.
    Not merged, as faster-whisper does not merge them either: a stop after a space (French
    " ?"), whose probability still counts. Stops Whisper writes in one token with what comes
    before or after (`go."`, `?!`) have no probability of their own (None).
    """
    words_of = [list(s.words or []) for s in segments]
    changed = [False] * len(segments)
    previous: tuple[int, int] | None = None  # (segment, word) of the last word kept
    stop_probability: float | None = None
    for i, words in enumerate(words_of):
        kept: list[Word] = []
        for word in words:
            text = word.word
            if not text.strip():
                # blank: dropped from finals (`word_dicts`), not what a decode ends on; and
                # faster-whisper merges nothing into it
                kept.append(word)
                previous = None
                continue
            stop = all(c in SENTENCE_STOPS for c in text.strip())
            stop_probability = word.probability if stop else None
            # faster-whisper's own test: no space before it, and a substring of the punctuation
            if (
                not stop
                or previous is None
                or text != text.lstrip()
                or text not in APPEND_PUNCTUATIONS
            ):
                kept.append(word)
                previous = (i, len(kept) - 1)
                continue
            s, w = previous
            owner = kept if s == i else words_of[s]
            owner[w] = dataclasses.replace(owner[w], word=owner[w].word + text)
            changed[s] = changed[i] = True
        words_of[i] = kept
    merged = [
        dataclasses.replace(segment, words=words) if change else segment
        for segment, words, change in zip(segments, words_of, changed, strict=True)
    ]
    return merged, stop_probability


def interim_options(config: StreamConfig) -> dict[str, Any]:
    # Without timestamps: interims are for display and must be cheap.
    return _streaming_options(config, word_timestamps=False, without_timestamps=True)


@dataclass(frozen=True)
class FinalText:
    text: str
    start: float  # seconds since the stream began
    end: float
    confidence: float
    language: str  # what the model decoded in: the config's, or the detected one
    words: list[dict[str, Any]]
    # Whisper's probability for the stop that ends the text (`attach_sentence_stops`); None
    # when the text ends without one, or when not known
    stop_confidence: float | None = None


def _speech_segments(segments: list[Segment]) -> list[Segment]:
    # Segments whisper itself thinks are not speech (and that decode poorly) are dropped;
    # with VAD gating this keeps noise, breathing and clicks from turning into words.
    return [
        s
        for s in segments
        if not _WORDLESS.match(s.text.strip())
        and not (s.no_speech_prob > NO_SPEECH_THRESHOLD and s.avg_logprob < LOG_PROB_THRESHOLD)
    ]


def hypothesis_text(segments: list[Segment]) -> str:
    return " ".join(s.text.strip() for s in _speech_segments(segments)).strip()


# Words become stable only where two agreeing hypotheses were both this sure of themselves
# (every segment's mean token log-probability). tiny.en's first interims can agree on wrong
# words ("How do you marry" for "Had he married a"): on the 21 utterances of conversation.wav
# and the pauses set, plain agreement left 4 stable texts that the final contradicts; with
# -0.3 none (-0.4: one), at a stable share of the final's words of 0.35 instead of 0.69.
STABLE_MIN_AVG_LOGPROB = -0.3


def confident(segments: list[Segment]) -> bool:
    """Whether an interim decode may make its words stable (`StableText.update`)."""
    kept = _speech_segments(segments)
    return bool(kept) and min(s.avg_logprob for s in kept) >= STABLE_MIN_AVG_LOGPROB


def shape_final(
    segments: list[Segment],
    language: str,
    offset: float,
    speech_start: float,
    speech_end: float,
    stop_confidence: float | None = None,
) -> FinalText | None:
    """Words with stream times, or None when whisper heard nothing worth sending.

    The end is the later of the last word's end and the VAD's end of speech: whisper tends to
    end the last word early, especially on a trailing-off syllable. `stop_confidence`: the
    probability of the stop ending the decode (`attach_sentence_stops`), kept when the decode's
    last segment is kept.
    """
    kept = _speech_segments(segments)
    words = word_dicts(kept, offset=offset, skip_blank=True)
    text = " ".join(s.text.strip() for s in kept).strip()
    if not text or _WORDLESS.match(text):
        return None
    if words:
        start, end = words[0]["start"], max(words[-1]["end"], round(speech_end, 3))
        confidence = sum(w["confidence"] for w in words) / len(words)
    else:
        start, end = speech_start, speech_end
        confidence = math.exp(sum(s.avg_logprob for s in kept) / len(kept))
    return FinalText(
        text=text,
        start=start,
        end=end,
        confidence=confidence,
        language=language,
        words=words,
        # the stop ended a segment dropped as not speech: not this text's
        stop_confidence=stop_confidence if kept[-1] is segments[-1] else None,
    )


def joined_finals(head: FinalText | None, tail: FinalText | None) -> FinalText | None:
    """One final of two decodes of one utterance, `tail`'s audio after `head`'s."""
    if head is None or tail is None:
        return head or tail
    words = head.words + tail.words
    confidence = (
        sum(w["confidence"] for w in words) / len(words)
        if words
        else (head.confidence + tail.confidence) / 2
    )
    return FinalText(
        text=f"{head.text} {tail.text}",
        start=head.start,
        end=tail.end,
        confidence=confidence,
        language=head.language,
        words=words,
        stop_confidence=tail.stop_confidence,
    )


AUDIBLE_RANGE_DB = 35.0
_FRAME = SAMPLE_RATE // 50  # 20 ms


def audible_end(audio: np.ndarray, offset: float) -> float:
    """Stream time where the utterance's last 20 ms frame within 35 dB of its loudest ends.

    Silero lets go of quiet endings (a trailing fricative, a fading word) a few hundred ms
    before they stop being audible; this is where a listener would say the utterance ended.
    """
    frames = audio[: audio.size // _FRAME * _FRAME].reshape(-1, _FRAME)
    if frames.size == 0:
        return offset
    db = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(db >= db.max() - AUDIBLE_RANGE_DB)
    return offset + (int(loud[-1]) + 1) * _FRAME / SAMPLE_RATE


def with_words(segment: Segment, words: list[Word]) -> Segment:
    """`segment` cut down to `words`, its start and text taken from them."""
    return dataclasses.replace(
        segment, start=words[0].start, text="".join(w.word for w in words), words=words
    )


def comparable_word(word: str) -> str:
    """A word as agreement compares it: lower case, without punctuation."""
    return re.sub(r"[^\w']", "", word.lower())


class StableText:
    """LocalAgreement-2 over consecutive confident interim hypotheses of one utterance.

    The words two consecutive hypotheses agree on (as a prefix) are stable when both were
    confident (`confident`); once stable, a word is never retracted: later hypotheses are shown
    after the stable prefix.
    """

    def __init__(self) -> None:
        self._stable: list[str] = []
        self._previous: list[str] = []
        self._previous_confident = False

    def update(self, hypothesis: str, *, confident: bool = True) -> tuple[str, str]:
        """Returns (text, stable_text) for the new hypothesis."""
        # Whatever the new hypothesis says for the stable words, the stable words stand.
        candidate = self._stable + hypothesis.split()[len(self._stable) :]
        agreed = len(self._stable)
        if confident and self._previous_confident:
            for a, b in zip(candidate[agreed:], self._previous[agreed:], strict=False):
                if comparable_word(a) != comparable_word(b):
                    break
                agreed += 1
        self._stable = candidate[:agreed]
        self._previous = candidate
        self._previous_confident = confident
        return " ".join(candidate), " ".join(self._stable)
