"""Helpers for the WebSocket reliability tests (`test_ws_*`, `test_faults*`, `test_fuzz_ws*`,
`test_overload*`); no tests here, as in `tests/plugin_support.py`.

- what the protocol allows the server to say (message types, error codes, close codes) and a
  check that error messages carry no internals;
- a raw WebSocket client that can read server frames itself, stop reading, or abort its TCP
  connection at any byte (aiohttp's client always drains and closes politely);
- the sidecar's resource figures (RSS, open FDs, `/ready`) for leak checks.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
import urllib.request
from typing import Any

from ..streaming_helpers import RawWebSocket
from ..support.leaks import leak_markers_in
from ..support.sidecar import SidecarProcess

SERVER_TYPES = frozenset(
    {"ready", "speech_started", "interim", "final", "speech_ended", "flushed", "closed", "error"}
)
"""Every message type docs/streaming-protocol.md lets the server send."""

ERROR_CODES = frozenset(
    {
        "invalid_config",
        "protocol_error",
        "frame_too_large",
        "overloaded",
        "idle_timeout",
        "config_timeout",
        "slow_consumer",
        "internal",
    }
)

CLOSE_CODES = frozenset({1000, 1001, 1008, 1009, 1013})
"""Documented close codes: done, going away/idle, policy, too big, try again later."""


def leaks_internals(text: str) -> bool:
    """True if `text` (an error message) shows anything of the server's insides."""
    return bool(leak_markers_in(text))


def check_server_message(raw: str) -> dict[str, Any]:
    """Parse one server text message and assert it is one the protocol defines."""
    message = json.loads(raw)
    assert isinstance(message, dict), raw
    assert message.get("type") in SERVER_TYPES, raw
    if message["type"] == "error":
        assert message.get("code") in ERROR_CODES, raw
        assert isinstance(message.get("message"), str) and message["message"], raw
        assert not leaks_internals(message["message"]), raw
    return message


class Frame:
    """One WebSocket frame as read off the wire."""

    def __init__(self, opcode: int, payload: bytes) -> None:
        self.opcode = opcode
        self.payload = payload

    @property
    def close_code(self) -> int | None:
        if self.opcode != 0x8:
            return None
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else 1005

    @property
    def text(self) -> str:
        return self.payload.decode()


class RawClient(RawWebSocket):
    """`RawWebSocket` plus reading server frames (unmasked, unfragmented: what aiohttp sends),
    WebSocket pings, and a bounded `until_closed`."""

    @classmethod
    async def open(cls, sidecar: SidecarProcess, recv_buffer: int = 65536) -> RawClient:
        return await cls.connect("127.0.0.1", sidecar.port, recv_buffer=recv_buffer)

    async def read_frame(self, timeout: float = 10.0) -> Frame | None:
        """The next frame, or None when the server closed the TCP connection."""
        try:
            async with asyncio.timeout(timeout):
                head = await self.reader.readexactly(2)
                size = head[1] & 0x7F
                if size == 126:
                    size = struct.unpack("!H", await self.reader.readexactly(2))[0]
                elif size == 127:
                    size = struct.unpack("!Q", await self.reader.readexactly(8))[0]
                payload = await self.reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        return Frame(head[0] & 0x0F, payload)

    async def read_messages(self, until: str | None = None, timeout: float = 10.0) -> list[Frame]:
        """Frames until a text message of type `until`, a close frame, EOF or `timeout` (the
        caller tells which from the last frame)."""
        frames: list[Frame] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                frame = await self.read_frame(max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                return frames
            if frame is None:
                return frames
            frames.append(frame)
            if frame.opcode == 0x8:
                return frames
            if (
                until is not None
                and frame.opcode == 0x1
                and json.loads(frame.text)["type"] == until
            ):
                return frames

    async def ping(self, payload: bytes = b"") -> None:
        await self.send(payload, 0x9)

    async def send_close(self, code: int = 1000) -> None:
        await self.send(struct.pack("!H", code), 0x8)


def ready(sidecar: SidecarProcess) -> dict[str, Any]:
    with urllib.request.urlopen(sidecar.url + "/ready", timeout=5) as r:
        return json.loads(r.read())


async def wait_streams_gone(sidecar: SidecarProcess, timeout: float = 15.0) -> None:
    """Until `/ready` reports no active stream (the server noticed every client left)."""
    deadline = time.monotonic() + timeout
    while True:
        active = (await asyncio.to_thread(ready, sidecar))["active_streams"]
        if active == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{active} stream(s) still active after {timeout} s")
        await asyncio.sleep(0.1)
