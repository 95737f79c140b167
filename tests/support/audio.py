"""PCM and WAV helpers shared by tests and benchmarks (16 kHz int16 unless said otherwise)."""

from __future__ import annotations

import io

import numpy as np
import soundfile

RATE = 16000


def silence(seconds: float, rate: int = RATE) -> np.ndarray:
    return np.zeros(int(seconds * rate), dtype=np.int16)


def wav_bytes(samples: np.ndarray, rate: int = RATE) -> bytes:
    """float32 or int16 samples (mono, or frames x channels) as a 16-bit PCM WAV file."""
    buf = io.BytesIO()
    soundfile.write(buf, samples, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def upsample_48k(pcm16k: np.ndarray) -> np.ndarray:
    """16 kHz int16 mono -> 48 kHz int16 mono with LiveKit's own (band-limited) resampler."""
    from livekit import rtc  # only the tests that need 48 kHz pay for the import

    resampler = rtc.AudioResampler(RATE, 48000, quality=rtc.AudioResamplerQuality.HIGH)
    out: list[np.ndarray] = []
    step = RATE // 100
    for i in range(0, len(pcm16k), step):
        chunk = pcm16k[i : i + step]
        frame = rtc.AudioFrame(chunk.tobytes(), RATE, 1, len(chunk))
        out.extend(np.frombuffer(f.data, dtype=np.int16) for f in resampler.push(frame))
    out.extend(np.frombuffer(f.data, dtype=np.int16) for f in resampler.flush())
    return np.concatenate(out)
