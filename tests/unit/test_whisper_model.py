"""`same_window`: when a decode may reuse the encoder output of the language detection."""

from __future__ import annotations

import numpy as np

from stt_sidecar.whisper_model import same_window


def window(frames: int, total: int = 3000) -> np.ndarray:
    """Log-mel-like features: `frames` real columns, zero padding up to `total`."""
    rng = np.random.default_rng(frames)
    out = np.zeros((80, total), dtype=np.float32)
    out[:, :frames] = rng.uniform(-1.0, 1.0, (80, frames))
    return out


def test_the_decode_window_may_lack_the_last_frame_detection_saw() -> None:
    detected = window(451)
    assert same_window(detected, detected.copy())
    decoded = detected.copy()
    decoded[:, 450] = 0.0  # faster-whisper's decode window stops one frame earlier
    assert same_window(detected, decoded)


def test_other_windows_are_encoded_again() -> None:
    detected = window(451)
    changed = detected.copy()
    changed[3, 10] += 0.5  # other audio
    assert not same_window(detected, changed)
    shorter = detected.copy()
    shorter[:, 449:451] = 0.0  # two frames missing: not the detection's window
    assert not same_window(detected, shorter)
    assert not same_window(detected, window(451, total=1500))  # another encoder window
    last = detected.copy()
    last[:, 450] += 0.5  # the differing column is not padding
    assert not same_window(detected, last)
