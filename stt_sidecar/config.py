"""Sidecar settings, read once from the environment (and `.env`)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # honours taskset / container CPU sets
    except AttributeError:
        return os.cpu_count() or 1


class ConfigError(ValueError):
    """A setting in the environment has a value the sidecar cannot use."""


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def parse_bool(raw: str) -> bool:
    """A yes/no word as the environment and form fields spell it (case and spaces ignored).

    Raises:
        ValueError: not one of 1/0, true/false, yes/no, on/off.
    """
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(raw)


def _parse(env: Mapping[str, str], name: str, default, kind, *, minimum=None, maximum=None):
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    try:
        if kind is bool:
            value = parse_bool(raw)
        else:
            value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={raw!r} must be >= {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name}={raw!r} must be <= {maximum}")
    return value


@dataclass(frozen=True)
class SidecarSettings:
    """Every knob of the sidecar; see `.env.example` for the environment variable of each."""

    host: str = "127.0.0.1"
    port: int = 8765
    model: str = "tiny.en"
    model_cache_dir: str | None = None  # None: ~/.cache/livekit-local-stt/models
    device: str = "auto"
    compute_type: str | None = None  # None: int8 on CPU, float16 on CUDA
    cpu_threads: int = 0  # per decode; 0: the cores shared out between the workers
    num_workers: int = 0  # concurrent decodes on the one shared model; 0: 2 (1 on one core)
    api_key: str | None = None
    max_upload_mb: float = 25.0
    max_audio_seconds: float = 600.0
    max_pending: int = 8  # batch requests waiting for or using the model
    read_timeout_s: float = 30.0  # a slow upload that stalls this long is dropped
    # streaming
    max_streams: int = 0  # 0: derived at start from a timed decode (capacity.py)
    endpoint_silence_ms: int = 450
    adaptive_endpointing: bool = True  # the speculative text picks short/default/long silence
    endpoint_short_ms: int = 220  # after a finished sentence (adaptive endpointing)
    # after a visibly unfinished one (adaptive endpointing): the silence the VAD measures is the
    # pause plus the word gap around it, and 900 ms still split 2 of the pauses set's 14
    endpoint_long_ms: int = 1100
    # A stream's recent finals prompt its next final. Off: bench/endpointing.py measured
    # WER 9.3 -> 8.8 % on the pauses set but 3.1 -> 5.2 % on conversation.wav, and ~1 s more
    # latency on a busy box (a prompted final often takes a second decode pass).
    stream_context: bool = False
    # An utterance that starts this soon after the last one ended (a pause the endpoint took
    # for an end) is decoded after that one's audio, and keeps only its own words
    # (streaming/continuation.py). 0: each utterance alone.
    continuation_gap_ms: int = 1000
    max_utterance_s: float = 20.0
    interim_interval_ms: int = 500
    idle_timeout_s: float = 30.0
    config_timeout_s: float = 5.0  # a new stream must send a valid config within this
    shutdown_grace_s: float = 10.0
    log_level: str = "INFO"

    @property
    def decode_workers(self) -> int:
        """Decodes at once. Two single-threaded decodes beat one two-threaded decode on 2 cores
        (bench/stream.py, 8 streams: final p95 2.3 s vs 3.3 s; 1 stream: 0.67 s vs 0.78 s):
        tiny matrices scale poorly across threads, and a final never waits for an interim."""
        return self.num_workers or min(2, _available_cores())

    @property
    def threads_per_decode(self) -> int:
        return self.cpu_threads or max(1, _available_cores() // self.decode_workers)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def replace(self, **changes) -> SidecarSettings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SidecarSettings:
        """Build settings from environment variables; raises `ConfigError` naming a bad one."""
        env = os.environ if env is None else env
        d = cls()
        device = env.get("STT_DEVICE", d.device).strip().lower() or d.device
        if device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"STT_DEVICE={device!r} must be one of auto, cpu, cuda")
        return cls(
            host=env.get("STT_HOST", "").strip() or d.host,
            port=_parse(env, "STT_PORT", d.port, int, minimum=0, maximum=65535),
            model=env.get("STT_MODEL", "").strip() or d.model,
            model_cache_dir=env.get("STT_MODEL_CACHE_DIR", "").strip() or None,
            device=device,
            compute_type=env.get("STT_COMPUTE_TYPE", "").strip() or None,
            cpu_threads=_parse(env, "STT_CPU_THREADS", d.cpu_threads, int, minimum=0),
            num_workers=_parse(env, "STT_NUM_WORKERS", d.num_workers, int, minimum=0, maximum=16),
            api_key=env.get("STT_API_KEY", "").strip() or None,
            max_upload_mb=_parse(env, "STT_MAX_UPLOAD_MB", d.max_upload_mb, float, minimum=0.01),
            max_audio_seconds=_parse(
                env, "STT_MAX_AUDIO_SECONDS", d.max_audio_seconds, float, minimum=1
            ),
            max_pending=_parse(env, "STT_MAX_PENDING", d.max_pending, int, minimum=1),
            read_timeout_s=_parse(env, "STT_READ_TIMEOUT_S", d.read_timeout_s, float, minimum=1),
            max_streams=_parse(env, "STT_MAX_STREAMS", d.max_streams, int, minimum=0),
            endpoint_silence_ms=_parse(
                env, "STT_ENDPOINT_SILENCE_MS", d.endpoint_silence_ms, int, minimum=100
            ),
            adaptive_endpointing=_parse(
                env, "STT_ADAPTIVE_ENDPOINTING", d.adaptive_endpointing, bool
            ),
            endpoint_short_ms=_parse(
                env, "STT_ENDPOINT_SHORT_MS", d.endpoint_short_ms, int, minimum=100
            ),
            endpoint_long_ms=_parse(
                env, "STT_ENDPOINT_LONG_MS", d.endpoint_long_ms, int, minimum=100, maximum=5000
            ),
            stream_context=_parse(env, "STT_STREAM_CONTEXT", d.stream_context, bool),
            continuation_gap_ms=_parse(
                env,
                "STT_CONTINUATION_GAP_MS",
                d.continuation_gap_ms,
                int,
                minimum=0,
                maximum=5000,
            ),
            max_utterance_s=_parse(
                env, "STT_MAX_UTTERANCE_S", d.max_utterance_s, float, minimum=2, maximum=30
            ),
            interim_interval_ms=_parse(
                env, "STT_INTERIM_INTERVAL_MS", d.interim_interval_ms, int, minimum=100
            ),
            idle_timeout_s=_parse(env, "STT_IDLE_TIMEOUT_S", d.idle_timeout_s, float, minimum=1),
            config_timeout_s=_parse(
                env, "STT_CONFIG_TIMEOUT_S", d.config_timeout_s, float, minimum=0.5
            ),
            shutdown_grace_s=_parse(
                env, "STT_SHUTDOWN_GRACE_S", d.shutdown_grace_s, float, minimum=0
            ),
            log_level=(env.get("STT_LOG_LEVEL", "").strip() or d.log_level).upper(),
        )
