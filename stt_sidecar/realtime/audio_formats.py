"""The input formats of OpenAI's Realtime API, turned into the s16le PCM a stream session takes.

`audio/pcm` (beta `pcm16`) is 24 kHz mono s16le and goes through as is; G.711 μ-law and A-law
(`audio/pcmu`, `audio/pcma`; beta `g711_ulaw`, `g711_alaw`) are 8 kHz, one byte a sample,
expanded with a 256-entry table (the standard ITU-T G.711 decoding; `audioop` is deprecated).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

PCM_RATE = 24000
G711_RATE = 8000


def _ulaw_table() -> np.ndarray:
    code = ~np.arange(256, dtype=np.int32) & 0xFF  # stored complemented
    exponent = (code >> 4) & 0x07
    magnitude = ((((code & 0x0F) << 3) + 0x84) << exponent) - 0x84
    return np.where(code & 0x80, -magnitude, magnitude).astype("<i2")


def _alaw_table() -> np.ndarray:
    code = np.arange(256, dtype=np.int32) ^ 0x55  # even bits stored inverted
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    magnitude = np.where(
        exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0)
    )
    return np.where(code & 0x80, magnitude, -magnitude).astype("<i2")


_ULAW = _ulaw_table()
_ALAW = _alaw_table()


def _pcm16(data: bytes) -> bytes:
    return data


def ulaw_to_pcm16(data: bytes) -> bytes:
    return _ULAW[np.frombuffer(data, dtype=np.uint8)].tobytes()


def alaw_to_pcm16(data: bytes) -> bytes:
    return _ALAW[np.frombuffer(data, dtype=np.uint8)].tobytes()


@dataclass(frozen=True)
class InputFormat:
    """One input format: its names in both session shapes and how to decode it."""

    type: str  # the current shape's `audio.input.format.type`
    beta_name: str  # the beta shape's `input_audio_format`
    sample_rate: int
    bytes_per_sample: int
    to_pcm16: Callable[[bytes], bytes]

    def session_format(self) -> dict[str, object]:
        """`audio.input.format` as the current shape spells it."""
        if self.type == "audio/pcm":
            return {"type": self.type, "rate": self.sample_rate}
        return {"type": self.type}


PCM16 = InputFormat("audio/pcm", "pcm16", PCM_RATE, 2, _pcm16)
PCMU = InputFormat("audio/pcmu", "g711_ulaw", G711_RATE, 1, ulaw_to_pcm16)
PCMA = InputFormat("audio/pcma", "g711_alaw", G711_RATE, 1, alaw_to_pcm16)
FORMATS = (PCM16, PCMU, PCMA)
BY_TYPE = {f.type: f for f in FORMATS}
BY_BETA_NAME = {f.beta_name: f for f in FORMATS}
