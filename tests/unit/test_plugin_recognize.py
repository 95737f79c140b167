"""custom_stt.STT.recognize() against an in-process OpenAI-compatible endpoint: request shape,
result conversion and HTTP error mapping (the real sidecar is in tests/test_plugin_batch.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from livekit import rtc
from livekit.agents import APIConnectionError, APIConnectOptions, APIStatusError, stt
from livekit.plugins import custom_stt

from .fake_sidecar import serve

NO_RETRY = APIConnectOptions(max_retry=0, timeout=5.0)
VERBOSE = {
    "text": " Go forward. ",
    "language": "english",
    "duration": 1.0,
    "words": [{"word": "Go", "start": 0.1, "end": 0.4, "probability": 0.9}],
}


@dataclass
class FakeBatch:
    """Answers every POST with ``status`` and ``body``; records each request's form."""

    status: int = 200
    body: Any = field(default_factory=lambda: VERBOSE)
    content_type: str = "text/plain"  # of a str body
    requests: list[tuple[str, dict[str, list[Any]], dict[str, str]]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        form: dict[str, list[Any]] = {}
        for key, value in (await request.post()).items():
            form.setdefault(key, []).append(value)
        self.requests.append((request.path, form, dict(request.headers)))
        headers = {"X-Request-Id": "req-7"}
        if isinstance(self.body, str):
            return web.Response(
                status=self.status, text=self.body, content_type=self.content_type, headers=headers
            )
        return web.json_response(self.body, status=self.status, headers=headers)


@pytest.fixture
async def batch() -> AsyncIterator[tuple[FakeBatch, str]]:
    fake = FakeBatch()
    app = web.Application()
    app.router.add_post("/v1/audio/transcriptions", fake.handle)
    app.router.add_post("/v1/audio/translations", fake.handle)
    async with serve(app) as url:
        yield fake, url


def one_second() -> list[rtc.AudioFrame]:
    pcm = np.zeros(16000, dtype=np.int16)
    return [rtc.AudioFrame(pcm.tobytes(), 16000, 1, len(pcm))]


async def test_request_shape_and_result(batch: tuple[FakeBatch, str]) -> None:
    fake, url = batch
    engine = custom_stt.STT(base_url=url, api_key="k", language="en-US", prompt="Kim")
    ev = await engine.recognize(one_second(), conn_options=NO_RETRY)
    await engine.aclose()
    path, form, headers = fake.requests[0]
    assert path == "/v1/audio/transcriptions"
    assert headers["Authorization"] == "Bearer k"
    assert form["model"] == ["whisper-1"] and form["response_format"] == ["verbose_json"]
    assert form["timestamp_granularities[]"] == ["word", "segment"]
    assert form["language"] == ["en"] and form["prompt"] == ["Kim"]
    assert form["file"][0].filename == "audio.wav"
    assert ev.type == stt.SpeechEventType.FINAL_TRANSCRIPT and ev.request_id == "req-7"
    alt = ev.alternatives[0]
    assert (alt.text, alt.language, alt.confidence) == ("Go forward.", "en", 0.9)
    assert (alt.start_time, alt.end_time) == (0.1, 0.4)


async def test_translate_detect_and_no_prompt(batch: tuple[FakeBatch, str]) -> None:
    fake, url = batch
    fake.body = {"text": "Hello", "duration": 1.0}
    engine = custom_stt.STT(base_url=url, api_key=None, language=None, task="translate")
    ev = await engine.recognize(one_second(), conn_options=NO_RETRY)
    await engine.aclose()
    path, form, headers = fake.requests[0]
    assert path == "/v1/audio/translations"
    assert "language" not in form and "prompt" not in form and "Authorization" not in headers
    assert ev.alternatives[0].language == "" and ev.alternatives[0].end_time == 1.0


@pytest.mark.parametrize(
    ("status", "body", "retryable", "message"),
    [
        (401, {"error": {"message": "invalid API key", "code": "invalid_api_key"}}, False, "key"),
        (400, {"error": {"message": "bad language", "param": "language"}}, False, "language"),
        (503, {"error": {"message": "busy"}}, True, "busy"),
        (500, "Internal Server Error", True, "Internal Server Error"),
    ],
)
async def test_http_errors_keep_status_and_message(
    batch: tuple[FakeBatch, str], status: int, body: object, retryable: bool, message: str
) -> None:
    fake, url = batch
    fake.status, fake.body = status, body
    engine = custom_stt.STT(base_url=url, api_key="secret-key")
    with pytest.raises(APIStatusError) as exc:
        await engine.recognize(one_second(), conn_options=NO_RETRY)
    await engine.aclose()
    assert (exc.value.status_code, exc.value.retryable) == (status, retryable)
    assert message in exc.value.message and exc.value.request_id == "req-7"
    assert "secret-key" not in repr(exc.value)


@pytest.mark.parametrize(
    ("content_type", "message"),
    [("application/json", "not JSON"), ("text/html", "ContentTypeError")],
)
async def test_a_body_that_is_not_json_is_a_retryable_connection_error(
    batch: tuple[FakeBatch, str], content_type: str, message: str
) -> None:
    fake, url = batch
    fake.body, fake.content_type = "<html>proxy page</html>", content_type
    engine = custom_stt.STT(base_url=url)
    with pytest.raises(APIConnectionError) as exc:
        await engine.recognize(one_second(), conn_options=NO_RETRY)
    await engine.aclose()
    assert message in exc.value.message and exc.value.retryable
