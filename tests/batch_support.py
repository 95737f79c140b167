"""Helpers for the batch API tests: audio made in the test (re-encoded speech, silence, noise,
hostile WAV headers), a raw-socket HTTP client for what aiohttp's client will not send, and the
error-shape assertions every error test shares."""

from __future__ import annotations

import asyncio
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import av
import numpy as np

from .support.audio import wav_bytes
from .support.speech import clip


def silence_wav(seconds: float = 5.0) -> bytes:
    return wav_bytes(np.zeros(int(seconds * 16000), dtype=np.float32))


def white_noise_wav(seconds: float = 5.0, level: float = 0.1) -> bytes:
    rng = np.random.default_rng(1234)  # fixed: the same noise every run
    noise = rng.normal(0.0, level, int(seconds * 16000)).clip(-1, 1).astype(np.float32)
    return wav_bytes(noise)


def reencode(source: Path, dest: Path, *, container: str, codec: str, rate: int = 48000) -> Path:
    """Resample `source` (16 kHz mono WAV) to `rate` Hz stereo with PyAV's resampler and
    encode it with `codec` into `dest` (the client side of "any container, any rate")."""
    with av.open(str(source)) as inp, av.open(str(dest), "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout="stereo")
        fmt = stream.codec_context.codec.audio_formats[0].name
        resampler = av.AudioResampler(format=fmt, layout="stereo", rate=rate)
        for frame in inp.decode(audio=0):
            frame.pts = None
            for resampled in resampler.resample(frame):
                out.mux(stream.encode(resampled))
        for resampled in resampler.resample(None):
            out.mux(stream.encode(resampled))
        out.mux(stream.encode(None))
    return dest


def patched_wav(name: str, **fields: int) -> bytes:
    """A speech WAV with header fields overwritten: `rate`, `channels`, `data_size`."""
    data = bytearray(clip(name).path.read_bytes())
    fmt = data.index(b"fmt ") + 8  # start of the fmt chunk body
    if "channels" in fields:
        struct.pack_into("<H", data, fmt + 2, fields["channels"])
    if "rate" in fields:
        struct.pack_into("<I", data, fmt + 4, fields["rate"])
    if "data_size" in fields:
        struct.pack_into("<I", data, data.index(b"data") + 4, fields["data_size"])
    return bytes(data)


def form(audio: bytes, filename: str = "audio.wav", **fields: str | list[str]) -> aiohttp.FormData:
    data = aiohttp.FormData()
    data.add_field("file", audio, filename=filename, content_type="application/octet-stream")
    for key, value in fields.items():
        for v in value if isinstance(value, list) else [value]:
            data.add_field(key.replace("__", "[]"), v)  # timestamp_granularities__ -> [...][]
    return data


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


async def raw_request(
    port: int,
    head: str,
    body_chunks: list[bytes] | None = None,
    *,
    chunk_delay: float = 0.0,
    keep_sending: bool = False,
    timeout: float = 10.0,
) -> tuple[RawResponse, int]:
    """Send a hand-written request (head without the final blank line) over a raw socket and
    read the answer. Body chunks are sent as given (the caller frames them); with
    `keep_sending` the chunks are cycled until the server answers. Returns the response and
    the number of body bytes sent before it arrived."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = 0

    async def send() -> None:
        nonlocal sent
        writer.write(head.encode() + b"\r\n\r\n")
        await writer.drain()
        chunks = body_chunks or []
        while chunks:
            for chunk in chunks:
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
                if chunk_delay:
                    await asyncio.sleep(chunk_delay)
            if not keep_sending:
                break

    async def receive() -> RawResponse:
        status_line = await reader.readline()
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            key, _, value = line.decode().partition(":")
            headers[key.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return RawResponse(int(status_line.split()[1]), headers, body)

    sender = asyncio.create_task(send())
    try:
        response = await asyncio.wait_for(receive(), timeout)
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        writer.close()
    return response, sent


def chunked(data: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def assert_error_body(
    body: dict, status: int, code: str | None = None, param: str | None = None
) -> None:
    """OpenAI's error shape, no internals, and the expected code / param."""
    assert set(body) == {"error"}, body
    error = body["error"]
    assert {"message", "type", "code"} <= set(error), error
    assert isinstance(error["message"], str) and error["message"], error
    if code is not None:
        assert error["code"] == code, error
    if param is not None:
        assert error["param"] == param, error
    text = json.dumps(body)
    for leak in ("Traceback", ".py", "site-packages", "Exception", "Error:", "/work", "/tmp"):
        assert leak not in text, f"{leak!r} leaked into {text}"
    assert status >= 400
