"""Hostile and malformed HTTP input against a dedicated sidecar with small limits.

Every test asserts the answer is a client error (never >= 500) in OpenAI's error shape where the
sidecar itself answers, that it comes quickly, and the module ends by transcribing real speech.
`tests/test_batch_errors.py` already covers the everyday error paths (415s, bad parameters,
stalled raw upload, declared and chunked oversize on `/transcribe`); this module covers what
issue 7 adds on top: random and truncated audio, every lying WAV header, audio that decodes to
hours, hostile multipart forms, huge text fields, path-like model names, request smuggling
shapes and bodies that lie about their length.
"""

from __future__ import annotations

import asyncio
import io
import json
import struct
import time
import zlib
from collections.abc import Iterator

import aiohttp
import av
import numpy as np
import pytest

from ..batch_support import chunked, form, patched_wav, raw_request
from ..support.resources import rss_bytes
from ..support.sidecar import SidecarProcess
from ..support.speech import clip, normalize, read_pcm16, wer
from .http_support import LEAK_LOG, Answer, assert_no_leaks, assert_transcribes, fetch

MAX_UPLOAD_MB = 4
MAX_AUDIO_S = 60
SHORT = clip("goforward.wav")  # 2.8 s
JFK = clip("jfk.wav")  # 11 s
OPENAI = "/v1/audio/transcriptions"
ENDPOINTS = ("/transcribe", OPENAI)


@pytest.fixture(scope="module")
def server() -> Iterator[SidecarProcess]:
    proc = SidecarProcess(
        STT_MAX_UPLOAD_MB=str(MAX_UPLOAD_MB),
        STT_MAX_AUDIO_SECONDS=str(MAX_AUDIO_S),
        STT_READ_TIMEOUT_S="1",
        STT_MAX_PENDING="4",
    ).start()
    yield proc
    proc.stop()


async def post(
    proc: SidecarProcess,
    data,
    path: str = OPENAI,
    headers: dict[str, str] | None = None,
    timeout: float = 20.0,
) -> Answer:
    async with aiohttp.ClientSession() as http:
        return await fetch(
            http, "POST", proc.url + path, data=data, headers=headers, timeout=timeout
        )


def error_of(answer: Answer, status: int, code: str | None = None) -> dict:
    """The OpenAI-shaped error in `answer`, after checking status and code."""
    assert answer.status == status, answer.text
    error = json.loads(answer.text)["error"]
    assert {"message", "type", "code"} <= set(error)
    if code is not None:
        assert error["code"] == code, error
    return error


def text_of(answer: Answer) -> str:
    assert answer.status == 200, answer.text
    return json.loads(answer.text)["text"]


# -- audio that is not what it says --------------------------------------------------------


@pytest.mark.parametrize("size", [1, 17, 1000, 65_536, 3 << 20])
async def test_random_bytes_are_400(server: SidecarProcess, size: int) -> None:
    data = np.random.default_rng(size).bytes(size)
    started = time.monotonic()
    error_of(await post(server, form(data)), 400, "invalid_audio")
    assert time.monotonic() - started < 5


async def test_truncated_wav(server: SidecarProcess) -> None:
    """Cut inside the header: 400. Cut inside the data: the samples that are there are
    transcribed, and nothing that is not in the speech appears."""
    wav = SHORT.path.read_bytes()
    for cut in (4, 12, 30, 43):
        error_of(await post(server, form(wav[:cut])), 400, "invalid_audio")
    error_of(await post(server, form(wav[:44])), 400, "empty_audio")
    reference = set(normalize(SHORT.text).split())
    for cut in (47, len(wav) // 2, len(wav) - 1):  # 47: an odd byte count of samples
        heard = set(normalize(text_of(await post(server, form(wav[:cut])))).split())
        assert heard <= reference, heard


def patch_bits(wav: bytes, bits: int) -> bytes:
    data = bytearray(wav)
    struct.pack_into("<H", data, data.index(b"fmt ") + 8 + 14, bits)
    return bytes(data)


@pytest.mark.parametrize(
    "audio",
    [
        patched_wav("goforward.wav", rate=0),
        patched_wav("goforward.wav", rate=1),
        patched_wav("goforward.wav", rate=10_000_000),
        patched_wav("goforward.wav", channels=0),
        patched_wav("goforward.wav", channels=65535),
        patch_bits(SHORT.path.read_bytes(), 0),
    ],
    ids=["rate_0", "rate_1hz", "rate_10mhz", "channels_0", "channels_65535", "bits_0"],
)
async def test_lying_wav_header_is_400(server: SidecarProcess, audio: bytes) -> None:
    for path in ENDPOINTS:
        error_of(await post(server, form(audio), path), 400, "invalid_audio")


async def test_4gb_data_size(server: SidecarProcess) -> None:
    """0xFFFFFFFF is what streaming WAV writers put in the data size, so with real samples
    behind it the answer is the words (the batch API's decision). With nothing behind it: 400.
    With garbage behind it: the garbage is valid PCM noise, so a prompt answer with no words;
    never a hang or an allocation sized by the header."""
    lying = patched_wav("goforward.wav", data_size=0xFFFFFFFF)
    assert wer(SHORT.text, text_of(await post(server, form(lying)))) <= 0.3
    error_of(await post(server, form(lying[:44])), 400, "empty_audio")
    garbage = lying[:44] + np.random.default_rng(4).bytes(64_000)
    started = time.monotonic()
    assert text_of(await post(server, form(garbage), timeout=10)) == ""
    assert time.monotonic() - started < 10


def flac_of_silence(seconds: int, rate: int = 8000) -> bytes:
    """Digital silence compresses to almost nothing in FLAC: 2 h fit in ~1.3 MB."""
    buffer = io.BytesIO()
    block = np.zeros((1, rate * 10), dtype=np.int16)
    with av.open(buffer, "w", format="flac") as out:
        stream = out.add_stream("flac", rate=rate, layout="mono")
        for i in range(seconds // 10):
            frame = av.AudioFrame.from_ndarray(block, format="s16", layout="mono")
            frame.sample_rate, frame.pts = rate, i * block.shape[1]
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buffer.getvalue()


async def test_audio_that_decodes_to_hours_is_refused_early(server: SidecarProcess) -> None:
    """Two hours of FLAC silence in an upload under the size limit: the duration cap stops the
    decoder at 60 s, so the answer is a quick 400 and memory does not grow by 2 h of PCM
    (2 h at 16 kHz float32 would be 460 MB)."""
    hours = flac_of_silence(2 * 3600)
    assert len(hours) < MAX_UPLOAD_MB * 1024 * 1024
    before = rss_bytes(server)
    for path in ENDPOINTS:
        started = time.monotonic()
        error_of(await post(server, form(hours, "long.flac"), path), 400, "audio_too_long")
        assert time.monotonic() - started < 5
    # also as a raw body
    raw = await post(server, hours, headers={"Content-Type": "audio/flac"})
    error_of(raw, 400, "audio_too_long")
    assert rss_bytes(server) - before < 80 * 1024 * 1024


# -- hostile multipart forms ---------------------------------------------------------------


async def test_empty_multipart_is_400(server: SidecarProcess) -> None:
    for body in (b"--abc--\r\n", b"\r\n--abc--\r\n", b""):
        answer = await post(
            server, body, headers={"Content-Type": "multipart/form-data; boundary=abc"}
        )
        assert answer.status == 400, answer.text


async def test_duplicate_file_fields_first_wins(server: SidecarProcess) -> None:
    data = aiohttp.FormData()
    data.add_field("file", JFK.path.read_bytes(), filename="a.wav")
    data.add_field("file", SHORT.path.read_bytes(), filename="b.wav")
    data.add_field("model", "whisper-1")
    data.add_field("model", "whisper-1")
    assert wer(JFK.text, text_of(await post(server, data))) <= 0.2


async def test_a_thousand_fields_is_400_fast(server: SidecarProcess) -> None:
    data = form(SHORT.path.read_bytes())
    for i in range(1000):
        data.add_field(f"f{i}", "x")
    started = time.monotonic()
    error_of(await post(server, data), 400, "invalid_request")
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("name", ["language", "prompt", "response_format", "model"])
async def test_non_utf8_field_value_is_400(server: SidecarProcess, name: str) -> None:
    body = (
        f'--abc\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        + b"\xff\xfe\xc3\x28\r\n"
        + b'--abc\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        + SHORT.path.read_bytes()
        + b"\r\n--abc--\r\n"
    )
    headers = {"Content-Type": "multipart/form-data; boundary=abc"}
    error = error_of(await post(server, body, headers=headers), 400, "invalid_parameter")
    assert error["param"] == name


async def test_non_utf8_field_name_is_ignored(server: SidecarProcess) -> None:
    """A field whose name is not UTF-8 is not one we know, so it is ignored like any other."""
    wav = SHORT.path.read_bytes()
    body = (
        b'--abc\r\nContent-Disposition: form-data; name="\xff\xfe"\r\n\r\nx\r\n'
        b'--abc\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        + wav
        + b"\r\n--abc--\r\n"
    )
    answer = await post(server, body, headers={"Content-Type": "multipart/form-data; boundary=abc"})
    assert wer(SHORT.text, text_of(answer)) <= 0.3


@pytest.mark.parametrize(
    "part_head",
    [
        b'Content-Disposition: form-data; name="fi\x00le"',  # NUL in a part header
        b'Content-Disposition: form-data; name="a"\r\nBad Header: x',  # space in a name
        b'Content-Disposition: form-data; name="a"\r\nX: \x7f\x00',
        b"X-" + b"h" * 70_000 + b": long",  # one part-header line longer than aiohttp takes
    ],
    ids=["nul_in_name", "space_in_header_name", "control_chars", "huge_header_line"],
)
async def test_invalid_part_headers_are_400(server: SidecarProcess, part_head: bytes) -> None:
    """aiohttp's multipart reader raises its own HTTP parser errors (InvalidHeader,
    LineTooLong) on bad part headers; they are the client's fault: 400, not 503. Found by the
    fuzzer (seed 1126, request 73)."""
    body = (
        b"--abc\r\n" + part_head + b"\r\n\r\nx\r\n"
        b'--abc\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        + SHORT.path.read_bytes()
        + b"\r\n--abc--\r\n"
    )
    answer = await post(server, body, headers={"Content-Type": "multipart/form-data; boundary=abc"})
    error_of(answer, 400, "invalid_request")


@pytest.mark.parametrize("charset", ["undefined", "idna", "utf-16", "no-such-codec", "rot13"])
async def test_odd_part_charsets_are_400(server: SidecarProcess, charset: str) -> None:
    """A text part's declared charset is looked up by Python's codec registry: names that
    exist but cannot decode these bytes (`undefined` always raises UnicodeError, `idna` on a
    label over 63 characters) are the client's fault too."""
    body = (
        b'--abc\r\nContent-Disposition: form-data; name="language"\r\n'
        + f"Content-Type: text/plain; charset={charset}\r\n\r\n".encode()
        + b"e" * 70
        + b'\r\n--abc\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        + SHORT.path.read_bytes()
        + b"\r\n--abc--\r\n"
    )
    answer = await post(server, body, headers={"Content-Type": "multipart/form-data; boundary=abc"})
    assert error_of(answer, 400, "invalid_parameter")["param"] == "language"


async def test_huge_prompt(server: SidecarProcess) -> None:
    """1 MB of prompt is refused (400 naming it) without being kept; 60 KB (under the field
    cap) is accepted and does not change what is heard: whisper keeps only the prompt's last
    223 tokens."""
    error = error_of(await post(server, form(SHORT.path.read_bytes(), prompt="a" * 2**20)), 400)
    assert error["param"] == "prompt"
    long_prompt = "hello there " * 5000
    answer = await post(server, form(SHORT.path.read_bytes(), prompt=long_prompt))
    assert wer(SHORT.text, text_of(answer)) <= 0.3


@pytest.mark.parametrize("value", ["-0.1", "1.01", "nan", "inf", "-inf", "1e309", "0x1", "1,0"])
async def test_out_of_range_temperature_is_400(server: SidecarProcess, value: str) -> None:
    answer = await post(server, form(SHORT.path.read_bytes(), temperature=value))
    assert error_of(answer, 400, "invalid_parameter")["param"] == "temperature"


@pytest.mark.parametrize("value", ["xml", "JSON", "json\x00", "srt;vtt", "../json"])
async def test_unknown_response_format_is_400(server: SidecarProcess, value: str) -> None:
    answer = await post(server, form(SHORT.path.read_bytes(), response_format=value))
    assert error_of(answer, 400, "invalid_parameter")["param"] == "response_format"


PATH_LIKE_MODELS = [
    "../../etc/passwd",
    "/etc/passwd",
    "tiny.en/../../../etc/shadow",
    "file:///etc/passwd",
    "..%2F..%2Fetc%2Fpasswd",
    "~/.cache/huggingface",
    "\\\\server\\share\\model",
    "Systran/faster-whisper-large-v3",  # a hub id: must not start a download either
]


@pytest.mark.parametrize("model", PATH_LIKE_MODELS)
async def test_path_like_model_never_touches_the_filesystem(
    server: SidecarProcess, model: str
) -> None:
    """`model` is compared with the served name and nothing else (see `batch._check_model`):
    a path or hub id is a 400 at once, with no file read and no download (the answer is
    instant, which a hub lookup or a model load could not be)."""
    started = time.monotonic()
    answer = await post(server, form(SHORT.path.read_bytes(), model=model))
    assert error_of(answer, 400, "model_not_found")["param"] == "model"
    assert "root:" not in answer.text
    assert time.monotonic() - started < 5  # a model load or hub lookup would take longer
    async with aiohttp.ClientSession() as http:
        got = await fetch(http, "GET", server.url + "/v1/models/" + model.replace("/", "%2F"))
    assert got.status == 404 and "root:" not in got.text


# -- bodies that are slow, large or lie about their length ---------------------------------


def head(path: str, *lines: str) -> str:
    return "\r\n".join([f"POST {path} HTTP/1.1", "Host: x", *lines])


def record(response, where: str) -> None:
    LEAK_LOG.record(where, response.body.decode("utf-8", errors="replace"))


@pytest.mark.parametrize("kind", ["raw", "multipart"])
async def test_slow_upload_is_408(server: SidecarProcess, kind: str) -> None:
    """A client that sends part of the body and stops: 408 after STT_READ_TIMEOUT_S (1 s)."""
    wav = SHORT.path.read_bytes()
    if kind == "raw":
        content_type, first = "audio/wav", wav[:5000]
    else:
        content_type = "multipart/form-data; boundary=XyZ"
        first = (
            b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
            + wav[:5000]
        )
    started = time.monotonic()
    response, _ = await raw_request(
        server.port,
        head(OPENAI, f"Content-Type: {content_type}", f"Content-Length: {len(wav) + 200}"),
        [first],
        timeout=10,
    )
    record(response, "slow upload")
    assert response.status == 408, response.body
    assert 0.9 <= time.monotonic() - started < 5


async def test_slow_drip_upload_is_408(server: SidecarProcess) -> None:
    """Bytes arriving slower than the idle timeout: dropped at the first 1 s gap."""
    response, sent = await raw_request(
        server.port,
        head(OPENAI, "Content-Type: audio/wav", "Content-Length: 100000"),
        [b"RIFF", b"\x00" * 10, b"\x00" * 10, b"\x00" * 10],
        chunk_delay=1.5,
        timeout=10,
    )
    record(response, "drip upload")
    assert response.status == 408 and sent < 40


async def test_trickle_under_the_idle_timeout_is_408_soon(server: SidecarProcess) -> None:
    """A byte every 0.6 s never trips the 1 s idle timeout. The body deadline must still come
    soon: it grows with what has arrived (64 KiB/s on average after the idle-timeout grace),
    not with the upload limit, or a handful of such clients (a few bytes each) would hold all
    of STT_MAX_PENDING for max_bytes / 64 KiB/s (here 65 s; 7 min with the defaults)."""
    started = time.monotonic()
    response, sent = await raw_request(
        server.port,
        head(OPENAI, "Content-Type: audio/wav", "Content-Length: 100000"),
        [b"R"] * 200,
        chunk_delay=0.6,
        timeout=30,
    )
    record(response, "trickle")
    assert response.status == 408, response.body
    assert "too slow" in response.json()["error"]["message"]
    assert time.monotonic() - started < 5 and sent < 10


@pytest.mark.parametrize("sent", [b"", b"POST /transcribe HTTP/1.1\r\nHost: x\r\n"])
async def test_silent_or_half_sent_head_is_dropped(server: SidecarProcess, sent: bytes) -> None:
    """Slowloris on the head: a connection that sends nothing, or half a request head, holds a
    socket and a file descriptor. It is closed after STT_READ_TIMEOUT_S (1 s here), like a
    stalled body, instead of aiohttp's default 75 s keep-alive timeout."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    started = time.monotonic()
    try:
        writer.write(sent)
        await writer.drain()
        closed = await asyncio.wait_for(reader.read(), 20)
    finally:
        writer.close()
    assert closed == b""  # dropped, not answered: there is no request to answer
    assert time.monotonic() - started < 10


async def test_keepalive_timeout_spares_quiet_websockets(server: SidecarProcess) -> None:
    """The 1 s head timeout above only closes connections waiting for a request: a WebSocket
    that stays quiet for longer after its config still streams and gets its final."""
    audio, rate = read_pcm16(SHORT.path)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(server.ws_url) as ws:
            await ws.send_str(json.dumps({"type": "config", "sample_rate": rate}))
            assert (await ws.receive_json(timeout=10))["type"] == "ready"
            await asyncio.sleep(2.5)
            for i in range(0, len(audio), 320):
                await ws.send_bytes(audio[i : i + 320].tobytes())
            await ws.send_str(json.dumps({"type": "close"}))
            finals = []
            async for msg in ws:
                message = json.loads(msg.data)
                LEAK_LOG.record("stream message", msg.data)
                finals += [message["text"]] if message["type"] == "final" else []
    assert wer(SHORT.text, " ".join(finals)) <= 0.3, finals


async def test_declared_oversize_is_413_before_reading(server: SidecarProcess) -> None:
    for path in ENDPOINTS:
        response, sent = await raw_request(
            server.port,
            head(path, "Content-Type: multipart/form-data; boundary=a", "Content-Length: 99999999"),
            timeout=5,
        )
        record(response, "declared oversize")
        assert response.status == 413 and sent == 0


async def test_chunked_oversize_is_413_while_streaming(server: SidecarProcess) -> None:
    """No Content-Length: the server counts what arrives and answers 413 once past 4 MiB,
    while the client would go on sending 64 MB."""
    block = bytes(range(256)) * 256  # 64 KiB
    chunks = [chunked(block)] * 1024 + [b"0\r\n\r\n"]
    response, sent = await raw_request(
        server.port,
        head(OPENAI, "Content-Type: audio/wav", "Transfer-Encoding: chunked"),
        chunks,
        chunk_delay=0.001,
        timeout=20,
    )
    record(response, "chunked oversize")
    assert response.status == 413, response.body
    assert sent < 16 * 1024 * 1024


async def test_bodies_that_lie_about_their_length(server: SidecarProcess) -> None:
    """Content-Length shorter than the body: only the declared bytes are the request (here a
    WAV cut inside its header: 400 invalid_audio), and what follows is a separate pipelined
    request, never part of the upload. Both Content-Length and Transfer-Encoding (the
    request-smuggling shape): 400 from the HTTP parser.

    The server closes after a parser error; unread bytes would make its kernel send a reset
    that can overtake the answer, so nothing is sent that the server will not read.
    """
    smuggled = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    response, _ = await raw_request(
        server.port,
        head(OPENAI, "Content-Type: audio/wav", "Content-Length: 30"),
        [SHORT.path.read_bytes()[:30] + smuggled],
        timeout=10,
    )
    record(response, "short content-length")
    assert response.status == 400, response.body
    assert response.json()["error"]["code"] == "invalid_audio"
    response, _ = await raw_request(
        server.port,
        head(
            OPENAI, "Content-Type: audio/wav", "Content-Length: 100", "Transfer-Encoding: chunked"
        ),
        timeout=10,
    )
    record(response, "content-length and chunked")
    assert response.status == 400, response.body


def gzip_bomb(mebibytes: int) -> bytes:
    """`mebibytes` MiB of zeros, gzip-compressed (about 1,000:1)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [compressor.compress(bytes(1 << 20)) for _ in range(mebibytes)]
    return b"".join([*out, compressor.flush()])


async def test_gzip_bomb_is_413_with_bounded_memory(server: SidecarProcess) -> None:
    """`Content-Encoding: gzip` with 256 MiB of zeros in ~250 KB: the size limit counts bytes after
    decompression, so the server stops at 4 MiB of it, answers 413 and never holds the 256 MiB."""
    bomb = gzip_bomb(256)
    assert len(bomb) < MAX_UPLOAD_MB * 1024 * 1024  # the declared length passes the check
    before = rss_bytes(server)
    headers = {"Content-Type": "audio/wav", "Content-Encoding": "gzip"}
    for body in (bomb, bomb[:20_000]):  # whole, and a prefix that is itself under 4 MiB
        started = time.monotonic()
        error_of(await post(server, body, headers=headers), 413, "too_large")
        assert time.monotonic() - started < 5
    multipart_bomb = (
        b'--abc\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        + bytes(8 << 20)
        + b"\r\n--abc--\r\n"
    )
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    compressed = compressor.compress(multipart_bomb) + compressor.flush()
    headers = {"Content-Type": "multipart/form-data; boundary=abc", "Content-Encoding": "gzip"}
    error_of(await post(server, compressed, headers=headers), 413, "too_large")
    assert rss_bytes(server) - before < 80 * 1024 * 1024


# -- afterwards ----------------------------------------------------------------------------


async def test_still_correct_afterwards(server: SidecarProcess) -> None:
    await assert_transcribes(server, name="jfk.wav")
    assert server.proc is not None and server.proc.poll() is None
    log = server.log()
    # no handler failed inside: every answer above was a deliberate client error
    assert "internal_error" not in log and "request failed" not in log


def test_leak_scan() -> None:
    """Every body, error message and stream message this session has seen so far."""
    assert_no_leaks()
