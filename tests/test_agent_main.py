"""The worker's entry points: settings, `python agent/main.py ...`, discovery by LiveKit's
CLI, and the token helper. Subprocesses run from an empty directory with an explicit env."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from livekit import api

from agent.access_token import main as token_main
from agent.settings import SettingsError, WorkerSettings

from .agent_support import AGENT_ENV_VARS, worker_process_env
from .support.sidecar import free_port

ROOT = Path(__file__).resolve().parent.parent
MAIN = ROOT / "agent" / "main.py"


def test_settings_defaults_and_parsing() -> None:
    defaults = WorkerSettings.from_env({})
    assert defaults.stt_url == "http://127.0.0.1:8765"
    assert defaults.stt_api_key is None
    assert defaults.language == "en"
    assert defaults.transcript_topic == "transcription"
    assert defaults.publish_interims is True
    assert defaults.agent_name == ""
    assert defaults.sidecar_ready_timeout_s == 60

    custom = WorkerSettings.from_env(
        {
            "CUSTOM_STT_URL": "http://stt.internal:9000/",
            "STT_API_KEY": "k",
            "AGENT_LANGUAGE": "auto",
            "AGENT_NAME": "transcriber",
            "TRANSCRIPT_TOPIC": "captions",
            "PUBLISH_INTERIMS": "false",
            "SIDECAR_READY_TIMEOUT_S": "30",
            "AGENT_LOAD_THRESHOLD": "0.75",
            "AGENT_MAX_STREAMS": "4",
        }
    )
    assert custom.stt_url == "http://stt.internal:9000"
    assert (custom.stt_api_key, custom.language, custom.agent_name) == ("k", None, "transcriber")
    for raw, language in (
        ("", None),
        ("multi", None),
        ("de", "de"),
        ("en, de,en", ("en", "de")),  # detect among these
    ):
        assert WorkerSettings.from_env({"AGENT_LANGUAGE": raw}).language == language, raw
    assert (custom.transcript_topic, custom.publish_interims) == ("captions", False)
    assert (custom.sidecar_ready_timeout_s, custom.load_threshold, custom.max_streams) == (
        30,
        0.75,
        4,
    )

    for bad in (
        {"PUBLISH_INTERIMS": "maybe"},
        {"SIDECAR_READY_TIMEOUT_S": "soon"},
        {"AGENT_LOAD_THRESHOLD": "2"},
        {"AGENT_MAX_STREAMS": "-1"},
    ):
        name = next(iter(bad))
        with pytest.raises(SettingsError, match=name):
            WorkerSettings.from_env(bad)


async def _run(*args: str, cwd: Path, env: dict[str, str], timeout: float) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace")


async def test_python_agent_main_dev_waits_for_the_sidecar_and_exits_clearly(tmp_path) -> None:
    """The Procfile's command, with no sidecar and no LiveKit server: it says what it waits
    for, then gives up with one clear error line and status 1 (honcho then stops the rest)."""
    stt_url = f"http://127.0.0.1:{free_port()}"
    env = worker_process_env(
        LIVEKIT_URL=f"ws://127.0.0.1:{free_port()}",
        LIVEKIT_API_KEY="devkey",
        LIVEKIT_API_SECRET="secret",
        CUSTOM_STT_URL=stt_url,
        SIDECAR_READY_TIMEOUT_S="1.5",
    )
    code, out = await _run(sys.executable, str(MAIN), "dev", cwd=tmp_path, env=env, timeout=60)
    assert code == 1, out
    assert f"waiting for the STT sidecar at {stt_url}/ready" in out
    assert "not starting the worker" in out and "SIDECAR_READY_TIMEOUT_S" in out
    assert "Traceback" not in out


async def test_cli_commands_and_discovery_by_livekit(tmp_path) -> None:
    env = worker_process_env(**{name: "" for name in AGENT_ENV_VARS})
    code, out = await _run(sys.executable, str(MAIN), "--help", cwd=tmp_path, env=env, timeout=60)
    assert code == 0, out
    for command in ("dev", "start", "connect"):
        assert command in out

    # what `lk agent dev` / `python -m livekit.agents start agent/main.py` do to find it
    probe = (
        "import sys; from pathlib import Path; "
        "from livekit.agents import AgentServer; "
        "from livekit.agents.cli.discover import get_import_data; "
        "data = get_import_data(path=Path(sys.argv[1])); "
        "import importlib; module = importlib.import_module(data.module_data.module_import_str); "
        "print(data.import_string, isinstance(getattr(module, data.app_name), AgentServer))"
    )
    code, out = await _run(
        sys.executable, "-c", probe, str(MAIN), cwd=tmp_path, env=env, timeout=60
    )
    assert code == 0, out
    assert out.strip().splitlines()[-1] == "agent.main:server True"


async def test_importing_the_worker_has_no_side_effects(tmp_path) -> None:
    """Job processes import `agent.main` to find `entrypoint`: that reads no `.env`, changes no
    environment variable and creates no streams directory; `server` is built on first use."""
    (tmp_path / ".env").write_text("AGENT_NAME=from-dotenv\n")
    env = worker_process_env()
    probe = (
        "import glob, os, tempfile; before = dict(os.environ); "
        "pattern = os.path.join(tempfile.gettempdir(), 'stt-agent-streams-*'); "
        "dirs = lambda: set(glob.glob(pattern)); "
        "old = dirs(); import agent.main as m; "
        "print(dict(os.environ) == before, dirs() == old, 'server' in vars(m)); "
        "print(m.server.settings.agent_name, 'server' in vars(m))"
    )
    code, out = await _run(sys.executable, "-c", probe, cwd=tmp_path, env=env, timeout=60)
    assert code == 0, out
    assert out.strip().splitlines()[-2:] == ["True True False", "from-dotenv True"]


def test_token_helper(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in AGENT_ENV_VARS:
        monkeypatch.setenv(name, "")
    monkeypatch.setenv("LIVEKIT_URL", "ws://localhost:7880")
    monkeypatch.setenv("LIVEKIT_API_KEY", "devkey")
    monkeypatch.setenv("LIVEKIT_API_SECRET", "secret")
    monkeypatch.chdir(tmp_path)  # no .env here

    assert token_main(["--room", "demo", "--identity", "alice", "--token-only"]) == 0
    claims = api.TokenVerifier("devkey", "secret").verify(capsys.readouterr().out.strip())
    assert claims.identity == "alice"
    assert claims.video.room == "demo" and claims.video.room_join
    assert claims.video.can_publish and claims.video.can_subscribe
    assert claims.room_config is None or not claims.room_config.agents

    # explicit dispatch: the token asks for this agent in the room
    monkeypatch.setenv("AGENT_NAME", "transcriber")
    assert token_main(["--room", "demo", "--identity", "bob", "--name", "Bob"]) == 0
    out = capsys.readouterr().out
    assert "ws://localhost:7880" in out and "agents-playground.livekit.io" in out
    jwt = next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("token: "))
    claims = api.TokenVerifier("devkey", "secret").verify(jwt)
    assert claims.name == "Bob"
    assert [a.agent_name for a in claims.room_config.agents] == ["transcriber"]

    monkeypatch.setenv("LIVEKIT_API_SECRET", "")
    assert token_main(["--room", "demo", "--identity", "carol"]) == 2
    assert "LIVEKIT_API_SECRET" in capsys.readouterr().err
