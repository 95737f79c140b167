"""Helpers for streaming tests: audio at other rates, and a raw WebSocket session."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
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


class RawWebSocket:
    """A WebSocket client on a bare socket that can stop reading, unlike aiohttp's client
    (which drains the socket in the background). Only what the tests need: handshake, then
    masked binary and text frames out."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(
        cls, host: str, port: int, path: str = "/v1/stream", recv_buffer: int = 4096
    ) -> RawWebSocket:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recv_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
        reader, writer = await asyncio.open_connection(sock=sock)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def send(self, payload: bytes, opcode: int) -> None:
        mask = os.urandom(4)
        size = len(payload)
        if size < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
        elif size < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
        body = np.frombuffer(payload, np.uint8) ^ np.resize(np.frombuffer(mask, np.uint8), size)
        self.writer.write(header + mask + body.tobytes())
        await self.writer.drain()

    async def send_text(self, text: str) -> None:
        await self.send(text.encode(), 0x1)

    async def send_binary(self, data: bytes) -> None:
        await self.send(data, 0x2)

    def abort(self) -> None:
        self.writer.transport.abort()
