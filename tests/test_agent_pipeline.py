"""The per-participant pipeline with real speech, the real plugin and the real sidecar.

Only the room's publish calls are a stand-in (`RecordingParticipant`); see agent_support.
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest
from livekit import rtc
from livekit.plugins import custom_stt

from agent.capacity import StreamCounter
from agent.publisher import Transcript, TranscriptPublisher
from agent.sidecar_ready import probe_ready_sync
from agent.transcriber import ParticipantTranscriber, RoomTranscriber, Speaker

from .agent_support import (
    TRANSCRIPT_KEYS,
    Microphone,
    RecordingParticipant,
    new_tasks,
    silence,
    speech,
)
from .support.sidecar import SidecarProcess
from .support.speech import clip, normalize, wer


@pytest.fixture
async def stt(sidecar: SidecarProcess) -> AsyncIterator[custom_stt.STT]:
    # every option explicit: nothing comes from the environment or a .env
    instance = custom_stt.STT(base_url=sidecar.url, api_key=None, language="en")
    yield instance
    await instance.aclose()


def active_streams(sidecar: SidecarProcess) -> int:
    return probe_ready_sync(sidecar.url).active_streams


async def test_one_participant_schema_words_and_one_final_per_utterance(
    stt: custom_stt.STT, sidecar: SidecarProcess
) -> None:
    room = RecordingParticipant()
    mic = Microphone()
    transcriber = ParticipantTranscriber(
        speaker=Speaker("alice", "Alice", "TR_alice"),
        audio=mic.audio_stream(),
        stt=stt,
        publisher=TranscriptPublisher(room, topic="transcription", interims=True),
    )
    transcriber.start()
    await mic.say(speech(0.3, "librivox_0880.wav", 1.2, "goforward.wav", 1.5))
    await room.wait_for(lambda: len(room.finals()) >= 2, timeout=15)
    await transcriber.aclose()
    await mic.aclose()

    # the data messages: reliable, on the topic, exactly the documented schema
    assert room.data, "nothing was published"
    for record in room.data:
        assert record.topic == "transcription"
        assert record.reliable
    messages = room.messages()
    for m in messages:
        assert set(m) == TRANSCRIPT_KEYS, m
        assert m["type"] == "transcript"
        assert (m["participant_identity"], m["participant_name"], m["track_sid"]) == (
            "alice",
            "Alice",
            "TR_alice",
        )
        assert m["segment_id"].startswith("SG_")
        assert m["text"].strip()
        assert 0 <= m["start"] < m["end"]

    # one final per utterance, with the right words, in order, each its own segment
    finals = room.finals()
    assert len(finals) == 2, [f["text"] for f in finals]
    references = [clip("librivox_0880.wav").text, clip("goforward.wav").text]
    for final, reference in zip(finals, references, strict=True):
        assert wer(reference, final["text"]) <= 0.25, (reference, final["text"])
        assert final["language"] == "en"
        assert 0 < final["confidence"] <= 1
    assert finals[0]["end"] <= finals[1]["start"]
    assert finals[0]["segment_id"] != finals[1]["segment_id"]
    # utterance 1 spans ~0.3-3.3 s of the track, utterance 2 ~4.5-7.3 s
    assert abs(finals[0]["start"] - 0.3) < 0.6 and abs(finals[1]["end"] - 7.3) < 0.8

    # interims come first and belong to the segment of the final that follows them
    interims = [m for m in messages if not m["final"]]
    assert interims, "interims were enabled but none was published"
    for i, m in enumerate(messages):
        if not m["final"]:
            next_final = next(f for f in messages[i:] if f["final"])
            assert m["segment_id"] == next_final["segment_id"]

    # the standard transcription stream: same segments, attributed to the speaker
    streams = room.text_streams
    assert len(streams) == len(messages)
    for stream, m in zip(streams, messages, strict=True):
        assert stream.topic == "lk.transcription"
        assert stream.sender_identity == "alice"
        assert stream.closed
        assert stream.text == m["text"]
        assert stream.attributes == {
            "lk.segment_id": m["segment_id"],
            "lk.transcribed_track_id": "TR_alice",
            "lk.transcription_final": "true" if m["final"] else "false",
        }


async def test_two_participants_talking_at_once_are_never_mixed(stt: custom_stt.STT) -> None:
    room = RecordingParticipant()
    publisher = TranscriptPublisher(room, topic="transcription", interims=True)
    mics = {"alice": Microphone(), "bob": Microphone()}
    transcribers = [
        ParticipantTranscriber(
            speaker=Speaker(identity, identity.title(), f"TR_{identity}"),
            audio=mic.audio_stream(),
            stt=stt,
            publisher=publisher,
        )
        for identity, mic in mics.items()
    ]
    for t in transcribers:
        t.start()
    # overlapping speech: alice's 11 s sentence while bob says two short ones
    await asyncio.gather(
        mics["alice"].say(speech(0.2, "jfk.wav", 1.5)),
        mics["bob"].say(speech(0.5, "librivox_0880.wav", 1.0, "goforward.wav", 4.0)),
    )
    await room.wait_for(
        lambda: len(room.finals("alice")) >= 1 and len(room.finals("bob")) >= 2, timeout=15
    )
    for t in transcribers:
        await t.aclose()
    for mic in mics.values():
        await mic.aclose()

    alice = " ".join(f["text"] for f in room.finals("alice"))
    bob = [f["text"] for f in room.finals("bob")]
    assert wer(clip("jfk.wav").text, alice) <= 0.15, alice
    assert len(bob) == 2, bob
    assert wer(clip("librivox_0880.wav").text, bob[0]) <= 0.25, bob
    assert wer(clip("goforward.wav").text, bob[1]) <= 0.25, bob
    # attribution: every message names the track of the identity it carries
    for m in room.messages():
        assert m["track_sid"] == f"TR_{m['participant_identity']}"
    for s in room.text_streams:
        assert s.attributes["lk.transcribed_track_id"] == f"TR_{s.sender_identity}"
    assert "country" not in " ".join(bob).lower()
    assert "forward" not in alice.lower()


class _StandInRoom(rtc.EventEmitter[str]):
    """Only what `RoomTranscriber` reads of `rtc.Room`: its events and remote participants."""

    def __init__(self) -> None:
        super().__init__()
        self.remote_participants: dict[str, SimpleNamespace] = {}


def _participant(identity: str, kind: int = rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD):
    return SimpleNamespace(identity=identity, name=identity.title(), kind=kind)


def _publication(sid: str, source: int = rtc.TrackSource.SOURCE_MICROPHONE):
    return SimpleNamespace(sid=sid, kind=rtc.TrackKind.KIND_AUDIO, source=source)


async def test_leaving_mid_sentence_publishes_the_words_so_far_and_releases_everything(
    stt: custom_stt.STT, sidecar: SidecarProcess, tmp_path
) -> None:
    """Room events route tracks (an agent's and a screen-share's are ignored); a participant
    who leaves mid-sentence still gets the final of what they said, and then nothing is left:
    no task, no plugin stream, no sidecar stream, a zero stream count."""
    before = set(asyncio.all_tasks())
    room_events = _StandInRoom()
    room = RecordingParticipant()
    counter = StreamCounter(tmp_path)
    mic = Microphone()
    other_agent_mic = Microphone()
    room_transcriber = RoomTranscriber(
        room_events,  # type: ignore[arg-type]
        stt=stt,
        publisher=TranscriptPublisher(room, interims=False),
        counter=counter,
        audio_stream_factory=lambda track: rtc.AudioStream(
            track, sample_rate=16000, num_channels=1
        ),
    )
    room_transcriber.start()
    carol = _participant("carol")
    agent = _participant("other-agent", rtc.ParticipantKind.PARTICIPANT_KIND_AGENT)
    room_events.emit("track_subscribed", other_agent_mic.track, _publication("TR_agent"), agent)
    room_events.emit(
        "track_subscribed",
        mic.track,
        _publication("TR_screen", rtc.TrackSource.SOURCE_SCREENSHARE_AUDIO),
        carol,
    )
    room_events.emit("track_subscribed", mic.track, _publication("TR_carol"), carol)
    assert set(room_transcriber.active) == {"TR_carol"}
    assert counter.value == 1 and (tmp_path / str(os.getpid())).exists()

    # "And so my fellow Americans, ask not ...": carol leaves in the middle of "Americans"
    await mic.say(speech(0.2, "jfk.wav")[: int(2.6 * 16000)])
    assert active_streams(sidecar) >= 1
    room_events.emit("participant_disconnected", carol)
    assert room_transcriber.active == {}
    await room_transcriber.aclose()

    finals = room.finals("carol")
    assert len(finals) == 1, finals
    # tiny.en on a sentence cut short: the words are there, the first ones may wobble
    assert "fellow" in normalize(finals[0]["text"]), finals[0]["text"]
    assert len(normalize(finals[0]["text"]).split()) <= 7, finals[0]["text"]
    assert finals[0]["end"] >= 2.2, "the final should cover the audio up to the leave"
    assert all(m["final"] for m in room.messages()), "interims were disabled"

    await mic.aclose()
    await other_agent_mic.aclose()
    await asyncio.sleep(0.2)
    assert new_tasks(before) == []
    assert counter.value == 0 and list(tmp_path.iterdir()) == []
    gc.collect()  # closed streams sit in reference cycles (stream <-> its finished tasks)
    assert len(stt._streams) == 0  # the plugin's weak registry of live streams
    for _ in range(20):  # the sidecar notices the closed socket within moments
        if active_streams(sidecar) == 0:
            break
        await asyncio.sleep(0.1)
    assert active_streams(sidecar) == 0


async def test_participant_already_in_the_room_then_republishing(
    stt: custom_stt.STT,
) -> None:
    """Someone already publishing when the worker arrives is picked up at `start()`; when they
    unpublish and publish again (a new track sid), the new track gets its own pipeline."""
    room_events = _StandInRoom()
    room = RecordingParticipant()
    first_mic, second_mic = Microphone(), Microphone()
    ivan = _participant("ivan")
    first = _publication("TR_ivan_1")
    first.track, first.subscribed = first_mic.track, True
    ivan.track_publications = {first.sid: first}
    room_events.remote_participants = {"ivan": ivan}
    room_transcriber = RoomTranscriber(
        room_events,  # type: ignore[arg-type]
        stt=stt,
        publisher=TranscriptPublisher(room, interims=False),
        audio_stream_factory=lambda track: rtc.AudioStream(
            track, sample_rate=16000, num_channels=1
        ),
    )
    room_transcriber.start()
    assert set(room_transcriber.active) == {"TR_ivan_1"}

    room_events.emit("track_unpublished", first, ivan)
    second = _publication("TR_ivan_2")
    room_events.emit("track_subscribed", second_mic.track, second, ivan)
    assert set(room_transcriber.active) == {"TR_ivan_2"}
    await second_mic.say(speech(0.3, "goforward.wav", 1.2))
    await room.wait_for(lambda: len(room.finals()) == 1, timeout=10)
    await room_transcriber.aclose()
    await first_mic.aclose()
    await second_mic.aclose()

    (final,) = room.finals()
    assert final["track_sid"] == "TR_ivan_2" and final["participant_name"] == "Ivan"
    assert wer(clip("goforward.wav").text, final["text"]) <= 0.25
    assert room.text_streams[-1].attributes["lk.transcribed_track_id"] == "TR_ivan_2"


async def test_publisher_interims_off_and_failed_sends_never_raise() -> None:
    room = RecordingParticipant()
    publisher = TranscriptPublisher(room, topic="captions", interims=False)
    base = dict(
        participant_identity="dave",
        participant_name="",
        track_sid="TR_d",
        segment_id="SG_1",
        language="en",
        start=1.0,
        end=2.0,
    )
    await publisher.publish(Transcript(final=False, text="go for", confidence=0.0, **base))
    assert room.data == [] and room.text_streams == []
    await publisher.publish(Transcript(final=True, text="go forward", confidence=0.9, **base))
    assert [d.topic for d in room.data] == ["captions"]
    assert room.messages()[0] == {"type": "transcript", "final": True, "text": "go forward",
                                  "confidence": 0.9, **base}  # fmt: skip
    assert room.text_streams[0].attributes["lk.transcription_final"] == "true"

    class Broken(RecordingParticipant):
        async def publish_data(self, *args, **kwargs) -> None:
            raise RuntimeError("room disconnected")

    broken = Broken()
    await TranscriptPublisher(broken).publish(
        Transcript(final=True, text="go forward", confidence=0.9, **base)
    )
    # the data message failed (logged), the text stream was still tried
    assert len(broken.text_streams) == 1


async def test_silence_publishes_nothing(stt: custom_stt.STT) -> None:
    room = RecordingParticipant()
    mic = Microphone()
    transcriber = ParticipantTranscriber(
        speaker=Speaker("erin", "Erin", "TR_e"),
        audio=mic.audio_stream(),
        stt=stt,
        publisher=TranscriptPublisher(room),
    )
    transcriber.start()
    await mic.say(silence(2.0))
    await transcriber.aclose()
    await mic.aclose()
    assert room.data == [] and transcriber.finals == 0
    assert transcriber.audio_seconds == pytest.approx(2.0, abs=0.3)
