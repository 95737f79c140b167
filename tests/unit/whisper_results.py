"""faster-whisper's own result types, built for unit tests from words and their times."""

from __future__ import annotations

from faster_whisper.transcribe import Segment, Word


def segment_of(words: list[Word]) -> Segment:
    """The segment holding `words` (none: an empty one, which finals drop as wordless)."""
    return Segment(
        id=0,
        seek=0,
        start=words[0].start if words else 0.0,
        end=words[-1].end if words else 0.0,
        text="".join(w.word for w in words),
        tokens=[],
        avg_logprob=-0.2,
        compression_ratio=1.2,
        no_speech_prob=0.01,
        words=words,
        temperature=0.0,
    )


def segment(*words: tuple[float, float, str]) -> Segment:
    """The segment of `(start, end, word)` triples, each word decoded at probability 0.9."""
    return segment_of([Word(start=s, end=e, word=w, probability=0.9) for s, e, w in words])
