"""Helpers for the custom_stt plugin tests: real speech as LiveKit frames, pacing, event capture.

No tests here; the plugin test modules import from it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from livekit import rtc
from livekit.agents import stt
from livekit.agents.utils.audio import AudioByteStream

from .support.audio import silence
from .support.speech import DATA, clip, read_pcm16

RATE_IN = 16000
RATE_LK = 48000


def frames_10ms(pcm: np.ndarray, rate: int = RATE_LK, channels: int = 1) -> list[rtc.AudioFrame]:
    """Interleaved int16 samples as 10 ms `rtc.AudioFrame`s (the last one may be shorter)."""
    bstream = AudioByteStream(rate, channels, rate // 100)
    frames = bstream.push(pcm.astype(np.int16).tobytes())
    frames.extend(bstream.flush())
    return frames


def clip_pcm(name: str) -> np.ndarray:
    pcm, rate = read_pcm16(DATA / name)
    assert rate == RATE_IN and pcm.ndim == 1
    return pcm


@dataclass
class Script:
    """Clips joined by silence at 16 kHz, with each utterance's reference and true span."""

    pcm: np.ndarray
    texts: list[str]
    spans: list[tuple[float, float]]


def build_script(names: Iterable[str], gap_s: float = 1.5, lead_s: float = 0.5) -> Script:
    parts = [silence(lead_s)]
    t = lead_s
    texts, spans = [], []
    for name in names:
        pcm = clip_pcm(name)
        parts.append(pcm)
        spans.append((t, t + len(pcm) / RATE_IN))
        texts.append(clip(name).text)
        t += len(pcm) / RATE_IN + gap_s
        parts.append(silence(gap_s))
    return Script(np.concatenate(parts), texts, spans)


async def feed(
    stream: stt.RecognizeStream,
    frames: list[rtc.AudioFrame],
    *,
    speed: float = 1.0,
    until: float | None = None,
) -> int:
    """Push frames paced at `speed` x real time; stop after `until` seconds of audio.

    Returns the number of frames pushed.
    """
    started = time.monotonic()
    pushed_audio = 0.0
    n = 0
    for frame in frames:
        if until is not None and pushed_audio >= until:
            break
        stream.push_frame(frame)
        n += 1
        pushed_audio += frame.samples_per_channel / frame.sample_rate
        ahead = pushed_audio / speed - (time.monotonic() - started)
        if ahead > 0.02:
            await asyncio.sleep(ahead)
    return n


@dataclass
class Collected:
    events: list[stt.SpeechEvent] = field(default_factory=list)
    final_seen: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def finals(self) -> list[stt.SpeechEvent]:
        return [e for e in self.events if e.type == stt.SpeechEventType.FINAL_TRANSCRIPT]

    @property
    def final_texts(self) -> list[str]:
        return [e.alternatives[0].text for e in self.finals]

    def types(self) -> list[stt.SpeechEventType]:
        return [e.type for e in self.events]


async def collect(stream: stt.RecognizeStream, out: Collected) -> None:
    async for ev in stream:
        out.events.append(ev)
        if ev.type == stt.SpeechEventType.FINAL_TRANSCRIPT:
            out.final_seen.set()


def check_utterance_order(types: list[stt.SpeechEventType]) -> int:
    """Assert START -> INTERIM* -> FINAL -> USAGE -> END for every utterance; returns how many.

    USAGE may also come last on its own (the audio after the last final, at close).
    """
    t = stt.SpeechEventType
    i, n, utterances = 0, len(types), 0
    while i < n:
        if types[i] == t.RECOGNITION_USAGE:  # trailing audio reported at close
            i += 1
            continue
        assert types[i] == t.START_OF_SPEECH, f"expected START at {i}: {types}"
        i += 1
        while i < n and types[i] == t.INTERIM_TRANSCRIPT:
            i += 1
        assert i < n and types[i] == t.FINAL_TRANSCRIPT, f"expected FINAL at {i}: {types}"
        i += 1
        assert i < n and types[i] == t.RECOGNITION_USAGE, f"expected USAGE at {i}: {types}"
        i += 1
        assert i < n and types[i] == t.END_OF_SPEECH, f"expected END at {i}: {types}"
        i += 1
        utterances += 1
    return utterances
