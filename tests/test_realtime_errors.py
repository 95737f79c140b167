"""Every bad input to `/v1/realtime` gets an `error` event in OpenAI's shape with a stable
code, and the session stays usable; connection-level limits close it, sharing the
STT_MAX_STREAMS budget with `/v1/stream`."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from stt_sidecar.realtime.handler import MAX_APPEND_BYTES, MAX_MESSAGE_BYTES

from .support.sidecar import SidecarProcess


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def realtime_url(sidecar: SidecarProcess, query: str = "intent=transcription") -> str:
    return f"{sidecar.ws_url.rsplit('/v1/', 1)[0]}/v1/realtime?{query}"


async def next_event(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    while True:
        event = await ws.receive_json(timeout=10)
        if event["type"] == kind:
            return event


async def expect_error(
    ws: aiohttp.ClientWebSocketResponse, payload: str | bytes, code: str, param: str | None
) -> None:
    if isinstance(payload, bytes):
        await ws.send_bytes(payload)
    else:
        await ws.send_str(payload)
    error = (await next_event(ws, "error"))["error"]
    assert error["type"] == "invalid_request_error", error
    assert (error["code"], error["param"]) == (code, param), error
    assert "Traceback" not in error["message"] and "/" not in error["message"][:1]


def append(audio: bytes | str) -> str:
    data = audio if isinstance(audio, str) else base64.b64encode(audio).decode()
    return json.dumps({"type": "input_audio_buffer.append", "audio": data})


async def test_every_bad_event_gets_an_error_and_the_session_goes_on(
    sidecar: SidecarProcess, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(realtime_url(sidecar)) as ws:
        created = await next_event(ws, "session.created")
        assert created["session"]["type"] == "transcription"
        await expect_error(ws, "{not json", "invalid_json", None)
        await expect_error(ws, '{"type": "response.create"}', "invalid_value", "type")
        await expect_error(ws, b"\x00\x01", "invalid_value", None)
        await expect_error(ws, append("@@not base64@@"), "invalid_value", "audio")
        await expect_error(ws, append(b"\x00\x01\x02"), "invalid_value", "audio")
        big = base64.b64encode(bytes(MAX_APPEND_BYTES + 2)).decode()
        await expect_error(ws, append(big), "input_audio_buffer_append_too_large", "audio")
        update = {
            "type": "session.update",
            "session": {
                "type": "transcription",
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}},
            },
        }
        await expect_error(
            ws, json.dumps(update), "invalid_value", "session.audio.input.format.rate"
        )
        beta = {"type": "transcription_session.update", "session": {"input_audio_format": "opus"}}
        await expect_error(ws, json.dumps(beta), "invalid_value", "session.input_audio_format")
        commit = json.dumps({"type": "input_audio_buffer.commit", "event_id": "mine"})
        await ws.send_str(commit)
        error = (await next_event(ws, "error"))["error"]
        assert error["code"] == "input_audio_buffer_commit_empty"
        assert error["event_id"] == "mine"
        # 50 ms is not enough to commit either
        await ws.send_str(append(bytes(2400)))
        await expect_error(ws, commit, "input_audio_buffer_commit_empty", None)
        # still usable: clear, then a valid update
        await ws.send_str(json.dumps({"type": "input_audio_buffer.clear"}))
        await next_event(ws, "input_audio_buffer.cleared")
        await ws.send_str(json.dumps({**beta, "session": {"input_audio_format": "g711_alaw"}}))
        updated = await next_event(ws, "transcription_session.updated")
        assert updated["session"]["input_audio_format"] == "g711_alaw"
        # a message over the socket's limit cannot be read at all: closed with 1009
        await ws.send_str("x" * (MAX_MESSAGE_BYTES + 1))
        closing = await ws.receive(timeout=10)
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1009


async def test_upgrade_refusals(sidecar: SidecarProcess, http: aiohttp.ClientSession) -> None:
    for query, code in [
        ("intent=conversation", "invalid_intent"),
        ("intent=transcription&model=gpt-9", "model_not_found"),
    ]:
        async with http.get(realtime_url(sidecar, query).replace("ws", "http", 1)) as r:
            assert r.status == 400
            assert (await r.json())["error"]["code"] == code
    url = realtime_url(sidecar, "intent=transcription&model=gpt-4o-mini-transcribe")
    key = "openai-insecure-api-key.anything"
    async with http.ws_connect(url, protocols=("realtime", key)) as ws:
        assert ws.protocol == "realtime"  # what browser clients ask for
        await next_event(ws, "session.created")


async def test_one_stream_budget_for_both_protocols(
    sidecar: SidecarProcess, http: aiohttp.ClientSession
) -> None:
    """STT_MAX_STREAMS=8 on the shared sidecar: 4 + 4 fill it, the 9th of either is refused."""
    stream_url = sidecar.ws_url
    held = []
    try:
        for _ in range(4):
            ws = await http.ws_connect(stream_url)
            await ws.send_str(json.dumps({"type": "config", "sample_rate": 16000}))
            assert (await ws.receive_json(timeout=10))["type"] == "ready"
            held.append(ws)
        for _ in range(4):
            ws = await http.ws_connect(realtime_url(sidecar))
            await next_event(ws, "session.created")
            await ws.send_str(json.dumps({"type": "input_audio_buffer.clear"}))
            await next_event(ws, "input_audio_buffer.cleared")
            held.append(ws)
        async with http.get(sidecar.url + "/metrics") as r:
            metrics = await r.text()
        assert 'stt_open_streams{protocol="realtime"} 4.0' in metrics
        assert 'stt_open_streams{protocol="stream"} 4.0' in metrics
        async with http.ws_connect(realtime_url(sidecar)) as extra:
            error = (await next_event(extra, "error"))["error"]
            assert (error["type"], error["code"]) == ("server_error", "overloaded")
            closing = await extra.receive(timeout=10)
            assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1013
        async with http.ws_connect(stream_url) as extra:
            refused = await extra.receive_json(timeout=10)
            assert refused["code"] == "overloaded"
    finally:
        for ws in held:
            await ws.close()


async def test_a_silent_connection_loses_its_slot(
    sidecar: SidecarProcess, http: aiohttp.ClientSession
) -> None:
    """No event within STT_CONFIG_TIMEOUT_S (3 s on the shared sidecar): config_timeout, 1008."""
    async with http.ws_connect(realtime_url(sidecar)) as ws:
        await next_event(ws, "session.created")
        error = (await next_event(ws, "error"))["error"]
        assert error["code"] == "config_timeout"
        closing = await ws.receive(timeout=10)
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1008
