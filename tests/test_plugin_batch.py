"""custom_stt.STT.recognize() and livekit-plugins-openai against the real sidecar, real speech."""

from __future__ import annotations

import time

import numpy as np
import openai as openai_sdk
import pytest
from livekit import rtc
from livekit.agents import APIConnectionError, APIConnectOptions, APIStatusError, stt
from livekit.plugins import custom_stt, openai

from .plugin_support import clip_pcm, frames_10ms
from .support.audio import upsample_48k
from .support.sidecar import SidecarProcess, free_port
from .support.speech import clips, wer

NO_RETRY = APIConnectOptions(max_retry=0, timeout=5.0)


@pytest.fixture
async def custom(sidecar_url: str):
    engine = custom_stt.STT(base_url=sidecar_url, api_key=None)
    yield engine
    await engine.aclose()


@pytest.mark.parametrize("name", [c.name for c in clips()])
async def test_recognize_each_clip(custom: custom_stt.STT, name: str) -> None:
    ref = next(c for c in clips() if c.name == name)
    pcm = clip_pcm(name)
    frame = rtc.AudioFrame(pcm.tobytes(), 16000, 1, len(pcm))

    ev = await custom.recognize([frame])

    assert ev.type == stt.SpeechEventType.FINAL_TRANSCRIPT
    data = ev.alternatives[0]
    # tiny.en is exact on jfk and within ~25 % on the hardest LibriVox sentence
    assert wer(ref.text, data.text) <= (0.1 if name == "jfk.wav" else 0.3), data.text
    assert data.language == "en"
    assert 0.0 < data.confidence <= 1.0
    assert data.words and all(str(w).strip() for w in data.words)
    assert 0.0 <= data.start_time < data.end_time <= len(pcm) / 16000 + 0.1
    assert all(w.start_time <= w.end_time for w in data.words)
    assert ev.request_id  # the sidecar's X-Request-Id


async def test_recognize_48k_stereo_frames(custom: custom_stt.STT) -> None:
    """LiveKit-shaped input: 10 ms frames at 48 kHz, two channels (right is silent)."""
    ref = next(c for c in clips() if c.name == "jfk.wav")
    mono = upsample_48k(clip_pcm("jfk.wav"))
    stereo = np.stack([mono, np.zeros_like(mono)], axis=1).reshape(-1)
    frames = frames_10ms(stereo, 48000, channels=2)
    assert frames[0].num_channels == 2 and frames[0].samples_per_channel == 480

    ev = await custom.recognize(frames)

    assert wer(ref.text, ev.alternatives[0].text) <= 0.1, ev.alternatives[0].text
    words = ev.alternatives[0].words or []
    # times are in seconds of audio whatever the input rate
    assert 9.0 < words[-1].end_time < 11.5


async def test_recognize_wrong_key_is_final(sidecar_url: str) -> None:
    """A 401 is a non-retryable APIStatusError carrying the server's message, fast."""
    keyed = SidecarProcess(STT_API_KEY="right-key").start()
    try:
        engine = custom_stt.STT(base_url=keyed.url, api_key="wrong-key")
        pcm = clip_pcm("goforward.wav")
        started = time.monotonic()
        with pytest.raises(APIStatusError) as exc:
            # the STT's default retry policy applies; a 401 must not use it
            await engine.recognize([rtc.AudioFrame(pcm.tobytes(), 16000, 1, len(pcm))])
        assert time.monotonic() - started < 3.0
        assert exc.value.status_code == 401
        assert not exc.value.retryable
        assert "API key" in exc.value.message
        assert "wrong-key" not in repr(exc.value) and exc.value.__cause__ is None

        good = custom_stt.STT(base_url=keyed.url, api_key="right-key")
        ev = await good.recognize([rtc.AudioFrame(pcm.tobytes(), 16000, 1, len(pcm))])
        assert wer("go forward ten meters", ev.alternatives[0].text) <= 0.25
        await good.aclose()
        await engine.aclose()
    finally:
        keyed.stop()


async def test_recognize_unreachable_is_retryable_connection_error() -> None:
    engine = custom_stt.STT(base_url=f"http://127.0.0.1:{free_port()}")
    pcm = clip_pcm("goforward.wav")
    with pytest.raises(APIConnectionError) as exc:
        await engine.recognize(
            [rtc.AudioFrame(pcm.tobytes(), 16000, 1, len(pcm))], conn_options=NO_RETRY
        )
    assert exc.value.retryable
    await engine.aclose()


async def test_openai_plugin_batch_against_sidecar(sidecar_url: str) -> None:
    """livekit-plugins-openai in batch mode talks to the sidecar's OpenAI-compatible API."""
    # our own SDK client: openai.STT.aclose() leaves the httpx client it creates open
    client = openai_sdk.AsyncClient(api_key="unused", base_url=sidecar_url + "/v1", max_retries=0)
    engine = openai.STT(client=client, model="whisper-1")
    assert not engine.capabilities.streaming
    ref = next(c for c in clips() if c.name == "librivox_0880.wav")
    pcm = clip_pcm(ref.name)
    ev = await engine.recognize([rtc.AudioFrame(pcm.tobytes(), 16000, 1, len(pcm))])
    assert wer(ref.text, ev.alternatives[0].text) <= 0.25, ev.alternatives[0].text
    await engine.aclose()
    await client.close()
