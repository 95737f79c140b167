"""`python -m stt_sidecar`: serve faster-whisper over HTTP and WebSocket."""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import sys
from pathlib import Path

from aiohttp import web
from dotenv import load_dotenv
from threadpoolctl import threadpool_limits

from .app import create_app
from .config import ConfigError, SidecarSettings
from .model import ModelUnavailableError, resolve_model
from .state import STATE

logger = logging.getLogger("stt_sidecar")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
# Upload bytes and decoded PCM of a long upload are ~18 MiB each; the model's own buffers and a
# stream's audio are far smaller and stay on the heap (a 1 MiB threshold put those in fresh
# mappings on every decode and slowed interims measurably: tests/test_streaming.py).
MMAP_THRESHOLD = 16 << 20


def _return_large_buffers_to_the_os() -> None:
    """glibc serves allocations over a *dynamic* threshold from mmap and returns them on free;
    but freeing one such block raises the threshold (up to 32 MiB), after which upload bytes
    and PCM land in the heap, where fragmentation keeps them mapped (measured: 8 concurrent
    10-minute uploads left RSS at 700+ MiB instead of ~320). A fixed threshold keeps every
    request-sized buffer in its own mapping."""
    if sys.platform != "linux":
        return
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return
    mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def _single_threaded_blas() -> None:
    """numpy's OpenBLAS starts a thread per core, and faster-whisper's mel spectrogram (one
    small matrix product per decode) then costs 4x the CPU of one thread, busy-waiting
    against the decode workers for the same cores (measured: 14 ms vs 3.3 ms of CPU per 5 s
    clip). Parallelism here comes from the decode workers, so BLAS gets one thread."""
    threadpool_limits(limits=1, user_api="blas")


def main() -> int:
    _return_large_buffers_to_the_os()
    _single_threaded_blas()
    # Only the .env of the directory we run in (honcho and make run from the repo root).
    load_dotenv(Path.cwd() / ".env")
    try:
        settings = SidecarSettings.from_env()
    except ConfigError as exc:
        print(f"stt_sidecar: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # faster-whisper logs at INFO on every call; keep its warnings only.
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    try:
        source = resolve_model(settings.model, cache_dir=settings.model_cache_dir)
    except ModelUnavailableError as exc:
        print(f"stt_sidecar: cannot start: {exc}", file=sys.stderr)
        return 2
    if not _is_loopback(settings.host) and not settings.api_key:
        logger.warning(
            "listening on %s without STT_API_KEY: anyone who can reach this port can use it; "
            "set STT_API_KEY or bind 127.0.0.1",
            settings.host,
        )
    app = create_app(settings, source)
    logger.info("stt sidecar on http://%s:%d (model %s)", settings.host, settings.port, source.name)
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        shutdown_timeout=settings.shutdown_grace_s,
        # A connection that sends no complete request head for STT_READ_TIMEOUT_S is dropped,
        # as a stalled body is; aiohttp's default (75 s) lets half-sent heads hold sockets.
        # Running handlers and WebSockets are not affected: the timer only closes connections
        # waiting for a request.
        keepalive_timeout=settings.read_timeout_s,
        access_log=None,
        print=None,
    )
    if app[STATE].load_error:
        print(f"stt_sidecar: cannot start: {app[STATE].load_error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
