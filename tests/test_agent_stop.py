"""Every way a newcomer stops or starts the worker without a LiveKit server: it says what to
do in one line, and SIGINT/SIGTERM end it with status 0 and no traceback in `dev` and `start`
alike, whether it is still waiting for the sidecar or already waiting for LiveKit."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

import pytest

from .agent_support import worker_process_env
from .support.sidecar import SidecarProcess, free_port

MAIN = Path(__file__).resolve().parent.parent / "agent" / "main.py"


async def _run_until(
    mode: str, env: dict[str, str], cwd: Path, marker: str, sig: signal.Signals
) -> tuple[int, str]:
    """Start `python agent/main.py <mode>`, wait for `marker` in its output, send `sig`."""
    log = cwd / f"{mode}-{sig.name}.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(MAIN), mode, cwd=cwd, env=env, stdout=out, stderr=out
        )
        deadline = time.monotonic() + 60
        while marker not in log.read_text(errors="replace"):
            assert proc.returncode is None, log.read_text()
            assert time.monotonic() < deadline, f"no {marker!r}:\n{log.read_text()}"
            await asyncio.sleep(0.2)
        proc.send_signal(sig)
        try:
            code = await asyncio.wait_for(proc.wait(), 30)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise
    return code, log.read_text(errors="replace")


@pytest.mark.parametrize("mode", ["dev", "start"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_stopped_while_waiting_for_the_sidecar(
    mode: str, sig: signal.Signals, tmp_path: Path
) -> None:
    """`start` used to end in `AttributeError: ... '_proc_pool'` (drain before run)."""
    env = worker_process_env(
        LIVEKIT_URL=f"ws://127.0.0.1:{free_port()}",
        LIVEKIT_API_KEY="devkey",
        LIVEKIT_API_SECRET="secret",
        CUSTOM_STT_URL=f"http://127.0.0.1:{free_port()}",
        SIDECAR_READY_TIMEOUT_S="60",
    )
    code, out = await _run_until(mode, env, tmp_path, "waiting for the STT sidecar", sig)
    assert code == 0, out
    assert "Traceback" not in out and "Error" not in out.replace("SidecarNotReadyError", ""), out


@pytest.mark.parametrize("mode", ["dev", "start"])
async def test_no_livekit_server_says_what_to_do_once(
    mode: str, sidecar: SidecarProcess, tmp_path: Path
) -> None:
    url = f"ws://127.0.0.1:{free_port()}"
    env = worker_process_env(
        LIVEKIT_URL=url,
        LIVEKIT_API_KEY="devkey",
        LIVEKIT_API_SECRET="secret",
        CUSTOM_STT_URL=sidecar.url,
        SIDECAR_READY_TIMEOUT_S="30",
    )
    code, out = await _run_until(mode, env, tmp_path, "no LiveKit server at", signal.SIGTERM)
    assert code == 0, out
    hint = [line for line in out.splitlines() if "no LiveKit server at" in line]
    assert len(hint) == 1, out
    assert url in hint[0] and "LIVEKIT_URL" in hint[0] and "livekit-server --dev" in hint[0]
    assert "failed to connect to livekit" not in out and "Traceback" not in out, out
