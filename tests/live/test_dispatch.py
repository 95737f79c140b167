"""Scenario 6: dispatch across workers, by the load they report, and explicit dispatch."""

from __future__ import annotations

import asyncio
import re
import time

from ..livekit_server import LiveKitServerInfo
from ..support.sidecar import SidecarProcess
from .room_support import Listener, Talker


async def _has_agent(listener: Listener, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if listener.agents():
            return True
        await asyncio.sleep(0.2)
    return False


async def test_two_full_workers_six_rooms(
    livekit_server: LiveKitServerInfo, sidecars, workers, room_name
) -> None:
    """STT_MAX_STREAMS=2 per sidecar: four rooms fit, spread two and two; the fifth and sixth,
    created while both are full, get no transcriber (LiveKit does not offer them again); a
    room created after one frees up is transcribed."""
    pool = [workers(sidecars(STT_MAX_STREAMS="2").url, "start") for _ in range(2)]
    for w in pool:
        await w.wait_registered()
    people: list[tuple[Listener, Talker]] = []
    served: list[bool] = []
    try:
        for i in range(6):
            room = room_name(f"six{i}")
            listener = Listener(livekit_server, room, "listener")
            talker = Talker(livekit_server, room, f"speaker{i}")
            await listener.connect()
            await talker.connect()
            await talker.publish()
            people.append((listener, talker))
            served.append(await _has_agent(listener, 20 if i < 4 else 10))
            if served[-1]:
                await asyncio.sleep(1.5)  # its stream counted (load every 0.5 s) before the next
        per_worker = [len(re.findall(r"transcribing speaker\d", w.log())) for w in pool]
        print("served", served, "per worker", per_worker)
        assert served == [True] * 4 + [False] * 2, served
        assert per_worker == [2, 2], per_worker

        # one room ends: capacity is back, and the next new room is served
        listener, talker = people[0]
        freed = "marking as available"
        before = sum(w.log().count(freed) for w in pool)
        await talker.disconnect()
        await listener.disconnect()
        deadline = time.monotonic() + 30
        while sum(w.log().count(freed) for w in pool) == before:
            assert time.monotonic() < deadline, "no worker reported free capacity"
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # the status update reaches the server
        room = room_name("seven")
        listener = Listener(livekit_server, room, "listener")
        talker = Talker(livekit_server, room, "speaker7")
        await listener.connect()
        await talker.connect()
        await talker.publish()
        people.append((listener, talker))
        assert await _has_agent(listener, 20)
    finally:
        for listener, talker in people:
            await talker.disconnect()
            await listener.disconnect()


async def test_agent_name_explicit_dispatch(
    livekit_server: LiveKitServerInfo, sidecar: SidecarProcess, workers, room_name
) -> None:
    worker = workers(sidecar.url, "dev", AGENT_NAME="scribe")
    await worker.wait_registered()
    asked, plain = room_name("asked"), room_name("plain")
    # the token's room config dispatches only when this join creates the room
    a = Listener(livekit_server, asked, "alice", agent_name="scribe")
    b = Listener(livekit_server, plain, "bob")
    try:
        await a.connect()
        await b.connect()
        assert await _has_agent(a, 30)
        assert not await _has_agent(b, 8)
    finally:
        await a.disconnect()
        await b.disconnect()
    assert f"transcribing room {asked}" in worker.log()
    assert plain not in worker.log()
