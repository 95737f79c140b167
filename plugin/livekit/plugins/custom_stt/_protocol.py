"""The sidecar's ``/v1/stream`` wire protocol as the plugin speaks it (docs/streaming-protocol.md).

Constants, the control messages, the config message and the decoding of one received WebSocket
message; no state. Unit-tested in ``tests/unit/test_plugin_options.py``.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from livekit.agents import APIConnectionError, LanguageCode

from ._errors import close_error
from .log import logger

SAMPLE_RATE = 16000
"""The rate the stream sends; the base class resamples pushed frames to it."""
CHUNK_SAMPLES = SAMPLE_RATE // 20
"""50 ms per WebSocket frame: small enough for low latency, large enough to keep overhead low."""

FLUSH_MSG = json.dumps({"type": "flush"})
CLOSE_MSG = json.dumps({"type": "close"})
KEEPALIVE_MSG = json.dumps({"type": "keepalive"})
KEEPALIVE_S = 10.0
"""Well under the sidecar's default STT_IDLE_TIMEOUT_S (30 s)."""

_CLOSE_TYPES = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)


def language_param(language: str | None) -> str | None:
    """The base code Whisper takes (``en`` from ``en-US`` or ``english``); None detects."""
    return LanguageCode(language).language if language else None


def config_message(
    *,
    language: str | None,
    task: str,
    interim_results: bool,
    prompt: str | None,
    adaptive_endpointing: bool | None = None,
    condition_on_previous_text: bool | None = None,
) -> dict[str, Any]:
    """The first message of a stream; exactly the keys the protocol defines.

    The optional keys are sent only when set, so a sidecar from before them still accepts it.
    """
    optional: dict[str, Any] = {}
    if adaptive_endpointing is not None:
        optional["endpointing"] = "adaptive" if adaptive_endpointing else "fixed"
    if condition_on_previous_text is not None:
        optional["condition_on_previous_text"] = condition_on_previous_text
    return {
        "type": "config",
        "language": language_param(language),
        "sample_rate": SAMPLE_RATE,
        "encoding": "pcm_s16le",
        "channels": 1,
        "task": task,
        "interim_results": interim_results,
        "prompt": prompt,
        **optional,
    }


def parse_message(msg: aiohttp.WSMessage, close_code: int | None) -> dict[str, Any] | None:
    """The JSON object of a text message, or None for one to skip.

    Args:
        msg: A message received from the sidecar.
        close_code: The WebSocket's close code, used when ``msg`` is a close.

    Raises:
        APIStatusError: The sidecar closed the stream (status: the close code).
        APIConnectionError: The connection failed.
    """
    if msg.type in _CLOSE_TYPES:
        raise close_error(close_code)
    if msg.type == aiohttp.WSMsgType.ERROR:
        raise APIConnectionError(f"sidecar connection failed ({type(msg.data).__name__})") from None
    if msg.type != aiohttp.WSMsgType.TEXT:
        logger.warning("unexpected WebSocket message type %s from the sidecar", msg.type)
        return None
    try:
        data = json.loads(msg.data)
    except ValueError:
        logger.exception("sidecar sent a message that is not JSON")
        return None
    if not isinstance(data, dict):
        logger.warning("sidecar sent a message that is not an object")
        return None
    return data
