"""Word timings as the sidecar sends them, for batch responses and streaming finals alike."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from faster_whisper.transcribe import Segment


def word_dicts(
    segments: Iterable[Segment],
    *,
    offset: float = 0.0,
    probability_key: str | None = "confidence",
    skip_blank: bool = False,
) -> list[dict[str, Any]]:
    """`{"word", "start", "end"[, probability_key]}` per word of `segments`: text stripped,
    times shifted by `offset` and rounded to ms, probability clipped to 0..1 and rounded.

    Args:
        offset: seconds added to every time (a streaming utterance's place in the stream).
        probability_key: the key for the word's probability, or None to leave it out
            (OpenAI's `verbose_json` has none).
        skip_blank: drop words that are empty once stripped (streaming finals do).
    """
    words: list[dict[str, Any]] = []
    for segment in segments:
        for w in segment.words or ():
            token = w.word.strip()
            if skip_blank and not token:
                continue
            item: dict[str, Any] = {
                "word": token,
                "start": round(offset + w.start, 3),
                "end": round(offset + w.end, 3),
            }
            if probability_key:
                item[probability_key] = round(min(1.0, max(0.0, float(w.probability))), 4)
            words.append(item)
    return words
