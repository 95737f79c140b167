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
CHUNK_SAMPLES = SAMPLE_RATE // 50
"""20 ms per WebSocket frame, what WebRTC itself carries. Audio waits in the chunker until a
chunk is full, so the end of speech reaches the sidecar half a chunk late on average: 50 ms
chunks cost every final ~25 ms in a room, 20 ms ones ~10 ms, at 640 bytes a frame."""

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


MAX_KEYWORDS = 50
MAX_KEYWORD_CHARS = 50
"""The sidecar's bounds on a stream's ``keywords``; checked here so a mistake fails at once
rather than as ``invalid_config`` on every (re)connect."""


def checked_keywords(keywords: Sequence[str]) -> tuple[str, ...]:
    """``keywords`` as sent: stripped, at most 50 non-empty terms of at most 50 characters.

    Raises:
        ValueError: a plain string (it would be split into letters) or a term out of bounds.
    """
    if isinstance(keywords, str):
        raise ValueError("keywords must be a list of terms, e.g. ['Dashwood'], not a string")
    terms = tuple(k.strip() if isinstance(k, str) else k for k in keywords)
    if len(terms) > MAX_KEYWORDS or not all(
        isinstance(k, str) and 0 < len(k) <= MAX_KEYWORD_CHARS for k in terms
    ):
        raise ValueError(
            f"keywords: at most {MAX_KEYWORDS} non-empty strings of at most "
            f"{MAX_KEYWORD_CHARS} characters"
        )
    return terms


def config_message(
    *,
    language: str | Sequence[str] | None,
    task: str,
    interim_results: bool,
    prompt: str | None,
    keywords: Sequence[str] = (),
    adaptive_endpointing: bool | None = None,
    condition_on_previous_text: bool | None = None,
) -> dict[str, Any]:
    """The first message of a stream; exactly the keys the protocol defines.

    The optional keys are sent only when set, so a sidecar from before them still accepts it.
    """
    optional: dict[str, Any] = {}
    if keywords:
        optional["keywords"] = list(keywords)
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
