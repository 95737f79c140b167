"""Vocabulary hints on both streaming protocols: names tiny.en gets wrong on its own come out
right with `keywords` (faster-whisper hotwords) or `prompt` (initial prompt), and a hint stays
with its stream. Speech: tests/data/espeak_kubernetes.wav (README there)."""

from __future__ import annotations

from stt_sidecar.replay import load_pcm16, replay

from .support.realtime import TRANSCRIPTION, replay_realtime
from .support.sidecar import SidecarProcess
from .support.speech import DATA

CLIP = DATA / "espeak_kubernetes.wav"
NAMES = ["Nguyen", "Kubernetes"]


def has_names(text: str) -> bool:
    return all(name.lower() in text.lower() for name in NAMES)


async def stream_text(sidecar: SidecarProcess, **config: object) -> str:
    audio, rate = load_pcm16(CLIP)
    result = await replay(
        sidecar.ws_url, audio, rate, speed=0, config={"interim_results": False, **config}
    )
    assert not result.of_type("error"), result.messages
    return " ".join(f["text"] for f in result.finals)


async def realtime_text(sidecar: SidecarProcess, **transcription: object) -> str:
    audio, _ = load_pcm16(CLIP)
    events = await replay_realtime(sidecar.url, audio[:, 0], speed=0, transcription=transcription)
    assert not [e for e, _ in events if e["type"] == "error"], events
    return " ".join(e["transcript"] for e, _ in events if e["type"] == f"{TRANSCRIPTION}.completed")


async def test_hints_fix_names_on_v1_stream(sidecar: SidecarProcess) -> None:
    with_keywords = await stream_text(sidecar, keywords=NAMES)
    without = await stream_text(sidecar)  # after the hinted stream: nothing carried over
    assert has_names(with_keywords), with_keywords
    assert not any(name.lower() in without.lower() for name in NAMES), without


async def test_hints_fix_names_on_realtime(sidecar: SidecarProcess) -> None:
    # (without a hint it reads as on /v1/stream: the same engine)
    with_prompt = await realtime_text(sidecar, prompt="Dr. Nguyen, Kubernetes")
    with_keywords = await realtime_text(sidecar, keywords=NAMES)
    assert has_names(with_prompt), with_prompt
    assert has_names(with_keywords), with_keywords
