"""`lk.agent.state`, below the room: `initializing` on joining, `listening` once a microphone
is subscribed or after the fallback delay, and a refused update never breaks the job.

The stand-in is `RecordingParticipant` (the agent's local participant); the room's events come
from a real `rtc.EventEmitter`. tests/browser/test_playground.py is the live counterpart.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from livekit import rtc

from agent.agent_state import AgentStateAnnouncer

from .agent_support import RecordingParticipant

STATE = "lk.agent.state"


async def _settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_initializing_then_listening_after_the_first_subscription() -> None:
    participant, room = RecordingParticipant(), rtc.EventEmitter()
    announcer = AgentStateAnnouncer(participant, room, delay_s=0.1, fallback_s=30)
    await announcer.start()
    assert participant.attribute_updates == [{STATE: "initializing"}]

    room.emit("track_subscribed", object(), object(), object())
    await asyncio.sleep(0.05)
    room.emit("track_subscribed", object(), object(), object())  # a second microphone
    assert participant.attribute_updates == [{STATE: "initializing"}]  # not yet: delay_s
    await asyncio.sleep(0.2)
    # a change after the join is what components-react <= 2.9.23 needs to see the state
    assert participant.attribute_updates == [{STATE: "initializing"}, {STATE: "listening"}]
    await announcer.aclose()


async def test_listening_after_the_fallback_without_any_microphone() -> None:
    participant, room = RecordingParticipant(), rtc.EventEmitter()
    announcer = AgentStateAnnouncer(participant, room, delay_s=0, fallback_s=0.05)
    await announcer.start()
    await asyncio.sleep(0.2)
    assert participant.attribute_updates == [{STATE: "initializing"}, {STATE: "listening"}]
    room.emit("track_subscribed", object(), object(), object())
    await _settle()
    assert len(participant.attribute_updates) == 2  # listening is set once
    await announcer.aclose()


async def test_closed_before_the_fallback_sets_nothing_more() -> None:
    participant, room = RecordingParticipant(), rtc.EventEmitter()
    announcer = AgentStateAnnouncer(participant, room, delay_s=0, fallback_s=0.05)
    await announcer.start()
    await announcer.aclose()
    await asyncio.sleep(0.1)
    room.emit("track_subscribed", object(), object(), object())
    await _settle()
    assert participant.attribute_updates == [{STATE: "initializing"}]


async def test_a_refused_update_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    class NoPermission(RecordingParticipant):
        async def set_attributes(self, attributes: dict[str, str]) -> None:
            raise RuntimeError("does not have permission to update own metadata")

    room = rtc.EventEmitter()
    announcer = AgentStateAnnouncer(NoPermission(), room, delay_s=0, fallback_s=30)
    with caplog.at_level(logging.WARNING, logger="agent.agent_state"):
        await announcer.start()
        room.emit("track_subscribed", object(), object(), object())
        await _settle()
        await announcer.aclose()
    assert "could not set lk.agent.state=initializing" in caplog.text
    assert "could not set lk.agent.state=listening" in caplog.text
