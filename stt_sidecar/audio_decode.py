"""Decode an uploaded audio file to 16 kHz mono float32, with hard limits.

Built on PyAV like `faster_whisper.audio.decode_audio`, but with three differences that matter
for untrusted uploads: the decoded duration is capped *while* decoding (a lying header cannot
make us allocate more than the cap), absurd sample rates are refused before any resampling,
and there is no `gc.collect()` per call.
"""

from __future__ import annotations

import io
import logging

import av
import numpy as np

logger = logging.getLogger("stt_sidecar.audio")

SAMPLE_RATE = 16000
# Outside this range a "sample rate" is a corrupt or hostile header, not audio: resampling 1 Hz
# to 16 kHz multiplies the sample count by 16000.
MIN_INPUT_RATE = 1000
MAX_INPUT_RATE = 384_000


class AudioDecodeError(Exception):
    """The upload is not usable audio; `message` is safe to send to the client."""

    def __init__(self, message: str, code: str = "invalid_audio") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class AudioTooLongError(AudioDecodeError):
    """The audio runs past the configured maximum duration."""

    def __init__(self, max_seconds: float) -> None:
        super().__init__(
            f"Audio is longer than the maximum of {max_seconds:g} s.", code="audio_too_long"
        )


class _CappedMonoResampler:
    """PyAV's resampler to 16 kHz mono float32, which counts what it produces and stops at the
    cap. A stream may change format mid-way (chained Ogg), so it re-creates the resampler."""

    def __init__(self, max_samples: int, max_seconds: float) -> None:
        self._max_samples = max_samples
        self._max_seconds = max_seconds
        self._resampler: av.AudioResampler | None = None
        self._input_key: tuple[str, str, int] | None = None
        self._input_seconds = 0.0
        self.chunks: list[np.ndarray] = []
        self.samples = 0

    def push(self, frame: av.AudioFrame) -> None:
        rate = frame.sample_rate
        if not MIN_INPUT_RATE <= rate <= MAX_INPUT_RATE:
            raise AudioDecodeError(
                f"Unsupported sample rate {rate} Hz "
                f"(expected {MIN_INPUT_RATE}..{MAX_INPUT_RATE} Hz)."
            )
        if frame.layout.nb_channels < 1:
            raise AudioDecodeError("Audio has no channels.")
        # Checked on the input side too, so that one huge frame is refused before it is
        # resampled, not after.
        self._input_seconds += frame.samples / rate
        if self._input_seconds > self._max_seconds + 1.0:
            raise AudioTooLongError(self._max_seconds)
        key = (frame.format.name, frame.layout.name, rate)
        if self._resampler is None or key != self._input_key:
            self.flush()
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            self._input_key = key
        frame.pts = None  # timestamps are irrelevant here and gaps make the resampler fail
        self._collect(self._resampler.resample(frame))

    def flush(self) -> None:
        if self._resampler is not None:
            self._collect(self._resampler.resample(None))
            self._resampler = None

    def _collect(self, frames: list[av.AudioFrame]) -> None:
        for out in frames:
            samples = out.to_ndarray().reshape(-1)  # packed mono float: shape (1, n)
            self.samples += samples.shape[0]
            if self.samples > self._max_samples:
                raise AudioTooLongError(self._max_seconds)
            self.chunks.append(samples)


def decode_audio_capped(data: bytes, max_seconds: float) -> np.ndarray:
    """Decode any container/codec FFmpeg reads to 16 kHz mono float32 in [-1, 1].

    Blocking and CPU-bound: run it in an executor.

    Args:
        data: The uploaded file's bytes.
        max_seconds: Refuse audio longer than this, stopping as soon as the decoded
            duration passes it.

    Returns:
        The samples (may be empty only if the caller allows it; see Raises).

    Raises:
        AudioTooLongError: The audio is longer than `max_seconds`.
        AudioDecodeError: Not audio, no audio stream, corrupt, or no samples at all.
    """
    if not data:
        raise AudioDecodeError("The uploaded file is empty.", code="empty_audio")
    capped = _CappedMonoResampler(int(max_seconds * SAMPLE_RATE), max_seconds)
    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise AudioDecodeError("The file has no audio stream.")
            stream = container.streams.audio[0]
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError:
                    continue  # one corrupt packet: skip it, as faster-whisper does
                for frame in frames:
                    capped.push(frame)
            capped.flush()
    except AudioDecodeError:
        raise
    except (av.error.FFmpegError, ValueError, OverflowError) as exc:
        logger.info("audio decode failed: %s", exc)
        raise AudioDecodeError("The file could not be decoded as audio.") from None
    if capped.samples == 0:
        raise AudioDecodeError("The file contains no audio samples.", code="empty_audio")
    return np.concatenate(capped.chunks)
