"""Publish each transcript into the room, on up to three channels:

1. a reliable data message on `TRANSCRIPT_TOPIC` (default `transcription`) carrying our JSON
   (`Transcript.to_json`), for client code that wants times, confidence and the track;
2. LiveKit's standard transcription text stream (topic `lk.transcription`) with the attributes
   `lk.segment_id`, `lk.transcribed_track_id`, `lk.transcription_final`, sent on behalf of the
   speaker, so the agents playground and the client SDKs show it with no custom code;
3. unless `legacy` is off (`PUBLISH_LEGACY_TRANSCRIPTION=false`), the older transcription packet
   (`LocalParticipant.publish_transcription`), which clients of the previous generation receive
   as `RoomEvent.TranscriptionReceived`.

The second mirrors what livekit-agents' own RoomIO does for user transcripts
(`voice/room_io/_output.py::_ParticipantStreamTranscriptionOutput` with `is_delta_stream=False`):
one short text stream per hypothesis, `sender_identity` = the speaker, the same segment id for
the interims and the final of one utterance. The third mirrors its
`_ParticipantLegacyTranscriptionOutput`: one segment with the whole text so far under the same
segment id, `final` on the last one, start/end times 0. RoomIO sends it only while some
participant's client protocol predates text streams (read from a private field); we send it
whenever the switch is on, since a legacy packet costs little and clients that do not listen
for it ignore it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import Protocol

from livekit import rtc
from livekit.agents.types import (
    ATTRIBUTE_TRANSCRIPTION_FINAL,
    ATTRIBUTE_TRANSCRIPTION_SEGMENT_ID,
    ATTRIBUTE_TRANSCRIPTION_TRACK_ID,
    TOPIC_TRANSCRIPTION,
)

logger = logging.getLogger("agent.publisher")


@dataclass(frozen=True)
class Transcript:
    """One hypothesis (interim) or result (final) for one utterance of one participant.

    `start`/`end` are seconds of the participant's audio since the worker began transcribing
    that track; `confidence` is 0..1 (0 for interims, which carry none).
    """

    final: bool
    participant_identity: str
    participant_name: str
    track_sid: str
    segment_id: str
    text: str
    language: str
    start: float
    end: float
    confidence: float

    def to_json(self) -> str:
        """The data-message payload: `{"type": "transcript", ...every field}`."""
        return json.dumps({"type": "transcript", **asdict(self)}, ensure_ascii=False)


class RoomPublisher(Protocol):
    """The calls of `rtc.LocalParticipant` this module needs (tests record them)."""

    async def publish_data(
        self,
        payload: bytes | str,
        *,
        reliable: bool = True,
        destination_identities: list[str] = ...,
        topic: str = "",
    ) -> None: ...

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
    ) -> rtc.TextStreamWriter: ...

    async def publish_transcription(self, transcription: rtc.Transcription) -> None: ...


class TranscriptPublisher:
    """Publishes transcripts of every participant of one room; never raises on a failed send
    (a transcript that cannot be delivered is logged, and the next one is tried normally)."""

    def __init__(
        self,
        participant: RoomPublisher,
        *,
        topic: str = "transcription",
        interims: bool = True,
        legacy: bool = True,
    ) -> None:
        """
        Args:
            participant: the agent's `room.local_participant`.
            topic: data-message topic (default "transcription").
            interims: publish interim hypotheses too (default True); finals always are.
            legacy: also send the older transcription packet (`publish_transcription`,
                `RoomEvent.TranscriptionReceived` in clients) (default True).
        """
        self._participant = participant
        self._topic = topic
        self._interims = interims
        self._legacy = legacy

    @property
    def publishes_interims(self) -> bool:
        return self._interims

    async def publish(self, transcript: Transcript) -> None:
        """Send `transcript` as a data message, on `lk.transcription` and (when enabled) as a
        legacy transcription packet; interims only when enabled. Each final is sent exactly
        once per channel: a failed send is not retried, since a retry after a send that did
        reach the room would duplicate it."""
        if not transcript.final and not self._interims:
            return
        await self._publish_data(transcript)
        await self._publish_text_stream(transcript)
        if self._legacy:
            await self._publish_legacy(transcript)

    async def _publish_data(self, transcript: Transcript) -> None:
        try:
            await self._participant.publish_data(
                transcript.to_json().encode(), reliable=True, topic=self._topic
            )
        except Exception as exc:
            logger.warning(
                "could not publish the %s transcript of %s on topic %r: %s",
                "final" if transcript.final else "interim",
                transcript.participant_identity,
                self._topic,
                exc,
            )

    async def _publish_text_stream(self, transcript: Transcript) -> None:
        attributes = {
            ATTRIBUTE_TRANSCRIPTION_SEGMENT_ID: transcript.segment_id,
            ATTRIBUTE_TRANSCRIPTION_FINAL: "true" if transcript.final else "false",
        }
        if transcript.track_sid:
            attributes[ATTRIBUTE_TRANSCRIPTION_TRACK_ID] = transcript.track_sid
        try:
            writer = await self._participant.stream_text(
                topic=TOPIC_TRANSCRIPTION,
                attributes=attributes,
                # attribute the text to the speaker, not to the agent that sends it
                sender_identity=transcript.participant_identity,
            )
            await writer.write(transcript.text)
            await writer.aclose()
        except Exception as exc:
            logger.warning(
                "could not publish the %s transcript of %s on %s: %s",
                "final" if transcript.final else "interim",
                transcript.participant_identity,
                TOPIC_TRANSCRIPTION,
                exc,
            )

    async def _publish_legacy(self, transcript: Transcript) -> None:
        # The packet names a track; a transcript without one (never seen in a room) is skipped.
        if not transcript.track_sid:
            return
        transcription = rtc.Transcription(
            participant_identity=transcript.participant_identity,
            track_sid=transcript.track_sid,
            segments=[
                rtc.TranscriptionSegment(
                    id=transcript.segment_id,
                    text=transcript.text,
                    # RoomIO sends 0: the packet's time unit is not specified anywhere
                    start_time=0,
                    end_time=0,
                    language=transcript.language,
                    final=transcript.final,
                )
            ],
        )
        try:
            await self._participant.publish_transcription(transcription)
        except Exception as exc:
            logger.warning(
                "could not publish the %s legacy transcription of %s: %s",
                "final" if transcript.final else "interim",
                transcript.participant_identity,
                exc,
            )
