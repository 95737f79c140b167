"""Security with `STT_API_KEY` set: who gets in, what stays open, where the server listens.

Decisions this module pins down:
- The scheme is case-insensitive (`bearer`, `BEARER`): RFC 7235 section 2.1 says so, and some
  clients lowercase it. The key itself is compared exactly, in constant time.
- A key in the query string (`?api_key=`) is refused: query strings end up in proxy and access
  logs, browser history and Referer headers.
- `/health` stays open (liveness probes carry no secrets). `/metrics` needs the key: its
  counters reveal traffic volume, error mix and load, which is reconnaissance for whoever can
  reach the port; Prometheus sends a bearer token with `authorization: {credentials: ...}`.
- Unknown paths answer 401, not 404, without the key: no route discovery without it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator

import aiohttp
import psutil
import pytest

from stt_sidecar.__main__ import _is_loopback
from stt_sidecar.model import bundled_model_path
from stt_sidecar.replay import replay

from ..batch_support import form, raw_request
from ..support.sidecar import SidecarProcess
from ..support.speech import clip, read_pcm16, wer
from .http_support import LEAK_LOG, assert_no_leaks, assert_transcribes, fetch

KEY = "sk-local-3f9a7c1e5b2d4f60"
GOOD = {"Authorization": f"Bearer {KEY}"}
SHORT = clip("goforward.wav")
JFK = clip("jfk.wav")


@pytest.fixture(scope="module")
def keyed() -> Iterator[SidecarProcess]:
    """A sidecar with an API key and *no* STT_HOST: the default bind is under test."""
    proc = SidecarProcess(STT_API_KEY=KEY)
    del proc.env["STT_HOST"]
    proc.start()
    yield proc
    proc.stop()


BAD_CREDENTIALS: dict[str, tuple[dict[str, str], str]] = {
    # name: (headers, query string)
    "missing": ({}, ""),
    "wrong_key": ({"Authorization": "Bearer not-the-key"}, ""),
    "empty_bearer": ({"Authorization": "Bearer "}, ""),
    "basic": ({"Authorization": "Basic " + base64.b64encode(f"user:{KEY}".encode()).decode()}, ""),
    "basic_raw_key": ({"Authorization": f"Basic {KEY}"}, ""),
    "token_scheme": ({"Authorization": f"Token {KEY}"}, ""),
    "no_scheme": ({"Authorization": KEY}, ""),
    "no_space": ({"Authorization": f"Bearer{KEY}"}, ""),
    "query_only": ({}, f"?api_key={KEY}"),
    "query_access_token": ({}, f"?access_token={KEY}"),
    "prefix_of_key": ({"Authorization": f"Bearer {KEY[:-1]}"}, ""),
    "short_prefix": ({"Authorization": f"Bearer {KEY[:3]}"}, ""),
    "key_plus_suffix": ({"Authorization": f"Bearer {KEY}0"}, ""),
    "key_plus_word": ({"Authorization": f"Bearer {KEY} extra"}, ""),
    "key_uppercased": ({"Authorization": f"Bearer {KEY.upper()}"}, ""),
    "x_api_key_header": ({"X-Api-Key": KEY}, ""),
    "proxy_authorization": ({"Proxy-Authorization": f"Bearer {KEY}"}, ""),
    # where browser WebSocket clients sometimes smuggle a token: not a credential here
    "ws_subprotocol": ({"Sec-WebSocket-Protocol": KEY}, ""),
    "cookie": ({"Cookie": f"api_key={KEY}"}, ""),
}

HTTP_ENDPOINTS = [
    ("GET", "/ready"),
    ("GET", "/metrics"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/whisper-1"),
    ("POST", "/transcribe"),
    ("POST", "/v1/audio/transcriptions"),
    ("POST", "/v1/audio/translations"),
    ("GET", "/v1/stream"),  # without the upgrade headers
    ("GET", "/v1/realtime"),  # also takes the key as `openai-insecure-api-key.<key>`, only so
    ("GET", "/no/such/path"),  # 401, not 404: no route discovery without the key
]


@pytest.mark.parametrize("name", list(BAD_CREDENTIALS))
async def test_bad_credentials_are_401_everywhere(keyed: SidecarProcess, name: str) -> None:
    headers, query = BAD_CREDENTIALS[name]
    async with aiohttp.ClientSession() as http:
        for method, path in HTTP_ENDPOINTS:
            data = form(SHORT.path.read_bytes()) if method == "POST" else None
            answer = await fetch(http, method, keyed.url + path + query, headers=headers, data=data)
            assert answer.status == 401, (path, answer.text)
            error = json.loads(answer.text)["error"]
            assert error["code"] == "invalid_api_key"
            assert KEY not in answer.text and KEY[:8] not in answer.text
            assert answer.headers.get("X-Request-Id")
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(keyed.ws_url + query, headers=headers)
        assert refused.value.status == 401


async def test_websocket_is_refused_before_the_upgrade(keyed: SidecarProcess) -> None:
    """On the wire: a plain `401` answer to the upgrade request, never `101`."""
    response, _ = await raw_request(
        keyed.port,
        "GET /v1/stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        "Authorization: Bearer wrong",
        timeout=5,
    )
    LEAK_LOG.record("ws upgrade 401", response.body.decode(errors="replace"))
    assert response.status == 401
    assert "upgrade" not in response.headers.get("connection", "").lower()


@pytest.mark.parametrize(
    "credential",
    [b"Bearer \xff\xfe", b"Bearer " + KEY.encode() + b"\xff", b"\xff\xfe " + KEY.encode()],
    ids=["invalid_utf8_token", "key_plus_invalid_utf8", "invalid_utf8_scheme"],
)
async def test_non_utf8_credentials_are_401(keyed: SidecarProcess, credential: bytes) -> None:
    """Header bytes that are not UTF-8 reach the middleware surrogate-escaped; turning such a
    token back into bytes must not raise (it did: a 503 and a logged traceback for every
    unauthenticated request, a cheap way to flood the log)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", keyed.port)
    try:
        writer.write(
            b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: "
            + credential
            + b"\r\n\r\n"
        )
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    LEAK_LOG.record("non-utf8 credential", body.decode(errors="replace"))
    assert head.startswith(b"HTTP/1.1 401"), answer[:300]
    assert json.loads(body)["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
async def test_right_key_is_accepted_with_any_scheme_case(
    keyed: SidecarProcess, scheme: str
) -> None:
    headers = {"Authorization": f"{scheme} {KEY}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        for path in ("/ready", "/v1/models", "/metrics"):
            assert (await fetch(http, "GET", keyed.url + path)).status == 200
        async with http.ws_connect(keyed.ws_url) as ws:
            await ws.send_str(json.dumps({"type": "config", "sample_rate": 16000}))
            assert (await ws.receive_json(timeout=10))["type"] == "ready"
    await assert_transcribes(keyed, headers)


async def test_health_stays_open(keyed: SidecarProcess) -> None:
    async with aiohttp.ClientSession() as http:
        answer = await fetch(http, "GET", keyed.url + "/health", headers={"Authorization": "x"})
        assert answer.status == 200
        assert (await fetch(http, "GET", keyed.url + "/health")).status == 200


async def test_metrics_need_the_key_and_leak_neither_transcripts_nor_keys(
    keyed: SidecarProcess,
) -> None:
    """After batch and streaming traffic (and failed logins), /metrics holds counters only."""
    async with aiohttp.ClientSession(headers=GOOD) as http:
        answer = await fetch(
            http, "POST", keyed.url + "/v1/audio/transcriptions", data=form(JFK.path.read_bytes())
        )
        assert wer(JFK.text, json.loads(answer.text)["text"]) <= 0.2
        audio, rate = read_pcm16(SHORT.path)
        result = await replay(keyed.ws_url, audio.reshape(-1, 1), rate, speed=0, api_key=KEY)
        assert wer(SHORT.text, " ".join(f["text"] for f in result.finals)) <= 0.3
        async with aiohttp.ClientSession() as anonymous:
            await fetch(anonymous, "GET", keyed.url + "/metrics", headers={"Authorization": "x"})
            refused = await fetch(anonymous, "GET", keyed.url + "/metrics")
        assert refused.status == 401
        metrics = await fetch(http, "GET", keyed.url + "/metrics")
    assert metrics.status == 200
    text = metrics.text.lower()
    assert "stt_" in text or "http_requests" in text  # it is the real exposition
    for secret in ("country", "americans", "forward", "meters", KEY.lower(), KEY[:8].lower()):
        assert secret not in text, secret


def test_default_bind_is_loopback_only(keyed: SidecarProcess) -> None:
    assert keyed.proc is not None and "STT_HOST" not in keyed.env
    listening = [
        c
        for c in psutil.Process(keyed.proc.pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    assert listening, "the sidecar listens on nothing?"
    assert {c.laddr.ip for c in listening} == {"127.0.0.1"}, listening
    assert {c.laddr.port for c in listening} == {keyed.port}


async def wait_for_log(proc: SidecarProcess, needle: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = proc.log()
        if needle in log:
            return log
        assert proc.proc is not None and proc.proc.poll() is None, log
        await asyncio.sleep(0.1)
    raise AssertionError(f"{needle!r} never logged:\n{proc.log()}")


@pytest.mark.parametrize("with_key", [False, True])
async def test_public_bind_without_key_warns(with_key: bool) -> None:
    """STT_HOST=0.0.0.0: a clear warning unless a key is set. No traffic is sent to it."""
    env = {"STT_HOST": "0.0.0.0"}
    if with_key:
        env["STT_API_KEY"] = KEY
    proc = SidecarProcess(**env).start(wait=False)
    try:
        log = await wait_for_log(proc, "stt sidecar on http://0.0.0.0")
    finally:
        proc.stop()
    warning = [line for line in log.splitlines() if "WARNING" in line and "STT_API_KEY" in line]
    if with_key:
        assert warning == [], warning
        assert KEY not in log  # the key is never logged
    else:
        assert len(warning) == 1, log
        assert "0.0.0.0" in warning[0] and "anyone" in warning[0], warning


async def test_a_local_model_directory_is_not_exposed() -> None:
    """STT_MODEL may be a directory on the server; clients see only its last component
    (/ready, /v1/models, errors naming the model), never the path."""
    path = bundled_model_path()
    proc = SidecarProcess(STT_MODEL=str(path), STT_API_KEY=KEY).start()
    try:
        async with aiohttp.ClientSession(headers=GOOD) as http:
            seen = [
                await fetch(http, "GET", proc.url + "/ready"),
                await fetch(http, "GET", proc.url + "/v1/models"),
                await fetch(
                    http,
                    "POST",
                    proc.url + "/v1/audio/transcriptions",
                    data=form(SHORT.path.read_bytes(), model="nope"),
                ),
            ]
    finally:
        proc.stop()
    assert [a.status for a in seen] == [200, 200, 400]
    for answer in seen:
        assert str(path) not in answer.text and str(path.parent) not in answer.text
        assert path.name in answer.text


def test_loopback_detection() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert _is_loopback(host), host
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.com", ""):
        assert not _is_loopback(host), host


async def test_still_correct_afterwards(keyed: SidecarProcess) -> None:
    await assert_transcribes(keyed, GOOD, name="jfk.wav")
    # neither the key nor the credentials strangers tried end up in the server's log
    log = keyed.log()
    assert KEY not in log and "not-the-key" not in log


def test_leak_scan() -> None:
    """Every body, error message and stream message this session has seen so far."""
    assert_no_leaks()
