"""The aiohttp application: app factory, model lifetime, health and readiness.

Shared state lives in `state.py`; nothing imports this module but `__main__`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .audio_format import SAMPLE_RATE
from .auth import make_auth_middleware
from .batch import add_batch_routes
from .capacity import derive_max_streams
from .config import SidecarSettings
from .errors import error_middleware
from .model import (
    ModelSource,
    ModelUnavailableError,
    default_compute_type,
    load_whisper_model,
    pick_device,
)
from .realtime.handler import add_realtime_routes
from .scheduler import (
    DecodeScheduler,
    install_encoder_window,
    remove_encoder_window,
    run_whisper,
)
from .state import STATE, SidecarState
from .streaming.encoder_windows import encoder_window_s
from .streaming.handler import add_streaming_routes

logger = logging.getLogger("stt_sidecar")

WARMUP_CLIP = Path(__file__).parent / "assets" / "warmup_jfk.wav"
# Greedy, as every streaming decode.
WARMUP_OPTIONS = {"language": "en", "beam_size": 1}


def read_warmup_audio() -> np.ndarray:
    import soundfile

    audio, rate = soundfile.read(WARMUP_CLIP, dtype="float32")
    assert rate == SAMPLE_RATE and audio.ndim == 1
    return audio


async def _timed_decode(
    scheduler: DecodeScheduler, audio: np.ndarray, device: str, threads: int
) -> float:
    """Seconds one decode of `audio` takes on this machine. On CPU, from the process's CPU
    time (nothing else runs before ready): a machine briefly busy with other work at start
    would otherwise get a budget fit for its worst moment (wall time read 5.5 s instead of
    ~0.6 s on the shared development box)."""
    # in the window a streaming final of this length gets: what a stream's work costs
    window = encoder_window_s(
        audio.size / SAMPLE_RATE, final=True, english_only=scheduler.english_only
    )
    cpu, wall = time.process_time(), time.monotonic()
    await asyncio.get_running_loop().run_in_executor(
        None, run_whisper, scheduler.model, audio, WARMUP_OPTIONS, window
    )
    if device == "cpu":
        return (time.process_time() - cpu) / threads
    return time.monotonic() - wall


async def _load_and_warm(app: web.Application) -> None:
    state = app[STATE]
    s = state.settings
    loop = asyncio.get_running_loop()
    try:
        model = await loop.run_in_executor(
            None,
            lambda: load_whisper_model(
                state.source,
                device=state.device,
                compute_type=state.compute_type,
                cpu_threads=s.threads_per_decode,
                num_workers=s.decode_workers,
            ),
        )
        scheduler = DecodeScheduler(
            model,
            workers=s.decode_workers,
            streams_open=lambda: state.active_streams > 0,
        )
        # Interims ask for short encoder windows (scheduler.py explains why); undone in model_ctx.
        install_encoder_window()
        scheduler.start()
        state.scheduler = scheduler
        # A first decode on real speech pays one-off costs (allocations, kernels) before traffic.
        warmup_audio = read_warmup_audio()
        started = time.monotonic()
        await loop.run_in_executor(None, run_whisper, model, warmup_audio, WARMUP_OPTIONS)
        warmup = time.monotonic() - started
        if not s.max_streams:
            # A second, now typical, decode tells what this machine carries (capacity.py).
            decode = await _timed_decode(
                scheduler, warmup_audio, state.device, s.threads_per_decode
            )
            # English-only models stream in short encoder windows (encoder_windows.py)
            budget = derive_max_streams(
                decode, s.decode_workers, short_windows=scheduler.english_only
            )
            s = state.settings = s.replace(max_streams=budget)
            logger.info(
                "STT_MAX_STREAMS=%d, derived from a %.2f s final-sized decode on %d worker(s); "
                "set STT_MAX_STREAMS to override",
                s.max_streams,
                decode,
                s.decode_workers,
            )
        state.ready = True
        logger.info(
            "model %s ready on %s/%s, %d decode worker(s) x %d thread(s) (warm-up %.2f s), "
            "up to %d streams",
            state.source.name,
            state.device,
            state.compute_type,
            s.decode_workers,
            s.threads_per_decode,
            warmup,
            s.max_streams,
        )
    except ModelUnavailableError as exc:
        state.load_error = str(exc)
        logger.error("%s", exc)
    except Exception:
        state.load_error = f"model {state.source.name!r}: warm-up failed"
        logger.exception("model warm-up failed")
    if state.load_error:
        # Nothing can be served: stop the process; __main__ exits non-zero on load_error.
        os.kill(os.getpid(), signal.SIGTERM)


async def model_ctx(app: web.Application) -> AsyncIterator[None]:
    """Loads the model in the background so `/health` answers at once and `/ready` says when."""
    task = asyncio.create_task(_load_and_warm(app), name="model-load")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    scheduler = app[STATE].scheduler
    if scheduler is not None:
        await scheduler.close()
        remove_encoder_window()


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = {
        "status": "ready" if state.ready else "loading",
        "model": state.source.name,
        "device": state.device,
        "compute_type": state.compute_type,
        "active_streams": state.active_streams,
        "max_streams": state.settings.max_streams,
        "load": state.load(),
    }
    if not state.ready:
        return web.json_response(body, status=503, headers={"Retry-After": "2"})
    return web.json_response(body)


async def metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.scheduler is not None:
        state.metrics.queue_depth.set(state.scheduler.queue_depth)
    state.metrics.active_streams.set(state.active_streams)
    for protocol in ("stream", "realtime"):
        count = sum(getattr(c, "protocol", "stream") == protocol for c in state.streams)
        state.metrics.open_streams.labels(protocol=protocol).set(count)
    return web.Response(
        body=generate_latest(state.metrics.registry),
        headers={"Content-Type": CONTENT_TYPE_LATEST},
    )


def create_app(settings: SidecarSettings, source: ModelSource) -> web.Application:
    """App factory: `web.run_app(create_app(settings, resolve_model(settings.model)))`."""
    device = pick_device(settings.device)
    app = web.Application(
        middlewares=[error_middleware, make_auth_middleware(settings.api_key)],
        client_max_size=settings.max_upload_bytes,
    )
    app[STATE] = SidecarState(
        settings=settings,
        source=source,
        device=device,
        compute_type=settings.compute_type or default_compute_type(device),
    )
    app.cleanup_ctx.append(model_ctx)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
    add_batch_routes(app)
    add_streaming_routes(app)
    add_realtime_routes(app)
    return app
