"""Client events in, server events out, in the shapes of OpenAI's Realtime API.

Errors are `{"type": "error", "event_id", "error": {"type", "code", "message", "param",
"event_id"}}`. A bad event gets one and the session stays open, as with OpenAI; only the
connection-level failures (capacity, timeouts, a client that stopped reading) close it.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import uuid
from typing import Any

# Stable error codes (the ones OpenAI uses where it has one).
INVALID_JSON = "invalid_json"
INVALID_VALUE = "invalid_value"
UNKNOWN_PARAMETER = "unknown_parameter"
MODEL_NOT_FOUND = "model_not_found"
COMMIT_EMPTY = "input_audio_buffer_commit_empty"
APPEND_TOO_LARGE = "input_audio_buffer_append_too_large"
OVERLOADED = "overloaded"
IDLE_TIMEOUT = "idle_timeout"
CONFIG_TIMEOUT = "config_timeout"
SLOW_CONSUMER = "slow_consumer"
INTERNAL = "internal"

CLIENT_EVENTS = frozenset(
    {
        "session.update",
        "transcription_session.update",
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "input_audio_buffer.clear",
    }
)


class RealtimeError(Exception):
    """A client event the session cannot take; becomes one `error` event."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        param: str | None = None,
        error_type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.error_type = error_type
        self.event_id: str | None = None  # the client event's, when it had one


def event_id() -> str:
    return f"event_{uuid.uuid4().hex[:20]}"


def item_id() -> str:
    return f"item_{uuid.uuid4().hex[:20]}"


def server_event(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "event_id": event_id(), **fields}


def error_event(error: RealtimeError) -> dict[str, Any]:
    return server_event(
        "error",
        error={
            "type": error.error_type,
            "code": error.code,
            "message": error.message,
            "param": error.param,
            "event_id": error.event_id,
        },
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def parse_client_event(raw: str) -> dict[str, Any]:
    """A known client event as a dict (its fields are checked by whoever handles it).

    Raises:
        RealtimeError: not a JSON object, no string `type`, or a type this server does not take.
    """
    try:
        event = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise RealtimeError(INVALID_JSON, "The event is not valid JSON.") from None
    if not isinstance(event, dict):
        raise RealtimeError(INVALID_JSON, "An event must be a JSON object.")
    kind = event.get("type")
    client_event_id = event.get("event_id")
    if not isinstance(kind, str) or kind not in CLIENT_EVENTS:
        shown = kind[:60] if isinstance(kind, str) else kind.__class__.__name__
        error = RealtimeError(
            INVALID_VALUE,
            f"Invalid event type {shown!r}: a transcription session takes "
            f"{', '.join(sorted(CLIENT_EVENTS))}.",
            param="type",
        )
        error.event_id = client_event_id if isinstance(client_event_id, str) else None
        raise error
    return event


def decode_audio(event: dict[str, Any], *, max_bytes: int, sample_bytes: int) -> bytes:
    """The bytes of an `input_audio_buffer.append`.

    Raises:
        RealtimeError: not base64, over `max_bytes` decoded, or not whole samples.
    """
    audio = event.get("audio")
    if not isinstance(audio, str):
        raise RealtimeError(INVALID_VALUE, "'audio' must be a base64 string.", param="audio")
    too_large = RealtimeError(
        APPEND_TOO_LARGE,
        f"One append may carry at most {max_bytes} bytes of audio; send smaller chunks.",
        param="audio",
    )
    # base64 is 4 characters per 3 bytes: refuse before decoding anything oversized
    if len(audio) > (max_bytes + 2) // 3 * 4:
        raise too_large
    try:
        data = base64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError):
        raise RealtimeError(
            INVALID_VALUE, "'audio' is not valid base64-encoded audio.", param="audio"
        ) from None
    if len(data) > max_bytes:
        raise too_large
    if len(data) % sample_bytes:
        raise RealtimeError(INVALID_VALUE, "'audio' must hold whole 16-bit samples.", param="audio")
    return data


def ms(seconds: float) -> int:
    return round(seconds * 1000) if math.isfinite(seconds) else 0
