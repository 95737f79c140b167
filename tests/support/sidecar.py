"""Start the real sidecar (`python -m stt_sidecar`) as a subprocess on a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sidecar_env(**overrides: str) -> dict[str, str]:
    """The process environment minus every STT_/CUSTOM_STT_/LIVEKIT_ variable, plus overrides,
    so a developer's shell or .env never changes what the tests see."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STT_", "CUSTOM_STT_", "LIVEKIT_", "AGENT_"))
    }
    env.update(
        {
            "STT_HOST": "127.0.0.1",
            "STT_MODEL": "tiny.en",
            "STT_DEVICE": "cpu",
            "STT_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides)
    return env


class SidecarProcess:
    """One sidecar subprocess. `start()` waits until `/ready` answers 200."""

    def __init__(self, port: int | None = None, **env: str) -> None:
        self.port = port or free_port()
        self.env = sidecar_env(STT_PORT=str(self.port), **env)
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="sidecar-", suffix=".log", delete=False)
        self._cwd = tempfile.mkdtemp(prefix="sidecar-cwd-")  # no .env here

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def cwd(self) -> Path:
        """The server's working directory (a fresh temporary one)."""
        return Path(self._cwd)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/stream"

    def start(self, wait: bool = True, timeout: float = 60.0) -> SidecarProcess:
        if self._log.closed:  # restarted after stop(): keep one log across runs
            self._log = open(self._log.name, "ab")  # closed again in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stt_sidecar"],
            env=self.env,
            cwd=self._cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        key = self.env.get("STT_API_KEY")
        request = urllib.request.Request(
            self.url + "/ready", headers={"Authorization": f"Bearer {key}"} if key else {}
        )
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"sidecar exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(request, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"sidecar not ready after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: the crash case."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
