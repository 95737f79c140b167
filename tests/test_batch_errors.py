"""Every batch error path on a real sidecar with an API key and tiny limits: status, OpenAI's
error shape, no internals in the body, and the server still transcribing the next request."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aiohttp
import openai
import pytest
from multidict import CIMultiDict

from .batch_support import (
    assert_error_body,
    chunked,
    form,
    patched_wav,
    raw_request,
)
from .support.sidecar import SidecarProcess
from .support.speech import clip, wer

API_KEY = "test-key-0123"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
MAX_UPLOAD = 512 * 1024  # STT_MAX_UPLOAD_MB=0.5
SHORT = clip("goforward.wav")  # 2.8 s: under the 5 s cap
LONG = clip("jfk.wav")  # 11 s: over it


@pytest.fixture(scope="module")
def strict() -> Iterator[SidecarProcess]:
    proc = SidecarProcess(
        STT_API_KEY=API_KEY,
        STT_MAX_UPLOAD_MB="0.5",
        STT_MAX_AUDIO_SECONDS="5",
        STT_READ_TIMEOUT_S="1",
        STT_MAX_PENDING="1",
    ).start()
    yield proc
    proc.stop()


async def post(
    url: str,
    data,
    headers: dict | None = None,
    path: str = "/transcribe",
) -> tuple[int, CIMultiDict[str], dict]:
    async with aiohttp.ClientSession() as http:
        async with http.post(url + path, data=data, headers={**AUTH, **(headers or {})}) as r:
            return r.status, r.headers.copy(), await r.json(content_type=None)


async def assert_still_serving(url: str) -> None:
    status, _, body = await post(url, form(SHORT.path.read_bytes()))
    assert status == 200, body
    assert wer(SHORT.text, body["text"]) <= 0.3, body


async def expect_error(
    url: str,
    data,
    status: int,
    code: str | None,
    param: str | None = None,
    headers: dict | None = None,
    path: str = "/transcribe",
    check_after: bool = True,
) -> dict:
    got, response_headers, body = await post(url, data, headers, path)
    assert got == status, body
    assert response_headers.get("X-Request-Id")
    assert_error_body(body, status, code, param)
    if check_after:
        await assert_still_serving(url)
    return body


# -- auth ----------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "Bearer wrong-key", "Basic dGVzdA==", "Bearer "])
async def test_missing_or_wrong_key_is_401(strict: SidecarProcess, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    async with aiohttp.ClientSession() as http:
        for method, path in (
            ("POST", "/transcribe"),
            ("POST", "/v1/audio/transcriptions"),
            ("GET", "/v1/models"),
            ("GET", "/ready"),
        ):
            async with http.request(
                method,
                strict.url + path,
                headers=headers,
                data=form(SHORT.path.read_bytes()) if method == "POST" else None,
            ) as r:
                assert r.status == 401, path
                assert_error_body(await r.json(), 401, "invalid_api_key")
        async with http.get(strict.url + "/health") as r:  # open for liveness probes
            assert r.status == 200
    await assert_still_serving(strict.url)


def test_openai_client_with_key(strict: SidecarProcess) -> None:
    good = openai.OpenAI(base_url=strict.url + "/v1", api_key=API_KEY, max_retries=0)
    result = good.audio.transcriptions.create(model="whisper-1", file=SHORT.path.open("rb"))
    assert wer(SHORT.text, result.text) <= 0.3
    bad = openai.OpenAI(base_url=strict.url + "/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.audio.transcriptions.create(model="whisper-1", file=SHORT.path.open("rb"))
    assert info.value.status_code == 401


# -- body size and time --------------------------------------------------------------------


async def test_declared_oversize_is_refused_before_reading(strict: SidecarProcess) -> None:
    head = (
        "POST /transcribe HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {API_KEY}\r\n"
        "Content-Type: audio/wav\r\nContent-Length: 4294967296"
    )
    response, sent = await raw_request(strict.port, head, timeout=5)
    assert response.status == 413 and sent == 0
    assert_error_body(response.json(), 413, "too_large")
    await assert_still_serving(strict.url)


async def test_oversize_over_the_limit_413(strict: SidecarProcess) -> None:
    """With an honest Content-Length through aiohttp's client, for both body kinds."""
    big = SHORT.path.read_bytes() * 8  # ~710 kB > 512 KiB
    await expect_error(strict.url, form(big), 413, "too_large")
    await expect_error(strict.url, big, 413, "too_large", headers={"Content-Type": "audio/wav"})


@pytest.mark.parametrize("kind", ["raw", "multipart"])
async def test_chunked_oversize_is_cut_while_streaming(strict: SidecarProcess, kind: str) -> None:
    """A chunked body has no length up front: the server answers 413 once the limit is passed,
    while the client is still sending (it would send 100 MB)."""
    if kind == "raw":
        content_type, prefix, suffix = "audio/wav", b"", b""
    else:
        content_type = "multipart/form-data; boundary=XyZ"
        prefix = (
            b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            b"Content-Type: audio/wav\r\n\r\n"
        )
        suffix = b"\r\n--XyZ--\r\n"
    head = (
        "POST /transcribe HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {API_KEY}\r\n"
        f"Content-Type: {content_type}\r\nTransfer-Encoding: chunked"
    )
    block = b"\x01\x02" * 32768
    chunks = [chunked(prefix + block)] + [chunked(block)] * 1600 + [chunked(suffix), b"0\r\n\r\n"]
    total = sum(len(c) for c in chunks)
    # paced at >= 1 ms per 64 KiB so that "sent" measures the server, not socket buffers
    response, sent = await raw_request(strict.port, head, chunks, chunk_delay=0.001, timeout=20)
    assert response.status == 413
    assert_error_body(response.json(), 413, "too_large")
    assert sent < total / 4, sent  # answered long before the 100 MB were sent
    await assert_still_serving(strict.url)


async def test_stalled_upload_408_and_full_queue_503(strict: SidecarProcess) -> None:
    """A client that stops mid-body holds the only batch slot (STT_MAX_PENDING=1): the next
    request gets 503 + Retry-After at once; the stalled one gets 408 after 1 s of silence."""
    head = (
        "POST /transcribe HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {API_KEY}\r\n"
        "Content-Type: audio/wav\r\nContent-Length: 90000"
    )
    stalled = asyncio.create_task(
        raw_request(strict.port, head, [SHORT.path.read_bytes()[:1000]], timeout=10)
    )
    await asyncio.sleep(0.3)
    status, headers, body = await post(strict.url, form(SHORT.path.read_bytes()))
    assert status == 503, body
    assert_error_body(body, 503, "overloaded")
    assert int(headers["Retry-After"]) >= 1
    response, _ = await stalled
    assert response.status == 408
    assert_error_body(response.json(), 408, "timeout")
    await assert_still_serving(strict.url)


# -- media types and audio -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        ("text/plain", b"hello"),
        ("application/json", b'{"file": "speech.wav"}'),
        ("application/x-www-form-urlencoded", b"file=speech.wav"),
    ],
)
async def test_unsupported_media_type_415(
    strict: SidecarProcess, content_type: str, data: bytes
) -> None:
    for path in ("/transcribe", "/v1/audio/transcriptions"):
        await expect_error(
            strict.url,
            data,
            415,
            "unsupported_media_type",
            headers={"Content-Type": content_type},
            path=path,
            check_after=False,
        )
    await assert_still_serving(strict.url)


@pytest.mark.parametrize(
    ("headers", "data"),
    [
        ({"Content-Type": "multipart/form-data"}, b"no boundary"),
        ({"Content-Type": "multipart/form-data; boundary=abc"}, b"no parts at all"),
        (
            {"Content-Type": "multipart/form-data; boundary=abc"},
            b'--abc\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nends',
        ),
        ({"Content-Type": "audio/wav", "Content-Encoding": "gzip"}, b"not gzip data"),
    ],
    ids=["no_boundary", "no_parts", "unterminated", "bad_gzip"],
)
async def test_malformed_body_400(strict: SidecarProcess, headers: dict, data: bytes) -> None:
    await expect_error(strict.url, data, 400, "invalid_request", headers=headers)


@pytest.mark.parametrize(
    ("audio", "code"),
    [
        (b"", "empty_audio"),
        (b"this is not audio at all " * 40, "invalid_audio"),
        (SHORT.path.read_bytes()[:44], "empty_audio"),  # a header and no samples
        (patched_wav("goforward.wav", rate=1), "invalid_audio"),
        (patched_wav("goforward.wav", rate=10_000_000), "invalid_audio"),
        (patched_wav("goforward.wav", channels=0), "invalid_audio"),
        (patched_wav("goforward.wav", rate=1000), "audio_too_long"),  # 2.8 s now says 44 s
        (LONG.path.read_bytes(), "audio_too_long"),
    ],
    ids=[
        "empty",
        "garbage",
        "header_only",
        "rate_1hz",
        "rate_10mhz",
        "zero_channels",
        "rate_1khz_too_long",
        "over_max_seconds",
    ],
)
async def test_unusable_audio_400(strict: SidecarProcess, audio: bytes, code: str) -> None:
    await expect_error(strict.url, form(audio), 400, code, param="file")


async def test_4gb_data_size_header_decodes_what_is_there(strict: SidecarProcess) -> None:
    """0xFFFFFFFF is what streaming WAV writers (ffmpeg to a pipe) put in the data size: the
    decoder never trusts it for allocation and transcribes the samples actually present."""
    status, _, body = await post(
        strict.url, form(patched_wav("goforward.wav", data_size=0xFFFFFFFF))
    )
    assert status == 200, body
    assert wer(SHORT.text, body["text"]) <= 0.3


async def test_missing_file_field_400(strict: SidecarProcess) -> None:
    for path in ("/transcribe", "/v1/audio/transcriptions"):
        data = aiohttp.FormData()
        data.add_field("language", "en")
        data.add_field("other", b"x", filename="x.bin")  # a file, but not in `file`
        await expect_error(strict.url, data, 400, "missing_file", param="file", path=path)


# -- parameters ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "fields", "param"),
    [
        ("/transcribe", {"language": "xx"}, "language"),
        ("/transcribe", {"language": "de"}, "language"),  # tiny.en is English-only
        ("/transcribe", {"task": "summarize"}, "task"),
        ("/transcribe", {"task": "translate"}, "task"),  # English-only model
        ("/transcribe", {"word_timestamps": "maybe"}, "word_timestamps"),
        ("/v1/audio/transcriptions", {"model": "gpt-4"}, "model"),
        ("/v1/audio/transcriptions", {"model": "../../etc/passwd"}, "model"),
        ("/v1/audio/transcriptions", {"temperature": "2"}, "temperature"),
        ("/v1/audio/transcriptions", {"temperature": "warm"}, "temperature"),
        ("/v1/audio/transcriptions", {"response_format": "xml"}, "response_format"),
        (
            "/v1/audio/transcriptions",
            {"response_format": "verbose_json", "timestamp_granularities__": "char"},
            "timestamp_granularities[]",
        ),
        ("/v1/audio/translations", {"model": "whisper-1"}, "model"),  # English-only model
    ],
)
async def test_bad_parameter_400_names_it(
    strict: SidecarProcess, path: str, fields: dict, param: str
) -> None:
    body = await expect_error(
        strict.url, form(SHORT.path.read_bytes(), **fields), 400, None, param=param, path=path
    )
    assert body["error"]["type"] == "invalid_request_error"


async def test_unknown_endpoint_and_method(strict: SidecarProcess) -> None:
    async with aiohttp.ClientSession(headers=AUTH) as http:
        async with http.get(strict.url + "/v1/audio/speech") as r:
            assert r.status == 404
            assert_error_body(await r.json(), 404, "not_found")
        async with http.get(strict.url + "/transcribe") as r:
            assert r.status == 405
            assert_error_body(await r.json(), 405, "method_not_allowed")
        async with http.get(strict.url + "/v1/models/gpt-4o") as r:
            assert r.status == 404
            assert_error_body(await r.json(), 404, "model_not_found")
    await assert_still_serving(strict.url)


async def test_request_id_is_echoed_on_errors(strict: SidecarProcess) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            strict.url + "/transcribe",
            data=b"",
            headers={**AUTH, "Content-Type": "text/plain", "X-Request-Id": "trace-42"},
        ) as r:
            assert r.status == 415
            assert r.headers["X-Request-Id"] == "trace-42"
    assert "trace-42" in strict.log()  # the failure is logged under the same id


async def test_model_not_ready_503_with_retry_after() -> None:
    """Between the port opening and the warm-up decode finishing (about a second), batch
    requests get 503 model_not_ready with Retry-After, and /health already answers."""
    proc = SidecarProcess().start(wait=False)
    try:
        first = None
        async with aiohttp.ClientSession() as http:
            for _ in range(600):
                try:
                    async with http.post(
                        proc.url + "/transcribe", data=form(SHORT.path.read_bytes())
                    ) as r:
                        first = (r.status, r.headers.copy(), await r.json())
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.02)  # not listening yet
            assert first is not None, proc.log()
            if first[0] == 200:
                pytest.skip("the warm-up finished before the first request could be sent")
            status, headers, body = first
            assert status == 503
            assert_error_body(body, 503, "model_not_ready")
            assert int(headers["Retry-After"]) >= 1
            async with http.get(proc.url + "/health") as r:
                assert r.status == 200
        await asyncio.get_running_loop().run_in_executor(None, proc.wait_ready)
        await assert_still_serving_open(proc.url)
        # No STT_MAX_STREAMS here: the stream budget was derived from a timed decode and logged.
        async with aiohttp.ClientSession() as http, http.get(proc.url + "/ready") as r:
            assert (await r.json())["max_streams"] >= 1
        assert "derived from a" in proc.log()
    finally:
        proc.stop()


async def assert_still_serving_open(url: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/transcribe", data=form(SHORT.path.read_bytes())) as r:
            assert r.status == 200
            assert wer(SHORT.text, (await r.json())["text"]) <= 0.3
