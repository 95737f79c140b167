"""The replay buffer behind a stream's lossless reconnect.

Every 20 ms chunk enters it *before* it is sent, and leaves only once the sidecar has finalized
it; a reconnect sends its snapshot first. Unit-tested in ``tests/unit/test_plugin_replay.py``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ._protocol import SAMPLE_RATE


@dataclass
class Entry:
    """One item of the replay buffer: 20 ms of PCM, or a flush marker (``data is None``)."""

    start: int  # stream sample index of the first sample (of the flush point for a marker)
    data: bytes | None

    @property
    def samples(self) -> int:
        return len(self.data) // 2 if self.data is not None else 0


class ReplayBuffer:
    """Audio sent since the last final (plus unacknowledged flushes), in stream sample time.

    Invariant: the audio entries cover ``[base, end)`` without gaps.
    """

    def __init__(self, max_samples: int) -> None:
        self._entries: deque[Entry] = deque()
        self.max_samples = max_samples
        self.base = 0
        self.end = 0

    def append_audio(self, data: bytes) -> int:
        """Add sent audio; returns how many samples the size bound pushed out of the front."""
        self._entries.append(Entry(self.end, data))
        self.end += len(data) // 2
        overflow = self.end - self.base - self.max_samples
        if overflow > 0:
            self.trim(self.base + overflow)
            return overflow
        return 0

    def append_flush(self) -> Entry:
        """Mark a flush at the current end; the marker goes once the audio before it is done."""
        entry = Entry(self.end, None)
        self._entries.append(entry)
        return entry

    def remove_marker(self, marker: Entry) -> None:
        try:
            self._entries.remove(marker)
        except ValueError:
            pass  # already trimmed away

    def trim(self, sample: int) -> None:
        """Forget audio (and flush markers) before stream sample ``sample``."""
        sample = min(sample, self.end)
        if sample <= self.base:
            return
        while self._entries:
            e = self._entries[0]
            if e.data is None:
                if e.start < sample:
                    self._entries.popleft()
                    continue
                break
            if e.start + e.samples <= sample:
                self._entries.popleft()
                continue
            if e.start < sample:
                cut = (sample - e.start) * 2
                self._entries[0] = Entry(sample, e.data[cut:])
            break
        self.base = sample

    def snapshot(self) -> list[Entry]:
        return list(self._entries)

    @property
    def seconds(self) -> float:
        return (self.end - self.base) / SAMPLE_RATE
