"""Sidecar failures as the framework's API errors, so `RecognizeStream`'s retry logic decides.

`APIStatusError` treats 4xx other than 408/429/499 as final and retries everything else. The
callers raise these ``from None``: aiohttp errors carry the request headers (the API key).
Unit-tested in ``tests/unit/test_plugin_errors.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
from livekit.agents import APIStatusError, create_api_error_from_http

# Server error codes (issue 4) -> the HTTP-like status that decides retryability.
ERROR_STATUS = {
    "invalid_config": 400,
    "protocol_error": 400,
    "frame_too_large": 413,
    "invalid_api_key": 401,
    "overloaded": 503,
    "slow_consumer": 503,
    "idle_timeout": 408,
    "config_timeout": 408,  # our config never arrived in time (a stalled network): retry
    "going_away": 503,
    "internal": 500,
}

_HANDSHAKE_HINTS = {
    401: "the sidecar rejected the API key (set STT_API_KEY or api_key=)",
    403: "the sidecar refused the stream",
    404: "the sidecar has no /v1/stream endpoint (check base_url)",
    503: "the sidecar is not ready (model loading or at capacity)",
}

_CLOSE_REASONS = {
    1001: "the sidecar is shutting down",
    1006: "the connection to the sidecar dropped",
    1011: "the sidecar failed",
    1013: "the sidecar is at capacity",
}


def handshake_error(status: int, headers: Mapping[str, str] | None) -> APIStatusError:
    """The error for a refused WebSocket upgrade (HTTP ``status``)."""
    request_id = headers.get("X-Request-Id") if headers is not None else None
    return create_api_error_from_http(
        _HANDSHAKE_HINTS.get(status, ""), status=status, request_id=request_id
    )


def server_error(data: dict[str, Any]) -> APIStatusError:
    """The error for a ``{"type": "error", "code", "message"}`` message of the stream."""
    code = str(data.get("code", "internal"))
    message = str(data.get("message", "")) or code
    return APIStatusError(
        f"sidecar error {code}: {message}",
        status_code=ERROR_STATUS.get(code, 500),
        body=data,
    )


def close_error(close_code: int | None) -> APIStatusError:
    """The error for a stream the sidecar closed before ``closed`` (status: the close code)."""
    code = close_code or -1
    if code == 1008:
        # policy violation: this client sent something the sidecar will refuse again
        return APIStatusError(
            "the sidecar closed the stream for a protocol violation",
            status_code=code,
            retryable=False,
        )
    reason = _CLOSE_REASONS.get(code, "the sidecar closed the stream unexpectedly")
    return APIStatusError(f"{reason} ({code})", status_code=code)


async def read_error_body(resp: aiohttp.ClientResponse) -> object:
    """An HTTP error response's JSON, else its first 500 characters of text."""
    try:
        return await resp.json(content_type=None)
    except (ValueError, aiohttp.ClientError):
        return (await resp.text(errors="replace"))[:500]


def error_message(body: object) -> str:
    """The message of an OpenAI-style ``{"error": {"message": ...}}`` body, if any."""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            message: str = err["message"]
            return message
        if isinstance(err, str):
            return err
    return body if isinstance(body, str) else ""
