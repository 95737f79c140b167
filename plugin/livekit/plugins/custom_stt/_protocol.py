"""The sidecar's ``/v1/stream`` wire protocol as the plugin speaks it (docs/streaming-protocol.md).

Constants, the control messages, the config message and the decoding of one received WebSocket
message; no state. Unit-tested in ``tests/unit/test_plugin_options.py``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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


DETECT = frozenset({"auto", "multi"})
"""Spellings of "detect the language" (``multi`` is what other LiveKit STT plugins use)."""


def _base_code(language: str | None) -> str | None:
    if not language or language.lower() in DETECT:
        return None
    return LanguageCode(language).language


def language_param(language: str | Sequence[str] | None) -> str | list[str] | None:
    """The stream config's ``language``: the base code Whisper takes (``en`` from ``en-US`` or
    ``english``), a list of such codes to detect among, or None to detect any language."""
    if language is None or isinstance(language, str):
        return _base_code(language)
    codes = list(dict.fromkeys(c for c in map(_base_code, language) if c))
    if not codes:
        return None
    return codes[0] if len(codes) == 1 else codes


def single_language(language: str | Sequence[str] | None) -> str | None:
    """One code, or None when detecting: what batch requests send (they take no list, so a
    list detects among every language there) and what results fall back to."""
    param = language_param(language)
    return param if isinstance(param, str) else None


def requested_language(language: str | Sequence[str] | None) -> str | None:
    """What results report when a message names no language: the code as the caller spelled
    it (``en-US`` stays ``en-US``), or None when detecting."""
    if isinstance(language, str):
        return language if _base_code(language) else None
    return single_language(language)


def config_message(
    *, language: str | Sequence[str] | None, task: str, interim_results: bool, prompt: str | None
) -> dict[str, Any]:
    """The first message of a stream; exactly the keys the protocol defines."""
    return {
        "type": "config",
        "language": language_param(language),
        "sample_rate": SAMPLE_RATE,
        "encoding": "pcm_s16le",
        "channels": 1,
        "task": task,
        "interim_results": interim_results,
        "prompt": prompt,
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
