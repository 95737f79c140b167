"""`GET /v1/stream`: admission, the receive loop, idle timeout, slow consumers and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from ..state import STATE, SidecarState
from . import protocol
from .protocol import ProtocolViolation
from .session import SlowConsumer, StreamSession

logger = logging.getLogger("stt_sidecar.stream")

# Largest frame: 1 s of 48 kHz stereo s16 is 192,000 bytes; anything bigger is refused by aiohttp
# itself (close 1009) before it is buffered.
MAX_MESSAGE_BYTES = 256 * 1024
CLOSE_TIMEOUT_S = 2.0
SLOW_CONSUMER_S = 10.0  # one send blocked this long: the client stopped reading


@dataclass(eq=False)
class StreamConnection:
    ws: web.WebSocketResponse
    request: web.Request
    session: StreamSession | None = None
    closing: bool = False


def _make_sender(ws: web.WebSocketResponse, timeout: float = SLOW_CONSUMER_S):
    """A send that gives up on a client that stopped reading (its TCP window stays full)."""

    async def send(message: dict[str, Any]) -> None:
        if ws.closed:
            return
        try:
            async with asyncio.timeout(timeout):
                await ws.send_str(json.dumps(message))
        except TimeoutError:
            raise SlowConsumer() from None
        except (ConnectionError, RuntimeError):
            pass  # the client is gone; the receive loop sees it too

    return send


async def _close(conn: StreamConnection, code: int, reason: str) -> None:
    """Close within a bounded time: a client that stopped reading cannot hold us."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await conn.ws.close(code=code, message=reason.encode())
    except (TimeoutError, ConnectionError, RuntimeError):
        transport = conn.request.transport
        if transport is not None:
            transport.abort()


async def _fail(
    conn: StreamConnection, state: SidecarState, code: str, message: str, close_code: int
) -> None:
    state.metrics.errors.labels(code=code).inc()
    if conn.session is not None:
        await conn.session.aclose()
        conn.session = None
    with contextlib.suppress(SlowConsumer):
        await _make_sender(conn.ws, CLOSE_TIMEOUT_S)(protocol.error_message(code, message))
    await _close(conn, close_code, code)


async def stream_handler(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    # Before the upgrade, so clients see a plain HTTP 503 and retry.
    state.require_scheduler()
    ws = web.WebSocketResponse(heartbeat=15.0, max_msg_size=MAX_MESSAGE_BYTES)
    await ws.prepare(request)
    conn = StreamConnection(ws=ws, request=request)
    if state.active_streams >= state.settings.max_streams:
        state.metrics.rejected_streams.inc()
        await _fail(
            conn,
            state,
            protocol.OVERLOADED,
            "too many streams on this server; retry later or elsewhere",
            WSCloseCode.TRY_AGAIN_LATER,
        )
        return ws
    state.streams.add(conn)
    state.metrics.streams_opened.labels(protocol="stream").inc()
    try:
        await _serve(conn, state)
    except ProtocolViolation as violation:
        close_code = (
            WSCloseCode.MESSAGE_TOO_BIG
            if violation.code == protocol.FRAME_TOO_LARGE
            else WSCloseCode.POLICY_VIOLATION
        )
        await _fail(conn, state, violation.code, violation.message, close_code)
    except ConnectionError:
        # The client vanished while we wrote to it (e.g. aiohttp answering its ping inside
        # `receive`): the same as a disconnect, not a server failure to log with a traceback.
        logger.info("stream ended by client (connection lost)")
    except Exception:
        logger.exception("stream failed")
        await _fail(
            conn,
            state,
            protocol.INTERNAL,
            "the stream failed on the server",
            WSCloseCode.INTERNAL_ERROR,
        )
    finally:
        state.release_stream(conn)
        if conn.session is not None and not conn.closing:
            await conn.session.aclose()
    return ws


async def _serve(conn: StreamConnection, state: SidecarState) -> None:
    ws = conn.ws
    settings = state.settings
    languages = state.languages
    # Until a valid config, nothing counts as activity (keepalives, pings, fragments of a
    # message): the connection holds a STT_MAX_STREAMS slot, so it gets one fixed deadline.
    # The outer timeout, not receive(timeout=...), because aiohttp restarts that one after
    # every ping it answers.
    config_deadline = asyncio.get_running_loop().time() + settings.config_timeout_s
    while True:
        try:
            if conn.session is None:
                async with asyncio.timeout_at(config_deadline):
                    msg = await ws.receive()
            else:
                msg = await ws.receive(timeout=settings.idle_timeout_s)
        except TimeoutError:
            if conn.closing:
                continue
            if conn.session is None:
                await _fail(
                    conn,
                    state,
                    protocol.CONFIG_TIMEOUT,
                    f"no valid config within {settings.config_timeout_s:g} s of opening",
                    WSCloseCode.POLICY_VIOLATION,
                )
                return
            await _fail(
                conn,
                state,
                protocol.IDLE_TIMEOUT,
                f"no message for {settings.idle_timeout_s:g} s",
                WSCloseCode.GOING_AWAY,
            )
            return
        if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            # CLOSE / CLOSING / CLOSED / ERROR (e.g. a message over the size limit): client gone,
            # or the shutdown path closed the socket
            if conn.session is not None and not conn.closing:
                logger.info("stream %s ended by client (%s)", conn.session.id, msg.type.name)
            return
        if conn.closing:
            # Shutting down: the shutdown path is finishing this stream and closes the socket.
            # Returning now would let aiohttp close it at once, before the finals are out.
            continue
        if msg.type == WSMsgType.TEXT:
            if conn.session is None:
                if protocol.parse_text_message(msg.data)["type"] == "keepalive":
                    continue
                config = protocol.parse_config(msg.data, languages=languages)
                session_id = uuid.uuid4().hex[:16]
                conn.session = StreamSession(
                    session_id,
                    config,
                    scheduler=state.require_scheduler(),
                    settings=settings,
                    metrics=state.metrics,
                    send=_make_sender(ws),
                )
                await ws.send_str(json.dumps(protocol.ready(session_id)))
                logger.info(
                    "stream %s open (%d Hz, %d ch)", session_id, config.sample_rate, config.channels
                )
                continue
            kind = protocol.parse_text_message(msg.data)["type"]
            if kind == "flush":
                conn.session.flush()
                if not await _within_backlog(conn, state):
                    return
            elif kind == "close":
                conn.closing = True
                await conn.session.finish(protocol.closed())
                logger.info("stream %s closed by client", conn.session.id)
                await _close(conn, WSCloseCode.OK, "closed")
                return
            elif kind == "keepalive":
                pass
            elif kind == "config":
                raise ProtocolViolation(protocol.PROTOCOL_ERROR, "config was already sent")
            else:
                raise ProtocolViolation(protocol.PROTOCOL_ERROR, "unknown message type")
        elif msg.type == WSMsgType.BINARY:
            session = conn.session
            if session is None:
                raise ProtocolViolation(protocol.PROTOCOL_ERROR, "binary audio before config")
            size = len(msg.data)
            if size > session.config.max_frame_bytes:
                raise ProtocolViolation(protocol.FRAME_TOO_LARGE, "frames may hold at most 1 s")
            if size % session.config.frame_alignment:
                raise ProtocolViolation(
                    protocol.PROTOCOL_ERROR, "frame is not whole 16-bit samples for every channel"
                )
            session.feed(msg.data)
            if not await _within_backlog(conn, state):
                return


async def _within_backlog(conn: StreamConnection, state: SidecarState) -> bool:
    """Backpressure after input that queues output; False when the stream was ended because
    the client stopped reading."""
    assert conn.session is not None
    try:
        await conn.session.wait_for_backlog()
    except SlowConsumer:
        await _fail(
            conn,
            state,
            protocol.SLOW_CONSUMER,
            "finals are not being read",
            WSCloseCode.POLICY_VIOLATION,
        )
        return False
    return True


async def shutdown_streams(app: web.Application) -> None:
    """On SIGTERM: stop admitting, finalize every open utterance, deliver, close 1001."""
    connections: set[StreamConnection] = app[STATE].streams
    grace = app[STATE].settings.shutdown_grace_s

    async def finish(conn: StreamConnection) -> None:
        conn.closing = True
        if conn.session is not None:
            with contextlib.suppress(Exception):
                await conn.session.finish(None)
        await _close(conn, WSCloseCode.GOING_AWAY, protocol.GOING_AWAY)

    pending = [asyncio.create_task(finish(c)) for c in list(connections)]
    if pending:
        logger.info("finalizing %d open stream(s) before exit", len(pending))
        _done, late = await asyncio.wait(pending, timeout=grace)
        for task in late:
            task.cancel()
        # at once, not one after another: each may wait CLOSE_TIMEOUT_S on a stuck client
        await asyncio.gather(
            *(
                _close(conn, WSCloseCode.GOING_AWAY, protocol.GOING_AWAY)
                for conn in list(connections)
                if not conn.ws.closed
            )
        )


def add_streaming_routes(app: web.Application) -> None:
    app.router.add_get("/v1/stream", stream_handler)
    app.on_shutdown.append(shutdown_streams)


__all__ = ["add_streaming_routes"]
