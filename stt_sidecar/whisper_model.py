"""The `WhisperModel` the sidecar loads: faster-whisper's, minus a second encoder pass.

When `transcribe` has to detect the language, faster-whisper 1.2.1 encodes the first 30 s
window in `detect_language`, throws that encoder output away and encodes the same window again
to decode it (its 0.x releases reused it). For the short utterances of a stream the encoder is
most of a decode, so detection nearly doubled the cost of every final and interim. This
subclass keeps the detection's encoder output for the next `encode` on the same thread and
hands it back when that call asks for the same window.

"The same window": detection sees the audio's last feature frame, which the decode window
leaves out (it stops at `content_frames`) and pads with zeros instead, so the two inputs may
differ in that one column; the encoder output of the detection is then used for a window one
10 ms frame longer, as faster-whisper 0.x did.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from faster_whisper import WhisperModel


def same_window(detected: np.ndarray, decoded: np.ndarray) -> bool:
    """Whether `decoded` is the window `detected` was, up to its last real frame (a column
    that is zero padding in `decoded`)."""
    if detected.shape != decoded.shape:
        return False
    differing = np.flatnonzero(np.any(detected != decoded, axis=-2))
    if differing.size == 0:
        return True
    return differing.size == 1 and not np.any(decoded[..., differing[0]])


class WhisperModelEncodingOnce(WhisperModel):
    """`WhisperModel` whose language detection and decode share one encoder pass."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._thread = threading.local()  # the scheduler decodes on several threads at once

    def detect_language(self, *args: Any, **kwargs: Any) -> Any:
        self._thread.detecting = True
        self._thread.kept = None
        try:
            return super().detect_language(*args, **kwargs)
        finally:
            self._thread.detecting = False

    def encode(self, features: np.ndarray) -> Any:
        if getattr(self._thread, "detecting", False):
            output = super().encode(features)
            self._thread.kept = (features, output)
            return output
        kept = getattr(self._thread, "kept", None)
        self._thread.kept = None  # one use at most: the next window is another one
        if kept is not None and same_window(kept[0], features):
            return kept[1]
        return super().encode(features)
