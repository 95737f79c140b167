"""Silero VAD over a live stream, with the ONNX model faster-whisper already bundles.

faster-whisper's `SileroVADModel.__call__` zeroes the recurrent state and the 64-sample context
on every call, which is right for a whole file and wrong for a stream fed 20 ms at a time. This
wrapper runs the same session but carries `h`, `c` and the context across calls, so probabilities
match a single pass over the whole stream. Cost here: ~0.07 ms per 32 ms window, ~1 ms per
second of audio, cheap enough to run on the event loop.
"""

from __future__ import annotations

from functools import cache

import numpy as np

WINDOW = 512  # samples at 16 kHz (audio_format.SAMPLE_RATE): 32 ms, the model's fixed input
CONTEXT = 64  # samples of the previous window the model sees in front of each window


@cache
def _shared_session():
    # One ONNX session for every stream: InferenceSession.run is thread-safe and stateless;
    # the recurrent state lives in each StreamingVAD. Imported here so that importing the
    # session (for its WINDOW) loads no model code.
    from faster_whisper.vad import get_vad_model

    return get_vad_model().session


class StreamingVAD:
    """Speech probability per 32 ms window of 16 kHz float32 audio, state carried across calls."""

    def __init__(self) -> None:
        self._session = _shared_session()
        self.reset()

    def reset(self) -> None:
        """Forget the stream so far: recurrent state, context and any partial window."""
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def process(self, audio: np.ndarray) -> np.ndarray:
        """Feed samples; returns one probability per completed window (maybe none)."""
        if audio.size:
            self._pending = np.concatenate([self._pending, audio.astype(np.float32, copy=False)])
        count = self._pending.size // WINDOW
        if count == 0:
            return np.zeros(0, dtype=np.float32)
        windows = self._pending[: count * WINDOW].reshape(count, WINDOW)
        self._pending = self._pending[count * WINDOW :]
        # each row: the last CONTEXT samples before the window, then the window
        previous_tails = np.concatenate([self._context[None, :], windows[:-1, -CONTEXT:]], axis=0)
        batch = np.concatenate([previous_tails, windows], axis=1)
        self._context = windows[-1, -CONTEXT:].copy()
        probs, self._h, self._c = self._session.run(
            None, {"input": batch, "h": self._h, "c": self._c}
        )
        return np.asarray(probs, dtype=np.float32).reshape(-1)
