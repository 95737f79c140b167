"""Realtime-protocol test support: audio in OpenAI's input formats, and a raw replay client
(aiohttp, like `stt_sidecar.replay`) whose result reads like a `/v1/stream` replay's, so the
benchmark scores both protocols with the same code."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import aiohttp
import av
import numpy as np

from stt_sidecar.replay import ReceivedMessage, ReplayResult

TRANSCRIPTION = "conversation.item.input_audio_transcription"


def resample_mono(audio: np.ndarray, rate: int, new_rate: int) -> np.ndarray:
    """1-D int16 at `rate` -> 1-D int16 at `new_rate` (libswresample)."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=new_rate)
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(audio.reshape(1, -1)), format="s16", layout="mono"
    )
    frame.sample_rate = rate
    out = resampler.resample(frame) + resampler.resample(None)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in out]).astype(np.int16)


def ulaw_encode(pcm: np.ndarray) -> bytes:
    """int16 -> G.711 μ-law bytes (the standard encoder: bias 0x84, clip 32635)."""
    x = pcm.astype(np.int32)
    sign = (x < 0).astype(np.int32) << 7
    mag = np.minimum(np.abs(x), 32635) + 0x84
    exponent = np.clip(np.floor(np.log2(mag)).astype(np.int32) - 7, 0, 7)
    mantissa = (mag >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def encode_for(fmt: str, audio16k: np.ndarray) -> tuple[bytes, int, int]:
    """(bytes, sample rate, bytes per sample) of 16 kHz int16 audio in a realtime format:
    'pcm16' (24 kHz s16le) or 'g711_ulaw' (8 kHz)."""
    if fmt == "pcm16":
        return resample_mono(audio16k, 16000, 24000).astype("<i2").tobytes(), 24000, 2
    if fmt == "g711_ulaw":
        return ulaw_encode(resample_mono(audio16k, 16000, 8000)), 8000, 1
    raise ValueError(fmt)


def as_stream_result(events: list[tuple[dict[str, Any], float]]) -> ReplayResult:
    """Realtime events as `/v1/stream` messages: one `final` per `completed` (start/end from
    its speech_started/speech_stopped), one `interim` per delta."""
    result = ReplayResult()
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    ids: dict[str, int] = {}
    for event, at in events:
        kind, item = event["type"], event.get("item_id", "")
        uid = ids.setdefault(item, len(ids) + 1) if item else 0
        if kind == "input_audio_buffer.speech_started":
            starts[item] = event["audio_start_ms"] / 1000
        elif kind == "input_audio_buffer.speech_stopped":
            ends[item] = event["audio_end_ms"] / 1000
        elif kind == f"{TRANSCRIPTION}.delta":
            message = {"type": "interim", "utterance_id": uid, "text": event["delta"]}
            result.messages.append(ReceivedMessage(message, at))
        elif kind == f"{TRANSCRIPTION}.completed" and event["transcript"]:
            message = {
                "type": "final",
                "utterance_id": uid,
                "text": event["transcript"],
                "start": starts.get(item, 0.0),
                "end": ends.get(item, 0.0),
            }
            result.messages.append(ReceivedMessage(message, at))
    return result


def commit_answered(events: list[dict[str, Any]]) -> bool:
    """Whether the trailing commit's item is completed: the item no speech_started announced
    (the silence after the last endpoint), which comes after every other event."""
    spoken = {e["item_id"] for e in events if e["type"] == "input_audio_buffer.speech_started"}
    return any(
        e["type"] == f"{TRANSCRIPTION}.completed" and e["item_id"] not in spoken for e in events
    )


async def replay_realtime(
    base_url: str,
    audio16k: np.ndarray,
    *,
    fmt: str = "pcm16",
    speed: float = 1.0,
    frame_ms: int = 20,
    api_key: str | None = None,
    session: aiohttp.ClientSession | None = None,
    tail_s: float = 1.5,
    timeout: float = 120.0,
    transcription: dict[str, Any] | None = None,
) -> list[tuple[dict[str, Any], float]]:
    """Stream 1-D 16 kHz int16 audio over `/v1/realtime` (current session shape, with
    `transcription` fields added) and return every server event with its arrival time
    (seconds since the first audio was sent).

    After the audio and `tail_s` of silence (longer than the endpoint), a commit: its empty
    item is the last event, whatever the pace."""
    data, rate, width = encode_for(fmt, audio16k)
    data += bytes(width * int(rate * tail_s)) if fmt == "pcm16" else b"\xff" * int(rate * tail_s)
    fmt_type = {"pcm16": {"type": "audio/pcm", "rate": 24000}, "g711_ulaw": {"type": "audio/pcmu"}}
    update = {
        "type": "session.update",
        "session": {
            "type": "transcription",
            "audio": {
                "input": {
                    "format": fmt_type[fmt],
                    "transcription": {"language": "en", **(transcription or {})},
                }
            },
        },
    }
    url = base_url.replace("http", "ws", 1).rstrip("/") + "/v1/realtime?intent=transcription"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    http = session or aiohttp.ClientSession()
    events: list[tuple[dict[str, Any], float]] = []
    step = rate * frame_ms // 1000 * width
    try:
        async with http.ws_connect(url, headers=headers) as ws:
            await ws.send_str(json.dumps(update))
            t0 = time.monotonic()
            sent_all = False
            done = asyncio.Event()

            async def receive() -> None:
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        events.append((json.loads(msg.data), time.monotonic() - t0))
                        if sent_all and commit_answered([e for e, _ in events]):
                            done.set()
                done.set()  # closed by the server (e.g. its idle timeout): nothing more comes

            receiver = asyncio.create_task(receive())
            for i in range(0, len(data), step):
                chunk = base64.b64encode(data[i : i + step]).decode()
                await ws.send_str(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
                if speed > 0:
                    due = t0 + (i + step) / width / rate / speed
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
            await ws.send_str(json.dumps({"type": "input_audio_buffer.commit"}))
            sent_all = True
            if commit_answered([e for e, _ in events]):
                done.set()
            async with asyncio.timeout(timeout):
                await done.wait()
            receiver.cancel()
    finally:
        if session is None:
            await http.close()
    return events
