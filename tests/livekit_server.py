"""Find a real LiveKit server for the live tests, or start one on free loopback ports.

Order: `LIVEKIT_URL` + `LIVEKIT_API_KEY` + `LIVEKIT_API_SECRET` from the environment (a server
someone already runs); else a `livekit-server` binary from `LIVEKIT_SERVER_BIN` or `PATH`,
started here as `livekit-server --dev` bound to 127.0.0.1 on free ports; else nothing, and the
live tests skip with `SKIP_REASON`. The project never builds or ships the server itself: see
LiveKit's own install options (README, "See it in the playground").
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .support.sidecar import free_port

DEV_KEY = "devkey"
DEV_SECRET = "secret"

SKIP_REASON = (
    "needs a real LiveKit server: set LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET, "
    "or put `livekit-server` on PATH (or its path in LIVEKIT_SERVER_BIN), then `make test-live`"
)


@dataclass(frozen=True)
class LiveKitServerInfo:
    url: str
    api_key: str
    api_secret: str

    @property
    def env(self) -> dict[str, str]:
        return {
            "LIVEKIT_URL": self.url,
            "LIVEKIT_API_KEY": self.api_key,
            "LIVEKIT_API_SECRET": self.api_secret,
        }


def server_from_environment() -> LiveKitServerInfo | None:
    names = ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")
    values = [os.environ.get(name, "") for name in names]
    if all(values):
        return LiveKitServerInfo(*values)
    return None


def find_server_binary() -> str | None:
    explicit = os.environ.get("LIVEKIT_SERVER_BIN", "")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("livekit-server")


def live_server_available() -> bool:
    return server_from_environment() is not None or find_server_binary() is not None


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalLiveKitServer:
    """`livekit-server --dev` on 127.0.0.1 with free signalling, TCP and UDP ports.

    `restart()` keeps the same ports, so clients and workers can reconnect to the same URL.
    """

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.rtc_tcp_port = free_port()
        self.rtc_udp_port = _free_udp_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(
            prefix="livekit-server-", suffix=".log", delete=False
        )

    @property
    def info(self) -> LiveKitServerInfo:
        return LiveKitServerInfo(f"ws://127.0.0.1:{self.port}", DEV_KEY, DEV_SECRET)

    def _config(self) -> str:
        # JSON is YAML: the server reads it from --config-body
        return json.dumps(
            {
                "port": self.port,
                "rtc": {
                    "tcp_port": self.rtc_tcp_port,
                    "udp_port": self.rtc_udp_port,
                    "use_external_ip": False,
                    "node_ip": "127.0.0.1",
                },
                "turn": {"enabled": False},
                "logging": {"level": "info"},
            }
        )

    def start(self, timeout: float = 30.0) -> LocalLiveKitServer:
        if self._log.closed:
            self._log = open(self._log.name, "ab")  # closed in stop()
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--dev",
                "--bind",
                "127.0.0.1",
                "--node-ip",
                "127.0.0.1",
                "--config-body",
                self._config(),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=tempfile.gettempdir(),
        )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"livekit-server exited with {self.proc.returncode}:\n{self.log()[-3000:]}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"livekit-server not listening after {timeout} s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()

    def restart(self) -> None:
        self.stop()
        self.start()


@contextlib.contextmanager
def livekit_server_for_tests() -> Iterator[tuple[LiveKitServerInfo, LocalLiveKitServer | None]]:
    """The server for a test session and, when this process started it, its handle (None for
    one from LIVEKIT_*); skips the session with SKIP_REASON when there is neither."""
    info = server_from_environment()
    if info is not None:
        yield info, None
        return
    binary = find_server_binary()
    if binary is None:
        pytest.skip(SKIP_REASON)
    server = LocalLiveKitServer(binary).start()
    try:
        yield server.info, server
    finally:
        server.stop()
