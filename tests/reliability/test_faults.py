"""Faults: clients vanishing mid-utterance by the thousand, the sidecar SIGKILLed and restarted
under the plugin and the worker pipeline, a sidecar that stays away for 10 s, SIGTERM with a
client that does not read. Real sidecar processes, real plugin, real speech."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import numpy as np
import pytest
from livekit import rtc
from livekit.agents import stt
from livekit.plugins import custom_stt

from agent.publisher import TranscriptPublisher
from agent.transcriber import ParticipantTranscriber, Speaker
from stt_sidecar.replay import assign_finals, load_pcm16, replay

from ..agent_support import RecordingParticipant, speech
from ..plugin_support import Collected, collect, feed, frames_10ms
from ..streaming_helpers import open_stream
from ..support.audio import upsample_48k
from ..support.resources import open_fds, rss_mb
from ..support.sidecar import SidecarProcess, free_port
from ..support.speech import DATA, clip, conversation, read_pcm16, wer
from .ws_support import RawClient, ready, wait_streams_gone

# jfk.wav has two ~1.2 s pauses inside its sentence: it may come out as several finals.
MULTI_FINAL_CLIPS = {"jfk.wav"}


@pytest.fixture(scope="module")
def churn_sidecar() -> Iterator[SidecarProcess]:
    """A sidecar of its own, so its RSS and FDs reflect only what the churn test does."""
    proc = SidecarProcess(STT_MAX_STREAMS="32", STT_IDLE_TIMEOUT_S="30").start()
    yield proc
    proc.stop()


# -- clients that vanish ----------------------------------------------------------------------


async def _vanish(sidecar: SidecarProcess, speech_1s: bytes, how: int) -> None:
    """One client that disappears without a goodbye (TCP abort), at one of five points."""
    client = await RawClient.open(sidecar)
    try:
        if how == 0:
            return  # right after the handshake
        await client.send_text(json.dumps({"type": "config", "sample_rate": 16000}))
        if how == 1:
            return  # config sent, maybe not even read yet
        first = await client.read_frame()
        assert first is not None and json.loads(first.text)["type"] == "ready", first
        if how == 4:
            # a polite end (`close` -> `closed`), then the abort instead of the close handshake
            await client.send_text(json.dumps({"type": "close"}))
            frames = await client.read_messages(until="closed")
            assert frames and json.loads(frames[-1].text)["type"] == "closed", frames
            return
        await client.send_binary(speech_1s)
        if how == 2:
            return  # a second of speech in flight
        # mid-utterance for sure: the VAD opened one (and an interim may be decoding)
        frames = await client.read_messages(until="speech_started")
        assert frames and json.loads(frames[-1].text)["type"] == "speech_started", frames
    finally:
        client.abort()


async def test_thousands_of_abrupt_disconnects_leak_nothing(churn_sidecar: SidecarProcess) -> None:
    """2,000 clients vanish (TCP abort) at every stage of a stream, half of them mid-utterance
    and some right after a polite `close`: afterwards no stream is active, open FDs and RSS are
    back where they were, and the server never abandoned a pending task.

    This caught two leaks: a stream ended with `close` left its interim task pending forever,
    and every closed stream's session (with its 1.4 MB audio buffer) was kept alive by a
    reference cycle through its cancelled tasks until the cyclic GC ran: RSS grew by ~400 MB
    over 2,000 aborted streams before the fix.
    """
    pcm, _ = read_pcm16(clip("librivox_0870.wav").path)
    speech_1s = pcm[16000:32000].tobytes()  # "...john dashwood had then..."
    concurrency = asyncio.Semaphore(12)

    async def churn(n: int) -> None:
        async def one(i: int) -> None:
            async with concurrency:
                await _vanish(churn_sidecar, speech_1s, (0, 1, 2, 3, 3, 3, 3, 4)[i % 8])

        await asyncio.gather(*(one(i) for i in range(n)))
        await wait_streams_gone(churn_sidecar)

    await churn(200)  # warm-up: allocator pools, ONNX arenas, the decoder's first interims
    await asyncio.sleep(0.5)
    fds_before, rss_before = open_fds(churn_sidecar), rss_mb(churn_sidecar)
    started = time.monotonic()
    await churn(2000)
    elapsed = time.monotonic() - started
    await asyncio.sleep(0.5)
    fds_after, rss_after = open_fds(churn_sidecar), rss_mb(churn_sidecar)
    print(
        f"2000 aborted streams in {elapsed:.1f} s: FDs {fds_before} -> {fds_after}, "
        f"RSS {rss_before:.0f} -> {rss_after:.0f} MiB"
    )
    assert fds_after <= fds_before + 2, (fds_before, fds_after)
    assert rss_after - rss_before < 40, f"RSS {rss_before:.0f} -> {rss_after:.0f} MiB"
    assert "Task was destroyed but it is pending" not in churn_sidecar.log()
    assert "Traceback" not in churn_sidecar.log()

    # and it still transcribes
    c = clip("goforward.wav")
    audio, rate = load_pcm16(c.path)
    result = await replay(churn_sidecar.ws_url, audio, rate, speed=0)
    assert wer(c.text, " ".join(f["text"] for f in result.finals)) <= 0.25
    assert ready(churn_sidecar)["active_streams"] == 0


# -- the sidecar killed under the plugin and the worker ---------------------------------------


def check_conversation_finals(finals: list[dict[str, Any]], who: str) -> None:
    """Every utterance of conversation.wav came out as a final exactly once, with its words.

    `finals` have `start`/`end` on the stream's own timeline and `text`.
    """
    utterances = conversation()["utterances"]
    groups = assign_finals(finals, utterances)
    texts = [f["text"] for f in finals]
    assert groups[-1] == [], f"{who}: finals outside any utterance: {groups[-1]}"
    for utterance, group in zip(utterances, groups[:-1], strict=True):
        assert group, f"{who}: no final for {utterance['audio']}: {texts}"
        if utterance["audio"] not in MULTI_FINAL_CLIPS:
            assert len(group) == 1, (who, utterance["audio"], [g["text"] for g in group])
        said = " ".join(g["text"] for g in group)
        # a replayed phrase delivered twice would be a run of insertions: WER well above this
        assert wer(utterance["text"], said) <= 0.25, (who, utterance["text"], said)
    hyps = [" ".join(g["text"] for g in group) for group in groups[:-1]]
    assert wer([u["text"] for u in utterances], hyps) <= 0.1, (who, hyps)


async def frames_16k(pcm: np.ndarray, speed: float) -> AsyncIterator[rtc.AudioFrame]:
    """10 ms 16 kHz frames paced at `speed` x real time: what `rtc.AudioStream` hands the
    worker (it asks for 16 kHz), without a room."""
    started = time.monotonic()
    for i in range(0, len(pcm) - 159, 160):
        yield rtc.AudioFrame(pcm[i : i + 160].tobytes(), 16000, 1, 160)
        ahead = (i + 160) / 16000 / speed - (time.monotonic() - started)
        if ahead > 0.01:
            await asyncio.sleep(ahead)


async def test_sigkill_and_restart_during_a_conversation_loses_and_repeats_nothing() -> None:
    """conversation.wav at 2x real time through the plugin (48 kHz 10 ms frames) and, at the
    same time, through the worker's per-participant pipeline (16 kHz frames, as its
    `rtc.AudioStream` delivers them). The sidecar is SIGKILLed twice, in the middle of an
    utterance each time (5.0 s: "...john dashwood had then..."; 29.5 s: "...rather cold
    hearted..."), and restarted on the same port. Both must give every utterance exactly once,
    with the right words and times on the original timeline."""
    sidecar = SidecarProcess(port=free_port(), STT_MAX_STREAMS="8", STT_IDLE_TIMEOUT_S="30")
    sidecar.start()
    speed = 2.0
    pcm, rate = read_pcm16(DATA / "conversation.wav")
    assert rate == 16000
    engine = custom_stt.STT(base_url=sidecar.url, api_key=None, language="en")
    errors: list[stt.STTError] = []
    engine.on("error", errors.append)
    stream = engine.stream()
    out = Collected()
    worker_engine = custom_stt.STT(base_url=sidecar.url, api_key=None, language="en")
    room = RecordingParticipant()
    transcriber = ParticipantTranscriber(
        speaker=Speaker("ada", "Ada", "TR_ada"),
        audio=frames_16k(pcm, speed),
        stt=worker_engine,
        publisher=TranscriptPublisher(room),
    )
    kills: list[float] = []

    async def kill_at(audio_seconds: list[float]) -> None:
        t0 = time.monotonic()
        for at in audio_seconds:
            await asyncio.sleep(max(0.0, t0 + at / speed - time.monotonic()))
            await asyncio.to_thread(sidecar.kill)
            kills.append(time.monotonic() - t0)
            sidecar.start(wait=False)  # same port; the model loads in ~2 s
            await asyncio.to_thread(sidecar.wait_ready, 60)

    reader = asyncio.create_task(collect(stream, out))
    try:
        transcriber.start()
        async with asyncio.timeout(120):
            await asyncio.gather(
                feed(stream, frames_10ms(upsample_48k(pcm)), speed=speed),
                kill_at([5.0, 29.5]),
            )
            stream.end_input()
            await reader
            await room.wait_for(lambda: len(room.finals()) >= 7, timeout=20)
            await transcriber.aclose()
    finally:
        reader.cancel()
        await stream.aclose()
        await engine.aclose()
        await transcriber.aclose()
        await worker_engine.aclose()
        await asyncio.to_thread(sidecar.stop)

    assert len(kills) == 2
    plugin_finals = [
        {
            "text": e.alternatives[0].text,
            "start": e.alternatives[0].start_time,
            "end": e.alternatives[0].end_time,
        }
        for e in out.finals
    ]
    print(
        f"plugin: {len(plugin_finals)} finals, worker: {len(room.finals())} finals "
        f"for 7 utterances, 2 kills"
    )
    check_conversation_finals(plugin_finals, "plugin")
    check_conversation_finals(room.finals(), "worker")
    # the plugin saw the outages and rode them out: only recoverable errors
    assert errors and all(e.recoverable for e in errors), errors


async def test_sidecar_away_for_ten_seconds_worker_keeps_the_participant(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The sidecar vanishes (SIGKILL) for 10 s while a participant keeps talking, with the
    plugin's default retry policy: the plugin retries on its own, the participant's pipeline
    never stops or raises, and transcripts resume once the sidecar is back, including the
    sentence spoken while it was away (kept in the plugin's replay buffer)."""
    sidecar = SidecarProcess(port=free_port(), STT_MAX_STREAMS="8", STT_IDLE_TIMEOUT_S="30")
    sidecar.start()
    engine = custom_stt.STT(base_url=sidecar.url, api_key=None, language="en")
    errors: list[tuple[float, stt.STTError]] = []
    engine.on("error", lambda e: errors.append((time.monotonic(), e)))
    room = RecordingParticipant()
    # 0.3-3.1 s "go forward", the outage from 4.6 s to 14.6 s with "he was not an ill disposed
    # young man" at 7.0-10.0 s, then "he might even have been made amiable himself" at 17 s
    pcm = speech(0.3, "goforward.wav", 1.5, 2.4, "librivox_0880.wav", 7.0, "librivox_0930.wav", 1.5)
    transcriber = ParticipantTranscriber(
        speaker=Speaker("bo", "Bo", "TR_bo"),
        audio=frames_16k(pcm, 1.0),
        stt=engine,
        publisher=TranscriptPublisher(room),
    )

    async def outage() -> None:
        await asyncio.sleep(4.6)
        await asyncio.to_thread(sidecar.kill)
        await asyncio.sleep(10.0)
        sidecar.start(wait=False)

    try:
        with caplog.at_level("INFO"):
            transcriber.start()
            # "go forward"'s final comes before the kill, or (when a busy machine decodes it
            # after 4.6 s) from the replay once the sidecar is back: either way exactly once
            await asyncio.gather(outage(), room.wait_for(lambda: len(room.finals()) >= 1, 30))
            await room.wait_for(lambda: len(room.finals()) >= 3, timeout=20)
            stt_task = transcriber._stt_task
            assert stt_task is not None and not stt_task.done(), "the pipeline stopped"
            await transcriber.aclose()
    finally:
        await transcriber.aclose()
        await engine.aclose()
        await asyncio.to_thread(sidecar.stop)

    texts = [f["text"] for f in room.finals()]
    gave_up = [e for _, e in errors if not e.recoverable]
    print(
        f"finals: {texts}; plugin errors (s since the first, recoverable): "
        f"{[(round(t - errors[0][0], 1), e.recoverable) for t, e in errors]}"
    )
    # the plugin retried on its own: several recoverable failures, about a second apart
    recoverable = [t for t, e in errors if e.recoverable]
    assert len(recoverable) >= 5, errors
    agent_errors = [
        r.getMessage() for r in caplog.records if r.name.startswith("agent") and r.levelno >= 40
    ]
    # The plugin's default retries (20, ~1 s apart) outlast 10 s down plus the model's load: the
    # same stream continued and replayed what was said meanwhile, so nothing is lost and the
    # worker never had to step in. (With the former 12 tries, ~11 s, the last try was the one
    # that got through: no margin at all on a busier machine.)
    assert gave_up == [] and agent_errors == [], (errors, agent_errors)
    window = custom_stt.DEFAULT_CONN_OPTIONS.max_retry
    assert len(errors) <= window - 3, f"{len(errors)} of {window} tries used: no margin left"
    refs = ["goforward.wav", "librivox_0880.wav", "librivox_0930.wav"]
    assert len(texts) == len(refs), texts
    for name, text in zip(refs, texts, strict=True):
        assert wer(clip(name).text, text) <= 0.25, (name, text)


# -- SIGTERM with every kind of stream at once ------------------------------------------------


async def _clog(client: RawClient, seconds: float) -> int:
    """Ping without ever reading the pongs until the server stops reading us (its writes to
    us are stuck); returns how many pings went out."""
    sent = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            async with asyncio.timeout(0.5):
                await client.ping(b"x" * 125)
        except TimeoutError:
            return sent  # our socket is full: the server is no longer reading
        sent += 1
    return sent


async def test_sigterm_with_a_stuck_client_still_delivers_and_exits_in_grace() -> None:
    """SIGTERM while one client is mid-sentence, one has just stopped talking (its final is
    being decoded), and one has stopped reading altogether (the server's writes to it are
    stuck). The first two get their finals and close 1001; the stuck one cannot delay the
    exit past the grace period; exit code 0. (tests/test_streaming_shutdown.py covers two
    well-behaved clients.)"""
    grace = 6.0
    sidecar = SidecarProcess(STT_SHUTDOWN_GRACE_S=str(grace), STT_IDLE_TIMEOUT_S="30").start()
    try:
        sentence, rate = load_pcm16(clip("librivox_0870.wav").path)
        short, _ = load_pcm16(clip("goforward.wav").path)
        stuck = await RawClient.open(sidecar, recv_buffer=4096)
        await stuck.send_text(json.dumps({"type": "config", "sample_rate": 16000}))
        pings = await _clog(stuck, 20.0)
        async with aiohttp.ClientSession() as http:
            mid = await open_stream(http, sidecar.ws_url)
            done = await open_stream(http, sidecar.ws_url)
            # "go forward ten meters" whole, then 0.2 s of silence: under the 0.45 s endpoint
            tail = np.concatenate([short, np.zeros((3200, 1), np.int16)])
            for i in range(0, len(tail), 8000):
                await done.send_bytes(tail[i : i + 8000].tobytes())
            # 4 s of "and mister john dashwood had then leisure to consider..." in real time
            for i in range(0, 4 * rate, 320):
                await mid.send_bytes(sentence[i : i + 320].tobytes())
                await asyncio.sleep(0.02)
            started = time.monotonic()
            sidecar.proc.terminate()  # SIGTERM

            async def read_to_end(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
                messages = []
                async with asyncio.timeout(grace + 5):
                    async for msg in ws:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            messages.append(json.loads(msg.data))
                return messages

            results = await asyncio.gather(read_to_end(mid), read_to_end(done))
            closes = [mid.close_code, done.close_code]
        code = await asyncio.to_thread(sidecar.proc.wait, grace + 10)
        elapsed = time.monotonic() - started
        stuck.abort()
        print(f"{pings} pings clogged the stuck client; exit {code} after {elapsed:.1f} s")
        for messages, word in zip(results, ("dashwood", "forward"), strict=True):
            finals = [m for m in messages if m["type"] == "final"]
            assert finals and word in " ".join(f["text"] for f in finals).lower(), messages
        assert closes == [1001, 1001], (closes, sidecar.log()[-3000:])
        assert code == 0, sidecar.log()
        assert elapsed < grace + 1.5, f"exit took {elapsed:.1f} s with a {grace:g} s grace"
    finally:
        sidecar.stop()
