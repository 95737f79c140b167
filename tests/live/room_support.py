"""Real participants and real worker processes for the live tests (no tests here).

Participants are Python `livekit` SDK rooms: `Talker` publishes a microphone track from an
`rtc.AudioSource` at 48 kHz (what browsers send) and plays real speech at real-time pace;
`Listener` only subscribes and records every transcript it receives on both channels, with
its arrival time. `WorkerProcess` runs `python agent/main.py dev|start|connect`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from livekit import api, rtc

from stt_sidecar.replay import assign_finals

from ..agent_support import worker_process_env
from ..livekit_server import LiveKitServerInfo
from ..support.speech import DATA, read_pcm16, wer

ROOT = Path(__file__).resolve().parent.parent.parent
MAIN = ROOT / "agent" / "main.py"
RATE = 48000
FRAME = RATE // 100  # 10 ms, as WebRTC captures


def token(
    server: LiveKitServerInfo,
    identity: str,
    room: str,
    *,
    agent_name: str | None = None,
    kind: str | None = None,
) -> str:
    t = (
        api.AccessToken(server.api_key, server.api_secret)
        .with_identity(identity)
        .with_name(identity.title())
        .with_grants(api.VideoGrants(room_join=True, room=room))
    )
    if kind:
        t = t.with_kind(kind)  # type: ignore[arg-type]
    if agent_name:
        t = t.with_room_config(
            api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name=agent_name)])
        )
    return t.to_jwt()


def load_48k(name: str) -> np.ndarray:
    """A tests/data clip as 48 kHz int16, resampled by LiveKit's own resampler."""
    pcm, rate = read_pcm16(DATA / name)
    resampler = rtc.AudioResampler(rate, RATE, quality=rtc.AudioResamplerQuality.HIGH)
    frames = resampler.push(rtc.AudioFrame(pcm.tobytes(), rate, 1, len(pcm)))
    frames += resampler.flush()
    out = np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in frames])
    return np.concatenate([out, np.zeros((-len(out)) % FRAME, dtype=np.int16)])


def silence_48k(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * 100) * FRAME, dtype=np.int16)


@dataclass
class Received:
    """One transcript as a listener got it."""

    channel: str  # "data" or "stream"
    at: float  # time.monotonic() of arrival
    identity: str
    final: bool
    segment_id: str
    text: str
    track_sid: str
    payload: dict[str, Any] = field(default_factory=dict)
    wall: float = field(default_factory=time.time)


class Participant:
    def __init__(
        self,
        server: LiveKitServerInfo,
        room: str,
        identity: str,
        *,
        jwt: str | None = None,
        **token_kw: Any,
    ) -> None:
        self.server = server
        self.room_name = room
        self.identity = identity
        self.room = rtc.Room()
        self.jwt = jwt or token(server, identity, room, **token_kw)

    async def connect(self) -> None:
        await self.room.connect(self.server.url, self.jwt)

    async def disconnect(self) -> None:
        await self.room.disconnect()

    def agents(self) -> list[rtc.RemoteParticipant]:
        return [
            p
            for p in self.room.remote_participants.values()
            if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
        ]

    async def wait_for_agent(self, timeout: float = 60) -> rtc.RemoteParticipant:
        deadline = time.monotonic() + timeout
        while not self.agents():
            if time.monotonic() > deadline:
                raise AssertionError(f"no agent joined {self.room_name} within {timeout} s")
            await asyncio.sleep(0.1)
        return self.agents()[0]


class Listener(Participant):
    """Subscribes to nothing but transcripts: data on `topic` and `lk.transcription`."""

    def __init__(self, *args: Any, topic: str = "transcription", **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.received: list[Received] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.room.on("data_received", self._on_data)
        self.room.register_text_stream_handler("lk.transcription", self._on_stream)
        self._topic = topic

    def _on_data(self, packet: rtc.DataPacket) -> None:
        if packet.topic != self._topic:
            return
        m = json.loads(packet.data.decode())
        self.received.append(
            Received(
                "data",
                time.monotonic(),
                m["participant_identity"],
                m["final"],
                m["segment_id"],
                m["text"],
                m["track_sid"],
                m,
            )
        )

    def _on_stream(self, reader: rtc.TextStreamReader, sender_identity: str) -> None:
        async def read() -> None:
            text = await reader.read_all()
            a = dict(reader.info.attributes or {})
            self.received.append(
                Received(
                    "stream",
                    time.monotonic(),
                    sender_identity,
                    a.get("lk.transcription_final") == "true",
                    a.get("lk.segment_id", ""),
                    text,
                    a.get("lk.transcribed_track_id", ""),
                    a,
                )
            )

        task = asyncio.create_task(read())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def finals(self, identity: str | None = None, channel: str = "data") -> list[Received]:
        return [
            r
            for r in self.received
            if r.final and r.channel == channel and (identity is None or r.identity == identity)
        ]

    async def wait_finals(self, identity: str, count: int, timeout: float) -> None:
        """Until `identity` has `count` finals on both channels (or the timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(len(self.finals(identity, c)) >= count for c in ("data", "stream")):
                return
            await asyncio.sleep(0.2)

    async def disconnect(self) -> None:
        for task in self._tasks:
            task.cancel()
        await super().disconnect()


class Talker(Participant):
    """Publishes a microphone and plays clips into it at real-time pace."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.source: rtc.AudioSource | None = None
        self.publication: rtc.LocalTrackPublication | None = None
        self.play_started: float | None = None

    async def publish(self) -> rtc.LocalTrackPublication:
        # a short queue keeps capture_frame paced at real time, so `play_started` is when
        # the first frame went out (within ~50 ms)
        self.source = rtc.AudioSource(RATE, 1, queue_size_ms=50)
        track = rtc.LocalAudioTrack.create_audio_track("microphone", self.source)
        self.publication = await self.room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        )
        return self.publication

    async def unpublish(self) -> None:
        assert self.publication is not None and self.source is not None
        await self.room.local_participant.unpublish_track(self.publication.sid)
        await self.source.aclose()
        self.publication = self.source = None

    @property
    def track_sid(self) -> str:
        assert self.publication is not None
        return self.publication.sid

    async def play(self, pcm48k: np.ndarray) -> None:
        """Capture `pcm48k` in 10 ms frames at real time; returns when the last is played."""
        assert self.source is not None
        start = time.monotonic()
        if self.play_started is None:
            self.play_started = start
        for i in range(0, len(pcm48k), FRAME):
            frame = rtc.AudioFrame(pcm48k[i : i + FRAME].tobytes(), RATE, 1, FRAME)
            await self.source.capture_frame(frame)
            # never run ahead of the clock (capture_frame may return early after a gap)
            ahead = start + (i + FRAME) / RATE - time.monotonic() - 0.05
            if ahead > 0:
                await asyncio.sleep(ahead)
        await self.source.wait_for_playout()


TRANSCRIPT_KEYS = {
    "type", "final", "participant_identity", "participant_name", "track_sid", "segment_id",
    "text", "language", "start", "end", "confidence",
}  # fmt: skip


@dataclass
class SpeakerReport:
    """One speaker's transcripts as a listener received them, against the reference."""

    identity: str
    wer: float = 0.0
    finals: int = 0
    interims: int = 0
    missing: list[int] = field(default_factory=list)
    split: list[int] = field(default_factory=list)
    """utterances finalized in several parts (a pause inside longer than the endpoint)"""
    overlapping: list[str] = field(default_factory=list)
    """finals whose times overlap the previous one's: the same audio finalized twice"""
    extra: list[str] = field(default_factory=list)
    time_shift: float = 0.0
    time_errors: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lat = sorted(self.latencies)
        p50 = float(np.percentile(lat, 50)) if lat else float("nan")
        p95 = float(np.percentile(lat, 95)) if lat else float("nan")
        worst = max((abs(e) for e in self.time_errors), default=0.0)
        return (
            f"{self.identity}: {self.finals} finals, {self.interims} interims, "
            f"WER {self.wer:.1%}, missing {self.missing}, split {self.split}, "
            f"overlapping {self.overlapping}, "
            f"extra {self.extra}, time shift {self.time_shift:.2f} s, worst start/end error "
            f"{worst:.2f} s, final latency p50 {p50:.2f} s p95 {p95:.2f} s, "
            f"problems {self.problems[:5]}"
        )

    def assert_ok(self, max_wer: float, max_time_error: float = 0.5) -> None:
        assert not self.problems, self.summary()
        assert not self.missing and not self.overlapping and not self.extra, self.summary()
        assert self.wer <= max_wer, self.summary()
        assert all(abs(e) <= max_time_error for e in self.time_errors), self.summary()


def check_room_transcripts(
    listener: Listener,
    identity: str,
    track_sids: str | set[str],
    utterances: Sequence[dict[str, Any]],
    play_started: float | None,
    *,
    time_shift: float | None = None,
) -> SpeakerReport:
    """Check `identity`'s transcripts on both channels (utterance times: in the played audio).

    - data messages: the documented JSON, this speaker, this track; streams: sent on behalf
      of the speaker, with `lk.segment_id`, `lk.transcribed_track_id`, `lk.transcription_final`
    - each final exactly once per channel, the same segment ids and texts on both
    - interims before their final, sharing its segment id
    - finals matched to utterances by time: none missing, doubled or outside every utterance;
      start/end against speech_start/speech_end once one constant `time_shift` is removed
      (transcript times count from when the worker began reading the track; default: the
      median difference)
    """
    sids = {track_sids} if isinstance(track_sids, str) else track_sids
    r = SpeakerReport(identity)
    mine = [x for x in listener.received if x.identity == identity]
    for x in mine:
        if x.channel == "data":
            if set(x.payload) != TRANSCRIPT_KEYS or x.payload["type"] != "transcript":
                r.problems.append(f"undocumented data message {x.payload}")
        elif not {"lk.segment_id", "lk.transcribed_track_id", "lk.transcription_final"} <= set(
            x.payload
        ):
            r.problems.append(f"stream attributes {x.payload}")
        if x.track_sid not in sids:
            r.problems.append(f"{x.channel} track {x.track_sid} not in {sids}")
    data_finals = [x for x in mine if x.channel == "data" and x.final]
    stream_finals = [x for x in mine if x.channel == "stream" and x.final]
    r.finals = len(data_finals)
    r.interims = sum(1 for x in mine if x.channel == "data" and not x.final)
    for name, finals in (("data", data_finals), ("stream", stream_finals)):
        ids = [x.segment_id for x in finals]
        if len(ids) != len(set(ids)):
            r.problems.append(f"a final twice on {name}: {ids}")
    if {(x.segment_id, x.text) for x in data_finals} != {
        (x.segment_id, x.text) for x in stream_finals
    }:
        r.problems.append("data and lk.transcription finals differ")
    final_at = {x.segment_id: x.at for x in data_finals}
    for x in mine:
        if x.channel == "data" and not x.final:
            if x.segment_id not in final_at:
                # an interim of an utterance whose final had no words would be legal, but
                # none of the reference utterances is like that
                r.problems.append(f"interim without a final: {x.text!r}")
            elif x.at > final_at[x.segment_id]:
                r.problems.append(f"interim after its final: {x.text!r}")
    if not data_finals:
        r.missing = list(range(len(utterances)))
        return r

    dicts = [x.payload for x in data_finals]
    if time_shift is None:
        pairs = assign_finals(dicts, list(utterances), slack=3.0)
        diffs = [
            g[0]["start"] - u["speech_start"] for g, u in zip(pairs, utterances, strict=False) if g
        ]
        time_shift = float(np.median(diffs)) if diffs else 0.0
    r.time_shift = time_shift
    shifted = [{**d, "start": d["start"] - time_shift, "end": d["end"] - time_shift} for d in dicts]
    groups = assign_finals(shifted, list(utterances))
    r.wer = wer(
        [u["text"] for u in utterances], [" ".join(f["text"] for f in g) for g in groups[:-1]]
    )
    r.missing = [i for i, g in enumerate(groups[:-1]) if not g]
    r.split = [i for i, g in enumerate(groups[:-1]) if len(g) > 1]
    ordered = sorted(shifted, key=lambda f: f["start"])
    r.overlapping = [
        b["text"] for a, b in itertools.pairwise(ordered) if b["start"] < a["end"] - 0.1
    ]
    r.extra = [f["text"] for f in groups[-1]]
    arrival = {x.segment_id: x.at for x in data_finals}
    for g, u in zip(groups[:-1], utterances, strict=True):
        if not g:
            continue
        r.time_errors += [g[0]["start"] - u["speech_start"], g[-1]["end"] - u["speech_end"]]
        if play_started is not None:
            r.latencies.append(arrival[g[-1]["segment_id"]] - (play_started + u["speech_end"]))
    return r


class WorkerProcess:
    """`python agent/main.py <mode> [args]` with an explicit environment, from an empty dir."""

    def __init__(self, server: LiveKitServerInfo, sidecar_url: str, *args: str, **env: str) -> None:
        self.args = args or ("dev",)
        self.cwd = Path(tempfile.mkdtemp(prefix="live-worker-"))
        self.env = worker_process_env(
            **server.env,
            CUSTOM_STT_URL=sidecar_url,
            STT_API_KEY="",
            AGENT_NAME="",
            AGENT_LANGUAGE="en",
            TRANSCRIPT_TOPIC="transcription",
            PUBLISH_INTERIMS="true",
            SIDECAR_READY_TIMEOUT_S="60",
            AGENT_LOAD_THRESHOLD="0.9",
            AGENT_MAX_STREAMS="0",
            AGENT_HTTP_HOST="127.0.0.1",  # loopback only, any free port
            AGENT_HTTP_PORT="0",
        )
        self.env.update(env)
        self.log_path = self.cwd / "worker.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(MAIN), *self.args, "--log-level", "DEBUG"],
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its job processes can be killed with it
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def wait_log(self, text: str, timeout: float = 60, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while self.log().count(text) < count:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"worker exited ({self.proc.returncode}):\n{self.log()[-5000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} in the worker log:\n{self.log()[-5000:]}")
            await asyncio.sleep(0.2)

    async def wait_registered(self, timeout: float = 90) -> None:
        await self.wait_log("registered worker", timeout)

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError(f"worker ignored {sig} for {timeout} s:\n{self.log()[-5000:]}")
            await asyncio.sleep(0.1)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the worker and its job processes (its own process group)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
