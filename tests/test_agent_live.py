"""End to end against a real LiveKit server: a participant publishes jfk.wav, the worker
(`python agent/main.py connect --room ...`, real sidecar) transcribes it, and a listener in the
room receives the words as `transcription` data messages and on `lk.transcription`.

Runs only when LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET are set, e.g.

    livekit-server --dev &
    LIVEKIT_URL=ws://localhost:7880 LIVEKIT_API_KEY=devkey LIVEKIT_API_SECRET=secret \\
        .venv/bin/python -m pytest tests/test_agent_live.py -q
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from livekit import api, rtc

from .agent_support import Microphone, speech, worker_process_env
from .support.sidecar import SidecarProcess
from .support.speech import clip, wer

LIVEKIT_VARS = ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")
MISSING = [name for name in LIVEKIT_VARS if not os.environ.get(name)]

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(
        bool(MISSING),
        reason=(
            f"needs a LiveKit server ({', '.join(MISSING)} not set): run `livekit-server --dev`, "
            "then LIVEKIT_URL=ws://localhost:7880 LIVEKIT_API_KEY=devkey LIVEKIT_API_SECRET=secret "
            ".venv/bin/python -m pytest tests/test_agent_live.py"
        ),
    ),
]

MAIN = Path(__file__).resolve().parent.parent / "agent" / "main.py"


def _token(identity: str, room: str) -> str:
    return (
        api.AccessToken(os.environ["LIVEKIT_API_KEY"], os.environ["LIVEKIT_API_SECRET"])
        .with_identity(identity)
        .with_name(identity.title())
        .with_grants(api.VideoGrants(room_join=True, room=room))
        .to_jwt()
    )


@pytest.fixture
async def room_name() -> AsyncIterator[str]:
    name = f"stt-live-{uuid.uuid4().hex[:8]}"
    url, key, secret = (os.environ[v] for v in LIVEKIT_VARS)
    async with api.LiveKitAPI(url, key, secret) as lk:
        await lk.room.create_room(api.CreateRoomRequest(name=name, empty_timeout=60))
        yield name
        await lk.room.delete_room(api.DeleteRoomRequest(room=name))


@pytest.fixture
async def worker(sidecar: SidecarProcess, room_name: str, tmp_path) -> AsyncIterator[None]:
    """`python agent/main.py connect --room <room>`: this room only, whatever else is
    registered on the server."""
    env = worker_process_env(
        **{v: os.environ[v] for v in LIVEKIT_VARS},
        CUSTOM_STT_URL=sidecar.url,
        STT_API_KEY="",
        AGENT_NAME="",
        AGENT_LANGUAGE="en",
        TRANSCRIPT_TOPIC="transcription",
        PUBLISH_INTERIMS="true",
        SIDECAR_READY_TIMEOUT_S="30",
    )
    log = (tmp_path / "worker.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(MAIN),
        "connect",
        "--room",
        room_name,
        "--log-level",
        "DEBUG",
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=asyncio.subprocess.STDOUT,
    )
    yield
    if proc.returncode is None:
        proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
    log.close()
    print((tmp_path / "worker.log").read_text(errors="replace")[-4000:])


async def test_live_room_transcripts_arrive_as_data_and_lk_transcription(
    room_name: str, worker: None
) -> None:
    url = os.environ["LIVEKIT_URL"]
    data: list[dict] = []
    streams: list[tuple[str, dict[str, str], str]] = []
    stream_tasks: set[asyncio.Task[None]] = set()
    agent_joined = asyncio.Event()

    listener = rtc.Room()

    @listener.on("data_received")
    def _on_data(packet: rtc.DataPacket) -> None:
        if packet.topic == "transcription":
            data.append(json.loads(packet.data.decode()))

    def _on_text_stream(reader: rtc.TextStreamReader, sender_identity: str) -> None:
        async def read() -> None:
            text = await reader.read_all()
            streams.append((sender_identity, dict(reader.info.attributes or {}), text))

        task = asyncio.create_task(read())
        stream_tasks.add(task)
        task.add_done_callback(stream_tasks.discard)

    listener.register_text_stream_handler("lk.transcription", _on_text_stream)

    def _check_agent(p: rtc.RemoteParticipant) -> None:
        if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            agent_joined.set()

    listener.on("participant_connected", _check_agent)
    await listener.connect(url, _token("listener", room_name))
    for p in listener.remote_participants.values():
        _check_agent(p)

    speaker = rtc.Room()
    mic = Microphone()
    try:
        await speaker.connect(url, _token("speaker", room_name))
        await speaker.local_participant.publish_track(
            mic.track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        )
        await asyncio.wait_for(agent_joined.wait(), 60)
        await asyncio.sleep(1.0)  # let the agent subscribe before the first word
        await mic.say(speech(0.5, "jfk.wav", 2.0))

        deadline = time.monotonic() + 20
        reference = clip("jfk.wav").text
        while time.monotonic() < deadline:
            finals = [m for m in data if m["final"]]
            final_streams = [s for s in streams if s[1].get("lk.transcription_final") == "true"]
            if (
                finals
                and final_streams
                and wer(reference, " ".join(m["text"] for m in finals)) <= 0.2
            ):
                break
            await asyncio.sleep(0.2)
    finally:
        await mic.aclose()
        await speaker.disconnect()
        await listener.disconnect()
        for task in stream_tasks:
            task.cancel()

    finals = [m for m in data if m["final"]]
    assert finals, f"no final transcript on the 'transcription' topic; got {data}"
    assert {m["participant_identity"] for m in data} == {"speaker"}
    assert wer(clip("jfk.wav").text, " ".join(m["text"] for m in finals)) <= 0.2, finals
    track_sids = {m["track_sid"] for m in data}
    assert len(track_sids) == 1 and next(iter(track_sids)).startswith("TR_")

    final_streams = [s for s in streams if s[1].get("lk.transcription_final") == "true"]
    assert final_streams, f"nothing final on lk.transcription; got {streams}"
    assert {s[0] for s in streams} == {"speaker"}, "lk.transcription must name the speaker"
    assert wer(clip("jfk.wav").text, " ".join(s[2] for s in final_streams)) <= 0.2
    assert {s[1]["lk.transcribed_track_id"] for s in streams} == track_sids
    assert {s[1]["lk.segment_id"] for s in final_streams} == {m["segment_id"] for m in finals}
