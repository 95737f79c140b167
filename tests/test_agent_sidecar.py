"""The worker and the sidecar's lifecycle: waiting for `/ready`, load reporting, a restart
in the middle of someone speaking. Real sidecar processes, real plugin, real speech."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from livekit.agents import APIConnectOptions
from livekit.plugins import custom_stt

from agent import main
from agent import transcriber as transcriber_module
from agent.capacity import LoadReporter, StreamCounter, count_streams
from agent.publisher import TranscriptPublisher
from agent.settings import WorkerSettings
from agent.sidecar_ready import SidecarNotReadyError, probe_ready_sync, wait_until_ready
from agent.transcriber import ParticipantTranscriber, Speaker

from .agent_support import Microphone, RecordingParticipant, speech
from .support.sidecar import SidecarProcess, free_port
from .support.speech import clip, wer

SIDECAR_ENV = dict(STT_MAX_STREAMS="8", STT_IDLE_TIMEOUT_S="30", STT_MAX_PENDING="8")


def worker_settings(url: str, api_key: str | None = None, **changes: object) -> WorkerSettings:
    """Every field explicit, nothing from the environment."""
    values: dict[str, object] = dict(
        livekit_url="ws://127.0.0.1:9",
        livekit_api_key="devkey",
        livekit_api_secret="secret",
        stt_url=url,
        stt_api_key=api_key,
        language="en",
        agent_name="",
        transcript_topic="transcription",
        publish_interims=True,
        sidecar_ready_timeout_s=60.0,
        load_threshold=0.9,
        max_streams=0,
    )
    values.update(changes)
    return WorkerSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def late_sidecar() -> AsyncIterator[SidecarProcess]:
    """A sidecar with an API key whose process is not started yet: the test starts it."""
    proc = SidecarProcess(port=free_port(), STT_API_KEY="k3y-for-tests", **SIDECAR_ENV)
    yield proc
    await asyncio.to_thread(proc.stop)


async def test_worker_waits_for_the_sidecar_then_registers_and_transcribes(
    late_sidecar: SidecarProcess,
) -> None:
    settings = worker_settings(late_sidecar.url, "k3y-for-tests")
    server = main.build_server(settings)
    started = asyncio.Event()
    server.on("worker_started", started.set)
    # unregistered: everything of `AgentServer.run` but the connection to a LiveKit server
    run = asyncio.create_task(server.run(devmode=True, unregistered=True))
    try:
        await asyncio.sleep(1.5)
        assert not started.is_set(), "the worker started before the sidecar was there"
        assert server.load_fnc() == 1.0  # nothing to serve with: full
        late_sidecar.start(wait=False)
        await asyncio.wait_for(started.wait(), 60)
        assert probe_ready_sync(late_sidecar.url, "k3y-for-tests").ready
        assert 0.0 <= server.load_fnc() < settings.load_threshold
    finally:
        await server.aclose()
        await asyncio.wait_for(run, 10)
    assert not server.sidecar_failed

    # and the pipeline works against it, API key included
    stt = custom_stt.STT(base_url=late_sidecar.url, api_key="k3y-for-tests", language="en")
    room = RecordingParticipant()
    mic = Microphone()
    transcriber = ParticipantTranscriber(
        speaker=Speaker("frank", "Frank", "TR_f"),
        audio=mic.audio_stream(),
        stt=stt,
        publisher=TranscriptPublisher(room),
    )
    transcriber.start()
    await mic.say(speech(0.3, "goforward.wav", 1.2))
    await room.wait_for(lambda: len(room.finals()) >= 1, timeout=10)
    await transcriber.aclose()
    await mic.aclose()
    await stt.aclose()
    assert wer(clip("goforward.wav").text, room.finals()[0]["text"]) <= 0.25

    # a wrong key is reported at once, not after the whole timeout
    began = time.monotonic()
    with pytest.raises(SidecarNotReadyError, match="API key"):
        await wait_until_ready(late_sidecar.url, "wrong-key", timeout=30)
    assert time.monotonic() - began < 5


async def test_server_gives_up_clearly_when_the_sidecar_never_comes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    server = main.build_server(worker_settings(url, sidecar_ready_timeout_s=1.0))
    started = asyncio.Event()
    server.on("worker_started", started.set)
    with caplog.at_level("INFO", logger="agent"):
        await asyncio.wait_for(server.run(devmode=True, unregistered=True), 10)
    await server.aclose()
    assert server.sidecar_failed and not started.is_set()
    messages = [r.getMessage() for r in caplog.records]
    assert any("waiting for the STT sidecar" in m and url in m for m in messages), messages
    assert any("not ready after 1 s" in m and "CUSTOM_STT_URL" in m for m in messages), messages


async def test_load_combines_the_sidecar_load_and_this_workers_streams(
    sidecar: SidecarProcess, tmp_path
) -> None:
    status = probe_ready_sync(sidecar.url)
    assert status.ready and status.max_streams == 8
    reporter = LoadReporter(worker_settings(sidecar.url), tmp_path, cache_s=0.0)
    assert 0.0 <= reporter() < 0.5

    # four streams in "another job process" (this one, via its file) out of a budget of 8
    StreamCounter(tmp_path).add(4)
    assert count_streams(tmp_path) == 4
    assert reporter() >= 0.5
    # an explicit per-worker budget takes precedence over the sidecar's max_streams
    assert LoadReporter(worker_settings(sidecar.url, max_streams=4), tmp_path)() == 1.0

    # a job process that died without cleaning up no longer counts
    dead = await asyncio.create_subprocess_exec("true")
    await dead.wait()
    (tmp_path / str(dead.pid)).write_text("3")
    assert count_streams(tmp_path) == 4
    assert not (tmp_path / str(dead.pid)).exists()
    assert (tmp_path / str(os.getpid())).read_text() == "4"

    # no sidecar: full, so LiveKit sends rooms elsewhere
    gone = LoadReporter(worker_settings(f"http://127.0.0.1:{free_port()}"), tmp_path)
    assert gone() == 1.0


async def test_sidecar_restarted_mid_speech_transcripts_continue() -> None:
    """SIGKILL the sidecar four seconds into an eleven-second sentence and start it again: the
    plugin reconnects and replays, so the sentence comes out whole and once, and the next
    utterance is transcribed as usual."""
    sidecar = SidecarProcess(port=free_port(), **SIDECAR_ENV).start()
    stt = custom_stt.STT(base_url=sidecar.url, api_key=None, language="en")
    room = RecordingParticipant()
    mic = Microphone()
    transcriber = ParticipantTranscriber(
        speaker=Speaker("grace", "Grace", "TR_g"),
        audio=mic.audio_stream(),
        stt=stt,
        publisher=TranscriptPublisher(room),
    )
    transcriber.start()

    async def restart_after(delay: float) -> None:
        await asyncio.sleep(delay)
        await asyncio.to_thread(sidecar.kill)
        sidecar.start(wait=False)

    try:
        await asyncio.gather(
            mic.say(speech(0.3, "jfk.wav", 1.5, "goforward.wav", 1.5)),
            restart_after(4.3),
        )
        await room.wait_for(lambda: len(room.finals()) >= 2, timeout=25)
        await transcriber.aclose()
    finally:
        await mic.aclose()
        await stt.aclose()
        await asyncio.to_thread(sidecar.stop)

    finals = room.finals()
    texts = [f["text"] for f in finals]
    # JFK's pauses may split the sentence into several utterances; together they must be the
    # sentence, each word once (a replayed-and-repeated phrase would be an insertion error)
    assert wer(clip("jfk.wav").text, " ".join(texts[:-1])) <= 0.2, texts
    assert wer(clip("goforward.wav").text, texts[-1]) <= 0.25, texts
    # on the track's own timeline, in order, never overlapping
    assert abs(finals[0]["start"] - 0.4) < 0.6 and finals[-1]["start"] > 12, finals
    for earlier, later in itertools.pairwise(finals):
        assert earlier["end"] <= later["start"] + 0.05, (earlier, later)


async def test_transcriber_reopens_its_stream_after_an_outage_beyond_the_plugin_retries(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With no retries left in the plugin (max_retry=0 here, ~19 s by default), a sidecar
    outage ends the STT stream; the transcriber opens a new one once the sidecar is back."""
    monkeypatch.setattr(transcriber_module, "MAX_RESTART_DELAY_S", 0.5)
    sidecar = SidecarProcess(port=free_port(), **SIDECAR_ENV).start()
    stt = custom_stt.STT(
        base_url=sidecar.url,
        api_key=None,
        language="en",
        conn_options=APIConnectOptions(max_retry=0, timeout=5),
    )
    room = RecordingParticipant()
    mic = Microphone()
    transcriber = ParticipantTranscriber(
        speaker=Speaker("heidi", "Heidi", "TR_h"),
        audio=mic.audio_stream(),
        stt=stt,
        publisher=TranscriptPublisher(room),
        restart_delay=0.2,
    )
    transcriber.start()
    try:
        with caplog.at_level("ERROR", logger="agent.transcriber"):
            await mic.say(speech(0.3, "goforward.wav", 1.2))
            await room.wait_for(lambda: len(room.finals()) == 1, timeout=10)
            await asyncio.to_thread(sidecar.kill)
            await mic.say(speech(1.0))
            sidecar.start(wait=False)
            await asyncio.to_thread(sidecar.wait_ready, 60)
            await mic.say(speech(1.5, "librivox_0880.wav", 1.2))
            await room.wait_for(lambda: len(room.finals()) == 2, timeout=10)
        await transcriber.aclose()
    finally:
        await mic.aclose()
        await stt.aclose()
        await asyncio.to_thread(sidecar.stop)

    texts = [f["text"] for f in room.finals()]
    assert wer(clip("goforward.wav").text, texts[0]) <= 0.25, texts
    assert wer(clip("librivox_0880.wav").text, texts[1]) <= 0.25, texts
    assert any(
        "failed" in r.getMessage() and "new stream" in r.getMessage() for r in caplog.records
    )


async def test_a_busy_decoder_does_not_make_the_worker_refuse_rooms(
    sidecar: SidecarProcess, tmp_path
) -> None:
    """Found in a live room: the sidecar's `load` counts the decoder's busy fraction, which sits
    at 0.9+ while finals decode; a room created then was never dispatched (LiveKit does not
    offer it again). The worker reports stream occupancy instead."""
    reporter = LoadReporter(worker_settings(sidecar.url), tmp_path, cache_s=0.0)
    wav = clip("jfk.wav").path.read_bytes()

    async def transcribe(session: aiohttp.ClientSession) -> None:
        for _ in range(4):  # ~8 s of decoding per worker: the busy fraction is over 5 s
            async with session.post(f"{sidecar.url}/transcribe", data={"file": wav}) as resp:
                assert resp.status == 200

    async with aiohttp.ClientSession() as session:
        batch = [asyncio.create_task(transcribe(session)) for _ in range(4)]
        busiest = 0.0
        while not all(t.done() for t in batch):
            status = probe_ready_sync(sidecar.url)
            if status.load >= 0.9:
                busiest = status.load
                assert reporter() < 0.9
            await asyncio.sleep(0.1)
        await asyncio.gather(*batch)
    assert busiest >= 0.9, "the decoder never looked busy: nothing was tested"


def test_rooms_being_launched_count_one_stream_each(sidecar: SidecarProcess) -> None:
    """Found in a live room: livekit-agents counted a room accepted but not yet launched as
    0.9 in `dev`, so a second room offered within the first job's ~3 s start was refused for
    good. Each such room now counts one stream of the budget."""
    from livekit.agents import AgentServer

    assert callable(getattr(AgentServer, "_get_effective_load", None)), "framework changed"
    server = main.build_server(worker_settings(sidecar.url))
    server._worker_load, server._reserved_slots = 0.0, 0  # what run() sets up
    assert server.load_reporter() < 0.9  # probes the sidecar: 8 streams
    server._reserved_slots = 3
    assert server._get_effective_load() == pytest.approx(3 / 8)
    small = main.build_server(worker_settings(sidecar.url, max_streams=2))
    small._worker_load, small._reserved_slots = 0.5, 1
    assert small._get_effective_load() == pytest.approx(1.0)  # full: the next room goes elsewhere


def test_rooms_close_their_transcribers_before_the_room_disconnects(
    sidecar: SidecarProcess,
) -> None:
    """Found live: a SIGTERMed worker lost the in-flight final, because shutdown callbacks run
    after `room.disconnect()`. The transcribers close in `on_session_end`, which runs before."""
    server = main.build_server(worker_settings(sidecar.url))
    assert server._session_end_fnc is main.session_end  # framework state: the registered hook
