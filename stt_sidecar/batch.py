"""Batch transcription endpoints: the native `POST /transcribe` and OpenAI's
`POST /v1/audio/transcriptions`, `POST /v1/audio/translations` and `GET /v1/models`.

One request goes: admission (at most `STT_MAX_PENDING` batch requests in flight, counted from
the first byte of upload, so slow uploads cannot pile up memory) -> body read with size and idle
limits -> parameters checked -> container checked against the allow-list -> audio decoded in
a small executor with the duration cap and cut into pieces of at most 30 s in pauses ->
`DecodeScheduler` at BATCH priority, one job per piece (`long_form`) -> rendered in the asked
format.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from aiohttp import web
from faster_whisper.transcribe import Segment, TranscriptionInfo

from . import formats
from .audio_decode import AudioDecodeError, check_container, decode_audio_capped
from .audio_format import SAMPLE_RATE
from .config import parse_bool
from .errors import REQUEST_ID, ApiError, Handler
from .languages import LanguageRejected, Languages, TaskRejected
from .long_form import plan_pieces, transcribe_pieces
from .model_names import OPENAI_MODEL_ALIAS, accepts_model
from .scheduler import DecodeFailed, DecodeResult, Priority
from .state import STATE, SidecarState
from .upload import Upload, read_upload
from .whisper_options import DecodeRequest, decode_options

logger = logging.getLogger("stt_sidecar.batch")

AUDIO_DECODE_THREADS = 2  # FFmpeg decoding is CPU-bound; more threads would starve the model
BATCH_PREP_NICE = 10  # the audio-decode threads' nice value
TIMESTAMP_GRANULARITIES = ("word", "segment")


class BatchGate:
    """Counts batch requests from admission to response; refuses beyond the limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    def enter(self) -> None:
        if self.in_flight >= self.limit:
            raise _overloaded()
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1


AUDIO_POOL = web.AppKey("batch_audio_pool", ThreadPoolExecutor)
GATE = web.AppKey("batch_gate", BatchGate)


def _overloaded() -> ApiError:
    return ApiError(
        503,
        "Too many transcription requests are waiting; retry shortly.",
        "overloaded",
        retry_after=2,
    )


# -- parameters ----------------------------------------------------------------------------


def _bad(param: str, message: str) -> ApiError:
    return ApiError(400, message, "invalid_parameter", param=param)


def _parse_bool(upload: Upload, name: str) -> bool:
    raw = upload.get(name)
    if raw is None or raw.strip() == "":
        return False
    try:
        return parse_bool(raw)
    except ValueError:
        raise _bad(name, f"'{name}' must be true or false.") from None


def _parse_temperature(upload: Upload) -> float | None:
    raw = upload.get("temperature")
    if raw is None or raw.strip() == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise _bad("temperature", "'temperature' must be a number between 0 and 1.") from None
    if not 0.0 <= value <= 1.0:  # also rejects nan
        raise _bad("temperature", "'temperature' must be a number between 0 and 1.")
    return value


def _parse_language(upload: Upload, languages: Languages, model_name: str) -> str | None:
    raw = (upload.get("language") or "").strip().lower()
    try:
        return languages.resolve(raw or None)
    except LanguageRejected:
        if languages.english_only:
            raise _bad(
                "language",
                f"Model '{model_name}' is English-only; 'language' must be 'en' or omitted.",
            ) from None
        raise _bad(
            "language",
            f"Unsupported language {raw[:20]!r}: use an ISO-639-1 code such as 'en', 'de' or 'fr'.",
        ) from None


def _check_task(languages: Languages, task: str, model_name: str, param: str) -> str:
    try:
        return languages.check_task(task)
    except TaskRejected as exc:
        if exc.reason == "unknown":
            raise _bad("task", "'task' must be 'transcribe' or 'translate'.") from None
        raise _bad(
            param,
            f"Model '{model_name}' is English-only and cannot translate; "
            "use task=transcribe or a multilingual model (e.g. STT_MODEL=small).",
        ) from None


def _check_model(upload: Upload, served: str) -> None:
    model = (upload.get("model") or "").strip()
    # Missing is fine (curl users); OpenAI's names keep stock clients' defaults working.
    if model and not accepts_model(model, served):
        raise ApiError(
            400,
            f"Unknown model {model[:100]!r}: this server serves '{served}' "
            f"(also accepted as '{OPENAI_MODEL_ALIAS}' or an OpenAI transcription model name).",
            "model_not_found",
            param="model",
        )


def _parse_prompt(upload: Upload) -> str | None:
    prompt = upload.get("prompt")
    return prompt if prompt and prompt.strip() else None


def _parse_response_format(upload: Upload) -> str:
    value = (upload.get("response_format") or "json").strip()
    if value not in formats.RESPONSE_FORMATS:
        raise _bad(
            "response_format",
            f"'response_format' must be one of {', '.join(formats.RESPONSE_FORMATS)}.",
        )
    return value


def _parse_granularities(upload: Upload) -> set[str]:
    # OpenAI's client sends `timestamp_granularities[]`; curl users often drop the brackets.
    values = upload.get_all("timestamp_granularities[]") + upload.get_all("timestamp_granularities")
    chosen = {v.strip() for v in values if v.strip()}
    for value in chosen:
        if value not in TIMESTAMP_GRANULARITIES:
            raise _bad(
                "timestamp_granularities[]",
                "'timestamp_granularities[]' values must be 'word' or 'segment'.",
            )
    return chosen or {"segment"}


# -- the shared pipeline -------------------------------------------------------------------


@dataclass
class _Decoded:
    segments: list[Segment]
    info: TranscriptionInfo
    audio_seconds: float


def _decode_and_plan(data: bytes, max_seconds: float) -> tuple[np.ndarray, list[tuple[int, int]]]:
    audio = decode_audio_capped(data, max_seconds)
    return audio, plan_pieces(audio)


async def _decode(
    request: web.Request, state: SidecarState, upload: Upload, decode_request: DecodeRequest
) -> _Decoded:
    """Upload bytes -> PCM and pieces (executor, capped) -> model, piece by piece (scheduler)."""
    scheduler = state.require_scheduler()
    loop = asyncio.get_running_loop()
    try:
        # Refused formats are refused here, from a few bytes: no executor, no FFmpeg.
        check_container(upload.audio)
        audio, pieces = await loop.run_in_executor(
            request.app[AUDIO_POOL],
            _decode_and_plan,
            upload.audio,
            state.settings.max_audio_seconds,
        )
    except AudioDecodeError as exc:
        raise ApiError(400, exc.message, exc.code, param="file") from None
    finally:
        upload.audio = b""  # up to STT_MAX_UPLOAD_MB per request: free it before the wait

    async def decode_piece(piece: np.ndarray, options: dict) -> DecodeResult:
        return await scheduler.transcribe(piece, options, Priority.BATCH)

    try:
        segments, info, progress = await transcribe_pieces(
            audio, pieces, decode_options(decode_request), decode_piece
        )
    except DecodeFailed:
        raise ApiError(
            503,
            "The model failed to transcribe this audio; retry shortly.",
            "internal_error",
            retry_after=1,
        ) from None
    seconds = len(audio) / SAMPLE_RATE
    state.metrics.batch_audio_seconds.inc(seconds)
    state.metrics.decode_seconds.labels(kind="batch").observe(progress.decode_seconds)
    return _Decoded(segments, info, seconds)


async def _read(request: web.Request, state: SidecarState) -> Upload:
    return await read_upload(
        request,
        max_bytes=state.settings.max_upload_bytes,
        idle_timeout=state.settings.read_timeout_s,
    )


def _languages(state: SidecarState) -> Languages:
    state.require_scheduler()  # 503 before reading a body we cannot serve
    return state.languages


# -- handlers ------------------------------------------------------------------------------


async def transcribe_native(request: web.Request) -> web.Response:
    """`POST /transcribe`: multipart `file` or a raw audio body; `language`, `task`,
    `word_timestamps` as form fields or query parameters."""
    state = request.app[STATE]
    languages = _languages(state)
    upload = await _read(request, state)
    name = state.source.name
    task = _check_task(languages, (upload.get("task") or "transcribe").strip(), name, "task")
    word_timestamps = _parse_bool(upload, "word_timestamps")
    decode_request = DecodeRequest(
        language=_parse_language(upload, languages, name),
        task=task,
        word_timestamps=word_timestamps,
    )
    decoded = await _decode(request, state, upload, decode_request)
    return web.json_response(
        formats.native_json(decoded.segments, decoded.info, word_timestamps=word_timestamps)
    )


async def _openai(request: web.Request, task: str) -> web.Response:
    state = request.app[STATE]
    languages = _languages(state)
    upload = await _read(request, state)
    name = state.source.name
    _check_model(upload, name)
    _check_task(languages, task, name, "model")
    if task == "translate":
        language = None  # OpenAI's translations endpoint takes no language; Whisper detects
    else:
        language = _parse_language(upload, languages, name)
    response_format = _parse_response_format(upload)
    granularities = _parse_granularities(upload)
    # Word timing costs an alignment pass; only verbose_json can carry it.
    words = response_format == "verbose_json" and "word" in granularities
    decode_request = DecodeRequest(
        language=language,
        task=task,
        word_timestamps=words,
        initial_prompt=_parse_prompt(upload),
        temperature=_parse_temperature(upload),
    )
    decoded = await _decode(request, state, upload, decode_request)
    segments, info = decoded.segments, decoded.info
    if response_format == "json":
        return web.json_response(formats.openai_json(segments, info))
    if response_format == "verbose_json":
        return web.json_response(
            formats.openai_verbose_json(
                segments,
                info,
                task=task,
                include_segments="segment" in granularities,
                include_words=words,
            )
        )
    render = {"text": formats.plain_text, "srt": formats.srt, "vtt": formats.vtt}[response_format]
    return web.Response(
        text=render(segments),
        content_type=formats.TEXT_CONTENT_TYPES[response_format],
        charset="utf-8",
    )


async def openai_transcriptions(request: web.Request) -> web.Response:
    """`POST /v1/audio/transcriptions` (OpenAI-compatible)."""
    return await _openai(request, "transcribe")


async def openai_translations(request: web.Request) -> web.Response:
    """`POST /v1/audio/translations` (OpenAI-compatible; multilingual models only)."""
    return await _openai(request, "translate")


def _model_card(model_id: str) -> dict:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "stt-sidecar"}


async def list_models(request: web.Request) -> web.Response:
    """`GET /v1/models`: the served model and the `whisper-1` alias that maps to it."""
    served = request.app[STATE].source.name
    ids = [served] if served == OPENAI_MODEL_ALIAS else [served, OPENAI_MODEL_ALIAS]
    return web.json_response({"object": "list", "data": [_model_card(i) for i in ids]})


async def retrieve_model(request: web.Request) -> web.Response:
    """`GET /v1/models/{model}`."""
    model_id = request.match_info["model"]
    if model_id not in (request.app[STATE].source.name, OPENAI_MODEL_ALIAS):
        raise ApiError(404, f"No model {model_id[:100]!r} here.", "model_not_found", param="model")
    return web.json_response(_model_card(model_id))


# -- wiring --------------------------------------------------------------------------------


def _instrumented(endpoint: str, handler: Handler, *, gated: bool) -> Handler:
    """Counts each request by endpoint and status, logs failures with the request id, and
    (for transcription) holds a `BatchGate` slot for the whole request."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE]
        started = time.monotonic()
        status, code = 503, "internal_error"  # unless we learn otherwise below
        gate = request.app[GATE] if gated else None
        entered = False
        try:
            if gate is not None:
                gate.enter()
                entered = True
            response = await handler(request)
            status, code = response.status, ""
            return response
        except ApiError as exc:
            status, code = exc.status, exc.code
            log = logger.warning if status >= 500 else logger.info
            log(
                "request %s %s -> %d %s: %s",
                request[REQUEST_ID],
                endpoint,
                status,
                code,
                exc.message,
            )
            raise
        except web.HTTPException as exc:
            status, code = exc.status, "http_error"
            raise
        except (asyncio.CancelledError, ConnectionResetError):
            status, code = 499, "client_closed"  # nginx's code for "the client went away"
            raise
        finally:
            if gate is not None and entered:
                gate.leave()
                if gate.in_flight == 0 and _malloc_trim is not None:
                    # the last upload of a burst is done: hand its freed heap back to the OS
                    request.app[AUDIO_POOL].submit(_malloc_trim, 0)
            state.metrics.http_requests.labels(endpoint=endpoint, status=str(status)).inc()
            if code:
                state.metrics.errors.labels(code=code).inc()
            logger.debug(
                "request %s %s -> %d in %.3f s",
                request[REQUEST_ID],
                endpoint,
                status,
                time.monotonic() - started,
            )

    return wrapped


def _find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None elsewhere. After a burst of long uploads glibc keeps
    hundreds of MB of freed, fragmented heap mapped (measured: 712 MiB after vs 312 MiB idle,
    bench/flood.py); trimming returns it."""
    if sys.platform != "linux":
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # musl and others
        return None


_malloc_trim = _find_malloc_trim()


def _lower_thread_priority() -> None:
    """FFmpeg decoding and piece planning of uploads yield the CPU to the model and the event
    loop (streams). Linux applies a nice value to a single thread when given its id."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BATCH_PREP_NICE)


async def _audio_pool_ctx(app: web.Application) -> AsyncIterator[None]:
    pool = ThreadPoolExecutor(
        max_workers=AUDIO_DECODE_THREADS,
        thread_name_prefix="audio-decode",
        initializer=_lower_thread_priority,
    )
    app[AUDIO_POOL] = pool
    app[GATE] = BatchGate(app[STATE].settings.max_pending)
    yield
    pool.shutdown(wait=False, cancel_futures=True)


def add_batch_routes(app: web.Application) -> None:
    """Register the batch endpoints and the audio-decoding executor on `app`."""
    app.cleanup_ctx.append(_audio_pool_ctx)
    routes = [
        ("POST", "/transcribe", transcribe_native, True),
        ("POST", "/v1/audio/transcriptions", openai_transcriptions, True),
        ("POST", "/v1/audio/translations", openai_translations, True),
        ("GET", "/v1/models", list_models, False),
        ("GET", "/v1/models/{model}", retrieve_model, False),
    ]
    for method, path, handler, gated in routes:
        app.router.add_route(method, path, _instrumented(path, handler, gated=gated))
