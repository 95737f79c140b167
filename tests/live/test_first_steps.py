"""Scenario 1: the README's first steps, literally, against a real LiveKit server.

`make run`'s command (honcho, the repo's Procfile, `.env` copied from `.env.example`) starts the
sidecar and `python agent/main.py dev`, which registers; `python -m agent.access_token` makes the
speaker's token; the speaker publishes conversation.wav as a 48 kHz microphone at real time and
a second participant only listens. Real dispatch: the worker joins the room by itself.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..livekit_server import LiveKitServerInfo
from ..support.sidecar import free_port
from ..support.speech import conversation
from ..test_make_run_env import make_run_command
from .room_support import ROOT, Listener, Talker, check_room_transcripts, load_48k, silence_48k


class MakeRun:
    """`make run`'s honcho command in a copy of the checkout's run files (no developer .env)."""

    def __init__(self, server: LiveKitServerInfo) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="make-run-"))
        (self.dir / "agent").symlink_to(ROOT / "agent")
        shutil.copy(ROOT / "Procfile", self.dir)
        shutil.copy(ROOT / ".env.example", self.dir / ".env")  # what `make run` does first
        self.stt_port = free_port()
        bin_dir = str(Path(sys.executable).parent)
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("LIVEKIT_", "STT_", "CUSTOM_STT_", "AGENT_"))
        }
        # the shell's variables win over .env's defaults (the server's port is a free one)
        self.env.update(
            server.env,
            STT_PORT=str(self.stt_port),
            CUSTOM_STT_URL=f"http://127.0.0.1:{self.stt_port}",
            PATH=f"{bin_dir}:{self.env.get('PATH', '')}",
            PYTHONUNBUFFERED="1",
        )
        self.log_path = self.dir / "honcho.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> MakeRun:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                ["sh", "-c", make_run_command()],
                cwd=self.dir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_log(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            assert self.proc is not None and self.proc.poll() is None, self.log()[-5000:]
            assert time.monotonic() < deadline, f"no {text!r}:\n{self.log()[-5000:]}"
            await asyncio.sleep(0.2)

    def token(self, room: str, identity: str) -> str:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "agent.access_token",
                "--room",
                room,
                "--identity",
                identity,
                "--token-only",
            ],
            cwd=self.dir,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)  # Ctrl+C: the terminal signals the group
        try:
            return self.proc.wait(40)
        finally:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def make_run(livekit_server: LiveKitServerInfo) -> Iterator[MakeRun]:
    run = MakeRun(livekit_server).start()
    yield run
    run.stop()
    print(f"--- make run log tail ---\n{run.log()[-4000:]}")


async def test_make_run_token_speaker_listener(
    make_run: MakeRun, livekit_server: LiveKitServerInfo, room_name
) -> None:
    await make_run.wait_log("registered worker", timeout=120)
    room = room_name("first")
    ref = conversation()

    listener = Listener(livekit_server, room, "bob")
    # the speaker's token from the README's command
    talker = Talker(livekit_server, room, "alice", jwt=make_run.token(room, "alice"))
    await listener.connect()
    await talker.connect()
    try:
        await talker.publish()
        await listener.wait_for_agent(60)
        await make_run.wait_log("transcribing alice", timeout=30)
        await talker.play(load_48k("conversation.wav"))
        await talker.play(silence_48k(1.0))
        await listener.wait_finals("alice", len(ref["utterances"]), timeout=60)
    finally:
        await talker.disconnect()
        await listener.disconnect()

    report = check_room_transcripts(
        listener, "alice", talker.track_sid, ref["utterances"], talker.play_started
    )
    print(report.summary())
    # sidecar-only streaming gives 3.1 %; through Opus and a loaded box 5.2-8.2 % was seen
    report.assert_ok(max_wer=0.10)
    assert "Traceback" not in make_run.log()
