"""Helpers shared by the worker's tests (no tests here).

Real classes everywhere below the room: speech goes `rtc.AudioSource` -> `rtc.LocalAudioTrack`
-> `rtc.AudioStream` (which works without a room) -> the worker's pipeline -> the real plugin ->
the real sidecar. The one stand-in is `RecordingParticipant`, in place of the agent's
`room.local_participant`, recording what would have been published into the room.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from livekit import rtc

from agent.transcriber import STREAM_SAMPLE_RATE

from .support.audio import silence, upsample_48k
from .support.speech import clip, read_pcm16

RATE = 48000  # what a browser's microphone track delivers
FRAME = RATE // 100  # 10 ms frames, as WebRTC produces them

AGENT_ENV_VARS = (
    "LIVEKIT_URL",
    "LIVEKIT_API_KEY",
    "LIVEKIT_API_SECRET",
    "CUSTOM_STT_URL",
    "STT_API_KEY",
    "AGENT_NAME",
    "AGENT_LANGUAGE",
    "TRANSCRIPT_TOPIC",
    "PUBLISH_INTERIMS",
    "PUBLISH_LEGACY_TRANSCRIPTION",
    "SIDECAR_READY_TIMEOUT_S",
    "AGENT_LOAD_THRESHOLD",
    "AGENT_MAX_STREAMS",
    "AGENT_JOB_EXECUTOR",
    "AGENT_HTTP_HOST",
    "AGENT_HTTP_PORT",
    "AGENT_IDLE_PROCESSES",
    "AGENT_STREAMS_DIR",
    "LIVEKIT_AGENT_NAME",
)
"""Every variable the worker reads: tests set or clear each one (never a developer's .env)."""


# -- the room stand-in ---------------------------------------------------------------------


@dataclass
class TextStreamRecord:
    """One `stream_text` call: its header and what was written before `aclose`."""

    topic: str
    attributes: dict[str, str]
    sender_identity: str | None
    chunks: list[str] = field(default_factory=list)
    closed: bool = False

    @property
    def text(self) -> str:
        return "".join(self.chunks)


class _RecordingWriter:
    def __init__(self, record: TextStreamRecord) -> None:
        self._record = record

    async def write(self, text: str) -> None:
        assert not self._record.closed, "write after aclose"
        self._record.chunks.append(text)

    async def aclose(self, **_: Any) -> None:
        self._record.closed = True


@dataclass
class DataRecord:
    topic: str
    reliable: bool
    payload: bytes

    def json(self) -> dict[str, Any]:
        return json.loads(self.payload.decode("utf-8"))


class RecordingParticipant:
    """Stand-in for `rtc.LocalParticipant`: records `publish_data`, `stream_text`,
    `publish_transcription` and `set_attributes` calls."""

    def __init__(self) -> None:
        self.data: list[DataRecord] = []
        self.text_streams: list[TextStreamRecord] = []
        self.legacy: list[rtc.Transcription] = []
        self.attribute_updates: list[dict[str, str]] = []
        self.changed = asyncio.Event()

    async def publish_data(
        self,
        payload: bytes | str,
        *,
        reliable: bool = True,
        destination_identities: list[str] | None = None,
        topic: str = "",
    ) -> None:
        if isinstance(payload, str):
            payload = payload.encode()
        self.data.append(DataRecord(topic=topic, reliable=reliable, payload=payload))
        self.changed.set()

    async def stream_text(
        self,
        *,
        destination_identities: list[str] | None = None,
        topic: str = "",
        attributes: dict[str, str] | None = None,
        stream_id: str | None = None,
        reply_to_id: str | None = None,
        total_size: int | None = None,
        sender_identity: str | None = None,
    ) -> _RecordingWriter:
        record = TextStreamRecord(topic, dict(attributes or {}), sender_identity)
        self.text_streams.append(record)
        return _RecordingWriter(record)

    async def publish_transcription(self, transcription: rtc.Transcription) -> None:
        self.legacy.append(transcription)

    async def set_attributes(self, attributes: dict[str, str]) -> None:
        self.attribute_updates.append(dict(attributes))

    def messages(self) -> list[dict[str, Any]]:
        return [d.json() for d in self.data]

    def finals(self, identity: str | None = None) -> list[dict[str, Any]]:
        return [
            m
            for m in self.messages()
            if m["final"] and (identity is None or m["participant_identity"] == identity)
        ]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Until `predicate()` holds after a publish; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout} s; published: {self.messages()}")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass


# -- a participant's microphone --------------------------------------------------------------


def speech(*names_and_pauses: str | float) -> np.ndarray:
    """16 kHz int16: clips by file name, numbers as seconds of silence between them."""
    parts = []
    for item in names_and_pauses:
        if isinstance(item, str):
            pcm, rate = read_pcm16(clip(item).path)
            assert rate == 16000
            parts.append(pcm)
        else:
            parts.append(silence(item))
    return np.concatenate(parts)


def to_48k(pcm16k: np.ndarray) -> np.ndarray:
    """LiveKit's own resampler (`upsample_48k`), padded to whole 10 ms frames."""
    out = upsample_48k(pcm16k)
    return np.concatenate([out, np.zeros((-len(out)) % FRAME, dtype=np.int16)])


class Microphone:
    """A participant's published microphone, minus the room: the track the worker would
    subscribe to, and the `rtc.AudioStream` it would read (16 kHz, as the worker asks)."""

    def __init__(self) -> None:
        self.source = rtc.AudioSource(RATE, 1)
        self.track = rtc.LocalAudioTrack.create_audio_track("microphone", self.source)

    def audio_stream(self) -> rtc.AudioStream:
        return rtc.AudioStream(self.track, sample_rate=STREAM_SAMPLE_RATE, num_channels=1)

    async def say(self, pcm16k: np.ndarray) -> None:
        """Capture the audio in 10 ms frames and return once all of it has been played out.

        `AudioSource` plays at real time behind a 1 s queue, so the last capture returns about
        a second early (and `wait_for_playout` does not cover that here): wait for the clock.
        Once the queue is empty the source goes on producing silence, like an open microphone.
        """
        pcm = to_48k(pcm16k)
        started = time.monotonic()
        for i in range(0, len(pcm), FRAME):
            frame = rtc.AudioFrame(pcm[i : i + FRAME].tobytes(), RATE, 1, FRAME)
            await self.source.capture_frame(frame)
        await asyncio.sleep(max(0.0, started + len(pcm) / RATE - time.monotonic()))

    async def aclose(self) -> None:
        await self.source.aclose()


def new_tasks(before: set[asyncio.Task[Any]]) -> list[asyncio.Task[Any]]:
    """Tasks started since `before` that are still pending (the current one excluded)."""
    current = asyncio.current_task()
    return [t for t in asyncio.all_tasks() - before if not t.done() and t is not current]


TRANSCRIPT_KEYS = {
    "type",
    "final",
    "participant_identity",
    "participant_name",
    "track_sid",
    "segment_id",
    "text",
    "language",
    "start",
    "end",
    "confidence",
}


def worker_process_env(**overrides: str) -> dict[str, str]:
    """The environment for a worker subprocess: this one minus every variable the worker or
    LiveKit reads, plus `overrides` (run it from a directory without a `.env`)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in AGENT_ENV_VARS and not k.startswith(("LIVEKIT_", "STT_", "CUSTOM_STT_"))
    }
    env.update(PYTHONUNBUFFERED="1", **overrides)
    return env
