"""The agent's `lk.agent.state` attribute, which LiveKit's front ends read.

`AgentSession` sets it (initializing, listening, thinking, speaking); this worker runs without
one, so it sets it itself. The agents playground (components-react `useAgent`) counts an agent
as connected only while the attribute is `listening`, `thinking` or `speaking`: without it
the agent stays "connecting", then "failed" after 20 s, and the transcript panel never shows.

`initializing` on joining, then `listening` `delay_s` after the first microphone is subscribed
(or after `fallback_s`, so a room where nobody has a microphone on does not look failed). The
change must reach the browser after it has seen the agent join: components-react up to 2.9.23
(the playground's lockfile pins 2.9.20) reads the state only from attribute-change events
that arrive once it knows the agent, and a value set at join time is folded into the join.
The first subscription happens about when the server announces the agent to the others, so
`delay_s` gives the browser a margin to render the agent first (a margin by reasoning, not a
measured race).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from livekit import rtc
from livekit.agents.types import ATTRIBUTE_AGENT_STATE

logger = logging.getLogger("agent.agent_state")


class AttributeSetter(Protocol):
    async def set_attributes(self, attributes: dict[str, str]) -> None: ...


class AgentStateAnnouncer:
    """Sets `lk.agent.state` on the agent's participant; never raises on a failed update."""

    def __init__(
        self,
        participant: AttributeSetter,
        room: rtc.EventEmitter,
        *,
        delay_s: float = 1.0,
        fallback_s: float = 3.0,
    ) -> None:
        """
        Args:
            participant: the agent's `room.local_participant`.
            room: the room, for its `track_subscribed` event.
            delay_s: from the first subscription to `listening` (1 s).
            fallback_s: `listening` after this long without any subscription (3 s).
        """
        self._participant = participant
        self._room = room
        self._delay_s = delay_s
        self._fallback_s = fallback_s
        self._tasks: set[asyncio.Task[None]] = set()
        self._listening = False
        self._timer: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        """`initializing` now; `listening` soon after the first subscription, or after
        `fallback_s`."""
        await self._set("initializing")
        self._room.on("track_subscribed", self._on_track_subscribed)
        self._timer = asyncio.get_running_loop().call_later(self._fallback_s, self._go_listening)

    async def aclose(self) -> None:
        self._room.off("track_subscribed", self._on_track_subscribed)
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            await task

    def _on_track_subscribed(self, *_: object) -> None:
        self._room.off("track_subscribed", self._on_track_subscribed)
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(self._delay_s, self._go_listening)

    def _go_listening(self) -> None:
        if self._listening:
            return
        self._listening = True
        task = asyncio.create_task(self._set("listening"))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _set(self, state: str) -> None:
        try:
            await self._participant.set_attributes({ATTRIBUTE_AGENT_STATE: state})
        except Exception as exc:
            logger.warning("could not set %s=%s: %s", ATTRIBUTE_AGENT_STATE, state, exc)
