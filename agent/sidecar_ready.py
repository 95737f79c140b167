"""The sidecar's `/ready`: wait for it before taking jobs, and read its load figure.

`/ready` answers 200 with `{"model","device","compute_type","active_streams","max_streams","load"}`
once the model is loaded and warm, 503 (same body) while it loads. With `STT_API_KEY` set on the
sidecar it needs the bearer token like every endpoint but `/health`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import aiohttp

logger = logging.getLogger("agent.sidecar")

PROBE_TIMEOUT_S = 2.0
"""One `/ready` request; the sidecar answers it from memory, so anything slower is a problem."""


class SidecarNotReadyError(RuntimeError):
    """The sidecar did not become ready within the configured time."""


@dataclass(frozen=True)
class SidecarStatus:
    """One answer of `/ready` (or why there was none)."""

    ready: bool
    detail: str
    """Human-readable state for logs: "ready", "loading", "connection refused", "HTTP 401"..."""
    model: str = ""
    active_streams: int = 0
    max_streams: int = 0
    load: float = 1.0


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _status_from_body(http_status: int, body: Any) -> SidecarStatus:
    if not isinstance(body, dict):
        return SidecarStatus(ready=False, detail=f"HTTP {http_status}, unexpected body")
    ready = http_status == 200
    try:
        return SidecarStatus(
            ready=ready,
            detail="ready" if ready else str(body.get("status") or f"HTTP {http_status}"),
            model=str(body.get("model", "")),
            active_streams=int(body.get("active_streams", 0)),
            max_streams=int(body.get("max_streams", 0)),
            load=float(body.get("load", 1.0)),
        )
    except (TypeError, ValueError):
        return SidecarStatus(ready=False, detail=f"HTTP {http_status}, malformed /ready body")


async def probe_ready(
    session: aiohttp.ClientSession, base_url: str, api_key: str | None = None
) -> SidecarStatus:
    """Ask `/ready` once; never raises (a failure is a not-ready status with the reason)."""
    try:
        async with session.get(
            f"{base_url}/ready",
            headers=_headers(api_key),
            timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S),
        ) as resp:
            if resp.status not in (200, 503):
                return SidecarStatus(ready=False, detail=f"HTTP {resp.status}")
            try:
                body = await resp.json(content_type=None)
            except (json.JSONDecodeError, aiohttp.ContentTypeError):
                return SidecarStatus(ready=False, detail=f"HTTP {resp.status}, not JSON")
            return _status_from_body(resp.status, body)
    except aiohttp.ClientConnectorError as exc:
        return SidecarStatus(ready=False, detail=f"cannot connect ({exc.os_error.strerror})")
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        return SidecarStatus(ready=False, detail=f"{type(exc).__name__}")


def probe_ready_sync(base_url: str, api_key: str | None = None) -> SidecarStatus:
    """`probe_ready` for synchronous callers (LiveKit runs `load_fnc` in a thread)."""
    request = urllib.request.Request(f"{base_url}/ready", headers=_headers(api_key))
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S) as resp:
            return _status_from_body(resp.status, json.loads(resp.read()))
    except urllib.error.HTTPError as exc:
        if exc.code != 503:
            return SidecarStatus(ready=False, detail=f"HTTP {exc.code}")
        try:
            return _status_from_body(exc.code, json.loads(exc.read()))
        except json.JSONDecodeError:
            return SidecarStatus(ready=False, detail="HTTP 503, not JSON")
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return SidecarStatus(ready=False, detail=f"cannot connect ({reason})")
    except json.JSONDecodeError:
        return SidecarStatus(ready=False, detail="HTTP 200, not JSON")


async def wait_until_ready(
    base_url: str,
    api_key: str | None = None,
    *,
    timeout: float,
    interval: float = 0.5,
    log_every: float = 5.0,
) -> SidecarStatus:
    """Poll `/ready` until it answers 200; log what it is waiting for every `log_every` s.

    Args:
        base_url: the sidecar's base URL, e.g. `http://127.0.0.1:8765`.
        api_key: bearer token when the sidecar has `STT_API_KEY` set (default None).
        timeout: give up after this many seconds (0 = a single probe).
        interval: seconds between probes (default 0.5).
        log_every: seconds between "still waiting" log lines (default 5).

    Raises:
        SidecarNotReadyError: not ready within `timeout`; the message says what it last saw.
    """
    started = time.monotonic()
    next_log = started
    async with aiohttp.ClientSession() as session:
        while True:
            status = await probe_ready(session, base_url, api_key)
            waited = time.monotonic() - started
            if status.ready:
                logger.info(
                    "STT sidecar at %s is ready (model %s, %d/%d streams, load %.2f) after %.1f s",
                    base_url,
                    status.model,
                    status.active_streams,
                    status.max_streams,
                    status.load,
                    waited,
                )
                return status
            if status.detail.startswith("HTTP 401"):
                # a wrong key never fixes itself: fail now rather than after the whole timeout
                raise SidecarNotReadyError(
                    f"the STT sidecar at {base_url} refused the API key (HTTP 401): "
                    "set the same STT_API_KEY for the sidecar and the worker"
                )
            if waited >= timeout:
                raise SidecarNotReadyError(
                    f"the STT sidecar at {base_url} was not ready after {timeout:.0f} s "
                    f"(last answer: {status.detail}); start it with `python -m stt_sidecar` "
                    "(or `make run`), check CUSTOM_STT_URL, or raise SIDECAR_READY_TIMEOUT_S"
                )
            if time.monotonic() >= next_log:
                logger.info(
                    "waiting for the STT sidecar at %s/ready: %s (%.0f s of %.0f s)",
                    base_url,
                    status.detail,
                    waited,
                    timeout,
                )
                next_log += log_every
            await asyncio.sleep(min(interval, max(0.0, timeout - waited)))
