"""`DecodeScheduler` priorities, fairness and batch limit, and `BusyTracker`, with a fake model
(the scheduler calls only `model.transcribe`)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from stt_sidecar import scheduler as scheduler_module
from stt_sidecar.scheduler import BusyTracker, DecodeFailed, DecodeScheduler, Priority


class FakeModel:
    """Records the `tag` option of each decode; the first decode holds its worker until
    `release` so the rest queue up behind it."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.release = threading.Event()
        self.started = threading.Event()
        self._lock = threading.Lock()

    def transcribe(self, audio: np.ndarray, **options: Any) -> tuple[Iterator[Any], Any]:
        tag = options["tag"]
        with self._lock:
            self.order.append(tag)
        if tag == "blocker":
            self.started.set()
            self.release.wait(5)
        if tag == "boom":
            raise RuntimeError("model failed")
        return iter([SimpleNamespace(text=tag)]), SimpleNamespace(language="en")


AUDIO = np.zeros(1600, dtype=np.float32)


async def _scheduled(
    model: FakeModel, jobs: list[tuple[str, Priority, str | None]], **kwargs: Any
) -> list[str]:
    scheduler = DecodeScheduler(model, **kwargs)
    scheduler.start()
    try:
        blocker = asyncio.create_task(
            scheduler.transcribe(AUDIO, {"tag": "blocker"}, Priority.BATCH)
        )
        await asyncio.to_thread(model.started.wait, 5)
        waiting = [
            asyncio.create_task(scheduler.transcribe(AUDIO, {"tag": tag}, prio, owner=owner))
            for tag, prio, owner in jobs
        ]
        await asyncio.sleep(0.01)
        assert scheduler.queue_depth == len(jobs)
        model.release.set()
        results = await asyncio.gather(blocker, *waiting)
        assert [r.segments[0].text for r in results[1:]] == [tag for tag, _, _ in jobs]
        return model.order[1:]
    finally:
        await scheduler.close()


async def test_finals_before_batch_before_interims() -> None:
    order = await _scheduled(
        FakeModel(),
        [
            ("interim", Priority.INTERIM, "a"),
            ("batch", Priority.BATCH, None),
            ("final", Priority.FINAL, "b"),
        ],
    )
    assert order == ["final", "batch", "interim"]


async def test_within_a_priority_a_stream_with_fewer_jobs_goes_first() -> None:
    """Stream a queued three finals before stream b's one: b's runs second, not last."""
    order = await _scheduled(
        FakeModel(),
        [
            ("a1", Priority.FINAL, "a"),
            ("a2", Priority.FINAL, "a"),
            ("a3", Priority.FINAL, "a"),
            ("b1", Priority.FINAL, "b"),
        ],
    )
    assert order == ["a1", "b1", "a2", "a3"]


async def test_a_cancelled_waiter_leaves_nothing_to_decode() -> None:
    model = FakeModel()
    scheduler = DecodeScheduler(model)
    scheduler.start()
    try:
        blocker = asyncio.create_task(
            scheduler.transcribe(AUDIO, {"tag": "blocker"}, Priority.BATCH)
        )
        await asyncio.to_thread(model.started.wait, 5)
        gone = asyncio.create_task(
            scheduler.transcribe(AUDIO, {"tag": "gone"}, Priority.INTERIM, owner="a")
        )
        await asyncio.sleep(0.01)
        gone.cancel()
        await asyncio.gather(gone, return_exceptions=True)
        assert scheduler.queue_depth == 0
        model.release.set()
        kept = await scheduler.transcribe(AUDIO, {"tag": "kept"}, Priority.FINAL, owner="a")
        await blocker
        assert kept.segments[0].text == "kept" and "gone" not in model.order
    finally:
        await scheduler.close()


async def test_a_model_failure_is_decode_failed() -> None:
    model = FakeModel()
    scheduler = DecodeScheduler(model)
    scheduler.start()
    try:
        with pytest.raises(DecodeFailed):
            await scheduler.transcribe(AUDIO, {"tag": "boom"}, Priority.FINAL)
    finally:
        await scheduler.close()


def test_batch_leaves_a_worker_to_streams_while_one_is_open() -> None:
    open_streams = [True]
    scheduler = DecodeScheduler(
        FakeModel(),
        workers=2,
        streams_open=lambda: open_streams[0],
    )
    assert scheduler.batch_limit() == 1
    open_streams[0] = False
    assert scheduler.batch_limit() == 2
    assert DecodeScheduler(FakeModel(), workers=1, streams_open=lambda: True).batch_limit() == 1


# -- BusyTracker ---------------------------------------------------------------------------


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [100.0]
    monkeypatch.setattr(scheduler_module, "time", SimpleNamespace(monotonic=lambda: now[0]))
    return now


def test_busy_fraction_over_the_window(clock: list[float]) -> None:
    busy = BusyTracker(workers=2, window_s=5.0)
    assert busy.fraction() == 0.0
    busy.begin(0)
    clock[0] += 2.0
    busy.end(0)
    assert busy.fraction() == pytest.approx(2.0 / 10.0)
    busy.begin(1)  # still running: counts up to now
    clock[0] += 1.0
    assert busy.fraction() == pytest.approx(3.0 / 10.0)
    busy.end(1)
    clock[0] += 3.5  # the first span (100-102) is now partly outside the 5 s window
    assert busy.fraction() == pytest.approx((0.5 + 1.0) / 10.0)
    clock[0] += 10.0
    assert busy.fraction() == 0.0


def test_busy_fraction_is_capped_and_ignores_unknown_ends(clock: list[float]) -> None:
    busy = BusyTracker(workers=1, window_s=1.0)
    busy.end(7)  # never began: nothing recorded
    busy.begin(0)
    busy.begin(1)
    clock[0] += 1.0
    assert busy.fraction() == 1.0
