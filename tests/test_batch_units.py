"""In-process checks of the batch building blocks where a real server run would be slow or
cannot show the case: the upload deadline, option completeness, subtitle timestamps."""

from __future__ import annotations

import inspect

import pytest
from aiohttp import web
from faster_whisper import WhisperModel

from stt_sidecar import upload
from stt_sidecar.errors import error_middleware
from stt_sidecar.formats import srt, vtt
from stt_sidecar.whisper_options import DecodeRequest, decode_options, temperatures

from .batch_support import assert_error_body, raw_request


def test_every_transcribe_option_is_explicit() -> None:
    """faster-whisper's two transcribe methods differ in defaults: we pass every one."""
    parameters = set(inspect.signature(WhisperModel.transcribe).parameters) - {"self", "audio"}
    options = decode_options(DecodeRequest())
    assert set(options) == parameters
    assert options["vad_filter"] is True
    assert options["condition_on_previous_text"] is False
    assert options["beam_size"] == 1


def test_temperature_ladder() -> None:
    assert temperatures(None) == (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    assert temperatures(0.0) == (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    assert temperatures(0.5) == (0.5, 0.6, 0.8, 1.0)


class _Seg:
    def __init__(self, start: float, end: float, text: str) -> None:
        self.start, self.end, self.text = start, end, text


def test_subtitle_timestamps_past_an_hour() -> None:
    segments = [_Seg(0.0, 1.5, " Hello."), _Seg(3723.4567, 3725.0, " Later.")]
    assert srt(segments) == (
        "1\n00:00:00,000 --> 00:00:01,500\nHello.\n\n2\n01:02:03,457 --> 01:02:05,000\nLater.\n"
    )
    assert vtt(segments).startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello.\n")
    assert "01:02:03.457 --> 01:02:05.000\nLater.\n" in vtt(segments)


async def test_trickling_upload_hits_the_overall_deadline(
    aiohttp_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client sending a little just often enough to dodge the idle timeout still gets 408
    once the body deadline (size limit at the minimum rate) has passed."""
    monkeypatch.setattr(upload, "MIN_UPLOAD_BYTES_PER_S", 32 * 1024)

    async def handler(request: web.Request) -> web.Response:
        got = await upload.read_upload(request, max_bytes=32 * 1024, idle_timeout=1.0)
        return web.json_response({"bytes": len(got.audio)})

    app = web.Application(middlewares=[error_middleware])
    app.router.add_post("/up", handler)
    server = await aiohttp_server(app)
    head = "POST /up HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\nContent-Length: 30000"
    # 500 bytes every 0.3 s: never idle for 1 s, but 2 s (1 s + 32 KiB at 32 KiB/s) pass first
    response, sent = await raw_request(
        server.port, head, [b"x" * 500] * 59, chunk_delay=0.3, timeout=10
    )
    assert response.status == 408
    assert_error_body(response.json(), 408, "timeout")
    assert "too slow" in response.json()["error"]["message"]
    assert sent < 30000
