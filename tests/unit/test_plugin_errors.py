"""Handshake, server-error and close-code mapping onto the framework's retryable errors."""

from __future__ import annotations

import aiohttp
import pytest
from livekit.agents import APIConnectionError, APIStatusError
from livekit.plugins.custom_stt._errors import (
    close_error,
    error_message,
    handshake_error,
    server_error,
)
from livekit.plugins.custom_stt._protocol import parse_message


@pytest.mark.parametrize(
    ("code", "status", "retryable"),
    [
        ("invalid_config", 400, False),
        ("protocol_error", 400, False),
        ("frame_too_large", 413, False),
        ("overloaded", 503, True),
        ("idle_timeout", 408, True),
        ("slow_consumer", 503, True),
        ("internal", 500, True),
        ("something_new", 500, True),
    ],
)
def test_server_error_codes_map_to_retryability(code: str, status: int, retryable: bool) -> None:
    err = server_error({"type": "error", "code": code, "message": "why"})
    assert (err.status_code, err.retryable) == (status, retryable)
    assert "why" in err.message and code in err.message


def test_server_error_without_code_or_message() -> None:
    err = server_error({"type": "error"})
    assert (err.status_code, err.retryable) == (500, True)
    assert err.message == "sidecar error internal: internal"
    assert server_error({"code": "invalid_api_key"}).status_code == 401
    assert server_error({"code": "going_away"}).retryable
    body = {"type": "error", "code": "overloaded"}
    assert server_error(body).body == body


def test_close_codes_map_to_retryability() -> None:
    assert close_error(1013).retryable  # try again later
    assert close_error(1001).retryable  # sidecar going away (restart)
    assert close_error(1006).retryable  # connection dropped
    assert close_error(None).retryable
    assert not close_error(1008).retryable  # policy violation: would fail again


def test_close_error_messages_name_the_code() -> None:
    assert close_error(None).status_code == -1
    assert close_error(1013).message == "the sidecar is at capacity (1013)"
    assert close_error(4321).message == "the sidecar closed the stream unexpectedly (4321)"
    assert "protocol violation" in close_error(1008).message


@pytest.mark.parametrize(
    ("status", "retryable", "hint"),
    [
        (401, False, "API key"),
        (403, False, "refused"),
        (404, False, "base_url"),
        (503, True, "not ready"),
        (429, True, ""),
        (500, True, ""),
    ],
)
def test_handshake_errors(status: int, retryable: bool, hint: str) -> None:
    err = handshake_error(status, {"X-Request-Id": "r1"})
    assert isinstance(err, APIStatusError)
    assert (err.status_code, err.retryable, err.request_id) == (status, retryable, "r1")
    assert hint in err.message
    assert handshake_error(status, None).request_id is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"error": {"message": "bad key", "code": "invalid_api_key"}}, "bad key"),
        ({"error": "plain"}, "plain"),
        ({"error": {"message": 3}}, ""),
        ({"detail": "x"}, ""),
        ("Internal Server Error", "Internal Server Error"),
        (None, ""),
    ],
)
def test_error_message_of_http_bodies(body: object, message: str) -> None:
    assert error_message(body) == message


def msg(kind: aiohttp.WSMsgType, data: object = None) -> aiohttp.WSMessage:
    return aiohttp.WSMessage(kind, data, None)


def test_parse_message_objects_and_skips() -> None:
    assert parse_message(msg(aiohttp.WSMsgType.TEXT, '{"type": "ready"}'), None) == {
        "type": "ready"
    }
    assert parse_message(msg(aiohttp.WSMsgType.TEXT, "not json"), None) is None
    assert parse_message(msg(aiohttp.WSMsgType.TEXT, "[1, 2]"), None) is None
    assert parse_message(msg(aiohttp.WSMsgType.BINARY, b"\x00"), None) is None


@pytest.mark.parametrize(
    "kind", [aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED]
)
def test_parse_message_close_raises_the_close_code(kind: aiohttp.WSMsgType) -> None:
    with pytest.raises(APIStatusError) as exc:
        parse_message(msg(kind), 1013)
    assert (exc.value.status_code, exc.value.retryable) == (1013, True)


def test_parse_message_error_is_a_connection_error() -> None:
    with pytest.raises(APIConnectionError) as exc:
        parse_message(msg(aiohttp.WSMsgType.ERROR, ConnectionResetError("x")), None)
    assert exc.value.retryable and "ConnectionResetError" in exc.value.message
