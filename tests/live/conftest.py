"""Live tests: a real LiveKit server for the whole session, real sidecars and real workers.

The server comes from `tests/livekit_server.py`: LIVEKIT_URL/LIVEKIT_API_KEY/LIVEKIT_API_SECRET
when set, else `livekit-server --dev` (LIVEKIT_SERVER_BIN or PATH) on free loopback ports,
else every test here skips with `SKIP_REASON`. Every test is marked `live` (`make test-live`).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from livekit import api

from ..livekit_server import (
    LiveKitServerInfo,
    LocalLiveKitServer,
    livekit_server_for_tests,
    server_from_environment,
)
from ..support.sidecar import SidecarProcess
from .room_support import WorkerProcess


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/live/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.live)


@pytest.fixture(scope="session")
def livekit_local() -> Iterator[LocalLiveKitServer | None]:
    """The server started here (None when one from the environment is used)."""
    with livekit_server_for_tests() as (_, local):
        yield local


@pytest.fixture(scope="session")
def livekit_server(livekit_local: LocalLiveKitServer | None) -> LiveKitServerInfo:
    info = server_from_environment() if livekit_local is None else livekit_local.info
    assert info is not None
    return info


@pytest.fixture
async def lkapi(livekit_server: LiveKitServerInfo) -> AsyncIterator[api.LiveKitAPI]:
    s = livekit_server
    async with api.LiveKitAPI(s.url.replace("ws", "http", 1), s.api_key, s.api_secret) as lk:
        yield lk


@pytest.fixture
def room_name() -> Callable[[str], str]:
    """Unique room names, so tests never see each other's rooms (or a shared server's)."""
    return lambda prefix="room": f"live-{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def sidecars() -> Iterator[Callable[..., SidecarProcess]]:
    """Start extra real sidecars (tiny.en, no key); all stopped at the end of the test."""
    started: list[SidecarProcess] = []

    def start(**env: str) -> SidecarProcess:
        env = {"STT_MAX_STREAMS": "8", "STT_IDLE_TIMEOUT_S": "30", **env}
        proc = SidecarProcess(**env).start(timeout=120)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def workers(livekit_server: LiveKitServerInfo) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `python agent/main.py ...` workers; SIGTERMed (then killed) at the end."""
    started: list[WorkerProcess] = []

    def start(sidecar_url: str, *args: str, **env: str) -> WorkerProcess:
        worker = WorkerProcess(livekit_server, sidecar_url, *args, **env).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.proc is not None and worker.proc.poll() is None:
            worker.proc.terminate()
            try:
                worker.proc.wait(30)
            except Exception:
                pass
        worker.kill()
        print(f"--- worker {worker.args} log tail ---\n{worker.log()[-3000:]}")
