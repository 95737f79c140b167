"""Turning client PCM frames into 16 kHz mono float32 and keeping the part still needed."""

from __future__ import annotations

import av
import numpy as np

from ..audio_format import SAMPLE_RATE


class PcmTo16k:
    """s16le interleaved PCM at any rate and 1-2 channels -> 16 kHz mono float32.

    Uses libswresample through PyAV (a real filter with state across frames), never sample
    dropping; 16 kHz mono input skips it.
    """

    def __init__(self, sample_rate: int, channels: int) -> None:
        self._channels = channels
        self._rate = sample_rate
        self._passthrough = sample_rate == SAMPLE_RATE and channels == 1
        self._layout = "mono" if channels == 1 else "stereo"
        self._resampler = (
            None
            if self._passthrough
            else av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        )
        self._pts = 0

    def convert(self, pcm: bytes) -> np.ndarray:
        samples = np.frombuffer(pcm, dtype="<i2")
        if samples.size == 0:
            # an empty binary frame is valid (zero whole samples), but libswresample fails on
            # an empty input frame and the stream died with `internal`
            return np.zeros(0, dtype=np.float32)
        if self._passthrough:
            return samples.astype(np.float32) / 32768.0
        frame = av.AudioFrame.from_ndarray(
            samples.reshape(1, -1), format="s16", layout=self._layout
        )
        frame.sample_rate = self._rate
        frame.pts = self._pts
        self._pts += samples.size // self._channels
        assert self._resampler is not None  # not passthrough
        return self._collect(self._resampler.resample(frame))

    def flush(self) -> np.ndarray:
        """The resampler's few buffered samples; call once at end of input."""
        if self._resampler is None:
            return np.zeros(0, dtype=np.float32)
        return self._collect(self._resampler.resample(None))

    @staticmethod
    def _collect(frames: list[av.AudioFrame]) -> np.ndarray:
        if not frames:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float32)


class SampleBuffer:
    """Audio addressed by absolute sample index since the stream began; the front can be
    dropped once no utterance needs it, so memory stays bounded by the longest utterance."""

    def __init__(self, capacity: int) -> None:
        self._data = np.zeros(max(capacity, 1), dtype=np.float32)
        self._base = 0  # absolute index of _data[0]
        self._size = 0

    @property
    def start(self) -> int:
        return self._base

    @property
    def end(self) -> int:
        return self._base + self._size

    def append(self, samples: np.ndarray) -> None:
        needed = self._size + samples.size
        if needed > self._data.size:
            grown = np.zeros(max(needed, self._data.size * 2), dtype=np.float32)
            grown[: self._size] = self._data[: self._size]
            self._data = grown
        self._data[self._size : needed] = samples
        self._size = needed

    def slice(self, begin: int, end: int) -> np.ndarray:
        """A copy of [begin, end) clipped to what is held (copies are safe to hand to threads)."""
        begin = max(begin, self._base)
        end = min(end, self.end)
        if end <= begin:
            return np.zeros(0, dtype=np.float32)
        return self._data[begin - self._base : end - self._base].copy()

    def drop_before(self, index: int) -> None:
        cut = min(max(index - self._base, 0), self._size)
        if cut == 0:
            return
        remaining = self._size - cut
        self._data[:remaining] = self._data[cut : self._size]
        self._base += cut
        self._size = remaining
