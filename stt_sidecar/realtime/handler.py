"""`GET /v1/realtime?intent=transcription`: OpenAI's Realtime transcription over WebSocket.

One connection is one slot of `STT_MAX_STREAMS`, shared with `/v1/stream`, and gets the same
limits: a first event within STT_CONFIG_TIMEOUT_S, then one at least every STT_IDLE_TIMEOUT_S,
backpressure, the slow-consumer cut, and on SIGTERM its open utterances finalized
(`streaming.handler.shutdown_streams` treats this connection like its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from ..errors import ApiError
from ..model_names import accepts_model
from ..state import STATE, SidecarState
from ..streaming.handler import CLOSE_TIMEOUT_S
from ..streaming.handler import _close as close_connection
from ..streaming.handler import _make_sender as make_sender
from ..streaming.session import SlowConsumer, StreamSession
from . import events
from .events import RealtimeError, server_event
from .session_config import RealtimeConfig, apply_update, render
from .translator import CLEARED, EventTranslator

logger = logging.getLogger("stt_sidecar.realtime")

PROTOCOL = "realtime"  # the /metrics label, and the subprotocol answered to browser clients
# One append holds at most 10 s of 24 kHz PCM (OpenAI allows 15 MB; chunks of 20-100 ms are
# what clients send). Larger messages, up to MAX_MESSAGE_BYTES, get an error event; beyond it
# aiohttp closes with 1009 before buffering them.
MAX_APPEND_BYTES = 10 * 48_000
MAX_MESSAGE_BYTES = 1024 * 1024
MIN_COMMIT_S = 0.1  # OpenAI refuses to commit less than 100 ms


@dataclass(eq=False)
class RealtimeConnection:
    """What `shutdown_streams` and `/metrics` need of an admitted stream (as
    `streaming.handler.StreamConnection`)."""

    ws: web.WebSocketResponse
    request: web.Request
    session: StreamSession | None = None
    closing: bool = False
    protocol: str = PROTOCOL
    sid: str = field(default_factory=lambda: f"sess_{uuid.uuid4().hex[:20]}")


def _check_query(request: web.Request, served: str) -> None:
    intent = request.query.get("intent", "transcription")
    if intent != "transcription":
        raise ApiError(
            400,
            "This server serves transcription sessions only (intent=transcription).",
            "invalid_intent",
            param="intent",
        )
    model = request.query.get("model")
    if model and not accepts_model(model, served):
        raise ApiError(
            400,
            f"Unknown model {model[:100]!r}: this server serves '{served}'.",
            "model_not_found",
            param="model",
        )


async def realtime_handler(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    _check_query(request, state.source.name)
    state.require_scheduler()  # before the upgrade: a plain HTTP 503 clients retry
    ws = web.WebSocketResponse(
        heartbeat=15.0, max_msg_size=MAX_MESSAGE_BYTES, protocols=(PROTOCOL,)
    )
    await ws.prepare(request)
    conn = RealtimeConnection(ws=ws, request=request)
    if state.active_streams >= state.settings.max_streams:
        state.metrics.rejected_streams.inc()
        await _fail(
            conn,
            state,
            RealtimeError(
                events.OVERLOADED,
                "Too many streams on this server; retry later or elsewhere.",
                error_type="server_error",
            ),
            WSCloseCode.TRY_AGAIN_LATER,
        )
        return ws
    state.streams.add(conn)
    state.metrics.streams_opened.labels(protocol=PROTOCOL).inc()
    try:
        await _RealtimeSession(conn, state).serve()
    except SlowConsumer:  # an event of ours (not the session's) could not be delivered
        await _fail(conn, state, _slow_consumer(), WSCloseCode.POLICY_VIOLATION)
    except ConnectionError:
        logger.info("realtime session ended by client (connection lost)")
    except Exception:
        logger.exception("realtime session failed")
        await _fail(
            conn,
            state,
            RealtimeError(
                events.INTERNAL, "The session failed on the server.", error_type="server_error"
            ),
            WSCloseCode.INTERNAL_ERROR,
        )
    finally:
        state.release_stream(conn)
        if conn.session is not None and not conn.closing:
            await conn.session.aclose()
    return ws


def _slow_consumer() -> RealtimeError:
    return RealtimeError(events.SLOW_CONSUMER, "Events are not being read.")


async def _fail(
    conn: RealtimeConnection, state: SidecarState, error: RealtimeError, close_code: int
) -> None:
    """Send one error event and close: for failures of the connection, not of an event."""
    state.metrics.errors.labels(code=error.code).inc()
    if conn.session is not None:
        await conn.session.aclose()
        conn.session = None
    with contextlib.suppress(SlowConsumer):
        await make_sender(conn.ws, CLOSE_TIMEOUT_S)(events.error_event(error))
    await close_connection(conn, close_code, error.code)  # type: ignore[arg-type]


class _RealtimeSession:
    """One connection's protocol state: its settings, the audio since the last commit and the
    stream session (made at the first audio, remade when an update changes how to decode)."""

    def __init__(self, conn: RealtimeConnection, state: SidecarState) -> None:
        self.conn = conn
        self.state = state
        self.served = state.source.name
        self.config = RealtimeConfig(language=state.languages.resolve(None))
        self.send = make_sender(conn.ws)
        self.translator = EventTranslator(events.item_id)
        self.audio_s = 0.0  # session audio so far (item times count from its start)
        self.uncommitted_s = 0.0

    def _render(self, *, beta: bool) -> dict[str, Any]:
        return render(
            self.config,
            session_id=self.conn.sid,
            served=self.served,
            endpoint_silence_ms=self.state.settings.endpoint_silence_ms,
            beta=beta,
        )

    async def serve(self) -> None:
        conn, settings = self.conn, self.state.settings
        await self.send(server_event("session.created", session=self._render(beta=False)))
        # Until a first valid event, nothing counts as activity (as /v1/stream's config): the
        # connection holds a STT_MAX_STREAMS slot, so it gets one fixed deadline.
        first_deadline: float | None = asyncio.get_running_loop().time() + settings.config_timeout_s
        while True:
            try:
                if first_deadline is not None:
                    async with asyncio.timeout_at(first_deadline):
                        msg = await conn.ws.receive()
                else:
                    msg = await conn.ws.receive(timeout=settings.idle_timeout_s)
            except TimeoutError:
                if conn.closing:
                    continue
                if first_deadline is not None:
                    why = f"No event within {settings.config_timeout_s:g} s of opening."
                    error = RealtimeError(events.CONFIG_TIMEOUT, why)
                    close_code = WSCloseCode.POLICY_VIOLATION
                else:
                    why = f"No event for {settings.idle_timeout_s:g} s."
                    error = RealtimeError(events.IDLE_TIMEOUT, why)
                    close_code = WSCloseCode.GOING_AWAY
                await _fail(conn, self.state, error, close_code)
                return
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                return  # closed by the client (or by the shutdown path)
            if conn.closing:
                continue  # shutting down: the shutdown path finishes and closes this stream
            try:
                if msg.type == WSMsgType.BINARY:
                    raise RealtimeError(
                        events.INVALID_VALUE,
                        "Binary frames are not part of this protocol; send audio as "
                        "input_audio_buffer.append events.",
                    )
                event = events.parse_client_event(msg.data)
                first_deadline = None
                if not await self._dispatch(event):
                    return
            except RealtimeError as error:
                self.state.metrics.errors.labels(code=error.code).inc()
                await self.send(events.error_event(error))

    async def _dispatch(self, event: dict[str, Any]) -> bool:
        """Handle one client event; False when the connection was ended."""
        kind = event["type"]
        try:
            if kind in ("session.update", "transcription_session.update"):
                await self._update(event)
            elif kind == "input_audio_buffer.append":
                return await self._append(event)
            elif kind == "input_audio_buffer.commit":
                return await self._commit()
            elif kind == "input_audio_buffer.clear":
                self.uncommitted_s = 0.0
                if self.conn.session is not None:
                    self.conn.session.clear({"type": CLEARED})
                    # its `cleared` waits in the outbox: a client that stops reading and keeps
                    # clearing must meet the same backpressure as one that keeps appending
                    return await self._within_backlog(self.conn.session)
                else:
                    await self.send(server_event(CLEARED))
        except RealtimeError as error:
            if isinstance(event.get("event_id"), str):
                error.event_id = event["event_id"][:100]
            raise
        return True

    async def _update(self, event: dict[str, Any]) -> None:
        new = apply_update(self.config, event, languages=self.state.languages, served=self.served)
        session = self.conn.session
        if session is not None and new.engine_settings() != self.config.engine_settings():
            # decoded with the old settings to the end, then a new stream session from here
            await session.finish(None)
            self.conn.session = None
            self.uncommitted_s = 0.0
        self.config = new
        self.translator.logprobs = new.logprobs
        beta = event["type"] == "transcription_session.update"
        kind = "transcription_session.updated" if beta else "session.updated"
        await self.send(server_event(kind, session=self._render(beta=beta)))

    def _stream_session(self) -> StreamSession:
        if self.conn.session is None:
            state = self.state
            self.translator.begin(
                offset_s=self.audio_s, manual=self.config.turn_detection.type is None
            )
            self.conn.session = StreamSession(
                f"{self.conn.sid}-{uuid.uuid4().hex[:6]}",
                self.config.stream_config(),
                scheduler=state.require_scheduler(),
                settings=state.settings,
                metrics=state.metrics,
                send=self._deliver,
                endpointing=self.config.endpointing(state.settings.endpoint_silence_ms),
            )
        return self.conn.session

    async def _deliver(self, message: dict[str, Any]) -> None:
        """The stream session's sender: its messages, as realtime events."""
        for event in self.translator.translate(message):
            await self.send(event)

    async def _append(self, event: dict[str, Any]) -> bool:
        fmt = self.config.format
        data = events.decode_audio(
            event, max_bytes=MAX_APPEND_BYTES, sample_bytes=fmt.bytes_per_sample
        )
        session = self._stream_session()  # before counting: item times start at its start
        seconds = len(data) / fmt.bytes_per_sample / fmt.sample_rate
        self.audio_s += seconds
        self.uncommitted_s += seconds
        session.feed(fmt.to_pcm16(data))
        return await self._within_backlog(session)

    async def _commit(self) -> bool:
        if self.uncommitted_s < MIN_COMMIT_S:
            raise RealtimeError(
                events.COMMIT_EMPTY,
                f"Error committing input audio buffer: buffer too small. Expected at least "
                f"{MIN_COMMIT_S * 1000:.0f}ms of audio, but buffer only has "
                f"{self.uncommitted_s * 1000:.2f}ms of audio.",
            )
        self.uncommitted_s = 0.0
        session = self._stream_session()
        self.translator.commit_requested(session.flush())
        return await self._within_backlog(session)

    async def _within_backlog(self, session: StreamSession) -> bool:
        try:
            await session.wait_for_backlog()
        except SlowConsumer:
            await _fail(self.conn, self.state, _slow_consumer(), WSCloseCode.POLICY_VIOLATION)
            return False
        return True


def add_realtime_routes(app: web.Application) -> None:
    app.router.add_get("/v1/realtime", realtime_handler)


__all__ = ["add_realtime_routes"]
