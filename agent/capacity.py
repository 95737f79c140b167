"""Worker load for LiveKit's dispatcher: the sidecar's load combined with this worker's streams.

LiveKit calls `load_fnc` every 0.5 s (in a thread of the worker's main process) and before each
job offer; above `load_threshold` the worker is marked full and gets no new rooms. Our capacity
is the sidecar's, so the load is the larger of

- the sidecar's stream occupancy from `/ready` (`active_streams / max_streams`; it covers every
  worker sharing that sidecar), and
- this worker's active streams over its stream budget (`AGENT_MAX_STREAMS`, default the
  sidecar's `max_streams`), which reacts at once to a room this worker just took, before the
  sidecar's figure catches up, and caps a worker that shares a sidecar;

and 1.0 (full) while the sidecar is unreachable or not ready.

Not the sidecar's `load` figure, which also counts the decoder's busy fraction over the last
5 s: that reaches 0.9+ for a few seconds whenever several finals decode at once, and a room
created in those seconds was never dispatched at all (LiveKit does not offer it again when the
worker frees up; seen against livekit-server 1.13). Streams are what `STT_MAX_STREAMS` and
`AGENT_MAX_STREAMS` budget; a busy decoder only makes finals a little later.

Jobs run in separate processes, so each process mirrors its number of active streams into a
small file `<dir>/<pid>` that the main process sums; the directory comes from the environment
variable `AGENT_STREAMS_DIR`, which the main process sets when its server starts running
(`ensure_streams_dir`), before any job process starts; importing this module changes nothing.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .settings import STREAMS_DIR_ENV, WorkerSettings, streams_dir_from_env
from .sidecar_ready import SidecarStatus, probe_ready_sync

logger = logging.getLogger("agent.capacity")


def ensure_streams_dir() -> Path:
    """The directory shared by this worker's processes, created by the first one (the main
    process, which also removes it at exit) and inherited by job processes via the env.

    Called when the worker runs (`TranscriptionServer.run`), never at import.
    """
    existing = streams_dir_from_env()
    if existing is not None:
        existing.mkdir(parents=True, exist_ok=True)
        return existing
    path = Path(tempfile.mkdtemp(prefix="stt-agent-streams-"))
    os.environ[STREAMS_DIR_ENV] = str(path)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


class StreamCounter:
    """This process's active transcription streams, mirrored into `<directory>/<pid>`.

    Thread-safe: with the thread job executor several jobs share one process.
    """

    def __init__(self, directory: Path | None) -> None:
        self._directory = directory
        self._lock = threading.Lock()
        self._value = 0

    @property
    def value(self) -> int:
        return self._value

    def add(self, delta: int) -> None:
        """Change the count by `delta` (+1 when a stream starts, -1 when it ends)."""
        with self._lock:
            self._value = max(0, self._value + delta)
            self._write(self._value)

    def _write(self, value: int) -> None:
        if self._directory is None:
            return
        path = self._directory / str(os.getpid())
        try:
            if value == 0:
                path.unlink(missing_ok=True)
                return
            # write-then-rename so the reader never sees a half-written number
            tmp = path.with_suffix(".tmp")
            tmp.write_text(str(value))
            tmp.replace(path)
        except OSError as exc:  # load reporting must never break transcription
            logger.warning("cannot record the stream count in %s: %s", self._directory, exc)


_process_counter: StreamCounter | None = None
_process_counter_lock = threading.Lock()


def process_stream_counter() -> StreamCounter:
    """The one counter of this process, writing where `AGENT_STREAMS_DIR` says (if set)."""
    global _process_counter
    with _process_counter_lock:
        if _process_counter is None:
            _process_counter = StreamCounter(streams_dir_from_env())
        return _process_counter


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def count_streams(directory: Path) -> int:
    """Sum of the counts every live process recorded; files of dead processes are removed."""
    total = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in directory.iterdir():
            if not entry.name.isdigit():
                continue
            if not _pid_alive(int(entry.name)):
                entry.unlink(missing_ok=True)  # a job process that was killed
                continue
            with contextlib.suppress(OSError, ValueError):
                total += int(entry.read_text() or 0)
    return total


class LoadReporter:
    """`load_fnc` for `AgentServer`: a callable with no arguments returning 0..1.

    The sidecar is probed at most once per `cache_s` (LiveKit also calls `load_fnc` before every
    job offer, and a burst of offers should not become a burst of requests).
    """

    def __init__(
        self,
        settings: WorkerSettings,
        streams_dir: Path | None,
        *,
        probe: Callable[[str, str | None], SidecarStatus] = probe_ready_sync,
        cache_s: float = 1.0,
    ) -> None:
        self._settings = settings
        self.streams_dir = streams_dir
        """Where this worker's processes record their streams; None counts none (the server
        sets it when it starts running)."""
        self._probe = probe
        self._cache_s = cache_s
        self._lock = threading.Lock()
        self._status: SidecarStatus | None = None
        self._probed_at = 0.0
        self._was_ready: bool | None = None

    def sidecar_status(self) -> SidecarStatus:
        """The latest `/ready` answer, refreshed when older than `cache_s`."""
        with self._lock:
            now = time.monotonic()
            if self._status is None or now - self._probed_at >= self._cache_s:
                self._status = self._probe(self._settings.stt_url, self._settings.stt_api_key)
                self._probed_at = now
                self._log_transition(self._status)
            return self._status

    def _log_transition(self, status: SidecarStatus) -> None:
        if status.ready == self._was_ready:
            return
        if status.ready and self._was_ready is not None:
            logger.info("STT sidecar at %s is ready again", self._settings.stt_url)
        elif not status.ready:
            logger.warning(
                "STT sidecar at %s is not ready (%s): reporting full load, no new rooms",
                self._settings.stt_url,
                status.detail,
            )
        self._was_ready = status.ready

    def own_streams(self) -> int:
        """Active streams in every process of this worker."""
        return count_streams(self.streams_dir) if self.streams_dir else 0

    def stream_budget(self) -> int:
        """Streams this worker may run: `AGENT_MAX_STREAMS`, else the sidecar's `max_streams`."""
        status = self._status
        return self._settings.max_streams or (status.max_streams if status else 0) or 1

    def __call__(self) -> float:
        status = self.sidecar_status()
        if not status.ready:
            return 1.0
        budget = self._settings.max_streams or status.max_streams or 1
        occupancy = status.active_streams / status.max_streams if status.max_streams else 0.0
        return round(min(1.0, max(occupancy, self.own_streams() / budget)), 3)
