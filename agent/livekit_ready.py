"""Before registering: is a LiveKit server listening at `LIVEKIT_URL`?

Without one, livekit-agents retries every 2..10 s with "failed to connect to livekit" and
gives up after 16 tries, never saying which URL or what to start. The worker checks the TCP
port first and says it in one line, then waits for the server to appear (a newcomer starts
`livekit-server --dev` in another terminal and the worker carries on by itself).
"""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import urlsplit

logger = logging.getLogger("agent.livekit")

CONNECT_TIMEOUT_S = 2.0


def livekit_address(url: str) -> tuple[str, int]:
    """Host and port of a `ws://`, `wss://`, `http://` or `https://` LiveKit URL."""
    parts = urlsplit(url if "://" in url else f"ws://{url}")
    secure = parts.scheme in ("wss", "https")
    return parts.hostname or "localhost", parts.port or (443 if secure else 80)


async def livekit_reachable(url: str) -> str | None:
    """None when something accepts TCP connections at the URL, else why not."""
    host, port = livekit_address(url)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT_S)
    except (OSError, asyncio.TimeoutError) as exc:
        return str(exc) or type(exc).__name__
    writer.close()
    return None


async def wait_for_livekit(url: str, *, interval: float = 1.0, remind_every: float = 60.0) -> None:
    """Return once the LiveKit server at `url` accepts connections; say what to do meanwhile.

    Args:
        url: `LIVEKIT_URL`.
        interval: seconds between checks (default 1).
        remind_every: seconds between the shorter "still waiting" lines (default 60).
    """
    reason = await livekit_reachable(url)
    if reason is None:
        return
    logger.error(
        "no LiveKit server at %s (LIVEKIT_URL; %s): start one with `livekit-server --dev` "
        "in another terminal, or set LIVEKIT_URL/LIVEKIT_API_KEY/LIVEKIT_API_SECRET to yours; "
        "waiting for it",
        url,
        reason,
    )
    started = next_reminder = time.monotonic()
    next_reminder += remind_every
    while (reason := await livekit_reachable(url)) is not None:
        if time.monotonic() >= next_reminder:
            logger.warning(
                "still no LiveKit server at %s after %.0f s (%s)",
                url,
                time.monotonic() - started,
                reason,
            )
            next_reminder += remind_every
        await asyncio.sleep(interval)
    logger.info("LiveKit server at %s is up", url)
