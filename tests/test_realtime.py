"""`/v1/realtime` (OpenAI's Realtime transcription protocol) against the real sidecar, with
stock clients: the `openai` SDK's realtime connections (current and beta session shapes) and
`livekit-plugins-openai`'s realtime STT, on real speech."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

from livekit.agents import stt
from livekit.agents.utils import http_context
from livekit.plugins import openai as lk_openai
from openai import AsyncOpenAI

from stt_sidecar.replay import assign_finals

from .plugin_support import Collected, build_script, collect, feed, frames_10ms
from .support.audio import upsample_48k
from .support.realtime import TRANSCRIPTION, as_stream_result, commit_answered, encode_for
from .support.sidecar import SidecarProcess
from .support.speech import DATA, conversation, read_pcm16, wer

# conversation.wav from 26.5 s: four utterances (librivox_0890, goforward, 0920, 0930) in
# 23 s, so that two sessions at once stay within the suite's time budget.
PORTION_START_S = 26.5


def portion() -> tuple[Any, list[dict[str, Any]]]:
    audio, rate = read_pcm16(DATA / "conversation.wav")
    utterances = [
        {**u, **{k: u[k] - PORTION_START_S for k in ("start", "end", "speech_start", "speech_end")}}
        for u in conversation()["utterances"]
        if u["start"] > PORTION_START_S
    ]
    return audio[int(PORTION_START_S * rate) :], utterances


async def run_sdk_session(
    connection: Any, update: dict[str, Any], audio16k: Any, fmt: str, speed: float
) -> list[tuple[dict[str, Any], float]]:
    """Send the update, then the audio in 20 ms appends at `speed` x real time, 1.5 s of
    silence and a commit; returns the server events (parsed by the SDK) up to the commit's
    empty item, which comes after every other."""
    data, rate, width = encode_for(fmt, audio16k)
    data += (b"\0\0" if width == 2 else b"\xff") * int(rate * 1.5)
    events: list[tuple[dict[str, Any], float]] = []
    t0 = time.monotonic()
    finished = asyncio.Event()
    sent_all = False

    async def receive() -> None:
        async for event in connection:  # the SDK's own parsing into its event models
            events.append((event.to_dict(), time.monotonic() - t0))
            if sent_all and commit_answered([e for e, _ in events]):
                finished.set()

    await connection.send(update)
    receiver = asyncio.create_task(receive())
    step = rate * width // 50
    for i in range(0, len(data), step):
        await connection.send(
            {
                "type": "input_audio_buffer.append",
                "audio": base64.b64encode(data[i : i + step]).decode(),
            }
        )
        ahead = t0 + (i + step) / width / rate / speed - time.monotonic()
        if ahead > 0:
            await asyncio.sleep(ahead)
    await connection.send({"type": "input_audio_buffer.commit"})
    sent_all = True
    if commit_answered([e for e, _ in events]):
        finished.set()
    async with asyncio.timeout(60):
        await finished.wait()
    receiver.cancel()
    return events


def check_items(events: list[tuple[dict[str, Any], float]], utterances: list[dict[str, Any]]):
    """One completed per utterance with the streaming tests' WER bounds; per item, the deltas
    concatenate to a prefix of its transcript."""
    assert not [e for e, _ in events if e["type"] == "error"]
    result = as_stream_result(events)
    groups = assign_finals(result.finals, utterances)
    assert groups[-1] == [], f"transcripts outside any utterance: {groups[-1]}"
    hyps = []
    for utterance, finals in zip(utterances, groups[:-1], strict=True):
        assert len(finals) == 1, (utterance["audio"], finals)
        hyps.append(finals[0]["text"])
        assert wer(utterance["text"], finals[0]["text"]) <= 0.25, (utterance, finals)
    assert wer([u["text"] for u in utterances], hyps) <= 0.08, hyps
    deltas: dict[str, str] = {}
    for event, _ in events:
        if event["type"] == f"{TRANSCRIPTION}.delta":
            deltas[event["item_id"]] = deltas.get(event["item_id"], "") + event["delta"]
        elif event["type"] == f"{TRANSCRIPTION}.completed":
            # append-only, even where the final heard a stable word differently (the
            # translator's unit tests pin how the two are merged)
            assert event["transcript"].startswith(deltas.get(event["item_id"], "")), event
            assert event["usage"]["type"] == "duration"
    assert deltas, "no deltas"


async def test_openai_sdk_current_and_beta_shapes_pcm24k_and_ulaw(
    sidecar: SidecarProcess,
) -> None:
    """The SDK's GA connection with 24 kHz PCM and its beta connection with 8 kHz μ-law, at
    once, at 1.5 x real time."""
    audio, utterances = portion()
    client = AsyncOpenAI(base_url=sidecar.url + "/v1", api_key="unused")
    # the beta client always dials wss:// from base_url; websocket_base_url says ws://
    ws_base = sidecar.url.replace("http", "ws", 1) + "/v1"
    beta_client = AsyncOpenAI(base_url=sidecar.url + "/v1", websocket_base_url=ws_base, api_key="x")
    current = {
        "type": "session.update",
        "session": {
            "type": "transcription",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "transcription": {"model": "gpt-4o-transcribe", "language": "en"},
                    "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
                }
            },
            "include": ["item.input_audio_transcription.logprobs"],
        },
    }
    beta = {
        "type": "transcription_session.update",
        "session": {
            "input_audio_format": "g711_ulaw",
            "input_audio_transcription": {"model": "whisper-1", "language": "en"},
            "turn_detection": {"type": "server_vad"},
        },
    }
    query = {"intent": "transcription"}
    async with (
        client.realtime.connect(extra_query=query) as ga,
        beta_client.beta.realtime.connect(model="whisper-1", extra_query=query) as old,
    ):
        ga_events, beta_events = await asyncio.gather(
            run_sdk_session(ga, current, audio, "pcm16", speed=1.5),
            run_sdk_session(old, beta, audio, "g711_ulaw", speed=1.5),
        )
    assert [e["type"] for e, _ in ga_events][:2] == ["session.created", "session.updated"]
    assert [e["type"] for e, _ in beta_events][:2] == [
        "session.created",
        "transcription_session.updated",
    ]
    check_items(ga_events, utterances)
    check_items(beta_events, utterances)
    completed = [
        e for e, _ in ga_events if e["type"] == f"{TRANSCRIPTION}.completed" and e["transcript"]
    ]
    assert all(e["logprobs"] and e["logprobs"][0]["logprob"] <= 0 for e in completed)
    assert all("logprobs" not in e for e, _ in beta_events)


async def test_livekit_openai_plugin_realtime_stream(sidecar: SidecarProcess) -> None:
    """The stock `livekit.plugins.openai.STT(use_realtime=True)`, with its default model and
    turn detection, sees interims and finals with the right words."""
    script = build_script(["librivox_0880.wav", "goforward.wav"], gap_s=1.5)
    frames = frames_10ms(upsample_48k(script.pcm))
    async with http_context.open():
        engine = lk_openai.STT(base_url=sidecar.url + "/v1", api_key="unused", use_realtime=True)
        stream = engine.stream()
        out = Collected()
        reader = asyncio.create_task(collect(stream, out))
        async with asyncio.timeout(60):
            await feed(stream, frames, speed=2.0)
            while len(out.finals) < len(script.texts):
                out.final_seen.clear()
                await out.final_seen.wait()
        await stream.aclose()
        reader.cancel()
        await engine.aclose()
    assert len(out.finals) == 2, out.final_texts
    for ref, hyp in zip(script.texts, out.final_texts, strict=True):
        assert wer(ref, hyp) <= 0.3, (ref, hyp)
    kinds = out.types()
    assert stt.SpeechEventType.INTERIM_TRANSCRIPT in kinds
    assert kinds.count(stt.SpeechEventType.START_OF_SPEECH) == 2
    assert kinds.count(stt.SpeechEventType.END_OF_SPEECH) == 2
