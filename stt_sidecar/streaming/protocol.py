"""The `/v1/stream` wire protocol: config validation, message shapes and error codes.

Client -> server: a `config` text message, then binary PCM frames, with `flush`, `close` and
`keepalive` text messages at any time. Server -> client: `ready`, `speech_started`, `interim`,
`final`, `speech_ended`, `flushed`, `closed`, `error`. All times are seconds of stream audio.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from ..audio_format import SAMPLE_RATE
from ..languages import LanguageRejected, Languages, TaskRejected

MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 48000
MAX_PROMPT_CHARS = 1000
MAX_FRAME_SECONDS = 1.0

# Stable error codes (the plugin maps them to retryable or not).
INVALID_CONFIG = "invalid_config"
PROTOCOL_ERROR = "protocol_error"
FRAME_TOO_LARGE = "frame_too_large"
OVERLOADED = "overloaded"
IDLE_TIMEOUT = "idle_timeout"
CONFIG_TIMEOUT = "config_timeout"
SLOW_CONSUMER = "slow_consumer"
GOING_AWAY = "going_away"
INTERNAL = "internal"

_CONFIG_KEYS = frozenset(
    {"type", "language", "sample_rate", "encoding", "channels", "task", "interim_results", "prompt"}
)


class ProtocolViolation(Exception):
    """The client broke the protocol; `code` is sent in the `error` message, then we close."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class StreamConfig:
    language: str | None = "en"  # None: detected per utterance
    allowed_languages: tuple[str, ...] = ()  # when detecting: only these (empty: any)
    sample_rate: int = SAMPLE_RATE
    channels: int = 1
    task: str = "transcribe"
    interim_results: bool = True
    prompt: str | None = None

    @property
    def bytes_per_second(self) -> int:
        return self.sample_rate * self.channels * 2

    @property
    def max_frame_bytes(self) -> int:
        return int(self.bytes_per_second * MAX_FRAME_SECONDS)

    @property
    def frame_alignment(self) -> int:
        return 2 * self.channels


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_config(raw: str, *, languages: Languages) -> StreamConfig:
    """Validate the first message.

    Raises:
        ProtocolViolation: `invalid_config` naming the offending key, or `protocol_error`
            when the message is not a JSON object of type `config`.
    """
    message = parse_text_message(raw)
    if message.get("type") != "config":
        raise ProtocolViolation(PROTOCOL_ERROR, "the first message must be {'type': 'config', ...}")
    unknown = sorted(set(message) - _CONFIG_KEYS)
    if unknown:
        raise ProtocolViolation(INVALID_CONFIG, f"unknown config key(s): {', '.join(unknown)}")

    def bad(key: str, why: str) -> ProtocolViolation:
        return ProtocolViolation(INVALID_CONFIG, f"config.{key}: {why}")

    unknown_language = bad(
        "language",
        "must be a Whisper language code like 'en', null or 'auto' (detect), "
        "or a list of codes to detect among",
    )
    try:
        choice = languages.choose(message.get("language"))
    except LanguageRejected as exc:
        if exc.reason == "english_only":
            raise bad("language", "this model is English-only") from None
        raise unknown_language from None

    sample_rate = message.get("sample_rate", SAMPLE_RATE)
    if not _is_int(sample_rate) or not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise bad("sample_rate", f"must be an integer from {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE}")

    encoding = message.get("encoding", "pcm_s16le")
    if encoding != "pcm_s16le":
        raise bad("encoding", "only 'pcm_s16le' is supported")

    channels = message.get("channels", 1)
    if not _is_int(channels) or channels not in (1, 2):
        raise bad("channels", "must be 1 or 2 (interleaved)")

    try:
        task = languages.check_task(message.get("task", "transcribe"))
    except TaskRejected as exc:
        if exc.reason == "english_only":
            raise bad("task", "this model is English-only and cannot translate") from None
        raise bad("task", "must be 'transcribe' or 'translate'") from None

    interim_results = message.get("interim_results", True)
    if not isinstance(interim_results, bool):
        raise bad("interim_results", "must be true or false")

    prompt = message.get("prompt")
    if prompt is not None and (not isinstance(prompt, str) or len(prompt) > MAX_PROMPT_CHARS):
        raise bad("prompt", f"must be null or a string of at most {MAX_PROMPT_CHARS} characters")

    return StreamConfig(
        language=choice.language,
        allowed_languages=choice.allowed,
        sample_rate=sample_rate,
        channels=channels,
        task=task,
        interim_results=interim_results,
        prompt=prompt or None,
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def parse_text_message(raw: str) -> dict[str, Any]:
    """A JSON object with a string `type`; NaN and Infinity are not JSON and are refused."""
    try:
        message = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise ProtocolViolation(PROTOCOL_ERROR, "text messages must be JSON objects") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolViolation(PROTOCOL_ERROR, "text messages must be objects with a 'type'")
    return message


def _t(seconds: float) -> float:
    return round(seconds, 3) if math.isfinite(seconds) else 0.0


def ready(session_id: str) -> dict[str, Any]:
    """The answer to a valid config: audio is taken from now on and transcribed at 16 kHz."""
    return {"type": "ready", "session_id": session_id, "sample_rate": SAMPLE_RATE}


def flushed() -> dict[str, Any]:
    return {"type": "flushed"}


def closed() -> dict[str, Any]:
    return {"type": "closed"}


def error_message(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message}


def speech_started(utterance_id: int, start: float) -> dict[str, Any]:
    return {"type": "speech_started", "utterance_id": utterance_id, "start": _t(start)}


def speech_ended(utterance_id: int, end: float) -> dict[str, Any]:
    return {"type": "speech_ended", "utterance_id": utterance_id, "end": _t(end)}


def interim(
    utterance_id: int, text: str, stable_text: str, start: float, end: float, language: str
) -> dict[str, Any]:
    return {
        "type": "interim",
        "utterance_id": utterance_id,
        "text": text,
        "stable_text": stable_text,
        "start": _t(start),
        "end": _t(end),
        "language": language,
    }


def final(
    utterance_id: int,
    text: str,
    start: float,
    end: float,
    confidence: float,
    language: str,
    words: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "type": "final",
        "utterance_id": utterance_id,
        "text": text,
        "start": _t(start),
        "end": _t(end),
        "confidence": round(min(1.0, max(0.0, confidence)), 4),
        "language": language,
        "words": words,
    }
