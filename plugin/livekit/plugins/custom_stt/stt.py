"""Speech-to-text through the self-hosted faster-whisper sidecar.

Batch recognition uses the sidecar's OpenAI-compatible ``POST /v1/audio/transcriptions``;
streaming uses its ``GET /v1/stream`` WebSocket, whose server-side VAD endpoints utterances.

Unlike the hosted-provider plugins, a stream here survives a sidecar restart without losing or
repeating words: it keeps the audio it sent since the last final transcript and replays it on the
next connection (see `SpeechStream`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import urlparse

import aiohttp
import numpy as np
from livekit import rtc
from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    APIConnectionError,
    APIConnectOptions,
    APITimeoutError,
    create_api_error_from_http,
    stt,
    utils,
)
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.agents.utils import AudioBuffer, is_given

from ._connection import Connection
from ._errors import error_message, handshake_error, read_error_body, server_error
from ._protocol import CHUNK_SAMPLES as CHUNK_SAMPLES
from ._protocol import (
    CLOSE_MSG,
    FLUSH_MSG,
    KEEPALIVE_MSG,
    KEEPALIVE_S,
    checked_keywords,
    config_message,
    parse_message,
    requested_language,
    single_language,
)
from ._protocol import SAMPLE_RATE as SAMPLE_RATE
from ._replay import Entry, ReplayBuffer
from ._results import speech_data_from_final, speech_data_from_interim, speech_data_from_verbose
from .log import logger
from .models import STTLanguageOption, STTModels, STTTasks

DEFAULT_BASE_URL = "http://127.0.0.1:8765"
DEFAULT_MAX_REPLAY_S = 30.0

DEFAULT_CONN_OPTIONS = APIConnectOptions(max_retry=20, retry_interval=1.0, timeout=10.0)
"""The framework's default retries for about 4 s in all (0.1 s, then 2 s, three tries), less than
a sidecar restart plus model warm-up. Twenty tries one second apart ride out ~19 s of downtime:
a sidecar away for 10 s plus its model load, with margin on a busy machine (twelve, ~11 s, left
none: tests/reliability/test_faults.py). The base class resets the count after every final."""


@dataclass
class STTOptions:
    """Options of an `STT` and, copied, of each of its streams.

    Attributes:
        base_url: The sidecar's HTTP root, e.g. ``http://127.0.0.1:8765``.
        api_key: Sent as ``Authorization: Bearer``; ``None`` when the sidecar has no key.
        language: Language code; ``None`` (or ``"auto"``/``"multi"``) to detect each
            utterance's language; or a list of codes to detect among.
        interim_results: Whether streams ask for interim transcripts.
        task: ``"transcribe"`` or ``"translate"`` (to English, multilingual models only).
        prompt: Text that biases decoding (names, jargon), or ``None``.
        model: The ``model`` form field of batch requests and the name metrics report.
        keywords: Names and terms to expect (faster-whisper ``hotwords``), for streams.
        adaptive_endpointing: Whether an utterance ends sooner after a finished sentence and
            later after an unfinished one; ``None`` leaves it to the sidecar (on by default).
        condition_on_previous_text: Whether a stream's earlier finals prompt its next one;
            ``None`` leaves it to the sidecar (off by default).
    """

    base_url: str
    api_key: str | None
    language: STTLanguageOption
    interim_results: bool
    task: STTTasks | str
    prompt: str | None
    model: STTModels | str
    keywords: tuple[str, ...] = ()
    adaptive_endpointing: bool | None = None
    condition_on_previous_text: bool | None = None

    def ws_url(self) -> str:
        """The streaming endpoint's URL (``ws``/``wss`` for ``http``/``https``)."""
        root = self.base_url.rstrip("/")
        if root.startswith("http"):
            root = "ws" + root[len("http") :]
        return root + "/v1/stream"

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def stream_config(self) -> dict[str, Any]:
        """The first message of a stream; exactly the keys the protocol defines."""
        return config_message(
            language=self.language,
            task=self.task,
            interim_results=self.interim_results,
            prompt=self.prompt,
            keywords=self.keywords,
            adaptive_endpointing=self.adaptive_endpointing,
            condition_on_previous_text=self.condition_on_previous_text,
        )


def _given_changes(**kwargs: Any) -> dict[str, Any]:
    """The options `update_options` was given, `keywords` checked as the constructor does."""
    changes = {k: v for k, v in kwargs.items() if is_given(v)}
    if "keywords" in changes:
        changes["keywords"] = checked_keywords(changes["keywords"])
    return changes


class STT(stt.STT[NoReturn]):  # no events beyond the base class's
    """LiveKit STT backed by the faster-whisper sidecar (``python -m stt_sidecar``)."""

    def __init__(
        self,
        *,
        base_url: NotGivenOr[str] = NOT_GIVEN,
        api_key: NotGivenOr[str | None] = NOT_GIVEN,
        language: STTLanguageOption = "en",
        interim_results: bool = True,
        task: STTTasks | str = "transcribe",
        prompt: str | None = None,
        keywords: Sequence[str] = (),
        model: STTModels | str = "whisper-1",
        adaptive_endpointing: bool | None = None,
        condition_on_previous_text: bool | None = None,
        http_session: aiohttp.ClientSession | None = None,
        conn_options: APIConnectOptions = DEFAULT_CONN_OPTIONS,
        max_replay_s: float = DEFAULT_MAX_REPLAY_S,
    ) -> None:
        """Create an STT for the sidecar.

        Args:
            base_url: The sidecar's HTTP root. Defaults to env ``CUSTOM_STT_URL``, else
                ``http://127.0.0.1:8765``.
            api_key: Bearer token. Defaults to env ``STT_API_KEY``; unset or empty sends none.
            language: Language code (default ``"en"``). ``None``, ``"auto"`` or ``"multi"``
                detects the language of each utterance, and a list (``["en", "de"]``) detects
                among those only (streams; a batch request with a list detects freely). Both
                need a multilingual model on the sidecar (``STT_MODEL=base``). Finals carry
                the language heard in ``SpeechData.language``.
            interim_results: Ask streams for interim transcripts (default True).
            task: ``"transcribe"`` (default) or ``"translate"``.
            prompt: Optional text to bias decoding (default None).
            keywords: Names and terms to expect, e.g. ``["Dashwood", "Norland"]``: they bias
                streaming decodes (the sidecar passes them to faster-whisper as ``hotwords``;
                at most 50, each at most 50 characters). Batch ``recognize`` sends ``prompt``
                only: the transcriptions endpoint has no keywords field.
            model: The ``model`` field of batch requests and the name in metrics (default
                ``"whisper-1"``, which OpenAI-compatible servers accept); the sidecar serves the
                model it was started with.
            adaptive_endpointing: End an utterance after a short silence when its text is a
                finished sentence and a long one when it is visibly unfinished (a trailing
                "and", "the", comma); False: the sidecar's fixed ``STT_ENDPOINT_SILENCE_MS``.
                Default None: the sidecar's ``STT_ADAPTIVE_ENDPOINTING`` (on).
            condition_on_previous_text: Prompt each final with the stream's recent finals
                (reset after a long silence). Default None: the sidecar's
                ``STT_STREAM_CONTEXT`` (off).
            http_session: A shared aiohttp session. Defaults to the job's
                ``utils.http_context.http_session()``, or, outside a job, one this STT owns
                and closes in `aclose`.
            conn_options: Retry policy used when a caller passes the framework's
                ``DEFAULT_API_CONNECT_OPTIONS`` (as ``AgentSession`` does unless told
                otherwise). Default: 20 tries, 1 s apart, 10 s connect timeout, which outlasts
                a sidecar restart. Any other options a caller passes are used as given.
            max_replay_s: Most audio (seconds) a stream keeps for replay after a dropped
                connection (default 30; the sidecar cuts utterances at 20 s).

        Raises:
            ValueError: If ``max_replay_s`` is not positive.
        """
        super().__init__(
            capabilities=stt.STTCapabilities(
                streaming=True,
                interim_results=interim_results,
                aligned_transcript="word",
                # flush() maps onto the protocol's {"type": "flush"}
                manual_flush=True,
            )
        )
        if max_replay_s <= 0:
            raise ValueError("max_replay_s must be positive")
        if not is_given(base_url):
            base_url = os.environ.get("CUSTOM_STT_URL") or DEFAULT_BASE_URL
        if not is_given(api_key):
            api_key = os.environ.get("STT_API_KEY") or None
        self._opts = STTOptions(
            base_url=base_url.rstrip("/"),
            api_key=api_key or None,
            language=language,
            interim_results=interim_results,
            task=task,
            prompt=prompt,
            model=model,
            keywords=checked_keywords(keywords),
            adaptive_endpointing=adaptive_endpointing,
            condition_on_previous_text=condition_on_previous_text,
        )
        self._conn_options = conn_options
        self._max_replay_s = max_replay_s
        self._session = http_session
        self._owned_session: aiohttp.ClientSession | None = None
        self._streams = weakref.WeakSet[SpeechStream]()

    @property
    def model(self) -> str:
        return self._opts.model

    @property
    def provider(self) -> str:
        return urlparse(self._opts.base_url).netloc or "custom-stt"

    def _resolve_conn_options(self, conn_options: APIConnectOptions) -> APIConnectOptions:
        # Identity, not equality: the framework passes its module-level default object when the
        # user chose nothing, and an explicit APIConnectOptions() is honoured as given.
        return self._conn_options if conn_options is DEFAULT_API_CONNECT_OPTIONS else conn_options

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is not None:
            return self._session
        try:
            return utils.http_context.http_session()
        except RuntimeError:
            # outside a job (scripts, tests): a session of our own, closed in aclose()
            if self._owned_session is None or self._owned_session.closed:
                self._owned_session = aiohttp.ClientSession()
            return self._owned_session

    async def recognize(
        self,
        buffer: AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> stt.SpeechEvent:
        """Transcribe a whole buffer with one request (retried per ``conn_options``).

        Args:
            buffer: Audio frames at any rate and channel count.
            language: Overrides the STT's language for this call.
            conn_options: Retry policy; the framework default is replaced by the STT's.

        Raises:
            APIStatusError: The sidecar refused the request (4xx are not retried).
            APIConnectionError: The sidecar could not be reached after all retries.
        """
        return await super().recognize(
            buffer, language=language, conn_options=self._resolve_conn_options(conn_options)
        )

    async def _recognize_impl(
        self,
        buffer: AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        opts = self._opts
        requested = language if is_given(language) else opts.language
        lang = single_language(requested)
        frame = rtc.combine_audio_frames(buffer)
        duration = frame.samples_per_channel / frame.sample_rate if frame.sample_rate else 0.0

        form = aiohttp.FormData()
        # a file object, not bytes: aiohttp streams it instead of copying it on the loop
        form.add_field(
            "file", io.BytesIO(frame.to_wav_bytes()), filename="audio.wav", content_type="audio/wav"
        )
        form.add_field("model", opts.model)
        form.add_field("response_format", "verbose_json")
        form.add_field("timestamp_granularities[]", "word")
        form.add_field("timestamp_granularities[]", "segment")
        if lang:
            form.add_field("language", lang)
        if opts.prompt:
            form.add_field("prompt", opts.prompt)
        path = "/v1/audio/translations" if opts.task == "translate" else "/v1/audio/transcriptions"
        url = opts.base_url + path
        # Decoding can queue behind other requests: bound only the connect and each read, with
        # a read allowance that grows with the audio.
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=conn_options.timeout, sock_read=max(30.0, 2.0 * duration)
        )
        logger.debug("recognize: %.2f s of audio to %s", duration, url)
        try:
            async with self._ensure_session().post(
                url, data=form, headers=opts.auth_headers(), timeout=timeout
            ) as resp:
                request_id = resp.headers.get("X-Request-Id")
                if resp.status != 200:
                    body = await read_error_body(resp)
                    raise create_api_error_from_http(
                        error_message(body), status=resp.status, request_id=request_id, body=body
                    )
                data = await resp.json()
        except asyncio.TimeoutError:
            raise APITimeoutError(
                f"the sidecar at {opts.base_url} did not answer in time"
            ) from None
        except (aiohttp.ClientError, OSError) as e:
            # `from None`: aiohttp errors carry the request, whose headers hold the API key
            raise APIConnectionError(
                f"cannot reach the sidecar at {opts.base_url} ({type(e).__name__})"
            ) from None
        except ValueError:
            raise APIConnectionError("the sidecar sent a response that is not JSON") from None

        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            request_id=request_id or "",
            alternatives=[
                speech_data_from_verbose(data, fallback_language=requested_language(requested))
            ],
        )

    def stream(
        self,
        *,
        language: NotGivenOr[STTLanguageOption] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> SpeechStream:
        """Open a streaming recognizer.

        Args:
            language: This stream's language (a code, ``None`` to detect, or a list to detect
                among); defaults to the STT's.
            conn_options: Retry policy; the framework default is replaced by the STT's.

        Returns:
            A `SpeechStream`; push 48 kHz (or any rate) mono frames into it.
        """
        opts = dataclasses.replace(self._opts)
        if is_given(language):
            opts.language = language
        stream = SpeechStream(
            stt=self,
            opts=opts,
            conn_options=self._resolve_conn_options(conn_options),
            max_replay_s=self._max_replay_s,
        )
        self._streams.add(stream)
        return stream

    def update_options(
        self,
        *,
        language: NotGivenOr[STTLanguageOption] = NOT_GIVEN,
        interim_results: NotGivenOr[bool] = NOT_GIVEN,
        task: NotGivenOr[STTTasks | str] = NOT_GIVEN,
        prompt: NotGivenOr[str | None] = NOT_GIVEN,
        keywords: NotGivenOr[Sequence[str]] = NOT_GIVEN,
        adaptive_endpointing: NotGivenOr[bool | None] = NOT_GIVEN,
        condition_on_previous_text: NotGivenOr[bool | None] = NOT_GIVEN,
    ) -> None:
        """Change options for later requests and for every live stream.

        A live stream with a real change reconnects and replays its unfinalized audio under the
        new config (the protocol has no in-band reconfigure), so nothing is lost.

        Args:
            language: Language code, ``None`` to detect, or a list of codes to detect among.
            interim_results: Whether to ask for interim transcripts.
            task: ``"transcribe"`` or ``"translate"``.
            prompt: Decoding prompt, or ``None`` to clear it.
            keywords: Names and terms to expect in streams; empty to clear them.
            adaptive_endpointing: Adaptive (True) or fixed (False) endpoint, ``None``: the
                sidecar's default.
            condition_on_previous_text: Prompt finals with earlier finals, ``None``: the
                sidecar's default.
        """
        changes = _given_changes(
            language=language,
            interim_results=interim_results,
            task=task,
            prompt=prompt,
            keywords=keywords,
            adaptive_endpointing=adaptive_endpointing,
            condition_on_previous_text=condition_on_previous_text,
        )
        self._opts = dataclasses.replace(self._opts, **changes)
        if "interim_results" in changes:
            self._capabilities.interim_results = changes["interim_results"]
        for stream in self._streams:
            stream._apply_changes(changes)

    async def aclose(self) -> None:
        """Close every live stream and the session this STT owns (if any)."""
        streams = list(self._streams)
        if streams:
            await asyncio.gather(*(s.aclose() for s in streams), return_exceptions=True)
        if self._owned_session is not None:
            await self._owned_session.close()
            self._owned_session = None


class SpeechStream(stt.RecognizeStream):
    """A live transcription over the sidecar's ``/v1/stream`` WebSocket.

    Lossless reconnect: every 20 ms chunk goes into a replay buffer *before* it is sent, and is
    dropped only once the sidecar has finalized it (a ``final``/``speech_ended`` end time, or a
    ``flushed`` acknowledgement). After a dropped connection the framework re-runs `_run`,
    which replays the buffer first, so the utterance in flight comes out whole and exactly
    once, with times continuing from the original stream.
    """

    def __init__(
        self,
        *,
        stt: STT,
        opts: STTOptions,
        conn_options: APIConnectOptions,
        max_replay_s: float = DEFAULT_MAX_REPLAY_S,
    ) -> None:
        super().__init__(stt=stt, conn_options=conn_options, sample_rate=SAMPLE_RATE)
        self._stt: STT = stt
        self._opts = opts
        self._reconnect_event = asyncio.Event()
        # Stream-level, not per connection: its sub-chunk remainder survives a reconnect.
        self._bstream = utils.audio.AudioByteStream(SAMPLE_RATE, 1, CHUNK_SAMPLES)
        self._replay = ReplayBuffer(int(max_replay_s * SAMPLE_RATE))
        self._input_done = False
        self._speaking = False
        self._usage_reported = 0  # stream samples already reported as RECOGNITION_USAGE
        self._first_start_time: float | None = None
        self._last_run_start: float | None = None
        self._dropped_warned = False

    def push_frame(self, frame: rtc.AudioFrame) -> None:
        """Push audio at any rate; multi-channel frames are averaged to mono first.

        Raises:
            RuntimeError: If the stream is closed or its input ended.
            ValueError: If the sample rate changes between frames.
        """
        if frame.num_channels > 1:
            # the base class's resampler is built for one channel
            pcm = np.frombuffer(frame.data, dtype=np.int16).reshape(-1, frame.num_channels)
            mono = pcm.mean(axis=1).round().astype(np.int16)
            frame = rtc.AudioFrame(mono.tobytes(), frame.sample_rate, 1, frame.samples_per_channel)
        super().push_frame(frame)

    def update_options(
        self,
        *,
        language: NotGivenOr[STTLanguageOption] = NOT_GIVEN,
        interim_results: NotGivenOr[bool] = NOT_GIVEN,
        task: NotGivenOr[STTTasks | str] = NOT_GIVEN,
        prompt: NotGivenOr[str | None] = NOT_GIVEN,
        keywords: NotGivenOr[Sequence[str]] = NOT_GIVEN,
        adaptive_endpointing: NotGivenOr[bool | None] = NOT_GIVEN,
        condition_on_previous_text: NotGivenOr[bool | None] = NOT_GIVEN,
    ) -> None:
        """Change this stream's options; reconnects (losslessly) only on a real change.

        Args:
            language: Language code, ``None`` to detect, or a list of codes to detect among.
            interim_results: Whether to ask for interim transcripts.
            task: ``"transcribe"`` or ``"translate"``.
            prompt: Decoding prompt, or ``None`` to clear it.
            keywords: Names and terms to expect; empty to clear them.
            adaptive_endpointing: Adaptive (True) or fixed (False) endpoint, ``None``: the
                sidecar's default.
            condition_on_previous_text: Prompt finals with earlier finals, ``None``: the
                sidecar's default.
        """
        self._apply_changes(
            _given_changes(
                language=language,
                interim_results=interim_results,
                task=task,
                prompt=prompt,
                keywords=keywords,
                adaptive_endpointing=adaptive_endpointing,
                condition_on_previous_text=condition_on_previous_text,
            )
        )

    def _apply_changes(self, changes: dict[str, Any]) -> None:
        new = dataclasses.replace(self._opts, **changes)
        if new != self._opts:
            logger.debug("stream options changed (%s), reconnecting", sorted(changes))
            self._opts = new
            self._reconnect_event.set()

    # -- timeline ---------------------------------------------------------------------------

    def _restore_timeline(self) -> None:
        """Undo the base class's retry drift on ``start_time_offset``.

        `RecognizeStream._main_task` adds the wall-clock time since the previous attempt to the
        offset, assuming that audio was lost. Ours was kept and is replayed, so stream time
        stays the sample count and the offset must not move.
        """
        now = self._start_time  # set by the base class just before calling _run
        if self._last_run_start is None:
            self._first_start_time = now
        else:
            drift = now - self._last_run_start
            self._start_time_offset = max(0.0, self._start_time_offset - drift)
            if self._first_start_time is not None:
                self._start_time = self._first_start_time
        self._last_run_start = now

    def _seconds(self, conn: Connection, t: Any) -> float:
        """A sidecar time on ``conn`` as seconds on the caller's timeline."""
        return self.start_time_offset + conn.base / SAMPLE_RATE + float(t or 0.0)

    # -- connection -------------------------------------------------------------------------

    async def _run(self) -> None:
        self._restore_timeline()
        while True:
            ws = await self._connect_ws()
            conn = Connection(base=self._replay.base, live_from=self._replay.end)
            tasks: list[asyncio.Task[Any]] = []
            try:
                # cleared here, not before connecting: the config sent next already carries
                # any option changed while the connection was being made
                self._reconnect_event.clear()
                await self._configure(ws, conn)
                send = asyncio.create_task(self._send_loop(ws, conn), name="custom_stt.send")
                recv = asyncio.create_task(self._recv_loop(ws, conn), name="custom_stt.recv")
                keepalive = asyncio.create_task(
                    self._keepalive_loop(ws), name="custom_stt.keepalive"
                )
                reconnect = asyncio.create_task(
                    self._reconnect_event.wait(), name="custom_stt.reconnect"
                )
                tasks = [send, recv, keepalive, reconnect]
                pending: set[asyncio.Task[Any]] = set(tasks)
                while True:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    # the receive side first: its error (the server's own code) is more precise
                    # than a failed send on the same dying connection
                    for task in (recv, send, keepalive):
                        if task in done:
                            task.result()
                    if recv in done:
                        return  # "closed" received: every final is out
                    if reconnect in done:
                        break
                    # only send finished (it sent "close"): keep reading finals
            finally:
                await utils.aio.gracefully_cancel(*tasks)
                await ws.close()
                self._after_connection(conn)

    async def _connect_ws(self) -> aiohttp.ClientWebSocketResponse:
        url = self._opts.ws_url()
        started = time.perf_counter()
        try:
            ws = await asyncio.wait_for(
                self._stt._ensure_session().ws_connect(
                    url,
                    headers=self._opts.auth_headers(),
                    # pings detect a half-open TCP connection (sidecar host gone) that would
                    # otherwise look like a long silence
                    heartbeat=15.0,
                    # don't wait long for the close handshake of a dying connection
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0),
                ),
                self._conn_options.timeout,
            )
        except asyncio.TimeoutError:
            raise APITimeoutError(f"timed out connecting to the sidecar at {url}") from None
        except aiohttp.WSServerHandshakeError as e:
            # `from None` everywhere here: the aiohttp errors carry the request headers
            raise handshake_error(e.status, e.headers) from None
        except (aiohttp.ClientError, OSError) as e:
            raise APIConnectionError(
                f"cannot connect to the sidecar at {url} ({type(e).__name__})"
            ) from None
        self._report_connection_acquired(time.perf_counter() - started, False)
        return ws

    async def _configure(self, ws: aiohttp.ClientWebSocketResponse, conn: Connection) -> None:
        """Send the config and wait for ``ready`` (so a bad config fails before any audio)."""
        try:
            await ws.send_str(json.dumps(self._opts.stream_config()))
            deadline = time.monotonic() + self._conn_options.timeout
            while True:
                msg = await ws.receive(timeout=max(0.0, deadline - time.monotonic()))
                data = parse_message(msg, ws.close_code)
                if data is None:
                    continue
                if data.get("type") == "ready":
                    conn.session_id = str(data.get("session_id", ""))
                    logger.debug(
                        "stream %s ready, replaying %.2f s",
                        conn.session_id,
                        self._replay.seconds,
                    )
                    return
                if data.get("type") == "error":
                    raise server_error(data)
                logger.debug("ignoring %s before ready", data.get("type"))
        except asyncio.TimeoutError:
            raise APITimeoutError("the sidecar did not answer the stream config in time") from None
        except (aiohttp.ClientError, ConnectionError) as e:
            raise APIConnectionError(
                f"sidecar connection lost during setup ({type(e).__name__})"
            ) from None

    def _after_connection(self, conn: Connection) -> None:
        # An utterance whose final already arrived will not be replayed, so its END would never
        # come; one still unfinalized continues on the next connection, so START/END stay open.
        if self._speaking and not conn.has_unfinalized() and not conn.closed:
            self._stop_speaking()

    # -- sending ----------------------------------------------------------------------------

    def _commit(self, frames: list[rtc.AudioFrame]) -> list[bytes]:
        """Put chunks in the replay buffer before sending: a failed send loses nothing."""
        chunks = [f.data.tobytes() for f in frames]
        for chunk in chunks:
            dropped = self._replay.append_audio(chunk)
            if dropped and not self._dropped_warned:
                self._dropped_warned = True
                logger.warning(
                    "replay buffer full: unfinalized audio older than %.0f s is dropped and "
                    "would be lost if the connection broke now",
                    self._replay.max_samples / SAMPLE_RATE,
                )
        return chunks

    async def _send_flush(
        self, ws: aiohttp.ClientWebSocketResponse, conn: Connection, marker: Entry
    ) -> None:
        conn.flushes.append(marker)
        await ws.send_str(FLUSH_MSG)

    async def _send_loop(self, ws: aiohttp.ClientWebSocketResponse, conn: Connection) -> None:
        try:
            replayed = 0
            for entry in self._replay.snapshot():
                if entry.data is None:
                    await self._send_flush(ws, conn, entry)
                else:
                    await ws.send_bytes(entry.data)
                    replayed += entry.samples
            if replayed:
                logger.info(
                    "replayed %.2f s of unfinalized audio after reconnecting",
                    replayed / SAMPLE_RATE,
                )

            if not self._input_done:
                async for data in self._input_ch:
                    if isinstance(data, rtc.AudioFrame):
                        chunks = self._commit(self._bstream.push(data.data.tobytes()))
                        self._quiet_trim(conn)
                        for chunk in chunks:
                            await ws.send_bytes(chunk)
                    else:  # the framework's flush sentinel
                        chunks = self._commit(self._bstream.flush())
                        marker = self._replay.append_flush()
                        for chunk in chunks:
                            await ws.send_bytes(chunk)
                        await self._send_flush(ws, conn, marker)
                # end_input() flushes first, but a closed channel must not strand a remainder
                chunks = self._commit(self._bstream.flush())
                self._input_done = True
                for chunk in chunks:
                    await ws.send_bytes(chunk)
            conn.closing = True
            await ws.send_str(CLOSE_MSG)
        except (aiohttp.ClientError, ConnectionError) as e:
            raise APIConnectionError(
                f"sidecar connection lost while sending ({type(e).__name__})"
            ) from None

    async def _keepalive_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        # The sidecar closes a stream that sends nothing for STT_IDLE_TIMEOUT_S (default 30 s);
        # a paused input (muted mic, end_input pending) is not a dead client.
        try:
            while True:
                await asyncio.sleep(KEEPALIVE_S)
                await ws.send_str(KEEPALIVE_MSG)
        except (aiohttp.ClientError, ConnectionError):
            return  # the receive side reports the broken connection

    def _quiet_trim(self, conn: Connection) -> None:
        point = conn.quiet_trim_point(self._replay.end)
        if point is not None:
            self._replay.trim(point)

    # -- receiving --------------------------------------------------------------------------

    async def _recv_loop(self, ws: aiohttp.ClientWebSocketResponse, conn: Connection) -> None:
        while True:
            try:
                msg = await ws.receive()
            except (aiohttp.ClientError, ConnectionError) as e:
                raise APIConnectionError(f"sidecar connection lost ({type(e).__name__})") from None
            data = parse_message(msg, ws.close_code)
            if data is None:
                continue
            self._handle(data, conn)
            if conn.closed:
                return

    def _handle(self, data: dict[str, Any], conn: Connection) -> None:
        kind = data.get("type")
        logger.debug("sidecar message %s", kind, extra={"lk.pii.data": data})
        if kind == "speech_started":
            uid = int(data.get("utterance_id", -1))
            conn.open.setdefault(uid, False)
            conn.starts[uid] = conn.to_sample(data.get("start", 0.0))
            self._start_speaking()
        elif kind == "interim":
            uid = int(data.get("utterance_id", -1))
            conn.open.setdefault(uid, False)
            if str(data.get("text", "")).strip():
                speech = speech_data_from_interim(
                    data,
                    offset=self._seconds(conn, 0.0),
                    language=requested_language(self._opts.language),
                )
                self._start_speaking()
                self._event_ch.send_nowait(
                    stt.SpeechEvent(
                        type=stt.SpeechEventType.INTERIM_TRANSCRIPT,
                        request_id=f"{conn.session_id}:{uid}",
                        alternatives=[speech],
                    )
                )
        elif kind == "final":
            self._on_final(data, conn)
        elif kind == "speech_ended":
            uid = int(data.get("utterance_id", -1))
            conn.open.pop(uid, None)
            conn.starts.pop(uid, None)
            self._trim_after(conn, uid, conn.to_sample(data.get("end", 0.0)))
            if not conn.has_unfinalized():
                self._stop_speaking()
        elif kind == "flushed":
            if conn.flushes:
                marker = conn.flushes.popleft()
                # every final of the audio before the flush came before this message
                self._replay.trim(marker.start)
                self._replay.remove_marker(marker)
        elif kind == "closed":
            conn.closed = True
            self._report_usage()
            self._stop_speaking()
        elif kind == "error":
            if data.get("code") == "internal":
                # The sidecar failed on one utterance and goes on (its speech_ended follows and
                # trims it): reconnecting would replay the same audio into the same failure.
                self._emit_error(server_error(data), recoverable=True)
                logger.warning("sidecar could not transcribe an utterance; stream goes on")
                return
            raise server_error(data)
        else:
            logger.debug("ignoring sidecar message %s", kind)

    def _trim_after(self, conn: Connection, uid: int, end_sample: int) -> None:
        self._replay.trim(conn.trim_point(uid, end_sample))

    def _on_final(self, data: dict[str, Any], conn: Connection) -> None:
        uid = int(data.get("utterance_id", -1))
        conn.open[uid] = True
        text = str(data.get("text", "")).strip()
        if text:
            speech = speech_data_from_final(
                data,
                offset=self._seconds(conn, 0.0),
                fallback_language=requested_language(self._opts.language),
            )
            self._start_speaking()
            self._event_ch.send_nowait(
                stt.SpeechEvent(
                    type=stt.SpeechEventType.FINAL_TRANSCRIPT,
                    request_id=f"{conn.session_id}:{uid}",
                    alternatives=[speech],
                )
            )
        self._trim_after(conn, uid, conn.to_sample(data.get("end", 0.0)))
        if text:
            self._report_usage()

    def _report_usage(self) -> None:
        """RECOGNITION_USAGE for stream audio not reported yet (each sample once, replays not)."""
        samples = self._replay.end - self._usage_reported
        if samples <= 0:
            return
        self._usage_reported = self._replay.end
        self._event_ch.send_nowait(
            stt.SpeechEvent(
                type=stt.SpeechEventType.RECOGNITION_USAGE,
                recognition_usage=stt.RecognitionUsage(audio_duration=samples / SAMPLE_RATE),
            )
        )

    def _start_speaking(self) -> None:
        if not self._speaking:
            self._speaking = True
            self._event_ch.send_nowait(stt.SpeechEvent(type=stt.SpeechEventType.START_OF_SPEECH))

    def _stop_speaking(self) -> None:
        if self._speaking:
            self._speaking = False
            self._event_ch.send_nowait(stt.SpeechEvent(type=stt.SpeechEventType.END_OF_SPEECH))
