"""Faults: clients vanishing mid-utterance by the thousand, the sidecar SIGKILLed and restarted
under the plugin and the worker pipeline, a sidecar that stays away for 10 s, SIGTERM with a
client that does not read. Real sidecar processes, real plugin, real speech."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest

from stt_sidecar.replay import load_pcm16, replay

from ..sidecar_process import SidecarProcess
from ..speech import clip, read_pcm16, wer
from .test_ws_support import RawClient, open_fds, ready, rss_mb, wait_streams_gone

# jfk.wav has two ~1.2 s pauses inside its sentence: it may come out as several finals.
MULTI_FINAL_CLIPS = {"jfk.wav"}


@pytest.fixture(scope="module")
def churn_sidecar() -> Iterator[SidecarProcess]:
    """A sidecar of its own, so its RSS and FDs reflect only what the churn test does."""
    proc = SidecarProcess(STT_MAX_STREAMS="32", STT_IDLE_TIMEOUT_S="30").start()
    yield proc
    proc.stop()


# -- clients that vanish ----------------------------------------------------------------------


async def _vanish(sidecar: SidecarProcess, speech_1s: bytes, how: int) -> None:
    """One client that disappears without a goodbye (TCP abort), at one of five points."""
    client = await RawClient.open(sidecar)
    try:
        if how == 0:
            return  # right after the handshake
        await client.send_text(json.dumps({"type": "config", "sample_rate": 16000}))
        if how == 1:
            return  # config sent, maybe not even read yet
        first = await client.read_frame()
        assert first is not None and json.loads(first.text)["type"] == "ready", first
        if how == 4:
            # a polite end (`close` -> `closed`), then the abort instead of the close handshake
            await client.send_text(json.dumps({"type": "close"}))
            frames = await client.read_messages(until="closed")
            assert frames and json.loads(frames[-1].text)["type"] == "closed", frames
            return
        await client.send_binary(speech_1s)
        if how == 2:
            return  # a second of speech in flight
        # mid-utterance for sure: the VAD opened one (and an interim may be decoding)
        frames = await client.read_messages(until="speech_started")
        assert frames and json.loads(frames[-1].text)["type"] == "speech_started", frames
    finally:
        client.abort()


async def test_thousands_of_abrupt_disconnects_leak_nothing(churn_sidecar: SidecarProcess) -> None:
    """2,000 clients vanish (TCP abort) at every stage of a stream, half of them mid-utterance
    and some right after a polite `close`: afterwards no stream is active, open FDs and RSS are
    back where they were, and the server never abandoned a pending task.

    This caught two leaks: a stream ended with `close` left its interim task pending forever,
    and every closed stream's session (with its 1.4 MB audio buffer) was kept alive by a
    reference cycle through its cancelled tasks until the cyclic GC ran: RSS grew by ~400 MB
    over 2,000 aborted streams before the fix.
    """
    pcm, _ = read_pcm16(clip("librivox_0870.wav").path)
    speech_1s = pcm[16000:32000].tobytes()  # "...john dashwood had then..."
    concurrency = asyncio.Semaphore(12)

    async def churn(n: int) -> None:
        async def one(i: int) -> None:
            async with concurrency:
                await _vanish(churn_sidecar, speech_1s, (0, 1, 2, 3, 3, 3, 3, 4)[i % 8])

        await asyncio.gather(*(one(i) for i in range(n)))
        await wait_streams_gone(churn_sidecar)

    await churn(200)  # warm-up: allocator pools, ONNX arenas, the decoder's first interims
    await asyncio.sleep(0.5)
    fds_before, rss_before = open_fds(churn_sidecar), rss_mb(churn_sidecar)
    started = time.monotonic()
    await churn(2000)
    elapsed = time.monotonic() - started
    await asyncio.sleep(0.5)
    fds_after, rss_after = open_fds(churn_sidecar), rss_mb(churn_sidecar)
    print(
        f"2000 aborted streams in {elapsed:.1f} s: FDs {fds_before} -> {fds_after}, "
        f"RSS {rss_before:.0f} -> {rss_after:.0f} MiB"
    )
    assert fds_after <= fds_before + 2, (fds_before, fds_after)
    assert rss_after - rss_before < 40, f"RSS {rss_before:.0f} -> {rss_after:.0f} MiB"
    assert "Task was destroyed but it is pending" not in churn_sidecar.log()
    assert "Traceback" not in churn_sidecar.log()

    # and it still transcribes
    c = clip("goforward.wav")
    audio, rate = load_pcm16(c.path)
    result = await replay(churn_sidecar.ws_url, audio, rate, speed=0)
    assert wer(c.text, " ".join(f["text"] for f in result.finals)) <= 0.25
    assert ready(churn_sidecar)["active_streams"] == 0
