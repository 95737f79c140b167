"""Per-utterance language detection, optionally restricted to the stream's allowed languages.

Every final (and interim) of a detecting stream is its own `transcribe` call with
`language=None`, so faster-whisper detects the language of that utterance alone: a speaker who
switches language between sentences gets each sentence in its own language.

faster-whisper has no "detect among these" option, but a detecting decode reports every
language's probability (`TranscriptionInfo.all_language_probs`). When the detected language is
allowed, that decode is the answer; otherwise the utterance is decoded again in the most
probable allowed language. The second decode only happens on a miss, so a restriction costs
nothing while the speakers keep to the languages they were declared to speak.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..scheduler import DecodeResult, Priority

if TYPE_CHECKING:
    from .session import SessionScheduler


def best_allowed(probabilities: Iterable[tuple[str, float]] | None, allowed: Sequence[str]) -> str:
    """The allowed language the model found most probable (the first listed on a tie)."""
    scores = dict(probabilities or ())
    return max(allowed, key=lambda code: scores.get(code, 0.0))


async def transcribe_in_allowed_language(
    scheduler: SessionScheduler,
    audio: np.ndarray,
    options: dict[str, Any],
    allowed: Sequence[str],
    priority: Priority,
    *,
    owner: Hashable | None = None,
    encoder_window_s: float | None = None,
) -> DecodeResult:
    """`scheduler.transcribe`, re-decoded in the best allowed language when a detecting decode
    found a language outside `allowed` (empty: every language is allowed)."""
    result = await scheduler.transcribe(
        audio, options, priority, owner=owner, encoder_window_s=encoder_window_s
    )
    if not allowed or options.get("language") is not None or result.info.language in allowed:
        return result
    language = best_allowed(getattr(result.info, "all_language_probs", None), allowed)
    again = await scheduler.transcribe(
        audio,
        {**options, "language": language},
        priority,
        owner=owner,
        encoder_window_s=encoder_window_s,
    )
    return dataclasses.replace(
        again,
        decode_seconds=result.decode_seconds + again.decode_seconds,
        queue_seconds=result.queue_seconds + again.queue_seconds,
    )
