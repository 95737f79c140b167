"""Hostile and malformed WebSocket input to /v1/stream, beyond tests/test_streaming_protocol.py
(which covers the first-message errors, binary before config, odd and oversize frames, a second
config and unknown types): garbage in the middle of a live utterance, frames over the size
limit, WebSocket-level violations, floods of tiny frames and of pings, numbers JSON cannot
hold, and messages after `close`. After each, the server answers correctly and stays alive."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import numpy as np
import pytest

from stt_sidecar.replay import load_pcm16, replay

from ..streaming_helpers import open_stream, resample_int16
from ..support.resources import rss_mb
from ..support.sidecar import SidecarProcess
from ..support.speech import clip, wer
from .ws_support import (
    RawClient,
    check_server_message,
    leaks_internals,
    ready,
    wait_streams_gone,
)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def expect_error(ws: aiohttp.ClientWebSocketResponse, code: str, close_code: int) -> None:
    """Messages until an `error` of `code` (finals of the open utterance may come first), then
    a close with `close_code`."""
    while True:
        msg = await ws.receive(timeout=15)
        assert msg.type == aiohttp.WSMsgType.TEXT, (msg, ws.close_code)
        body = check_server_message(msg.data)
        if body["type"] == "error":
            break
    assert body["code"] == code, body
    closing = await ws.receive(timeout=10)
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), closing
    assert ws.close_code == close_code


async def still_transcribes(sidecar: SidecarProcess) -> None:
    """A real clip still streams right, and no stream was left behind."""
    c = clip("goforward.wav")
    audio, rate = load_pcm16(c.path)
    result = await replay(sidecar.ws_url, audio, rate, speed=0)
    assert wer(c.text, " ".join(f["text"] for f in result.finals)) <= 0.25, result.finals
    await wait_streams_gone(sidecar)


async def start_speaking(http: aiohttp.ClientSession, sidecar: SidecarProcess):
    """A stream with an utterance open: 1.5 s of "and mister john dashwood..." sent."""
    audio, _ = load_pcm16(clip("librivox_0870.wav").path)
    ws = await open_stream(http, sidecar.ws_url)
    for i in range(0, 24000, 8000):
        await ws.send_bytes(audio[i : i + 8000].tobytes())
    return ws


# -- garbage in the middle of an utterance ---------------------------------------------------

MID_STREAM_GARBAGE = [
    "not json",
    "{",
    "null",
    "42",
    '"flush"',
    "[]",
    '{"type": 5}',
    '{"type": null}',
    '{"type": ["flush"]}',
    '{"kind": "flush"}',
    '{"type": "FLUSH"}',
    '{"type": "flush\\u0000"}',
    "[" * 100_000,  # nesting deep enough to exhaust a recursive parser
    '{"type": "flush", "n": NaN}',
    "\u0000\u0001\u0002",
]


@pytest.mark.parametrize("text", MID_STREAM_GARBAGE, ids=range(len(MID_STREAM_GARBAGE)))
async def test_garbage_text_mid_utterance(sidecar, http, text: str) -> None:
    ws = await start_speaking(http, sidecar)
    await ws.send_str(text)
    await expect_error(ws, "protocol_error", 1008)


async def test_server_is_fine_after_the_garbage(sidecar) -> None:
    await still_transcribes(sidecar)


# -- configs with numbers and values JSON (or Python) handles badly -----------------------------

HOSTILE_CONFIGS = [
    ('{"type": "config", "sample_rate": 1e400}', "invalid_config"),  # parses as inf
    ('{"type": "config", "sample_rate": -1e400}', "invalid_config"),
    ('{"type": "config", "sample_rate": Infinity}', "protocol_error"),
    ('{"type": "config", "sample_rate": -Infinity}', "protocol_error"),
    ('{"type": "config", "channels": NaN}', "protocol_error"),
    ('{"type": "config", "sample_rate": 100000000000000000000000000000}', "invalid_config"),
    ('{"type": "config", "sample_rate": 1' + "0" * 5000 + "}", "protocol_error"),  # > int digits
    ('{"type": "config", "sample_rate": -0}', "invalid_config"),
    ('{"type": "config", "sample_rate": 16000.0}', "invalid_config"),
    ('{"type": "config", "channels": -1}', "invalid_config"),
    ('{"type": "config", "channels": 18446744073709551617}', "invalid_config"),
    ('{"type": "config", "channels": 0}', "invalid_config"),
    ('{"type": "config", "sample_rate": {"$gt": 0}}', "invalid_config"),
    ('{"type": "config", "sample_rate": [16000]}', "invalid_config"),
    ('{"type": "config", "interim_results": NaN}', "protocol_error"),
    ('{"type": "config", "interim_results": 1}', "invalid_config"),
    ('{"type": "config", "language": ""}', "invalid_config"),
    ('{"type": "config", "language": "../../etc/passwd"}', "invalid_config"),
    ('{"type": "config", "prompt": "' + "a" * 1001 + '"}', "invalid_config"),
    ('{"type": "config", "prompt": "' + "a" * 200_000 + '"}', "invalid_config"),
    ('{"type": "config", "prompt": ["a"]}', "invalid_config"),
    ('{"type": "config", "sample_rate": 16000, "sample_rate": "x"}', "invalid_config"),
    ('{"type": "config", "__proto__": {}}', "invalid_config"),
    ('{"type": "config", "type": "flush"}', "protocol_error"),
]


@pytest.mark.parametrize(("text", "code"), HOSTILE_CONFIGS, ids=range(len(HOSTILE_CONFIGS)))
async def test_hostile_config(sidecar, http, text: str, code: str) -> None:
    async with http.ws_connect(sidecar.ws_url) as ws:
        await ws.send_str(text)
        await expect_error(ws, code, 1008)


# -- oversize frames and WebSocket-level violations (raw socket) ------------------------------


@pytest.mark.parametrize(
    ("after_config", "opcode", "payload", "close_code"),
    [
        (False, 0x1, b"x" * 2**20, 1009),  # 1 MB text before config
        (True, 0x1, b'{"type": "flush", "pad": "' + b"x" * 2**20 + b'"}', 1009),
        (True, 0x2, b"\x00" * 2**20, 1009),  # 1 MB binary
        (False, 0x1, b'{"type": "config"\xff\xfe}', 1007),  # text that is not UTF-8
        (True, 0x1, b"\xc3\x28", 1007),
        (True, 0x3, b"abc", 1002),  # reserved opcode
        (True, 0x0, b"abc", 1002),  # continuation with nothing to continue
    ],
    ids=["1MB-text-first", "1MB-text-live", "1MB-binary", "utf8-first", "utf8-live", "op3", "cont"],
)
async def test_oversize_and_malformed_frames(
    sidecar, after_config: bool, opcode: int, payload: bytes, close_code: int
) -> None:
    """Refused by aiohttp's reader with the RFC 6455 close code (1009 too big, 1007 bad text,
    1002 bad framing) before anything is buffered or parsed; nothing else is said."""
    before = rss_mb(sidecar)
    client = await RawClient.open(sidecar)
    try:
        if after_config:
            await client.send_text(json.dumps({"type": "config"}))
        await client.send(payload, opcode)
        frames = await client.read_messages(timeout=10)
    finally:
        client.abort()
    assert frames and frames[-1].close_code == close_code, [f.payload[:80] for f in frames]
    for frame in frames[:-1]:
        assert check_server_message(frame.text)["type"] == "ready"
    assert rss_mb(sidecar) - before < 30


async def test_server_is_fine_after_bad_frames(sidecar) -> None:
    await still_transcribes(sidecar)


# -- floods -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("rate", "channels"), [(16000, 1), (48000, 2)])
async def test_speech_in_one_sample_frames(sidecar, http, rate: int, channels: int) -> None:
    """ "Go forward ten meters" with its first 10,000 frames one sample (per channel) each, the
    rest in 3-sample frames, plus 2,000 empty frames: transcribed as if sent in 20 ms frames,
    and server memory does not move."""
    c = clip("goforward.wav")
    audio, clip_rate = load_pcm16(c.path)
    if rate != clip_rate or channels != 1:
        audio = resample_int16(audio, clip_rate, rate, channels)
    audio = np.concatenate([audio, np.zeros((rate // 2, channels), np.int16)])  # to endpoint
    # the same audio in 20 ms frames first: the reference, and the decoder's first-use memory
    normal = await replay(sidecar.ws_url, audio, rate, speed=0)
    before = rss_mb(sidecar)
    ws = await open_stream(http, sidecar.ws_url, sample_rate=rate, channels=channels)
    started = time.monotonic()
    sent = 0
    for i in range(10_000):
        await ws.send_bytes(audio[i : i + 1].tobytes())
        sent += 1
        if i % 5 == 0:
            await ws.send_bytes(b"")
            sent += 1
    for i in range(10_000, len(audio), 3):
        await ws.send_bytes(audio[i : i + 3].tobytes())
        sent += 1
    await ws.send_str(json.dumps({"type": "close"}))
    messages = []
    async with asyncio.timeout(60):
        async for msg in ws:
            messages.append(check_server_message(msg.data))
    elapsed = time.monotonic() - started
    print(f"{sent} tiny frames at {rate} Hz x{channels} in {elapsed:.1f} s")
    finals = [m for m in messages if m["type"] == "final"]
    assert [f["text"] for f in finals] == [f["text"] for f in normal.finals], messages
    assert wer(c.text, " ".join(f["text"] for f in finals)) <= 0.25, messages
    assert messages[-1]["type"] == "closed" and ws.close_code == 1000
    assert rss_mb(sidecar) - before < 30


async def test_ping_flood_while_streaming(sidecar, http) -> None:
    """5,000 WebSocket pings interleaved with the audio of one utterance: every ping answered,
    the words unchanged."""
    c = clip("librivox_0880.wav")
    audio, rate = load_pcm16(c.path)
    pongs = 0

    ws = await http.ws_connect(sidecar.ws_url, autoping=False)
    await ws.send_str(json.dumps({"type": "config", "sample_rate": rate}))
    pcm = np.concatenate([audio, np.zeros((rate, 1), np.int16)])
    step = 320
    frames = range(0, len(pcm), step)
    pings_per_frame = -(-5000 // len(frames))
    pings = 0
    for i in frames:
        await ws.send_bytes(pcm[i : i + step].tobytes())
        for _ in range(pings_per_frame):
            await ws.ping(b"flood")
            pings += 1
    await ws.send_str(json.dumps({"type": "close"}))
    messages = []
    async with asyncio.timeout(60):
        while True:
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.PONG:
                pongs += 1
            elif msg.type == aiohttp.WSMsgType.TEXT:
                messages.append(check_server_message(msg.data))
            else:
                break
    await ws.close()
    assert pings >= 5000 and pongs == pings, (pings, pongs)
    finals = [m for m in messages if m["type"] == "final"]
    assert wer(c.text, " ".join(f["text"] for f in finals)) <= 0.3, finals
    assert messages[-1]["type"] == "closed"


async def test_ping_flood_from_a_client_that_never_reads(sidecar, http) -> None:
    """Pings as fast as the socket takes them, never reading a pong: the server stops reading
    that client once its replies back up (TCP pushes back), so its memory stays flat, and a
    normal stream beside it is unaffected. When it then vanishes, the server treats it as a
    disconnect (it used to log "stream failed" with a traceback and count an `internal` error,
    from the ConnectionError of the pong it was stuck writing)."""
    failures_before = sidecar.log().count("stream failed")
    before = rss_mb(sidecar)
    flooder = await RawClient.open(sidecar, recv_buffer=4096)
    await flooder.send_text(json.dumps({"type": "config"}))
    peak = before
    pings = 0

    async def flood() -> None:
        nonlocal peak, pings
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            try:
                async with asyncio.timeout(0.5):
                    await flooder.ping(b"p" * 125)
            except TimeoutError:
                await asyncio.sleep(0.2)  # pushed back: keep the pressure on
                continue
            pings += 1
            if pings % 2000 == 0:
                peak = max(peak, rss_mb(sidecar))

    c = clip("librivox_0930.wav")
    audio, rate = load_pcm16(c.path)
    _, normal = await asyncio.gather(flood(), replay(sidecar.ws_url, audio, rate, speed=1.0))
    peak = max(peak, rss_mb(sidecar))
    flooder.abort()
    print(f"{pings} unread pings; RSS {before:.0f} -> peak {peak:.0f} MiB")
    assert wer(c.text, " ".join(f["text"] for f in normal.finals)) <= 0.25, normal.finals
    assert peak - before < 50, f"RSS {before:.0f} -> {peak:.0f} MiB"
    await wait_streams_gone(sidecar)
    assert sidecar.log().count("stream failed") == failures_before, sidecar.log()[-3000:]


# -- after `close` ----------------------------------------------------------------------------


async def test_messages_after_close_are_ignored(sidecar, http) -> None:
    """Audio, `flush`, a second config, garbage and a ping sent right behind `close`: the
    utterance's final, then `closed`, then close 1000; no error for what came after."""
    c = clip("goforward.wav")
    audio, _ = load_pcm16(c.path)
    ws = await open_stream(http, sidecar.ws_url)
    for i in range(0, len(audio), 8000):
        await ws.send_bytes(audio[i : i + 8000].tobytes())
    await ws.send_str(json.dumps({"type": "close"}))
    for i in range(50):
        await ws.send_bytes(audio[i * 320 : (i + 1) * 320].tobytes())
    await ws.send_str(json.dumps({"type": "flush"}))
    await ws.send_str(json.dumps({"type": "config"}))
    await ws.send_str("garbage")
    await ws.ping()
    messages = []
    async with asyncio.timeout(30):
        async for msg in ws:
            messages.append(check_server_message(msg.data))
    kinds = [m["type"] for m in messages]
    assert "error" not in kinds, messages
    assert kinds[-1] == "closed" and kinds.count("closed") == 1, kinds
    assert ws.close_code == 1000
    finals = [m for m in messages if m["type"] == "final"]
    assert wer(c.text, " ".join(f["text"] for f in finals)) <= 0.25, finals


async def test_after_everything_the_server_is_whole(sidecar) -> None:
    """Still transcribing, no stream left open, and no stream ever failed inside the server
    (the handler logs "stream failed" with a traceback for any unexpected exception)."""
    await still_transcribes(sidecar)
    status = await asyncio.to_thread(ready, sidecar)
    assert status["status"] == "ready" and status["active_streams"] == 0
    assert not leaks_internals(json.dumps(status))
    log = sidecar.log()
    assert "stream failed" not in log, log[log.find("stream failed") - 300 :][:3000]


async def test_pings_count_as_activity_for_the_idle_timeout() -> None:
    """As docs/streaming-protocol.md says: WebSocket pings keep a stream from idling out (the
    plugin's heartbeat relies on it), and once they stop, `idle_timeout` follows."""
    sidecar = SidecarProcess(STT_IDLE_TIMEOUT_S="1.5").start()
    try:
        client = await RawClient.open(sidecar)
        await client.send_text(json.dumps({"type": "config"}))
        for _ in range(8):  # 4 s of pings, none more than 0.5 s apart
            await client.ping(b"hb")
            await asyncio.sleep(0.5)
        quiet = time.monotonic()
        frames = await client.read_messages(timeout=10)
        client.abort()
        texts = [check_server_message(f.text) for f in frames if f.opcode == 0x1]
        assert [t["type"] for t in texts] == ["ready", "error"], texts
        assert texts[1]["code"] == "idle_timeout" and frames[-1].close_code == 1001
        assert sum(f.opcode == 0xA for f in frames) == 8
        assert 0.5 < time.monotonic() - quiet < 4.0  # 1.5 s after the last ping
    finally:
        sidecar.stop()
