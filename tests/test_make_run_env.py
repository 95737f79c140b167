"""`make run`'s honcho command: a variable set in the shell beats `.env` (the README's "real
environment variables win"); `.env` still fills in what the shell does not set.

honcho applies its env file over the environment, so the Makefile gives it none and leaves
`.env` to the sidecar and the worker (`load_dotenv(override=False)`). The recipe is taken from
`make -n run` so the test follows the Makefile."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def make_run_command() -> str:
    out = subprocess.run(
        ["make", "-n", "-s", "run"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    line = next(x for x in out.splitlines() if "honcho start" in x)
    return line.replace(str((ROOT / ".venv" / "bin").resolve()), str(BIN))


def test_shell_variables_beat_dotenv_under_make_run(tmp_path: Path) -> None:
    # the same loading the sidecar and the worker do, in a one-line process
    probe = (
        "from pathlib import Path; import os; from dotenv import load_dotenv; "
        "load_dotenv(Path.cwd() / '.env', override=False); "
        "print('SEEN', os.environ['LIVEKIT_URL'], os.environ['AGENT_NAME'], flush=True)"
    )
    (tmp_path / "Procfile").write_text(f'probe: {sys.executable} -c "{probe}"\n')
    (tmp_path / ".env").write_text("LIVEKIT_URL=ws://from-dotenv:7880\nAGENT_NAME=from-dotenv\n")
    env = {k: v for k, v in os.environ.items() if k not in ("LIVEKIT_URL", "AGENT_NAME")}
    env["LIVEKIT_URL"] = "ws://from-shell:7880"
    out = subprocess.run(
        ["sh", "-c", make_run_command()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "SEEN ws://from-shell:7880 from-dotenv" in out, out
