"""The sidecar's JSON results as `stt.SpeechData`: stream interims and finals, batch verbose_json.

Times come out on the caller's timeline: ``offset`` (seconds) is added to the sidecar's times.
Confidences are clamped to 0..1 (non-finite gives 0). Unit-tested in
``tests/unit/test_plugin_results.py``.
"""

from __future__ import annotations

import math
from typing import Any

from livekit.agents import LanguageCode, stt
from livekit.agents.types import NOT_GIVEN, TimedString


def clamp01(x: float) -> float:
    return 0.0 if not math.isfinite(x) else min(1.0, max(0.0, x))


def word_confidence(w: dict[str, Any]) -> float | None:
    """A word's ``confidence`` (the sidecar) or ``probability`` (OpenAI's shape), clamped."""
    for key in ("confidence", "probability"):
        if isinstance(w.get(key), (int, float)):
            return clamp01(float(w[key]))
    return None


def timed_words(words: list[dict[str, Any]], offset: float) -> list[TimedString]:
    """Words with text, shifted by ``offset``; blank ones are skipped."""
    out = []
    for w in words:
        text = str(w.get("word", "")).strip()
        if not text:
            continue
        conf = word_confidence(w)
        out.append(
            TimedString(
                text,
                start_time=float(w.get("start", 0.0)) + offset,
                end_time=float(w.get("end", 0.0)) + offset,
                confidence=conf if conf is not None else NOT_GIVEN,
                start_time_offset=offset,
            )
        )
    return out


def speech_data_from_interim(
    data: dict[str, Any], *, offset: float, language: str | None
) -> stt.SpeechData:
    """SpeechData from an ``interim`` message (no words, no confidence; missing times are 0);
    the language it was decoded in wins over the requested one."""
    return stt.SpeechData(
        language=LanguageCode(data.get("language") or language or ""),
        text=str(data.get("text", "")).strip(),
        start_time=offset + float(data.get("start") or 0.0),
        end_time=offset + float(data.get("end") or 0.0),
        metadata={"stable_text": str(data.get("stable_text", "")).strip()},
    )


def speech_data_from_final(
    data: dict[str, Any], *, offset: float, fallback_language: str | None
) -> stt.SpeechData:
    """SpeechData from a ``final`` message; its ``language`` wins over the requested one."""
    confidence = data.get("confidence")
    return stt.SpeechData(
        language=LanguageCode(data.get("language") or fallback_language or ""),
        text=str(data.get("text", "")).strip(),
        start_time=offset + float(data.get("start", 0.0)),
        end_time=offset + float(data.get("end", 0.0)),
        confidence=clamp01(float(confidence)) if isinstance(confidence, (int, float)) else 0.0,
        words=timed_words(data.get("words") or [], offset),
    )


def speech_data_from_verbose(
    data: dict[str, Any], *, fallback_language: str | None
) -> stt.SpeechData:
    """SpeechData from an OpenAI ``verbose_json`` transcription (words and segments optional)."""
    words = data.get("words") or []
    segments = data.get("segments") or []
    if words:
        start, end = float(words[0].get("start", 0.0)), float(words[-1].get("end", 0.0))
    elif segments:
        start, end = float(segments[0].get("start", 0.0)), float(segments[-1].get("end", 0.0))
    else:
        start, end = 0.0, float(data.get("duration") or 0.0)
    confs = [c for c in (word_confidence(w) for w in words) if c is not None]
    if confs:
        confidence = sum(confs) / len(confs)
    elif segments and all("avg_logprob" in s for s in segments):
        # mean token probability of the decode, the same scale as Whisper's word probabilities
        confidence = clamp01(math.exp(sum(s["avg_logprob"] for s in segments) / len(segments)))
    else:
        confidence = 0.0
    return stt.SpeechData(
        language=LanguageCode(data.get("language") or fallback_language or ""),
        text=str(data.get("text", "")).strip(),
        start_time=start,
        end_time=end,
        confidence=confidence,
        words=timed_words(words, 0.0),
    )
