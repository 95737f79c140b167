"""Rendering a decode as the native JSON or one of OpenAI's `response_format`s."""

from __future__ import annotations

import math
from collections.abc import Sequence

from faster_whisper.transcribe import Segment, TranscriptionInfo

from .words import word_dicts

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
TEXT_CONTENT_TYPES = {"text": "text/plain", "srt": "application/x-subrip", "vtt": "text/vtt"}


def segment_confidence(segment: Segment) -> float:
    """A probability in 0..1: the geometric mean of the segment's token probabilities, i.e.
    exp(avg_logprob), clipped. Never the raw log-probability."""
    return round(min(1.0, max(0.0, math.exp(segment.avg_logprob))), 4)


def transcript_text(segments: Sequence[Segment]) -> str:
    """Whisper's segments carry their own leading spaces; join them and trim the ends."""
    return "".join(s.text for s in segments).strip()


def native_json(
    segments: Sequence[Segment], info: TranscriptionInfo, *, word_timestamps: bool
) -> dict:
    """The body of `POST /transcribe`."""
    body: dict = {
        "text": transcript_text(segments),
        "language": info.language,
        "duration": round(info.duration, 3),
        "segments": [
            {
                "start": round(s.start, 3),
                "end": round(s.end, 3),
                "text": s.text.strip(),
                "confidence": segment_confidence(s),
            }
            for s in segments
        ],
    }
    if word_timestamps:
        body["words"] = word_dicts(segments)
    return body


def openai_json(segments: Sequence[Segment], info: TranscriptionInfo) -> dict:
    """`response_format=json`."""
    return {
        "text": transcript_text(segments),
        "usage": {"type": "duration", "seconds": math.ceil(info.duration)},
    }


def openai_verbose_json(
    segments: Sequence[Segment],
    info: TranscriptionInfo,
    *,
    task: str,
    include_segments: bool,
    include_words: bool,
) -> dict:
    """`response_format=verbose_json`, with `segments` and/or `words` as
    `timestamp_granularities[]` asked."""
    body: dict = {
        "task": task,
        "language": info.language,
        "duration": round(info.duration, 3),
        "text": transcript_text(segments),
    }
    if include_segments:
        body["segments"] = [
            {
                "id": s.id,
                "seek": s.seek,
                "start": round(s.start, 3),
                "end": round(s.end, 3),
                "text": s.text,
                "tokens": s.tokens,
                "temperature": s.temperature or 0.0,
                "avg_logprob": round(s.avg_logprob, 4),
                "compression_ratio": round(s.compression_ratio, 4),
                "no_speech_prob": round(s.no_speech_prob, 4),
            }
            for s in segments
        ]
    if include_words:
        body["words"] = word_dicts(segments, probability_key=None)
    body["usage"] = {"type": "duration", "seconds": math.ceil(info.duration)}
    return body


def _timestamp(seconds: float, separator: str) -> str:
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{ms:03d}"


def srt(segments: Sequence[Segment]) -> str:
    """SubRip: numbered cues, `HH:MM:SS,mmm` times, a blank line after each cue."""
    cues = [
        f"{i}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{s.text.strip()}\n"
        for i, s in enumerate(segments, start=1)
    ]
    return "\n".join(cues)


def vtt(segments: Sequence[Segment]) -> str:
    """WebVTT: the `WEBVTT` header, then cues with `HH:MM:SS.mmm` times."""
    cues = [
        f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{s.text.strip()}\n"
        for s in segments
    ]
    return "\n".join(["WEBVTT\n", *cues])


def plain_text(segments: Sequence[Segment]) -> str:
    """`response_format=text`: the transcript and a newline, as OpenAI sends it."""
    return transcript_text(segments) + "\n"
