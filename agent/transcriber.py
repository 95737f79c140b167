"""Per-participant transcription: one microphone track -> one STT stream -> published transcripts.

Why not one `AgentSession` per participant (with `RoomOptions(participant_identity=...)`)?
An AgentSession is a conversation loop (turn detection, interruptions, LLM replies, a text
input handler on `lk.chat` that only one session per room may register) and its
`user_input_transcribed` event carries no times, confidence or track. What this worker needs
is the layer below it, which is what RoomIO itself uses: `rtc.AudioStream` on the subscribed
track feeding `stt.stream()`. Each participant gets its own audio stream, STT stream and
segment ids, so two people talking at once are transcribed independently and never mixed, and
the pipeline can be exercised without a room (a `rtc.LocalAudioTrack` works as the source).

`RoomTranscriber` follows the room: it starts a `ParticipantTranscriber` for every remote
microphone track that gets subscribed (participants already there, joiners, republishes) and
closes it when the track is unsubscribed or unpublished or the participant leaves; tracks of
other agents are ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from typing import Any

from livekit import rtc
from livekit.agents import APIError, utils
from livekit.agents.stt import STT, RecognizeStream, SpeechEvent, SpeechEventType

from .capacity import StreamCounter
from .publisher import Transcript, TranscriptPublisher

logger = logging.getLogger("agent.transcriber")

STREAM_SAMPLE_RATE = 16000
"""Rate asked of `rtc.AudioStream`: Whisper's own rate. The native side resamples, which is
cheaper than handing 48 kHz frames to the plugin's Python-side resampler."""

RESTART_DELAY_S = 2.0
"""Pause before a new STT stream when one failed for good (its own retries exhausted)."""

MAX_RESTART_DELAY_S = 30.0

DRAIN_TIMEOUT_S = 5.0
"""On leave/unpublish, how long the final of the utterance in progress may take to arrive."""


@dataclass(frozen=True)
class Speaker:
    """Who a track belongs to, as published in every transcript."""

    identity: str
    name: str
    track_sid: str


def new_segment_id() -> str:
    """An id shared by the interims and the final of one utterance (`lk.segment_id`)."""
    return f"SG_{uuid.uuid4().hex[:12]}"


class ParticipantTranscriber:
    """Transcribes one participant's audio track until it ends or `aclose()` is called.

    The audio source is any async iterable of `rtc.AudioFrameEvent` (or `rtc.AudioFrame`),
    normally `rtc.AudioStream.from_track(track=..., sample_rate=STREAM_SAMPLE_RATE)`. It is
    closed with the transcriber when it has an `aclose()`.
    """

    def __init__(
        self,
        *,
        speaker: Speaker,
        audio: AsyncIterable[rtc.AudioFrameEvent] | AsyncIterable[rtc.AudioFrame],
        stt: STT,
        publisher: TranscriptPublisher,
        counter: StreamCounter | None = None,
        restart_delay: float = RESTART_DELAY_S,
        drain_timeout: float = DRAIN_TIMEOUT_S,
    ) -> None:
        """
        Args:
            speaker: identity, name and track sid stamped on every transcript.
            audio: the participant's audio (see the class docstring).
            stt: a streaming STT (`custom_stt.STT` in the worker).
            publisher: where transcripts go.
            counter: this process's active-stream counter for load reporting (default None).
            restart_delay: seconds before reopening a failed STT stream (default 2).
            drain_timeout: seconds `aclose()` waits for the last final (default 5).
        """
        self._speaker = speaker
        self._audio = audio
        self._stt = stt
        self._publisher = publisher
        self._counter = counter
        self._restart_delay = restart_delay
        self._drain_timeout = drain_timeout

        self._stream: RecognizeStream | None = None
        self._input_ended = asyncio.Event()
        self._segment_id: str | None = None
        self._audio_s = 0.0
        self._finals = 0
        self._audio_task: asyncio.Task[None] | None = None
        self._stt_task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def speaker(self) -> Speaker:
        return self._speaker

    @property
    def finals(self) -> int:
        """Finals published so far."""
        return self._finals

    @property
    def audio_seconds(self) -> float:
        """Seconds of audio read from the track so far."""
        return self._audio_s

    def start(self) -> None:
        """Start reading the track and transcribing; returns at once."""
        if self._audio_task is not None:
            raise RuntimeError("ParticipantTranscriber.start() called twice")
        if self._counter is not None:
            self._counter.add(1)
        who = self._speaker.identity
        self._audio_task = asyncio.create_task(self._forward_audio(), name=f"stt-audio-{who}")
        self._stt_task = asyncio.create_task(self._run_stt(), name=f"stt-events-{who}")
        logger.info(
            "transcribing %s (%r), track %s",
            self._speaker.identity,
            self._speaker.name,
            self._speaker.track_sid,
        )

    async def aclose(self) -> None:
        """Stop reading the track, publish the final of what was already said (waiting at most
        `drain_timeout`), then release the STT stream, the audio stream and every task."""
        if self._closed:
            return
        self._closed = True
        if self._audio_task is not None:
            # its `finally` ends the STT input, which makes the sidecar finalize the utterance
            await utils.aio.cancel_and_wait(self._audio_task)
        if self._stt_task is not None:
            _, pending = await asyncio.wait({self._stt_task}, timeout=self._drain_timeout)
            if pending:
                logger.warning(
                    "no final from the sidecar for %s within %.0f s of leaving; dropping it",
                    self._speaker.identity,
                    self._drain_timeout,
                )
            await utils.aio.cancel_and_wait(self._stt_task)
        aclose = getattr(self._audio, "aclose", None)
        if aclose is not None:
            await aclose()
        if self._counter is not None and self._audio_task is not None:
            self._counter.add(-1)
        logger.info(
            "stopped transcribing %s, track %s (%d finals, %.1f s of audio)",
            self._speaker.identity,
            self._speaker.track_sid,
            self._finals,
            self._audio_s,
        )

    async def _forward_audio(self) -> None:
        try:
            async for item in self._audio:
                frame = item.frame if isinstance(item, rtc.AudioFrameEvent) else item
                self._audio_s += frame.samples_per_channel / frame.sample_rate
                stream = self._stream
                if stream is None:
                    continue  # between a failed STT stream and its replacement: nowhere to go
                try:
                    stream.push_frame(frame)
                except RuntimeError:
                    pass  # that stream just failed; `_run_stt` is replacing it
        finally:
            self._input_ended.set()
            self._end_stream_input()

    def _end_stream_input(self) -> None:
        if self._stream is not None:
            # already ended, or already closed after a failure: nothing more to say
            with contextlib.suppress(RuntimeError):
                self._stream.end_input()

    async def _run_stt(self) -> None:
        """Consume STT events; reopen the stream if it fails for good while audio continues.

        The plugin retries a dropped connection itself and replays the unfinished utterance,
        so a failure reaching this loop means the sidecar stayed away longer than its retry
        window (or refused us); audio until a new stream opens is not transcribed. Reopening
        backs off (`restart_delay`, doubled per consecutive failure up to `MAX_RESTART_DELAY_S`)
        so a long outage costs one log line every half minute, not a tight loop.
        """
        failures = 0
        while True:
            stream = self._stt.stream()
            # continue the track's timeline rather than restarting at 0 on a new stream
            stream.start_time_offset = self._audio_s
            self._stream = stream
            self._segment_id = None
            if self._input_ended.is_set():
                self._end_stream_input()
            try:
                async for event in stream:
                    failures = 0  # this stream worked: a later failure starts the backoff over
                    await self._on_event(event)
                return  # input ended and every final is out
            except Exception as exc:
                if self._input_ended.is_set():
                    logger.error(
                        "transcription of %s failed while finishing: %s",
                        self._speaker.identity,
                        exc,
                    )
                    return
                delay = min(self._restart_delay * 2**failures, MAX_RESTART_DELAY_S)
                failures += 1
                logger.error(
                    "transcription of %s (track %s) failed: %s; new stream in %.0f s (attempt %d)",
                    self._speaker.identity,
                    self._speaker.track_sid,
                    exc,
                    delay,
                    failures,
                    exc_info=not isinstance(exc, APIError),
                )
            finally:
                self._stream = None
                await stream.aclose()
            await asyncio.sleep(delay)

    async def _on_event(self, event: SpeechEvent) -> None:
        if event.type == SpeechEventType.START_OF_SPEECH:
            self._segment_id = self._segment_id or new_segment_id()
        elif event.type == SpeechEventType.END_OF_SPEECH:
            self._segment_id = None  # speech without words (a cough) has no final
        elif event.type in (
            SpeechEventType.INTERIM_TRANSCRIPT,
            SpeechEventType.FINAL_TRANSCRIPT,
        ):
            if not event.alternatives:
                return
            final = event.type == SpeechEventType.FINAL_TRANSCRIPT
            data = event.alternatives[0]
            segment_id = self._segment_id or new_segment_id()
            # a final closes the utterance: what follows belongs to the next segment
            self._segment_id = None if final else segment_id
            text = data.text.strip()
            if not text:
                return
            transcript = Transcript(
                final=final,
                participant_identity=self._speaker.identity,
                participant_name=self._speaker.name,
                track_sid=self._speaker.track_sid,
                segment_id=segment_id,
                text=text,
                language=str(data.language or ""),
                start=round(data.start_time, 3),
                end=round(data.end_time, 3),
                confidence=round(data.confidence, 3) if final else 0.0,
            )
            if final:
                self._finals += 1
                logger.debug(
                    "final from %s [%.2f-%.2f s]: %s",
                    transcript.participant_identity,
                    transcript.start,
                    transcript.end,
                    transcript.text,
                )
            await self._publisher.publish(transcript)


def should_transcribe(
    participant: rtc.RemoteParticipant, publication: rtc.RemoteTrackPublication
) -> bool:
    """A microphone track of anyone but another agent (agents' speech is their own TTS)."""
    return (
        participant.kind != rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
        and publication.kind == rtc.TrackKind.KIND_AUDIO
        and publication.source == rtc.TrackSource.SOURCE_MICROPHONE
    )


class RoomTranscriber:
    """Keeps one `ParticipantTranscriber` per subscribed remote microphone track of a room."""

    def __init__(
        self,
        room: rtc.Room,
        *,
        stt: STT,
        publisher: TranscriptPublisher,
        counter: StreamCounter | None = None,
        audio_stream_factory: Callable[[rtc.Track], Any] | None = None,
    ) -> None:
        """
        Args:
            room: the connected room (audio-only auto-subscribe).
            stt: shared by every participant's stream.
            publisher: publishes into this room.
            counter: active-stream counter for load reporting (default None).
            audio_stream_factory: builds the audio iterable of a track (default:
                `rtc.AudioStream.from_track` at `STREAM_SAMPLE_RATE`, mono).
        """
        self._room = room
        self._stt = stt
        self._publisher = publisher
        self._counter = counter
        self._audio_stream_factory = audio_stream_factory or _default_audio_stream
        self._active: dict[str, ParticipantTranscriber] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._started = False

    @property
    def active(self) -> dict[str, ParticipantTranscriber]:
        """Transcribers by track sid."""
        return dict(self._active)

    def start(self) -> None:
        """Follow the room's tracks, starting with the ones already subscribed."""
        self._started = True
        self._room.on("track_subscribed", self._on_track_subscribed)
        self._room.on("track_unsubscribed", self._on_track_unsubscribed)
        self._room.on("track_unpublished", self._on_track_unpublished)
        self._room.on("participant_disconnected", self._on_participant_disconnected)
        for participant in self._room.remote_participants.values():
            for publication in participant.track_publications.values():
                if publication.track is not None and publication.subscribed:
                    self._on_track_subscribed(publication.track, publication, participant)

    async def aclose(self) -> None:
        """Stop following the room and close every transcriber (finals in flight included)."""
        if self._started:
            self._started = False
            self._room.off("track_subscribed", self._on_track_subscribed)
            self._room.off("track_unsubscribed", self._on_track_unsubscribed)
            self._room.off("track_unpublished", self._on_track_unpublished)
            self._room.off("participant_disconnected", self._on_participant_disconnected)
        for sid in list(self._active):
            self._stop(sid)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def _on_track_subscribed(
        self,
        track: rtc.Track,
        publication: rtc.RemoteTrackPublication,
        participant: rtc.RemoteParticipant,
    ) -> None:
        if not should_transcribe(participant, publication) or publication.sid in self._active:
            return
        transcriber = ParticipantTranscriber(
            speaker=Speaker(participant.identity, participant.name, publication.sid),
            audio=self._audio_stream_factory(track),
            stt=self._stt,
            publisher=self._publisher,
            counter=self._counter,
        )
        self._active[publication.sid] = transcriber
        transcriber.start()

    def _on_track_unsubscribed(
        self,
        track: rtc.Track,
        publication: rtc.RemoteTrackPublication,
        participant: rtc.RemoteParticipant,
    ) -> None:
        self._stop(publication.sid)

    def _on_track_unpublished(
        self, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        self._stop(publication.sid)

    def _on_participant_disconnected(self, participant: rtc.RemoteParticipant) -> None:
        for sid, transcriber in list(self._active.items()):
            if transcriber.speaker.identity == participant.identity:
                self._stop(sid)

    def _stop(self, track_sid: str) -> None:
        transcriber = self._active.pop(track_sid, None)
        if transcriber is None:
            return
        task = asyncio.create_task(transcriber.aclose(), name=f"stt-close-{track_sid}")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


def _default_audio_stream(track: rtc.Track) -> rtc.AudioStream:
    return rtc.AudioStream.from_track(track=track, sample_rate=STREAM_SAMPLE_RATE, num_channels=1)
