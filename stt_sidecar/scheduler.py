"""One shared Whisper model behind one priority scheduler.

Every decode in the process (batch requests, streaming finals, streaming interims) goes through
`DecodeScheduler`, so that a final never waits behind an interim, no stream starves the others,
and the event loop never runs model code.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any

import numpy as np

from .audio_format import SAMPLE_RATE

if TYPE_CHECKING:
    # Types only: importing this module loads no model code, so unit tests can drive the
    # scheduler with a fake model.
    from faster_whisper import WhisperModel
    from faster_whisper.transcribe import Segment, TranscriptionInfo

logger = logging.getLogger("stt_sidecar.scheduler")


class Priority(IntEnum):
    """Lower runs first."""

    FINAL = 0
    BATCH = 1
    INTERIM = 2


class DecodeFailed(Exception):
    """The model itself failed; the cause is logged, never sent to clients."""


@dataclass
class DecodeResult:
    segments: list[Segment]
    info: TranscriptionInfo
    decode_seconds: float
    queue_seconds: float


_NO_AUDIO = np.zeros(0, dtype=np.float32)


@dataclass(order=True)
class _Job:
    priority: int
    round: int  # how many jobs of the same owner were ahead of it: fair share between streams
    seq: int
    audio: np.ndarray = field(compare=False)
    options: dict[str, Any] = field(compare=False)
    future: asyncio.Future[DecodeResult] = field(compare=False)
    encoder_window_s: float | None = field(compare=False, default=None)
    enqueued_at: float = field(compare=False, default_factory=time.monotonic)
    dead: bool = field(compare=False, default=False)


# faster-whisper pads every window to Whisper's 30 s (3000 mel frames) before the encoder, so
# 3 s of speech costs the encoder as much as 30 s (0.36 s vs 0.14 s for a 15 s window here).
# CTranslate2 accepts shorter inputs. A per-thread override of the padding length lets a decode
# ask for a shorter window; streaming decodes do (`streaming/encoder_windows.py`).
#
# The override replaces `faster_whisper.transcribe.pad_or_trim`, a module global, so the app
# installs it explicitly while its scheduler runs (`app._load_and_warm` / `model_ctx`), never
# as a side effect of an import. With no window asked for it pads to 30 s as the original does,
# so other users of faster-whisper in the process see no difference.
_encoder_window = threading.local()
_patch_lock = threading.Lock()
_patch_users = 0
_original_pad_or_trim: Callable[..., Any] | None = None


def _pad_or_trim_to_thread_window(array: np.ndarray, length: int = 3000, *, axis: int = -1) -> Any:
    assert _original_pad_or_trim is not None
    return _original_pad_or_trim(
        array, getattr(_encoder_window, "frames", None) or length, axis=axis
    )


def install_encoder_window() -> None:
    """Let decodes in this process ask for a shorter encoder window (`run_whisper`'s
    `encoder_window_s`). Counted: each call is undone by one `remove_encoder_window`."""
    global _patch_users, _original_pad_or_trim
    import faster_whisper.transcribe as fw_transcribe

    with _patch_lock:
        if _patch_users == 0:
            _original_pad_or_trim = fw_transcribe.pad_or_trim
            fw_transcribe.pad_or_trim = _pad_or_trim_to_thread_window
        _patch_users += 1


def remove_encoder_window() -> None:
    """Undo `install_encoder_window` once its last user (scheduler) has closed."""
    global _patch_users, _original_pad_or_trim
    import faster_whisper.transcribe as fw_transcribe

    with _patch_lock:
        if _patch_users == 0:
            return
        _patch_users -= 1
        if _patch_users == 0 and _original_pad_or_trim is not None:
            fw_transcribe.pad_or_trim = _original_pad_or_trim
            _original_pad_or_trim = None


MEL_FRAMES_PER_SECOND = 100


def run_whisper(
    model: WhisperModel,
    audio: np.ndarray,
    options: dict[str, Any],
    encoder_window_s: float | None = None,
) -> tuple[list[Segment], TranscriptionInfo]:
    """Blocking decode. `transcribe()` returns a lazy generator: decoding happens while
    iterating, so both must run in the same executor job.

    Args:
        encoder_window_s: encode this many seconds instead of 30; ignored when the audio is
            longer (it would be cut).
    """
    frames = None
    if encoder_window_s is not None and audio.size <= encoder_window_s * SAMPLE_RATE:
        frames = int(encoder_window_s * MEL_FRAMES_PER_SECOND)
    _encoder_window.frames = frames
    try:
        segments, info = model.transcribe(audio, **options)
        return list(segments), info
    finally:
        _encoder_window.frames = None


class BusyTracker:
    """Fraction of wall time the decoder workers spent decoding over a sliding window."""

    def __init__(self, workers: int, window_s: float = 5.0) -> None:
        self._workers = workers
        self._window = window_s
        self._spans: collections.deque[tuple[float, float]] = collections.deque(maxlen=4096)
        self._running: dict[int, float] = {}

    def begin(self, token: int) -> None:
        self._running[token] = time.monotonic()

    def end(self, token: int) -> None:
        started = self._running.pop(token, None)
        if started is not None:
            self._spans.append((started, time.monotonic()))

    def fraction(self) -> float:
        now = time.monotonic()
        horizon = now - self._window
        while self._spans and self._spans[0][1] <= horizon:
            self._spans.popleft()  # keeps this O(recent decodes), not O(maxlen)
        busy = 0.0
        for start, end in self._spans:
            if end > horizon:
                busy += end - max(start, horizon)
        for start in self._running.values():
            busy += now - max(start, horizon)
        return min(1.0, busy / (self._window * self._workers))


class DecodeScheduler:
    """Runs decodes on `workers` threads, highest priority first.

    Args:
        model: the shared model, created with `num_workers=workers`.
        workers: concurrent decodes (threads); match `WhisperModel(num_workers=...)`.
        streams_open: whether any stream is open; while one is, batch jobs leave one worker
            free (`batch_limit`).
    """

    def __init__(
        self,
        model: WhisperModel,
        *,
        workers: int = 1,
        streams_open: Callable[[], bool] | None = None,
    ):
        self.model = model
        self._workers = workers
        self._streams_open = streams_open or (lambda: False)
        self._running_batch = 0
        self._heap: list[_Job] = []
        self._in_flight: collections.Counter[Hashable] = collections.Counter()
        self._wakeup = asyncio.Event()
        self._seq = itertools.count()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="whisper")
        self._tasks: list[asyncio.Task[None]] = []
        self.busy = BusyTracker(workers)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._worker(i), name=f"decode-worker-{i}")
            for i in range(self._workers)
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for job in self._heap:
            if not job.future.done():
                job.future.cancel()
        self._heap.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- introspection ---------------------------------------------------------------------
    @property
    def queue_depth(self) -> int:
        return sum(1 for job in self._heap if not job.dead)

    @property
    def english_only(self) -> bool:
        """The model speaks English only (`streaming/encoder_windows.py` depends on it)."""
        return not self.model.model.is_multilingual

    @property
    def batch_running(self) -> bool:
        """A batch piece holds a worker now."""
        return self._running_batch > 0

    # -- submitting ------------------------------------------------------------------------
    async def transcribe(
        self,
        audio: np.ndarray,
        options: dict[str, Any],
        priority: Priority,
        *,
        owner: Hashable | None = None,
        encoder_window_s: float | None = None,
    ) -> DecodeResult:
        """Queue a decode and wait for it.

        Within a priority, jobs of owners (streams) with fewer jobs in flight go first, so a
        client sending faster than real time cannot starve the finals of the others.

        Batch admission is not limited here: `batch.BatchGate` admits at most STT_MAX_PENDING
        requests, each with one piece queued at a time.

        Raises:
            DecodeFailed: the model raised.
        """
        future: asyncio.Future[DecodeResult] = asyncio.get_running_loop().create_future()
        round_ = self._in_flight[owner] if owner is not None else 0
        job = _Job(
            int(priority),
            round_,
            next(self._seq),
            audio,
            options,
            future,
            encoder_window_s,
        )
        if owner is not None:
            self._in_flight[owner] += 1
        heapq.heappush(self._heap, job)
        self._wakeup.set()
        try:
            return await future
        finally:
            # A cancelled waiter leaves nothing behind to decode. The dead job stays in the
            # heap until a worker pops it, so it must not keep its audio alive meanwhile
            # (cancelled interims of a stream racing ahead would pile up, ~1 MB each).
            job.dead = True
            job.audio = _NO_AUDIO
            if owner is not None:
                self._in_flight[owner] -= 1
                if self._in_flight[owner] == 0:
                    del self._in_flight[owner]

    def batch_limit(self) -> int:
        """Workers batch pieces may occupy now. While any stream is open one worker is kept
        for streaming: a piece is short (<= 30 s of audio), but two of them on both workers
        delayed finals by up to ~2 s under load (bench/flood.py), and a final must not wait
        for batch work at all."""
        if self._workers > 1 and self._streams_open():
            return self._workers - 1
        return self._workers

    def poke(self) -> None:
        """Re-check the queue (e.g. the last stream closed, so batch may use every worker)."""
        self._wakeup.set()

    def _next_job(self) -> _Job | None:
        batch_allowed = self._running_batch < self.batch_limit()
        held: list[_Job] = []
        try:
            while self._heap:
                job = heapq.heappop(self._heap)
                if job.dead or job.future.done():
                    continue
                if job.priority == Priority.BATCH and not batch_allowed:
                    held.append(job)  # an interim behind it may still run on this worker
                    continue
                return job
            return None
        finally:
            for job in held:
                heapq.heappush(self._heap, job)

    async def _worker(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            job = self._next_job()
            if job is None:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            job.dead = True  # taken: a late cancellation of its waiter has nothing to remove
            is_batch = job.priority == Priority.BATCH
            if is_batch:
                self._running_batch += 1
            started = time.monotonic()
            self.busy.begin(index)
            try:
                segments, info = await loop.run_in_executor(
                    self._executor,
                    run_whisper,
                    self.model,
                    job.audio,
                    job.options,
                    job.encoder_window_s,
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("decode failed (%.1f s of audio)", len(job.audio) / SAMPLE_RATE)
                if not job.future.done():
                    job.future.set_exception(DecodeFailed())
            else:
                if not job.future.done():
                    job.future.set_result(
                        DecodeResult(
                            segments=segments,
                            info=info,
                            decode_seconds=time.monotonic() - started,
                            queue_seconds=started - job.enqueued_at,
                        )
                    )
            finally:
                self.busy.end(index)
                if is_batch:
                    self._running_batch -= 1
                    self._wakeup.set()  # a batch piece held back by the limit may run now
