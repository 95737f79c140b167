"""The publisher's legacy transcription packet, below the room.

The one stand-in is `RecordingParticipant` (the agent's `room.local_participant`); the live
counterpart is tests/browser/ (a browser shows all three channels).
"""

from __future__ import annotations

import logging

import pytest
from livekit import rtc

from agent.publisher import Transcript, TranscriptPublisher
from agent.settings import SettingsError, WorkerSettings

from .agent_support import RecordingParticipant

BASE = dict(
    participant_identity="alice",
    participant_name="Alice",
    track_sid="TR_alice",
    segment_id="SG_a1",
    language="en",
    start=0.5,
    end=2.0,
)


def _utterance() -> list[Transcript]:
    return [
        Transcript(final=False, text="go for", confidence=0.0, **BASE),
        Transcript(final=False, text="go forward ten", confidence=0.0, **BASE),
        Transcript(final=True, text="Go forward 10 meters.", confidence=0.9, **BASE),
    ]


async def test_legacy_packet_mirrors_every_hypothesis_by_default() -> None:
    room = RecordingParticipant()
    publisher = TranscriptPublisher(room)
    for t in _utterance():
        await publisher.publish(t)

    assert all(isinstance(p, rtc.Transcription) for p in room.legacy)
    # one packet per hypothesis, like the data messages and the text streams
    assert len(room.legacy) == len(room.data) == len(room.text_streams) == 3
    for packet, stream in zip(room.legacy, room.text_streams, strict=True):
        # attributed to the speaker and their track, as RoomIO does for user transcripts
        assert packet.participant_identity == stream.sender_identity == "alice"
        assert packet.track_sid == stream.attributes["lk.transcribed_track_id"] == "TR_alice"
        (segment,) = packet.segments
        # the same segment id on every channel: clients replace interims with the final
        assert segment.id == stream.attributes["lk.segment_id"] == "SG_a1"
        # each packet carries the whole text so far, not a delta
        assert segment.text == stream.text
        assert segment.final == (stream.attributes["lk.transcription_final"] == "true")
        assert segment.language == "en"
    assert [p.segments[0].final for p in room.legacy] == [False, False, True]
    assert room.legacy[-1].segments[0].text == "Go forward 10 meters."


async def test_legacy_switch_off_and_interims_off() -> None:
    off = RecordingParticipant()
    publisher = TranscriptPublisher(off, legacy=False)
    for t in _utterance():
        await publisher.publish(t)
    assert off.legacy == [] and len(off.data) == len(off.text_streams) == 3

    finals_only = RecordingParticipant()
    publisher = TranscriptPublisher(finals_only, interims=False)
    for t in _utterance():
        await publisher.publish(t)
    assert [p.segments[0].final for p in finals_only.legacy] == [True]


async def test_a_failed_legacy_send_is_logged_and_never_stops_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class NoLegacy(RecordingParticipant):
        async def publish_transcription(self, transcription: rtc.Transcription) -> None:
            raise RuntimeError("engine closed")

    room = NoLegacy()
    publisher = TranscriptPublisher(room)
    with caplog.at_level(logging.WARNING, logger="agent.publisher"):
        for t in _utterance():
            await publisher.publish(t)
    assert len(room.data) == len(room.text_streams) == 3
    assert "legacy transcription of alice" in caplog.text


def test_legacy_setting() -> None:
    assert WorkerSettings.from_env({}).publish_legacy_transcription is True
    off = WorkerSettings.from_env({"PUBLISH_LEGACY_TRANSCRIPTION": "false"})
    assert off.publish_legacy_transcription is False
    with pytest.raises(SettingsError, match="PUBLISH_LEGACY_TRANSCRIPTION"):
        WorkerSettings.from_env({"PUBLISH_LEGACY_TRANSCRIPTION": "sometimes"})
