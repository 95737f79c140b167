"""Helpers for streaming tests: audio at other rates, and a raw WebSocket session."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import av
import numpy as np


def resample_int16(audio: np.ndarray, rate: int, new_rate: int, channels: int) -> np.ndarray:
    """(frames, 1) int16 -> (frames', channels) int16 at `new_rate`, with libswresample."""
    layout = "mono" if channels == 1 else "stereo"
    resampler = av.AudioResampler(format="s16", layout=layout, rate=new_rate)
    frame = av.AudioFrame.from_ndarray(audio.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = rate
    out = resampler.resample(frame) + resampler.resample(None)
    interleaved = np.concatenate([f.to_ndarray().reshape(-1) for f in out])
    return interleaved.reshape(-1, channels)


async def open_stream(
    http: aiohttp.ClientSession, ws_url: str, **config: Any
) -> aiohttp.ClientWebSocketResponse:
    """Connect and send a config; returns the socket after `ready`."""
    ws = await http.ws_connect(ws_url)
    await ws.send_str(json.dumps({"type": "config", "sample_rate": 16000, **config}))
    ready = await ws.receive_json(timeout=10)
    assert ready["type"] == "ready", ready
    return ws


async def messages_until(
    ws: aiohttp.ClientWebSocketResponse, kind: str, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """Read JSON messages until one of type `kind` (included)."""
    received: list[dict[str, Any]] = []
    while True:
        msg = await ws.receive(timeout=timeout)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise AssertionError(f"connection ended before {kind!r}: {msg.type} {received}")
        data = json.loads(msg.data)
        received.append(data)
        if data["type"] == kind:
            return received
