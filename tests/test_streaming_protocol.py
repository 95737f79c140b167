"""Every protocol error of /v1/stream, admission control and the idle timeout."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import psutil
import pytest

from stt_sidecar.replay import load_pcm16, replay

from .streaming_helpers import RawWebSocket, open_stream
from .support.sidecar import SidecarProcess
from .support.speech import clip, wer


async def expect_error(ws: aiohttp.ClientWebSocketResponse, code: str, close_code: int) -> None:
    """The server answers with an `error` of `code`, then closes with `close_code`."""
    msg = await ws.receive(timeout=10)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    body = json.loads(msg.data)
    assert body["type"] == "error" and body["code"] == code, body
    assert "Traceback" not in body["message"] and "/" not in body["message"]
    closing = await ws.receive(timeout=10)
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), closing
    assert ws.close_code == close_code


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.mark.parametrize(
    ("first_message", "code"),
    [
        ("not json", "protocol_error"),
        ('["config"]', "protocol_error"),
        ('{"type": "flush"}', "protocol_error"),
        ('{"type": "config", "sample_rate": 16000, "colour": "blue"}', "invalid_config"),
        ('{"type": "config", "sample_rate": 1000}', "invalid_config"),
        ('{"type": "config", "sample_rate": 96000}', "invalid_config"),
        ('{"type": "config", "sample_rate": -16000}', "invalid_config"),
        ('{"type": "config", "sample_rate": NaN}', "protocol_error"),
        ('{"type": "config", "sample_rate": 16000.5}', "invalid_config"),
        ('{"type": "config", "sample_rate": "16000"}', "invalid_config"),
        ('{"type": "config", "sample_rate": true}', "invalid_config"),
        ('{"type": "config", "encoding": "opus"}', "invalid_config"),
        ('{"type": "config", "channels": 6}', "invalid_config"),
        ('{"type": "config", "language": "klingon"}', "invalid_config"),
        ('{"type": "config", "language": "de"}', "invalid_config"),  # tiny.en is English-only
        ('{"type": "config", "language": ["en", "de"]}', "invalid_config"),
        ('{"type": "config", "language": []}', "invalid_config"),
        ('{"type": "config", "task": "translate"}', "invalid_config"),
        ('{"type": "config", "interim_results": "yes"}', "invalid_config"),
        ('{"type": "config", "prompt": 42}', "invalid_config"),
    ],
)
async def test_bad_config_is_refused(sidecar, http, first_message: str, code: str) -> None:
    async with http.ws_connect(sidecar.ws_url) as ws:
        await ws.send_str(first_message)
        await expect_error(ws, code, 1008)


async def test_binary_before_config(sidecar, http) -> None:
    async with http.ws_connect(sidecar.ws_url) as ws:
        await ws.send_bytes(b"\x00\x00" * 160)
        await expect_error(ws, "protocol_error", 1008)


async def test_odd_byte_count(sidecar, http) -> None:
    ws = await open_stream(http, sidecar.ws_url)
    await ws.send_bytes(b"\x00" * 321)
    await expect_error(ws, "protocol_error", 1008)


async def test_stereo_frame_must_hold_whole_sample_pairs(sidecar, http) -> None:
    ws = await open_stream(http, sidecar.ws_url, channels=2)
    await ws.send_bytes(b"\x00" * 642)  # 321 16-bit samples: not whole L/R pairs
    await expect_error(ws, "protocol_error", 1008)


async def test_frame_over_one_second(sidecar, http) -> None:
    ws = await open_stream(http, sidecar.ws_url)
    await ws.send_bytes(b"\x00\x00" * 16001)
    await expect_error(ws, "frame_too_large", 1009)


async def test_second_config_and_unknown_type(sidecar, http) -> None:
    ws = await open_stream(http, sidecar.ws_url)
    await ws.send_str(json.dumps({"type": "config", "sample_rate": 16000}))
    await expect_error(ws, "protocol_error", 1008)
    ws = await open_stream(http, sidecar.ws_url)
    await ws.send_str(json.dumps({"type": "dance"}))
    await expect_error(ws, "protocol_error", 1008)


async def test_keepalive_is_accepted_and_server_serves_after_errors(sidecar, http) -> None:
    ws = await open_stream(http, sidecar.ws_url)
    await ws.send_str(json.dumps({"type": "keepalive"}))
    await ws.send_str(json.dumps({"type": "close"}))
    closed = await ws.receive_json(timeout=10)
    assert closed == {"type": "closed"}
    await ws.close()
    c = clip("goforward.wav")
    audio, rate = load_pcm16(c.path)
    result = await replay(sidecar.ws_url, audio, rate, speed=0)
    assert wer(c.text, " ".join(f["text"] for f in result.finals)) <= 0.25


# -- admission and idle timeout: a second sidecar with small limits -------------------------
@pytest.fixture(scope="module")
def small_sidecar() -> Iterator[SidecarProcess]:
    proc = SidecarProcess(
        STT_MAX_STREAMS="2",
        STT_IDLE_TIMEOUT_S="2",
        STT_MAX_UTTERANCE_S="4",
        STT_CONFIG_TIMEOUT_S="1",
    ).start()
    yield proc
    proc.stop()


async def test_streams_beyond_the_limit_get_1013_and_admitted_ones_keep_working(
    small_sidecar, http
) -> None:
    c = clip("librivox_0930.wav")
    audio, rate = load_pcm16(c.path)
    admitted = [
        asyncio.create_task(replay(small_sidecar.ws_url, audio, rate, speed=1.5)) for _ in range(2)
    ]
    await asyncio.sleep(0.5)  # both are streaming now
    refused: list[dict[str, Any]] = []
    for _ in range(3):
        async with http.ws_connect(small_sidecar.ws_url) as ws:
            msg = await ws.receive_json(timeout=10)
            refused.append(msg)
            await ws.receive(timeout=10)
            assert ws.close_code == 1013
    assert all(m["type"] == "error" and m["code"] == "overloaded" for m in refused)
    for result in await asyncio.gather(*admitted):
        assert wer(c.text, " ".join(f["text"] for f in result.finals)) <= 0.2
    async with http.get(small_sidecar.url + "/metrics") as r:
        assert "stt_rejected_streams_total 3.0" in await r.text()


async def test_long_utterance_is_cut_between_words(small_sidecar) -> None:
    """7 s of unbroken reading with STT_MAX_UTTERANCE_S=4: two finals, no word lost or doubled."""
    c = clip("librivox_0870.wav")
    audio, rate = load_pcm16(c.path)
    result = await replay(small_sidecar.ws_url, audio, rate, speed=0)
    finals = result.finals
    assert len(finals) >= 2, finals
    assert all(f["end"] - f["start"] <= 4.5 for f in finals), finals
    assert wer(c.text, " ".join(f["text"] for f in finals)) <= 0.15, finals


async def test_idle_stream_is_closed(small_sidecar, http) -> None:
    ws = await open_stream(http, small_sidecar.ws_url)
    await expect_error(ws, "idle_timeout", 1001)


async def test_streams_without_config_lose_their_slot(small_sidecar, http) -> None:
    """Issue #10: streams that send only keepalives and pings, never a config, once held every
    STT_MAX_STREAMS slot forever. Now nothing before the config counts as activity: they are
    closed 1008 `config_timeout` (1 s here), and the slots serve real streams again."""

    async def keep_squatting() -> tuple[dict[str, Any], int | None]:
        ws = await http.ws_connect(small_sidecar.ws_url, autoping=False)
        async with asyncio.timeout(20):  # far past the 1 s deadline: it must end by itself
            while True:
                await ws.send_str(json.dumps({"type": "keepalive"}))
                await ws.ping(b"hb")
                try:
                    msg = await ws.receive(timeout=0.2)
                except asyncio.TimeoutError:
                    continue
                if msg.type == aiohttp.WSMsgType.PONG:
                    continue
                assert msg.type == aiohttp.WSMsgType.TEXT, msg
                body = json.loads(msg.data)
                closing = await ws.receive(timeout=10)
                assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
                return body, ws.close_code

    squatters = [asyncio.create_task(keep_squatting()) for _ in range(2)]
    outcomes = await asyncio.gather(*squatters)
    for body, close_code in outcomes:
        assert body["type"] == "error" and body["code"] == "config_timeout", body
        assert close_code == 1008
    c = clip("goforward.wav")
    audio, rate = load_pcm16(c.path)
    result = await replay(small_sidecar.ws_url, audio, rate, speed=0)
    assert wer(c.text, " ".join(f["text"] for f in result.finals)) <= 0.25


def _rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


async def test_client_that_never_reads_does_not_grow_server_memory(sidecar) -> None:
    """Streams 90 s of speech as fast as possible and never reads a byte back, while
    a normal client streams beside it: server memory stays flat and the normal client gets
    its words."""
    audio, rate = load_pcm16(clip("jfk.wav").path)
    pid = sidecar.proc.pid
    baseline = _rss_mb(pid)
    port = int(sidecar.url.rsplit(":", 1)[1])
    raw = await RawWebSocket.connect("127.0.0.1", port)
    await raw.send_text(json.dumps({"type": "config", "sample_rate": rate}))
    pcm = audio.tobytes()
    peak = baseline

    async def flood() -> None:
        nonlocal peak
        try:
            for _ in range(8):  # 8 x 11 s of speech, faster than the decoder keeps up
                for i in range(0, len(pcm), 32000):
                    await raw.send_binary(pcm[i : i + 32000])
                peak = max(peak, _rss_mb(pid))
        except ConnectionError:
            pass  # the server may drop it as a slow consumer: also fine

    c = clip("librivox_0870.wav")
    normal_audio, _ = load_pcm16(c.path)
    _, normal = await asyncio.gather(flood(), replay(sidecar.ws_url, normal_audio, rate, speed=2.0))
    raw.abort()
    assert wer(c.text, " ".join(f["text"] for f in normal.finals)) <= 0.2
    assert peak - baseline < 100, f"RSS grew from {baseline:.0f} to {peak:.0f} MiB"


async def test_ready_reports_load_and_metrics_cover_streaming(sidecar, http) -> None:
    c = clip("goforward.wav")
    audio, rate = load_pcm16(c.path)
    ws = await open_stream(http, sidecar.ws_url)
    async with http.get(sidecar.url + "/ready") as r:
        ready = await r.json()
    assert ready["active_streams"] >= 1 and ready["max_streams"] == 8
    assert 0 < ready["load"] <= 1
    await ws.close()
    await replay(sidecar.ws_url, audio, rate, speed=0)
    async with http.ws_connect(sidecar.ws_url) as bad:
        await bad.send_str("not json")
        await expect_error(bad, "protocol_error", 1008)
    async with http.get(sidecar.url + "/metrics") as r:
        text = await r.text()
    for name in (
        "stt_active_streams",
        "stt_rejected_streams_total",
        "stt_stream_audio_seconds_total",
        'stt_decode_seconds_bucket{kind="final"',
        "stt_final_latency_seconds_bucket",
        "stt_interims_dropped_total",
        "stt_finals_sent_total",
        "stt_decode_queue_depth",
        'stt_errors_total{code="protocol_error"}',
    ):
        assert name in text, name
    assert "dashwood" not in text.lower() and "forward" not in text.lower()  # no transcripts


class _StuckSocket:
    """A WebSocket whose peer stopped reading: sends never complete."""

    closed = False

    async def send_str(self, data: str) -> None:
        await asyncio.Event().wait()


async def test_a_send_to_a_client_that_stopped_reading_gives_up() -> None:
    from stt_sidecar.streaming.handler import _make_sender
    from stt_sidecar.streaming.session import SlowConsumer

    send = _make_sender(_StuckSocket(), timeout=0.2)
    with pytest.raises(SlowConsumer):
        await send({"type": "interim"})
