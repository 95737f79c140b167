"""Hallucination guards: non-speech gives zero words, in batch and in streaming.

Whisper famously "hears" words in silence and noise ("Thank you.", "you", subtitles credits).
The signals are generated here with seeded numpy (the same samples every run): digital
silence, low-level white and pink noise, clicks, and real speech with a 20 s pause inside.
The assertion on non-speech is "no words at all"; on the speech parts it is the right words.
"""

from __future__ import annotations

import asyncio
import json
from functools import cache

import aiohttp
import numpy as np
import pytest

from stt_sidecar.replay import ReplayResult, replay

from ..batch_support import form
from ..support.audio import wav_bytes
from ..support.sidecar import SidecarProcess
from ..support.speech import clip, normalize, read_pcm16, wer
from .http_support import LEAK_LOG, assert_no_leaks, assert_transcribes, fetch

RATE = 16000
SEED = 20261126


def _rms_scaled(signal: np.ndarray, rms: float) -> np.ndarray:
    return signal * (rms / np.sqrt(np.mean(signal**2)))


def to_int16(signal: np.ndarray) -> np.ndarray:
    return (np.clip(signal, -1.0, 1.0) * 32767).astype(np.int16)


def silence(seconds: float = 60.0) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.int16)


def white_noise(rms: float, seconds: float = 30.0) -> np.ndarray:
    rng = np.random.default_rng(SEED)
    return to_int16(_rms_scaled(rng.normal(size=int(seconds * RATE)), rms))


def pink_noise(rms: float, seconds: float = 30.0) -> np.ndarray:
    """1/f power: white noise shaped by 1/sqrt(f) in the frequency domain."""
    rng = np.random.default_rng(SEED + 1)
    n = int(seconds * RATE)
    spectrum = np.fft.rfft(rng.normal(size=n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    spectrum[1:] /= np.sqrt(freqs[1:])
    spectrum[0] = 0
    return to_int16(_rms_scaled(np.fft.irfft(spectrum, n), rms))


def clicks(seconds: float = 30.0) -> np.ndarray:
    """Loud impulses (1-3 samples, random polarity) every 0.1-1 s on digital silence, like a
    microphone being tapped or a bad cable."""
    rng = np.random.default_rng(SEED + 2)
    out = np.zeros(int(seconds * RATE))
    at = 0.2
    while at < seconds - 0.01:
        start = int(at * RATE)
        width = int(rng.integers(1, 4))
        out[start : start + width] = rng.choice([-0.9, 0.9])
        at += float(rng.uniform(0.1, 1.0))
    return to_int16(out)


FIRST = clip("librivox_0880.wav")
SECOND = clip("goforward.wav")
PAUSE_S = 20.0


@cache
def speech_pause_speech() -> np.ndarray:
    first, rate1 = read_pcm16(FIRST.path)
    second, rate2 = read_pcm16(SECOND.path)
    assert rate1 == rate2 == RATE
    return np.concatenate([first, silence(PAUSE_S), second])


NON_SPEECH = {
    "silence_60s": lambda: silence(60.0),
    "white_-50dBFS": lambda: white_noise(0.003),
    "white_-30dBFS": lambda: white_noise(0.03),
    "pink_-50dBFS": lambda: pink_noise(0.003),
    "pink_-30dBFS": lambda: pink_noise(0.03),
    "white_-20dBFS": lambda: white_noise(0.1),
    "pink_-20dBFS": lambda: pink_noise(0.1),
    "clicks": clicks,
}


async def batch_text(server: SidecarProcess, audio: np.ndarray, **fields: str) -> str:
    async with aiohttp.ClientSession() as http:
        answer = await fetch(
            http,
            "POST",
            server.url + "/v1/audio/transcriptions",
            data=form(wav_bytes(audio, RATE), response_format="verbose_json", **fields),
            timeout=120,
        )
    assert answer.status == 200, answer.text
    return json.loads(answer.text)["text"]


async def stream(server: SidecarProcess, audio: np.ndarray) -> ReplayResult:
    result = await replay(server.ws_url, audio.reshape(-1, 1), RATE, speed=0, timeout=120)
    for m in result.messages:
        LEAK_LOG.record("stream message", json.dumps(m.message))
    assert not result.of_type("error"), result.of_type("error")
    return result


def words(text: str) -> list[str]:
    return normalize(text).split()


@pytest.mark.parametrize("name", list(NON_SPEECH))
async def test_non_speech_gives_no_words_in_batch(sidecar: SidecarProcess, name: str) -> None:
    assert words(await batch_text(sidecar, NON_SPEECH[name]())) == []


@pytest.mark.parametrize("name", ["silence_60s", "pink_-20dBFS", "clicks"])
async def test_a_leading_prompt_does_not_make_non_speech_talk(
    sidecar: SidecarProcess, name: str
) -> None:
    """A prompt is the classic way to coax whisper into "continuing" on silence, hotter
    sampling the other: neither gets past the VAD gate."""
    text = await batch_text(
        sidecar,
        NON_SPEECH[name](),
        prompt="Thank you for watching. Please subscribe to the channel.",
        temperature="0.8",
    )
    assert words(text) == []


@pytest.mark.parametrize("name", list(NON_SPEECH))
async def test_non_speech_gives_no_words_in_streaming(sidecar: SidecarProcess, name: str) -> None:
    result = await stream(sidecar, NON_SPEECH[name]())
    finals = [f["text"] for f in result.finals if words(f["text"])]
    assert finals == [], finals
    # interims are shown to users too: a flickering invented word is still invented
    interims = [m["text"] for m in result.of_type("interim") if words(m["text"])]
    assert interims == [], interims


async def test_non_speech_in_real_time_streaming(sidecar: SidecarProcess) -> None:
    """At speed 0 the stream may outrun the interim timer; at real time every interim tick
    runs on the noise. Two signals, streamed side by side to keep the wall time at ~8 s."""
    signals = [pink_noise(0.1, seconds=8.0), white_noise(0.03, seconds=8.0)]
    signals[1] = np.clip(signals[1].astype(np.int32) + clicks(8.0), -32768, 32767).astype(np.int16)
    results = await asyncio.gather(
        *(replay(sidecar.ws_url, s.reshape(-1, 1), RATE, speed=1.0, timeout=60) for s in signals)
    )
    for result in results:
        for m in result.messages:
            LEAK_LOG.record("stream message", json.dumps(m.message))
        said = [m["text"] for m in result.finals + result.of_type("interim") if words(m["text"])]
        assert said == [], said


def assert_both_sentences(text: str) -> None:
    """The words of both sentences (tiny.en hears "ill disposed" as "old-sposed", hence 0.2)
    and no more words than were spoken: nothing was added in the pause."""
    reference = f"{FIRST.text} {SECOND.text}"
    assert wer(reference, text) <= 0.2, text
    assert len(words(text)) <= len(words(reference)), text


async def test_pause_inside_speech_in_batch(sidecar: SidecarProcess) -> None:
    assert_both_sentences(await batch_text(sidecar, speech_pause_speech()))


async def test_pause_inside_speech_in_streaming(sidecar: SidecarProcess) -> None:
    """Two finals, one per side of the pause, and nothing timed inside the pause."""
    result = await stream(sidecar, speech_pause_speech())
    finals = [f for f in result.finals if words(f["text"])]
    first_end = len(read_pcm16(FIRST.path)[0]) / RATE
    inside = [f for f in finals if f["start"] > first_end + 0.5 and f["end"] < first_end + PAUSE_S]
    assert inside == [], inside
    assert_both_sentences(" ".join(f["text"] for f in finals))


async def test_still_correct_afterwards(sidecar: SidecarProcess) -> None:
    await assert_transcribes(sidecar)


def test_leak_scan() -> None:
    """Every body, error message and stream message this session has seen so far."""
    assert_no_leaks()
