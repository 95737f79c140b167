"""An in-process stand-in for the sidecar's ``/v1/stream`` (and batch) endpoints.

Each connection is driven by a script (an async function of a `FakeConnection`), so a test says
exactly what the server sends and when: interims, finals, errors, a close code, a dropped TCP
connection. Everything the client sent is recorded. No model, no subprocess.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

RATE = 16000


@dataclass
class FakeConnection:
    """One WebSocket connection as the server sees it."""

    index: int  # 1-based
    ws: web.WebSocketResponse
    request: web.Request
    config: dict[str, Any] = field(default_factory=dict)
    audio: bytearray = field(default_factory=bytearray)
    # text messages after the config, each with the audio byte count when it arrived
    texts: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    client_closed: bool = False  # the WebSocket ended from the client's side

    @property
    def seconds(self) -> float:
        return len(self.audio) / 2 / RATE

    async def send(self, **msg: Any) -> None:
        await self.ws.send_json(msg)

    async def ready(self) -> None:
        await self.send(type="ready", session_id=f"s{self.index}", sample_rate=RATE)

    async def next_text(self) -> dict[str, Any] | None:
        """Record audio until the next text message (returned), or None once the client left."""
        async for msg in self.ws:
            if msg.type == WSMsgType.BINARY:
                self.audio.extend(msg.data)
            elif msg.type == WSMsgType.TEXT:
                data: dict[str, Any] = json.loads(msg.data)
                self.texts.append((len(self.audio), data))
                return data
        self.client_closed = True
        return None

    async def audio_until(self, seconds: float) -> None:
        """Record messages until at least ``seconds`` of audio arrived."""
        async for msg in self.ws:
            if msg.type == WSMsgType.BINARY:
                self.audio.extend(msg.data)
                if self.seconds >= seconds:
                    return
            elif msg.type == WSMsgType.TEXT:
                self.texts.append((len(self.audio), json.loads(msg.data)))
        self.client_closed = True

    async def serve_like_sidecar(self) -> None:
        """Answer flushes and the close as the real sidecar does when it heard no speech."""
        while (data := await self.next_text()) is not None:
            if data["type"] == "flush":
                await self.send(type="flushed")
            elif data["type"] == "close":
                await self.send(type="closed")
                await self.ws.close()
                return

    def abort(self) -> None:
        """Drop the TCP connection with no close handshake (a crash)."""
        assert self.request.transport is not None
        self.request.transport.abort()


Script = Callable[[FakeConnection], Awaitable[None]]


async def plain_sidecar(conn: FakeConnection) -> None:
    await conn.ready()
    await conn.serve_like_sidecar()


class FakeSidecar:
    """Serves ``/v1/stream`` with one script per connection (the last one repeats)."""

    def __init__(self, *scripts: Script, handshake_status: int | None = None) -> None:
        self.scripts = scripts or (plain_sidecar,)
        self.handshake_status = handshake_status
        self.connections: list[FakeConnection] = []
        self.requests: list[web.Request] = []
        self.url = ""
        self.app = web.Application()
        self.app.router.add_get("/v1/stream", self._stream)

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        if self.handshake_status is not None:
            return web.json_response(
                {"error": {"message": "refused", "code": "refused"}},
                status=self.handshake_status,
                headers={"X-Request-Id": "req-handshake"},
            )
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        conn = FakeConnection(len(self.connections) + 1, ws, request)
        self.connections.append(conn)
        conn.config = json.loads((await ws.receive()).data)
        script = self.scripts[min(conn.index, len(self.scripts)) - 1]
        await script(conn)
        return ws


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Run ``app`` on a free loopback port; yields its ``http://`` root."""
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert runner.addresses
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def fake_sidecar(
    *scripts: Script, handshake_status: int | None = None
) -> AsyncIterator[FakeSidecar]:
    server = FakeSidecar(*scripts, handshake_status=handshake_status)
    async with serve(server.app) as url:
        server.url = url
        yield server


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll state the code under test owns (it offers no event to wait on)."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.005)
