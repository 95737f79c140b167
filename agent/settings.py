"""The worker's own settings, read from the environment (and `.env`) into one frozen dataclass.

LiveKit's `LIVEKIT_URL`, `LIVEKIT_API_KEY` and `LIVEKIT_API_SECRET` are read by livekit-agents
itself (and can be overridden by its CLI flags); they are kept here too so the token helper and
the logs can use them.

This module is the one place the worker reads its environment: `load_env_file` (the `.env`),
`WorkerSettings.from_env` (every setting, with its parsing and checks) and
`streams_dir_from_env` (the directory the worker itself hands to its job processes).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dotenv import load_dotenv

DEFAULT_STT_URL = "http://127.0.0.1:8765"


def load_env_file(directory: Path | None = None) -> None:
    """Add `directory`'s `.env` (default: the cwd's, as `make run` / honcho use it) to
    `os.environ`; real environment variables take precedence, even when set to ""."""
    load_dotenv((directory or Path.cwd()) / ".env", override=False)


STREAMS_DIR_ENV = "AGENT_STREAMS_DIR"
"""Set by the worker's main process when it starts running (see `agent.capacity`), not by you:
job processes inherit it and record their stream counts there."""


def streams_dir_from_env(env: Mapping[str, str] | None = None) -> Path | None:
    """The worker's shared streams directory from `env` (default `os.environ`), if set."""
    raw = (os.environ if env is None else env).get(STREAMS_DIR_ENV, "").strip()
    return Path(raw) if raw else None


class SettingsError(ValueError):
    """An environment variable has a value the worker cannot use; the message names it."""


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r} must be true or false")


def _float(
    env: Mapping[str, str], name: str, default: float, *, minimum: float, maximum: float
) -> float:
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if not minimum <= value <= maximum:
        raise SettingsError(f"{name}={raw!r} must be between {minimum} and {maximum}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise SettingsError(f"{name}={raw!r} must be >= {minimum}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw not in choices:
        raise SettingsError(f"{name}={raw!r} must be one of {', '.join(choices)}")
    return raw


def _language(raw: str) -> str | tuple[str, ...] | None:
    codes = tuple(dict.fromkeys(c.strip() for c in raw.split(",") if c.strip()))
    if not codes or any(c.lower() in ("auto", "multi") for c in codes):
        return None
    return codes[0] if len(codes) == 1 else codes


@dataclass(frozen=True)
class WorkerSettings:
    """Everything the worker reads from the environment; `.env.example` documents each variable."""

    livekit_url: str = ""
    livekit_api_key: str = ""
    livekit_api_secret: str = ""
    stt_url: str = DEFAULT_STT_URL
    """`CUSTOM_STT_URL`: the sidecar's base URL (several workers may share one sidecar)."""
    stt_api_key: str | None = None
    """`STT_API_KEY`: the same variable the sidecar reads, so one `.env` configures both."""
    language: str | tuple[str, ...] | None = "en"
    """`AGENT_LANGUAGE`: language code sent to the sidecar; empty, `auto` or `multi` detects each
    utterance's language (multilingual models), and a comma-separated list (`en,de`) detects
    among those only."""
    agent_name: str = ""
    """`AGENT_NAME`: set it for explicit dispatch (then rooms get this agent only when asked)."""
    transcript_topic: str = "transcription"
    """`TRANSCRIPT_TOPIC`: data-message topic of the JSON transcripts."""
    publish_legacy_transcription: bool = True
    """`PUBLISH_LEGACY_TRANSCRIPTION`: also send the older transcription packet that clients
    receive as `RoomEvent.TranscriptionReceived`."""
    publish_interims: bool = True
    """`PUBLISH_INTERIMS`: also publish non-final hypotheses (data and lk.transcription)."""
    sidecar_ready_timeout_s: float = 60.0
    """`SIDECAR_READY_TIMEOUT_S`: how long to wait for the sidecar's `/ready` before giving up.
    The bundled tiny.en is ready in about a second; raise it for a large model that a first run
    downloads before it can warm up."""
    load_threshold: float = 0.9
    """`AGENT_LOAD_THRESHOLD`: above this load LiveKit stops dispatching rooms to this worker."""
    job_executor: str = "process"
    """`AGENT_JOB_EXECUTOR`: `process` (one process per room, the framework's default) or
    `thread` (rooms as threads of the worker process). Measured at eight rooms: threads took
    387 MiB PSS against 686 MiB, same CPU; but two rooms starting at once in one process hung
    in `ctx.connect()` (livekit FFI "timed out waiting for ReadyForRoomEventRequest"), so
    processes stay the default."""
    idle_processes: int | None = None
    """`AGENT_IDLE_PROCESSES`: job processes kept warm; unset = the framework's default (0 in
    `dev`, one per CPU in `start`)."""
    http_host: str = ""
    """`AGENT_HTTP_HOST`: address of the worker's health endpoint; empty = the framework's
    default (every interface, for orchestrator probes); 127.0.0.1 keeps it private."""
    http_port: int | None = None
    """`AGENT_HTTP_PORT`: its port; unset = the framework's (8081 in `start`, random in `dev`),
    0 = any free port (several workers on one machine)."""
    max_streams: int = 0
    """`AGENT_MAX_STREAMS`: participants this worker transcribes at full load; 0 = the
    sidecar's own `max_streams` (the right value when a worker has the sidecar to itself)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerSettings:
        """Build the settings from `env` (default `os.environ`).

        Raises:
            SettingsError: a variable is set to a value the worker cannot use.
        """
        env = os.environ if env is None else env
        d = cls()
        return cls(
            livekit_url=env.get("LIVEKIT_URL", "").strip(),
            livekit_api_key=env.get("LIVEKIT_API_KEY", "").strip(),
            livekit_api_secret=env.get("LIVEKIT_API_SECRET", "").strip(),
            stt_url=(env.get("CUSTOM_STT_URL", "").strip() or d.stt_url).rstrip("/"),
            stt_api_key=env.get("STT_API_KEY", "").strip() or None,
            language=_language(env.get("AGENT_LANGUAGE", "en")),
            agent_name=env.get("AGENT_NAME", "").strip(),
            transcript_topic=env.get("TRANSCRIPT_TOPIC", "").strip() or d.transcript_topic,
            publish_interims=_bool(env, "PUBLISH_INTERIMS", d.publish_interims),
            publish_legacy_transcription=_bool(
                env, "PUBLISH_LEGACY_TRANSCRIPTION", d.publish_legacy_transcription
            ),
            sidecar_ready_timeout_s=_float(
                env, "SIDECAR_READY_TIMEOUT_S", d.sidecar_ready_timeout_s, minimum=0, maximum=86400
            ),
            load_threshold=_float(
                env, "AGENT_LOAD_THRESHOLD", d.load_threshold, minimum=0.05, maximum=1.0
            ),
            max_streams=_int(env, "AGENT_MAX_STREAMS", d.max_streams, minimum=0),
            http_host=env.get("AGENT_HTTP_HOST", "").strip(),
            http_port=(
                _int(env, "AGENT_HTTP_PORT", 0, minimum=0)
                if env.get("AGENT_HTTP_PORT", "").strip()
                else None
            ),
            job_executor=_choice(env, "AGENT_JOB_EXECUTOR", d.job_executor, ("process", "thread")),
            idle_processes=(
                _int(env, "AGENT_IDLE_PROCESSES", 0, minimum=0)
                if env.get("AGENT_IDLE_PROCESSES", "").strip()
                else None
            ),
        )
