"""custom_stt.SpeechStream's protocol handling, driven by a scripted in-process sidecar.

Public behaviour only: frames go in through `push_frame`/`flush`/`end_input`, events and errors
come out of the stream and the STT's "error" event; the fake server records what was sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import APIConnectOptions, APIStatusError, stt
from livekit.plugins import custom_stt

from ..plugin_support import Collected, check_utterance_order, collect, frames_10ms
from .fake_sidecar import RATE, FakeConnection, fake_sidecar, plain_sidecar, wait_for

NO_RETRY = APIConnectOptions(max_retry=0, timeout=5.0)
FAST_RETRY = APIConnectOptions(max_retry=3, retry_interval=0.05, timeout=5.0)


def pattern(seconds: float) -> np.ndarray:
    """Distinct, non-silent samples, so replayed bytes can be compared exactly."""
    n = int(seconds * RATE)
    return (np.arange(n, dtype=np.int64) * 7919 % 30001 - 15000).astype(np.int16)


def errors_of(engine: stt.STT) -> list[stt.STTError]:
    seen: list[stt.STTError] = []
    engine.on("error", seen.append)
    return seen


async def run_stream(
    stream: custom_stt.SpeechStream, pcm: np.ndarray, *, end: bool = True
) -> Collected:
    """Push ``pcm`` (16 kHz mono) as 10 ms frames, end the input, collect every event."""
    out = Collected()
    reader = asyncio.create_task(collect(stream, out))
    for frame in frames_10ms(pcm, rate=RATE):
        stream.push_frame(frame)
    if end:
        stream.end_input()
    async with asyncio.timeout(10):
        await reader
    return out


@pytest.fixture
async def engine_factory() -> AsyncIterator[list[custom_stt.STT]]:
    engines: list[custom_stt.STT] = []
    yield engines
    for e in engines:
        await e.aclose()


async def test_interim_and_final_events(engine_factory: list[custom_stt.STT]) -> None:
    async def script(conn: FakeConnection) -> None:
        await conn.ready()
        await conn.audio_until(0.5)
        await conn.send(type="speech_started", utterance_id=1, start=0.1)
        await conn.send(
            type="interim", utterance_id=1, text=" hello ", start=0.1, end=0.4, stable_text="hel "
        )
        await conn.send(type="interim", utterance_id=1, text="  ", start=0.1, end=0.4)
        await conn.send(
            type="final",
            utterance_id=1,
            text=" hello world ",
            start=0.1,
            end=0.5,
            confidence=1.7,
            language="de",
            words=[
                {"word": " hello", "start": 0.1, "end": 0.3, "probability": 0.5},
                {"word": " ", "start": 0.3, "end": 0.3},
                {"word": "world", "start": 0.3, "end": 0.5, "confidence": -1},
            ],
        )
        await conn.send(type="speech_ended", utterance_id=1, end=0.5)
        await conn.serve_like_sidecar()

    async with fake_sidecar(script) as server:
        engine = custom_stt.STT(base_url=server.url, api_key="k", language="en-US", prompt="Kim")
        engine_factory.append(engine)
        stream = engine.stream(conn_options=NO_RETRY)
        stream.start_time_offset = 5.0
        out = await run_stream(stream, pattern(1.0))

    (conn,) = server.connections
    assert conn.config == {
        "type": "config",
        "language": "en",
        "sample_rate": RATE,
        "encoding": "pcm_s16le",
        "channels": 1,
        "task": "transcribe",
        "interim_results": True,
        "prompt": "Kim",
    }
    assert server.requests[0].headers["Authorization"] == "Bearer k"
    assert bytes(conn.audio) == pattern(1.0).tobytes()
    assert [d["type"] for _, d in conn.texts] == ["flush", "close"]  # end_input() flushes

    assert check_utterance_order(out.types()) == 1
    (interim,) = [e for e in out.events if e.type == stt.SpeechEventType.INTERIM_TRANSCRIPT]
    assert interim.request_id == "s1:1"
    alt = interim.alternatives[0]
    assert (alt.text, alt.language) == ("hello", "en-US")
    assert alt.start_time == pytest.approx(5.1) and alt.end_time == pytest.approx(5.4)
    assert alt.metadata == {"stable_text": "hel"}

    (final,) = out.finals
    assert final.request_id == "s1:1"
    alt = final.alternatives[0]
    assert (alt.text, alt.language, alt.confidence) == ("hello world", "de", 1.0)
    assert alt.start_time == pytest.approx(5.1) and alt.end_time == pytest.approx(5.5)
    assert alt.words is not None
    assert [str(w) for w in alt.words] == ["hello", "world"]
    assert [w.confidence for w in alt.words] == [0.5, 0.0]
    assert alt.words[1].start_time == pytest.approx(5.3)
    usage = [e.recognition_usage.audio_duration for e in out.events if e.recognition_usage]
    assert sum(usage) == pytest.approx(1.0)


async def test_stereo_frames_are_averaged_to_mono(engine_factory: list[custom_stt.STT]) -> None:
    async with fake_sidecar() as server:
        engine = custom_stt.STT(base_url=server.url)
        engine_factory.append(engine)
        stream = engine.stream(conn_options=NO_RETRY)
        left, right = np.full(RATE // 10, 1000, np.int16), np.full(RATE // 10, 3001, np.int16)
        stereo = np.stack([left, right], axis=1).reshape(-1)
        stream.push_frame(rtc.AudioFrame(stereo.tobytes(), RATE, 2, RATE // 10))
        stream.end_input()
        async with asyncio.timeout(10):
            async for _ in stream:
                pass
    samples = np.frombuffer(bytes(server.connections[0].audio), np.int16)
    assert len(samples) == RATE // 10 and set(samples.tolist()) == {2000}


async def test_flush_is_sent_after_the_audio_before_it(
    engine_factory: list[custom_stt.STT],
) -> None:
    async with fake_sidecar() as server:
        engine = custom_stt.STT(base_url=server.url)
        engine_factory.append(engine)
        stream = engine.stream(conn_options=NO_RETRY)
        out = Collected()
        reader = asyncio.create_task(collect(stream, out))
        # 0.33 s: sixteen 20 ms chunks plus a remainder the flush must send first
        before, after = pattern(0.33), pattern(0.2)
        for frame in frames_10ms(before, rate=RATE):
            stream.push_frame(frame)
        stream.flush()
        for frame in frames_10ms(after, rate=RATE):
            stream.push_frame(frame)
        stream.end_input()
        async with asyncio.timeout(10):
            await reader
    (conn,) = server.connections
    assert [(pos, d["type"]) for pos, d in conn.texts] == [
        (before.nbytes, "flush"),
        (before.nbytes + after.nbytes, "flush"),  # end_input() flushes too
        (before.nbytes + after.nbytes, "close"),
    ]
    assert bytes(conn.audio) == before.tobytes() + after.tobytes()
    assert not out.finals


async def test_reconnect_after_close_code_replays_unfinalized_audio(
    engine_factory: list[custom_stt.STT],
) -> None:
    """Connection 1 finalizes 0.2-0.4 s, reports a second utterance at 0.5 s, then closes with
    1013; connection 2 must get exactly the audio from 0.4 s on, with times continuing."""

    async def first(conn: FakeConnection) -> None:
        await conn.ready()
        await conn.audio_until(0.6)
        await conn.send(type="speech_started", utterance_id=1, start=0.2)
        await conn.send(type="final", utterance_id=1, text="one", start=0.2, end=0.4)
        await conn.send(type="speech_ended", utterance_id=1, end=0.4)
        await conn.send(type="speech_started", utterance_id=2, start=0.5)
        await conn.audio_until(1.0)
        await conn.ws.close(code=1013, message=b"overloaded")

    async def second(conn: FakeConnection) -> None:
        await conn.ready()
        while (data := await conn.next_text()) is not None and data["type"] != "close":
            pass
        await conn.send(type="final", utterance_id=1, text="two", start=0.1, end=0.5)
        await conn.send(type="speech_ended", utterance_id=1, end=0.5)
        await conn.send(type="closed")
        await conn.ws.close()

    audio = pattern(1.5)
    async with fake_sidecar(first, second) as server:
        engine = custom_stt.STT(base_url=server.url)
        engine_factory.append(engine)
        errors = errors_of(engine)
        stream = engine.stream(conn_options=FAST_RETRY)
        stream.start_time_offset = 2.0
        out = await run_stream(stream, audio)

    one, two = server.connections
    assert two.config == one.config
    assert bytes(two.audio) == audio.tobytes()[int(0.4 * RATE) * 2 :]
    assert out.final_texts == ["one", "two"]
    assert [e.request_id for e in out.finals] == ["s1:1", "s2:1"]
    a, b = (e.alternatives[0] for e in out.finals)
    assert (a.start_time, a.end_time) == (pytest.approx(2.2), pytest.approx(2.4))
    # connection 2's time 0 is stream time 0.4 s; the retry delay does not shift it
    assert (b.start_time, b.end_time) == (
        pytest.approx(2.5, abs=1e-3),
        pytest.approx(2.9, abs=1e-3),
    )
    assert [(e.recoverable, getattr(e.error, "status_code", None)) for e in errors] == [
        (True, 1013)
    ]
    types = out.types()
    assert types.count(stt.SpeechEventType.START_OF_SPEECH) == 2
    assert types.count(stt.SpeechEventType.END_OF_SPEECH) == 2
    usage = sum(e.recognition_usage.audio_duration for e in out.events if e.recognition_usage)
    assert usage == pytest.approx(1.5)  # replayed audio is not billed twice


async def test_dropped_connection_replays_unacknowledged_flush(
    engine_factory: list[custom_stt.STT],
) -> None:
    async def first(conn: FakeConnection) -> None:
        await conn.ready()
        while (data := await conn.next_text()) is not None and data["type"] != "flush":
            pass
        conn.abort()

    audio = pattern(0.3)
    async with fake_sidecar(first, plain_sidecar) as server:
        engine = custom_stt.STT(base_url=server.url)
        engine_factory.append(engine)
        stream = engine.stream(conn_options=FAST_RETRY)
        out = Collected()
        reader = asyncio.create_task(collect(stream, out))
        for frame in frames_10ms(audio, rate=RATE):
            stream.push_frame(frame)
        stream.flush()
        await wait_for(lambda: len(server.connections) == 2)
        stream.end_input()
        async with asyncio.timeout(10):
            await reader
    second = server.connections[1]
    assert bytes(second.audio) == audio.tobytes()
    assert [(pos, d["type"]) for pos, d in second.texts] == [
        (audio.nbytes, "flush"),  # the replayed one, at its original position
        (audio.nbytes, "flush"),  # end_input()'s
        (audio.nbytes, "close"),
    ]


@pytest.mark.parametrize(
    ("close_code", "retryable"),
    [(1008, False), (1011, True), (1001, True), (4000, True)],
)
async def test_close_codes_surface_as_status_errors(
    engine_factory: list[custom_stt.STT], close_code: int, retryable: bool
) -> None:
    async def script(conn: FakeConnection) -> None:
        await conn.ready()
        await conn.ws.close(code=close_code)

    async with fake_sidecar(script) as server:
        engine = custom_stt.STT(base_url=server.url)
        engine_factory.append(engine)
        errors = errors_of(engine)
        stream = engine.stream(conn_options=NO_RETRY)
        with pytest.raises(APIStatusError) as exc:
            await run_stream(stream, pattern(0.1), end=False)
        await stream.aclose()
    assert (exc.value.status_code, exc.value.retryable) == (close_code, retryable)
    assert [e.recoverable for e in errors] == [False]


async def test_policy_close_is_not_retried(engine_factory: list[custom_stt.STT]) -> None:
    async def script(conn: FakeConnection) -> None:
        await conn.ready()
        await conn.ws.close(code=1008)

    async with fake_sidecar(script) as server:
        engine = custom_stt.STT(base_url=server.url)
        engine_factory.append(engine)
        stream = engine.stream(conn_options=FAST_RETRY)
        with pytest.raises(APIStatusError):
            await run_stream(stream, pattern(0.1), end=False)
        await stream.aclose()
    assert len(server.connections) == 1


async def test_config_error_is_final_with_server_message(
    engine_factory: list[custom_stt.STT],
) -> None:
    async def script(conn: FakeConnection) -> None:
        await conn.send(type="error", code="invalid_config", message="English-only model")
        await conn.ws.close(code=1008)

    async with fake_sidecar(script) as server:
        engine = custom_stt.STT(base_url=server.url)
        engine_factory.append(engine)
        errors = errors_of(engine)
        stream = engine.stream(language="de", conn_options=FAST_RETRY)
        with pytest.raises(APIStatusError) as exc:
            await run_stream(stream, pattern(0.1), end=False)
        await stream.aclose()
    assert len(server.connections) == 1
    assert server.connections[0].config["language"] == "de"
    assert (exc.value.status_code, exc.value.retryable) == (400, False)
    assert "invalid_config" in exc.value.message and "English-only" in exc.value.message
    assert [e.recoverable for e in errors] == [False]


@pytest.mark.parametrize(
    ("status", "retryable", "hint"),
    [(401, False, "API key"), (404, False, "/v1/stream"), (503, True, "not ready")],
)
async def test_handshake_refusal(
    engine_factory: list[custom_stt.STT], status: int, retryable: bool, hint: str
) -> None:
    async with fake_sidecar(handshake_status=status) as server:
        engine = custom_stt.STT(base_url=server.url, api_key="secret-key")
        engine_factory.append(engine)
        stream = engine.stream(conn_options=NO_RETRY)
        with pytest.raises(APIStatusError) as exc:
            await run_stream(stream, pattern(0.1), end=False)
        await stream.aclose()
    assert (exc.value.status_code, exc.value.retryable) == (status, retryable)
    assert hint in exc.value.message and exc.value.request_id == "req-handshake"
    # aiohttp's errors carry the request headers: none may leak the key
    assert "secret-key" not in repr(exc.value) and exc.value.__cause__ is None
    assert server.requests[0].headers["Authorization"] == "Bearer secret-key"


async def test_internal_error_is_recoverable_and_the_stream_goes_on(
    engine_factory: list[custom_stt.STT],
) -> None:
    async def script(conn: FakeConnection) -> None:
        await conn.ready()
        await conn.audio_until(0.2)
        await conn.send(type="speech_started", utterance_id=1, start=0.0)
        await conn.send(type="error", code="internal", message="decode failed")
        await conn.send(type="speech_ended", utterance_id=1, end=0.2)
        await conn.serve_like_sidecar()

    async with fake_sidecar(script) as server:
        engine = custom_stt.STT(base_url=server.url)
        engine_factory.append(engine)
        errors = errors_of(engine)
        stream = engine.stream(conn_options=FAST_RETRY)
        out = await run_stream(stream, pattern(0.5))
    assert len(server.connections) == 1
    assert [(e.recoverable, getattr(e.error, "status_code", None)) for e in errors] == [(True, 500)]
    assert out.types()[0] == stt.SpeechEventType.START_OF_SPEECH
    assert stt.SpeechEventType.END_OF_SPEECH in out.types()


async def test_update_options_reconnects_only_on_a_real_change(
    engine_factory: list[custom_stt.STT],
) -> None:
    audio = pattern(0.6)
    async with fake_sidecar() as server:
        engine = custom_stt.STT(base_url=server.url, language="en")
        engine_factory.append(engine)
        stream = engine.stream(conn_options=NO_RETRY)
        out = Collected()
        reader = asyncio.create_task(collect(stream, out))
        frames = frames_10ms(audio, rate=RATE)
        for frame in frames[:30]:
            stream.push_frame(frame)
        await wait_for(lambda: bool(server.connections) and server.connections[0].seconds >= 0.3)
        engine.update_options(language="en")  # no change: same connection
        await asyncio.sleep(0.05)
        assert len(server.connections) == 1
        engine.update_options(language="de", interim_results=False)
        await wait_for(lambda: len(server.connections) == 2)
        for frame in frames[30:]:
            stream.push_frame(frame)
        stream.end_input()
        async with asyncio.timeout(10):
            await reader
    one, two = server.connections
    assert (one.config["language"], one.config["interim_results"]) == ("en", True)
    assert (two.config["language"], two.config["interim_results"]) == ("de", False)
    # nothing was finalized, so the new connection got all of it, the old audio replayed first
    assert bytes(two.audio) == audio.tobytes()
