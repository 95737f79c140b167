"""A long real-speech recording made at run time (never committed): the test clips in
tests/data joined, in a seeded random order, with 0.4-2.5 s pauses of quiet hiss, until the
wanted length. Returns the int16 PCM and the reference transcript."""

from __future__ import annotations

import json
import random

import numpy as np
import soundfile

from .audio import wav_bytes
from .speech import DATA

__all__ = ["long_speech", "wav_bytes"]
RATE = 16000


def _clips() -> list[tuple[np.ndarray, str]]:
    rows = [json.loads(line) for line in (DATA / "transcripts.jsonl").read_text().splitlines()]
    out = []
    for row in rows:
        audio, rate = soundfile.read(DATA / row["audio"], dtype="int16")
        assert rate == RATE and audio.ndim == 1
        out.append((audio, row["text"]))
    return out


def long_speech(seconds: float = 590.0, seed: int = 10) -> tuple[np.ndarray, str]:
    """At most `seconds` of speech and pauses (16 kHz mono int16) and its reference text."""
    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    clips = _clips()
    parts: list[np.ndarray] = []
    texts: list[str] = []
    length = 0
    limit = int(seconds * RATE)
    while True:
        audio, text = rng.choice(clips)
        pause = int(rng.uniform(0.4, 2.5) * RATE)
        if length + audio.shape[0] + pause > limit:
            break
        parts += [audio, noise.normal(0, 8, pause).astype(np.int16)]  # ~-72 dBFS hiss
        texts.append(text)
        length += audio.shape[0] + pause
    return np.concatenate(parts), " ".join(texts)
