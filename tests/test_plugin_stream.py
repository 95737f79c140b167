"""custom_stt.SpeechStream against the real sidecar with real speech fed as 48 kHz 10 ms frames."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from livekit.agents import APIConnectOptions, APIStatusError, stt
from livekit.agents.metrics import STTMetrics
from livekit.plugins import custom_stt

from .plugin_support import (
    Collected,
    build_script,
    check_utterance_order,
    collect,
    feed,
    frames_10ms,
)
from .support.audio import upsample_48k
from .support.sidecar import SidecarProcess, free_port
from .support.speech import clip, wer

KEY = "plugin-test-key"


@pytest.fixture
async def engine(sidecar: SidecarProcess) -> AsyncIterator[custom_stt.STT]:
    e = custom_stt.STT(base_url=sidecar.url, api_key=None)
    yield e
    await e.aclose()


@pytest.fixture(scope="module")
def keyed_sidecar() -> Iterator[SidecarProcess]:
    """A sidecar of our own (with an API key) that the tests may kill and restart."""
    proc = SidecarProcess(STT_API_KEY=KEY, STT_IDLE_TIMEOUT_S="30").start()
    yield proc
    proc.stop()


def errors_of(engine: stt.STT) -> list[stt.STTError]:
    seen: list[stt.STTError] = []
    engine.on("error", seen.append)
    return seen


async def test_stream_events_order_words_and_times(engine: custom_stt.STT) -> None:
    names = ["librivox_0880.wav", "goforward.wav", "librivox_0930.wav"]
    script = build_script(names, gap_s=1.5)
    frames = frames_10ms(upsample_48k(script.pcm))
    assert frames[0].sample_rate == 48000 and frames[0].samples_per_channel == 480

    metrics: list[STTMetrics] = []
    engine.on("metrics_collected", metrics.append)
    stream = engine.stream()
    stream.start_time_offset = 100.0  # as AgentSession does: times are on its timeline
    out = Collected()
    reader = asyncio.create_task(collect(stream, out))
    async with asyncio.timeout(60):
        await feed(stream, frames, speed=2.0)
        stream.end_input()
        await reader
    await stream.aclose()

    assert check_utterance_order(out.types()) == 3, out.types()
    assert len(out.finals) == 3, out.final_texts
    for ref, hyp in zip(script.texts, out.final_texts, strict=True):
        assert wer(ref, hyp) <= 0.3, (ref, hyp)
    for (true_start, true_end), ev in zip(script.spans, out.finals, strict=True):
        data = ev.alternatives[0]
        assert abs(data.start_time - 100.0 - true_start) < 0.7, (data.start_time, true_start)
        assert abs(data.end_time - 100.0 - true_end) < 0.7, (data.end_time, true_end)
        assert data.words and data.words[0].start_time >= 100.0
        assert 0.0 < data.confidence <= 1.0
        assert data.language == "en"
    interims = [e for e in out.events if e.type == stt.SpeechEventType.INTERIM_TRANSCRIPT]
    assert interims, "no interim transcripts"
    usage = sum(
        e.recognition_usage.audio_duration
        for e in out.events
        if e.type == stt.SpeechEventType.RECOGNITION_USAGE and e.recognition_usage
    )
    # every sample is billed once: the usage adds up to the audio streamed
    assert usage == pytest.approx(len(script.pcm) / 16000, abs=0.06)
    # the framework turns them into STTMetrics, plus one zero-usage connection report
    streamed = [m for m in metrics if m.streamed]
    assert sum(m.audio_duration for m in streamed) == pytest.approx(usage)
    assert any(m.acquire_time > 0 for m in streamed)
    assert all(m.metadata and m.metadata.model_provider == engine.provider for m in streamed)
    assert all(m.metadata and m.metadata.model_name == "whisper-1" for m in streamed)


async def test_flush_mid_utterance_gives_final(engine: custom_stt.STT) -> None:
    """librivox_0870 is one 7 s sentence without a pause the VAD would end; flush 3.5 s in."""
    script = build_script(["librivox_0870.wav"], gap_s=1.0)
    frames = frames_10ms(upsample_48k(script.pcm))
    stream = engine.stream()
    out = Collected()
    reader = asyncio.create_task(collect(stream, out))
    async with asyncio.timeout(60):
        n = await feed(stream, frames, speed=3.0, until=4.0)
        assert not out.finals
        stream.flush()
        await out.final_seen.wait()
        first = out.final_texts[0]
        await feed(stream, frames[n:], speed=3.0)
        stream.end_input()
        await reader
    await stream.aclose()

    assert "dashwood" in first.lower(), first
    assert "for them" not in first.lower(), first
    assert len(out.finals) == 2, out.final_texts
    assert wer(clip("librivox_0870.wav").text, " ".join(out.final_texts)) <= 0.25, out.final_texts


async def test_end_input_yields_every_final(engine: custom_stt.STT) -> None:
    """No pacing and no trailing silence: finals can only come from the close handshake."""
    script = build_script(["librivox_0880.wav", "goforward.wav"], gap_s=1.0)
    pcm = script.pcm[:-16000]  # cut the trailing silence so the VAD cannot endpoint
    stream = engine.stream()
    out = Collected()
    reader = asyncio.create_task(collect(stream, out))
    async with asyncio.timeout(60):
        await feed(stream, frames_10ms(upsample_48k(pcm)), speed=1000.0)
        stream.end_input()
        await reader
    await stream.aclose()
    assert len(out.finals) == 2, out.final_texts
    for ref, hyp in zip(script.texts, out.final_texts, strict=True):
        assert wer(ref, hyp) <= 0.3, (ref, hyp)
    assert out.events[-1].type in (
        stt.SpeechEventType.END_OF_SPEECH,
        stt.SpeechEventType.RECOGNITION_USAGE,
    )


async def test_invalid_config_is_final_with_server_message(engine: custom_stt.STT) -> None:
    """tiny.en is English-only: asking for German is refused, and not retried."""
    errors = errors_of(engine)
    stream = engine.stream(language="de")
    started = time.monotonic()
    with pytest.raises(APIStatusError) as exc:
        async with asyncio.timeout(10):
            async for _ in stream:
                pass
    await stream.aclose()
    assert time.monotonic() - started < 3.0
    assert not exc.value.retryable
    assert "invalid_config" in exc.value.message
    assert [e.recoverable for e in errors] == [False]


async def test_wrong_key_fails_fast_without_retrying(keyed_sidecar: SidecarProcess) -> None:
    engine = custom_stt.STT(base_url=keyed_sidecar.url, api_key="not-the-key")
    errors = errors_of(engine)
    stream = engine.stream()
    started = time.monotonic()
    with pytest.raises(APIStatusError) as exc:
        async with asyncio.timeout(10):
            async for _ in stream:
                pass
    assert time.monotonic() - started < 3.0
    assert exc.value.status_code == 401 and not exc.value.retryable
    assert "API key" in exc.value.message
    assert "not-the-key" not in repr(exc.value) and exc.value.__cause__ is None
    assert [e.recoverable for e in errors] == [False]
    await stream.aclose()
    await engine.aclose()


async def test_kill_mid_utterance_and_restart_is_lossless(keyed_sidecar: SidecarProcess) -> None:
    """SIGKILL the sidecar 3 s into a 7 s sentence, restart it on the same port while audio
    keeps coming: the stream reconnects, replays, and the sentence comes out whole, once,
    with its original times (librivox_0870 gives one final when nothing is killed)."""
    engine = custom_stt.STT(base_url=keyed_sidecar.url, api_key=KEY)
    errors = errors_of(engine)
    script = build_script(["librivox_0870.wav"], gap_s=1.5)
    frames = frames_10ms(upsample_48k(script.pcm))
    stream = engine.stream()
    out = Collected()
    reader = asyncio.create_task(collect(stream, out))
    async with asyncio.timeout(90):
        n = await feed(stream, frames, speed=1.5, until=3.5)
        assert not out.finals
        keyed_sidecar.kill()
        restart = asyncio.create_task(asyncio.to_thread(keyed_sidecar.start))
        await feed(stream, frames[n:], speed=1.5)
        await restart
        stream.end_input()
        await reader
    await stream.aclose()
    await engine.aclose()

    assert len(out.finals) == 1, out.final_texts
    assert wer(clip("librivox_0870.wav").text, out.final_texts[0]) <= 0.15, out.final_texts
    data = out.finals[0].alternatives[0]
    true_start, true_end = script.spans[0]
    # no drift from the outage: times are stream audio, not wall clock
    assert abs(data.start_time - true_start) < 0.7 and abs(data.end_time - true_end) < 0.7
    types = out.types()
    assert types.count(stt.SpeechEventType.START_OF_SPEECH) == 1, types
    assert types.count(stt.SpeechEventType.END_OF_SPEECH) == 1, types
    assert check_utterance_order(types) == 1
    assert errors and all(e.recoverable for e in errors)


async def test_sidecar_down_at_start_then_up(keyed_sidecar: SidecarProcess) -> None:
    keyed_sidecar.kill()
    engine = custom_stt.STT(base_url=keyed_sidecar.url, api_key=KEY)
    errors = errors_of(engine)
    script = build_script(["goforward.wav"], gap_s=1.5)
    stream = engine.stream()
    out = Collected()
    reader = asyncio.create_task(collect(stream, out))
    async with asyncio.timeout(60):
        feeding = asyncio.create_task(feed(stream, frames_10ms(upsample_48k(script.pcm)), speed=2))
        await asyncio.sleep(1.5)
        assert errors and all(e.recoverable for e in errors)  # retrying
        await asyncio.to_thread(keyed_sidecar.start)
        await feeding
        stream.end_input()
        await reader
    await stream.aclose()
    await engine.aclose()
    assert len(out.finals) == 1
    assert wer(clip("goforward.wav").text, out.final_texts[0]) <= 0.25, out.final_texts


async def test_unreachable_gives_up_after_explicit_retries() -> None:
    engine = custom_stt.STT(base_url=f"http://127.0.0.1:{free_port()}")
    stream = engine.stream(conn_options=APIConnectOptions(max_retry=1, retry_interval=0.1))
    started = time.monotonic()
    with pytest.raises(Exception) as exc:
        async with asyncio.timeout(10):
            async for _ in stream:
                pass
    assert "attempts" in str(exc.value) or "connect" in str(exc.value)
    assert time.monotonic() - started < 3.0  # explicit options honoured, not the long default
    await stream.aclose()
    await engine.aclose()


async def test_overloaded_is_retryable_and_recovers() -> None:
    """STT_MAX_STREAMS=1: a second stream gets 1013 + `overloaded` (retryable); with retries it
    gets in once the first stream closes, and transcribes."""
    proc = SidecarProcess(STT_MAX_STREAMS="1").start()
    engine = custom_stt.STT(base_url=proc.url)
    try:
        holder = engine.stream()
        holder_out = Collected()
        holder_reader = asyncio.create_task(collect(holder, holder_out))
        holder.push_frame(frames_10ms(upsample_48k(build_script([], lead_s=0.2).pcm))[0])
        await asyncio.sleep(0.5)  # let it connect and take the only slot

        rejected = engine.stream(conn_options=APIConnectOptions(max_retry=0, timeout=5))
        with pytest.raises(APIStatusError) as exc:
            async with asyncio.timeout(10):
                async for _ in rejected:
                    pass
        assert exc.value.retryable and exc.value.status_code == 503
        assert "overloaded" in exc.value.message
        await rejected.aclose()

        script = build_script(["goforward.wav"], gap_s=1.0)
        waiting = engine.stream()  # the plugin's default retry window
        out = Collected()
        reader = asyncio.create_task(collect(waiting, out))
        async with asyncio.timeout(30):
            await asyncio.sleep(1.0)  # it is being turned away and retrying meanwhile
            holder.end_input()
            await holder_reader
            await feed(waiting, frames_10ms(upsample_48k(script.pcm)), speed=4.0)
            waiting.end_input()
            await reader
        await waiting.aclose()
        await holder.aclose()
        assert wer(clip("goforward.wav").text, " ".join(out.final_texts)) <= 0.25
    finally:
        await engine.aclose()
        proc.stop()


async def test_update_options_mid_utterance_reconnects_losslessly(engine: custom_stt.STT) -> None:
    """A real option change reconnects the live stream and replays the unfinalized audio: the
    sentence being spoken still comes out once and whole. A no-op change does not reconnect."""
    script = build_script(["librivox_0870.wav"], gap_s=1.2)
    frames = frames_10ms(upsample_48k(script.pcm))
    stream = engine.stream()
    out = Collected()
    reader = asyncio.create_task(collect(stream, out))
    async with asyncio.timeout(60):
        n = await feed(stream, frames, speed=3.0, until=3.0)
        engine.update_options(language="en")  # unchanged
        assert not stream._reconnect_event.is_set()
        engine.update_options(interim_results=False)
        assert stream._opts.interim_results is False
        await feed(stream, frames[n:], speed=3.0)
        stream.end_input()
        await reader
    await stream.aclose()
    assert len(out.finals) == 1, out.final_texts
    assert wer(clip("librivox_0870.wav").text, out.final_texts[0]) <= 0.15, out.final_texts


async def test_stt_aclose_closes_live_streams_and_their_tasks(engine: custom_stt.STT) -> None:
    stream = engine.stream()
    out = Collected()
    reader = asyncio.create_task(collect(stream, out))
    frames = frames_10ms(upsample_48k(build_script(["goforward.wav"]).pcm))
    await feed(stream, frames, speed=4.0, until=1.5)  # mid-utterance, connection open
    mine = [t for t in asyncio.all_tasks() if t.get_name().startswith("custom_stt.")]
    assert mine, "expected the stream's send/recv tasks to be running"

    await engine.aclose()
    async with asyncio.timeout(5):
        await reader  # the iterator ends
    assert all(t.done() for t in mine)
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("custom_stt.")]
    with pytest.raises(RuntimeError):
        stream.push_frame(frames[0])


async def test_sigterm_restart_mid_utterance_loses_and_repeats_nothing(
    keyed_sidecar: SidecarProcess,
) -> None:
    """A graceful restart (SIGTERM): the sidecar finalizes the words so far and closes 1001;
    the stream reconnects and replays only what follows that final, so the sentence comes out
    as two finals with every word exactly once."""
    if keyed_sidecar.proc is None or keyed_sidecar.proc.poll() is not None:
        await asyncio.to_thread(keyed_sidecar.start)
    engine = custom_stt.STT(base_url=keyed_sidecar.url, api_key=KEY)
    script = build_script(["librivox_0870.wav"], gap_s=1.5)
    frames = frames_10ms(upsample_48k(script.pcm))
    stream = engine.stream()
    out = Collected()
    reader = asyncio.create_task(collect(stream, out))
    async with asyncio.timeout(90):
        n = await feed(stream, frames, speed=1.5, until=4.0)
        await asyncio.to_thread(keyed_sidecar.terminate)
        restart = asyncio.create_task(asyncio.to_thread(keyed_sidecar.start))
        await feed(stream, frames[n:], speed=1.5)
        await restart
        stream.end_input()
        await reader
    await stream.aclose()
    await engine.aclose()

    assert 1 <= len(out.finals) <= 2, out.final_texts
    joined = " ".join(out.final_texts)
    assert wer(clip("librivox_0870.wav").text, joined) <= 0.15, out.final_texts
    data = out.finals[0].alternatives[0]
    assert abs(data.start_time - script.spans[0][0]) < 0.7
