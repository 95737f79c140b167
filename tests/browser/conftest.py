"""Fixtures for the browser tests: a real LiveKit server, the worker (`agent/main.py connect
--room X`, real sidecar), a static server for this directory, and headless Chromium driven by
drive.mjs (puppeteer-core). Nothing here is a stand-in; every missing piece skips with the
command that provides it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from livekit import api

from ..agent_support import speech, worker_process_env
from ..livekit_server import (
    SKIP_REASON,
    LiveKitServerInfo,
    find_server_binary,
    livekit_server_for_tests,
    server_from_environment,
)
from ..support.sidecar import SidecarProcess

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MAIN = ROOT / "agent" / "main.py"
DRIVER = HERE / "drive.mjs"


def chromium_binary() -> str | None:
    """`CHROMIUM_BIN`, else `chromium` on PATH (Debian's package: /usr/bin/chromium)."""
    explicit = os.environ.get("CHROMIUM_BIN", "")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def missing_browser_pieces() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if server_from_environment() is None and find_server_binary() is None:
        return SKIP_REASON
    if chromium_binary() is None:
        return "needs Chromium: install Debian's `chromium` (or set CHROMIUM_BIN)"
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "needs node and npm (node 18+) for the page's livekit-client and puppeteer-core"
    if not (HERE / "node_modules" / "puppeteer-core").is_dir():
        return "run `make browser-deps` (npm ci --prefix tests/browser) first"
    return None


@pytest.fixture(scope="session")
def livekit_server() -> Iterator[LiveKitServerInfo]:
    """The server named by LIVEKIT_URL/KEY/SECRET, else `livekit-server --dev` on loopback."""
    with livekit_server_for_tests() as (info, _):
        yield info


@pytest.fixture(scope="session")
def static_site() -> Iterator[str]:
    """This directory over http on 127.0.0.1 (getUserMedia needs http(s), not file://)."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(HERE)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@dataclass(frozen=True)
class Worker:
    agent_name: str
    log: Path


@pytest.fixture
async def room_name(livekit_server: LiveKitServerInfo) -> AsyncIterator[str]:
    """A fresh room name; the browser's join creates the room (so the token's agent dispatch
    applies), and it is deleted afterwards."""
    name = f"stt-browser-{uuid.uuid4().hex[:8]}"
    yield name
    s = livekit_server
    async with api.LiveKitAPI(s.url, s.api_key, s.api_secret) as lk:
        await lk.room.delete_room(api.DeleteRoomRequest(room=name))


@pytest.fixture
async def worker(
    livekit_server: LiveKitServerInfo, sidecar: SidecarProcess, tmp_path: Path
) -> AsyncIterator[Worker]:
    """`python agent/main.py start` with every setting explicit (no .env) and a unique
    `AGENT_NAME`: LiveKit dispatches it into the rooms whose tokens ask for it, as after the
    README's `make run` + `python -m agent.access_token`. (Not `connect --room`: the token that
    livekit-agents makes for it lacks canUpdateOwnMetadata, so `lk.agent.state` is refused.)
    """
    agent_name = f"stt-browser-{uuid.uuid4().hex[:8]}"
    env = worker_process_env(
        **livekit_server.env,
        CUSTOM_STT_URL=sidecar.url,
        STT_API_KEY="",
        AGENT_NAME=agent_name,
        AGENT_LANGUAGE="en",
        TRANSCRIPT_TOPIC="transcription",
        PUBLISH_INTERIMS="true",
        PUBLISH_LEGACY_TRANSCRIPTION="true",
        SIDECAR_READY_TIMEOUT_S="30",
    )
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(MAIN),
            "start",
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its job processes go too (see the finally below)
        )
        try:
            deadline = time.monotonic() + 60
            while "registered worker" not in log_path.read_text(errors="replace"):
                assert proc.returncode is None, log_path.read_text(errors="replace")
                assert time.monotonic() < deadline, "worker not registered after 60 s"
                await asyncio.sleep(0.2)
            yield Worker(agent_name, log_path)
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGINT)
                try:
                    await asyncio.wait_for(proc.wait(), 20)
                except asyncio.TimeoutError:
                    proc.kill()
                    await proc.wait()
            # a worker killed mid-drain leaves its forkserver and job processes behind
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    print(log_path.read_text(errors="replace")[-4000:])


async def make_token(
    livekit_server: LiveKitServerInfo, worker: Worker, room: str, identity: str, name: str
) -> str:
    """A join token from the project's own helper, `python -m agent.access_token`, asking LiveKit to
    dispatch `worker` into the room."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent.access_token",
        "--room",
        room,
        "--identity",
        identity,
        "--name",
        name,
        "--token-only",
        cwd=ROOT,  # `-m` imports from here; a .env here never wins over the env below
        env=worker_process_env(**livekit_server.env, AGENT_NAME=worker.agent_name),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode().strip().splitlines()[-1]


def speech_wav(path: Path, *clips_and_pauses: str | float) -> Path:
    """Real speech for Chromium's fake microphone: 16 kHz mono 16-bit PCM WAV, the format of
    tests/data (Chromium resamples it). Pauses give the worker time to subscribe first and
    the endpointer the silence that ends the last utterance."""
    soundfile.write(path, speech(*clips_and_pauses).astype(np.int16), 16000, subtype="PCM_16")
    return path


@dataclass
class BrowserRun:
    ok: bool
    report: dict[str, Any]
    screenshot: Path


async def run_browser(config: dict[str, Any], screenshot: Path, timeout_s: float) -> BrowserRun:
    """Run drive.mjs with `config` and return its JSON report (headless Chromium)."""
    config = {
        "chromium": chromium_binary(),
        "screenshot": str(screenshot),
        "timeoutS": timeout_s,
        **config,
    }
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(DRIVER),
        json.dumps(config),
        cwd=HERE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s + 60)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    lines = out.decode().strip().splitlines()
    assert proc.returncode == 0 and lines, f"drive.mjs failed ({proc.returncode}): {err.decode()}"
    report = json.loads(lines[-1])
    assert "exception" not in report, report["exception"]
    keep_screenshot(screenshot)
    return BrowserRun(report["ok"], report, screenshot)


def keep_screenshot(screenshot: Path) -> None:
    """Copy it to `BROWSER_SCREENSHOT_DIR` when set (docs/, to refresh the README's pictures)."""
    keep = os.environ.get("BROWSER_SCREENSHOT_DIR")
    if keep and screenshot.exists():
        shutil.copy(screenshot, Path(keep) / screenshot.name)
