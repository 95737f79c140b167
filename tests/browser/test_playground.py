"""The LiveKit agents playground itself shows the worker's captions.

Optional: needs a built checkout of github.com/livekit/agents-playground (outside this repo)
in AGENTS_PLAYGROUND_DIR, e.g.

    git clone https://github.com/livekit/agents-playground /tmp/agents-playground
    cd /tmp/agents-playground && npx pnpm@9 install && npx next build

It runs `next start` on loopback, and headless Chromium uses the playground's manual connection
(our server URL and a token from `python -m agent.access_token`) with a fake microphone playing
jfk.wav. The playground shows its transcript only once the agent counts as connected, which
it derives from the agent's `lk.agent.state` attribute: the worker sets it on joining.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ..livekit_server import LiveKitServerInfo
from ..support.sidecar import free_port
from ..support.speech import clip, normalize, wer
from .conftest import Worker, make_token, missing_browser_pieces, run_browser, speech_wav

PLAYGROUND = os.environ.get("AGENTS_PLAYGROUND_DIR", "")


def _missing() -> str | None:
    if not PLAYGROUND:
        return "set AGENTS_PLAYGROUND_DIR to a built livekit/agents-playground checkout"
    if not (Path(PLAYGROUND) / ".next" / "BUILD_ID").is_file():
        return f"AGENTS_PLAYGROUND_DIR={PLAYGROUND} is not built: run `npx next build` there"
    return missing_browser_pieces()


pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(_missing() is not None, reason=str(_missing())),
]


def _serving(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except (OSError, ValueError):
        return False


@pytest.fixture
async def playground(tmp_path: Path) -> AsyncIterator[str]:
    """`next start` of the built playground on 127.0.0.1."""
    port = free_port()
    log = (tmp_path / "playground.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        "node",
        "node_modules/next/dist/bin/next",
        "start",
        "-H",
        "127.0.0.1",
        "-p",
        str(port),
        cwd=PLAYGROUND,
        env={**os.environ, "NEXT_TELEMETRY_DISABLED": "1"},
        stdout=log,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # `next start` forks a next-server: stop the whole group
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not await asyncio.to_thread(_serving, url):
            assert proc.returncode is None, (tmp_path / "playground.log").read_text()
            assert time.monotonic() < deadline, "the playground did not start within 60 s"
            await asyncio.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        await proc.wait()
        log.close()


async def test_agents_playground_shows_the_captions(
    livekit_server: LiveKitServerInfo,
    playground: str,
    worker: Worker,  # before room_name: the room is deleted first, so the job ends by itself
    room_name: str,
    tmp_path: Path,
) -> None:
    reference = clip("jfk.wav").text
    wav = speech_wav(tmp_path / "mic.wav", 2.0, "jfk.wav", 3.0)
    token = await make_token(livekit_server, worker, room_name, "alice", "Alice")
    run = await run_browser(
        {
            "mode": "playground",
            # the playground's own settings in the URL hash: microphone and chat on, no camera
            "pageUrl": f"{playground}/#cam=0&mic=1&screen=0&video=0&audio=1&chat=1",
            "livekitUrl": livekit_server.url,
            "token": token,
            "wav": str(wav),
            # wait for most of these words; the WER check below is the real one
            "words": normalize(reference).split(),
        },
        tmp_path / "agents-playground.png",
        timeout_s=120,
    )
    snap = run.report["snapshot"]
    assert run.ok, f"no captions in the playground: {snap.get('body', '')[:2000]}\n{run.report}"
    messages = snap["messages"]
    text = " ".join(m["text"] for m in messages)
    assert wer(reference, text) <= 0.2, messages
    # attributed to the speaker: the playground shows the participant's name above its lines
    assert {m["name"] for m in messages if m["name"]} == {"Alice"}, messages
    assert run.screenshot.stat().st_size > 10_000
