"""The replay contract of custom_stt.SpeechStream, byte for byte, against a scripted server.

The real sidecar is used everywhere else (see tests/test_plugin_stream.py, including SIGKILL and
restart). Only here do we need a server that cuts a connection at an exact point of the audio,
ignores a flush, and records every byte it got, to check precisely what is replayed: the audio
since the last final's end (nothing older, nothing lost, including the chunker's remainder and
frames read by the failed attempt), the unacknowledged flush at the same sample position, and
times that continue from the original stream despite the outage.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import WSMsgType, web
from livekit import rtc
from livekit.agents import APIConnectOptions, stt
from livekit.plugins import custom_stt

from ..plugin_support import Collected, clip_pcm, collect

RATE = 16000


@dataclass
class Recorded:
    """What one connection received: audio bytes, and text messages with the byte count then."""

    audio: bytearray = field(default_factory=bytearray)
    texts: list[tuple[int, dict]] = field(default_factory=list)


class ScriptedSidecar:
    """Connection 1 finalizes 0.2-0.6 s, ignores flushes, and is cut after 1.5 s of audio.
    Connection 2 answers like the real sidecar: finals on flush and close, then `closed`."""

    def __init__(self) -> None:
        self.connections: list[Recorded] = []
        self.cut = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/stream", self._handler)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        rec = Recorded()
        self.connections.append(rec)
        n = len(self.connections)
        config = json.loads((await ws.receive()).data)
        assert config["type"] == "config" and config["sample_rate"] == RATE
        await ws.send_json({"type": "ready", "session_id": f"s{n}", "sample_rate": RATE})
        finalized = False
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                rec.audio.extend(msg.data)
                seconds = len(rec.audio) / 2 / RATE
                if n == 1 and seconds >= 1.0 and not finalized:
                    finalized = True
                    await ws.send_json({"type": "speech_started", "utterance_id": 1, "start": 0.2})
                    await ws.send_json(_final(1, "he was not", 0.2, 0.6))
                    await ws.send_json({"type": "speech_ended", "utterance_id": 1, "end": 0.6})
                    await ws.send_json({"type": "speech_started", "utterance_id": 2, "start": 0.9})
                if n == 1 and seconds >= 1.5:
                    self.cut.set()
                    # a crash, not a close handshake: drop the TCP connection
                    assert request.transport is not None
                    request.transport.abort()
                    return ws
            elif msg.type == WSMsgType.TEXT:
                data = json.loads(msg.data)
                rec.texts.append((len(rec.audio), data))
                if n == 1:
                    continue  # the flush is never acknowledged on the first connection
                if data["type"] == "flush":
                    if not any(d["type"] == "flushed" for _, d in rec.texts):
                        # relative to this connection's first sample
                        await ws.send_json(
                            {"type": "speech_started", "utterance_id": 1, "start": 0.3}
                        )
                        await ws.send_json(_final(1, "an ill disposed", 0.3, 0.55))
                        await ws.send_json({"type": "speech_ended", "utterance_id": 1, "end": 0.55})
                    await ws.send_json({"type": "flushed"})
                    rec.texts.append((len(rec.audio), {"type": "flushed"}))
                elif data["type"] == "close":
                    await ws.send_json({"type": "closed"})
                    await ws.close()
        return ws


def _final(uid: int, text: str, start: float, end: float) -> dict:
    words = text.split()
    step = (end - start) / len(words)
    return {
        "type": "final",
        "utterance_id": uid,
        "text": text,
        "start": start,
        "end": end,
        "confidence": 0.9,
        "language": "en",
        "words": [
            {"word": w, "start": start + i * step, "end": start + (i + 1) * step, "confidence": 0.9}
            for i, w in enumerate(words)
        ],
    }


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedSidecar]:
    server = ScriptedSidecar()
    await server.start()
    yield server
    await server.stop()


async def test_replay_after_cut_is_exact(scripted: ScriptedSidecar) -> None:
    # 2 s of real speech at 16 kHz (no resampling, so bytes can be compared), pushed as 7 ms
    # frames so the 20 ms chunker always holds a remainder when the connection is cut
    audio = clip_pcm("librivox_0880.wav")[: 2 * RATE]
    frame_len = 112
    frames = [
        rtc.AudioFrame(audio[i : i + frame_len].tobytes(), RATE, 1, len(audio[i : i + frame_len]))
        for i in range(0, len(audio), frame_len)
    ]
    flush_at = 1.2
    engine = custom_stt.STT(base_url=scripted.url)
    errors: list[stt.STTError] = []
    engine.on("error", errors.append)
    stream = engine.stream(conn_options=APIConnectOptions(max_retry=3, retry_interval=0.5))
    stream.start_time_offset = 10.0
    out = Collected()
    reader = asyncio.create_task(collect(stream, out))
    async with asyncio.timeout(20):
        pushed = 0
        flushed = False
        for frame in frames:
            stream.push_frame(frame)
            pushed += frame.samples_per_channel
            if not flushed and pushed >= flush_at * RATE:
                flushed = True
                flush_sample = pushed
                stream.flush()
            await asyncio.sleep(frame.samples_per_channel / RATE / 4)  # 4x real time
        stream.end_input()
        await reader
    await stream.aclose()
    await engine.aclose()

    assert scripted.cut.is_set() and len(scripted.connections) == 2
    first, second = scripted.connections
    trim = int(0.6 * RATE) * 2
    # the second connection got exactly the audio after the first final's end, to the last byte
    assert bytes(second.audio) == audio.tobytes()[trim:]
    assert len(first.audio) >= int(1.5 * RATE) * 2
    # the unacknowledged flush is replayed at the same sample position
    flush_positions = [pos for pos, d in second.texts if d["type"] == "flush"]
    assert flush_positions[0] == flush_sample * 2 - trim
    assert second.texts[-1][1]["type"] == "close"

    assert out.final_texts == ["he was not", "an ill disposed"]
    one, two = (e.alternatives[0] for e in out.finals)
    assert one.start_time == pytest.approx(10.2) and one.end_time == pytest.approx(10.6)
    # connection 2's time 0 is stream time 0.6 s, and the outage (>= 0.1 s of retry delay)
    # does not shift it
    assert two.start_time == pytest.approx(10.9, abs=1e-3)
    assert two.end_time == pytest.approx(11.15, abs=1e-3)
    assert two.words and two.words[0].start_time == pytest.approx(10.9, abs=1e-3)
    assert [e.request_id for e in out.finals] == ["s1:1", "s2:1"]
    assert [e.recoverable for e in errors] == [True]
    usage = sum(
        e.recognition_usage.audio_duration for e in out.events if e.recognition_usage is not None
    )
    assert usage == pytest.approx(2.0, abs=1e-3)  # replayed audio is not billed twice
    types = [e.type for e in out.events]
    assert types.count(stt.SpeechEventType.START_OF_SPEECH) == 2
    assert types.count(stt.SpeechEventType.END_OF_SPEECH) == 2
