"""A seeded HTTP fuzzer against a dedicated sidecar with small limits.

Reproducible: request number `i` of seed `s` is generated from its own `random.Random((s, i))`,
so a failure prints the seed and the index and `FUZZ_SEED=s` replays the same requests in any
order or concurrency. `FUZZ_SEED` (default 1126) and `FUZZ_COUNT` (default 2500) are read from
the environment.

Each request mutates one or more of: method, path, query string, headers (content type,
encodings, lengths, request ids, auth), multipart structure (boundaries, part headers, field
names, duplicate and missing parts), field values, and the audio itself (real WAV and FLAC
bytes truncated, bit-flipped, spliced, with header fields overwritten; MP3, M4A, WebM, AAC,
AIFF, CAF and Matroska too; and the formats that made FFmpeg open files and sockets: concat,
HLS, DASH, SDP, image2, an MP4 with an external data reference, allowed magic bytes in front of
a playlist). About a quarter go out as raw bytes with a mutated request head, which aiohttp's
client would refuse to send.

Invariants: no 5xx except 503 with a known code (`overloaded`, `model_not_ready`); every
request answered within the client timeout (no hangs); no leak (see `tests.support.leaks`);
the canary file in the server's working directory never opened and no socket but its
listener's (inotify and psutil, for the whole run);
the server transcribes a real clip correctly afterwards; RSS and open file descriptors bounded.
The server has an API key, which 90 % of requests carry, so the auth path is fuzzed too.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import shutil
import struct
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import quote

import aiohttp
import av
import numpy as np
import psutil
import pytest
import soundfile
from yarl import URL

from ..container_payloads import (
    CANARY,
    disguised_payloads,
    mp4_with_external_audio,
    text_payloads,
)
from ..support.leaks import leak_markers_in
from ..support.resources import rss_bytes
from ..support.sidecar import SidecarProcess
from ..support.speech import clip, read_pcm16
from .http_support import LEAK_LOG, assert_no_leaks, assert_transcribes
from .resource_watch import ResourceWatch

SEED = int(os.environ.get("FUZZ_SEED", "1126"))
COUNT = int(os.environ.get("FUZZ_COUNT", "2500"))
CONCURRENCY = 8
REQUEST_TIMEOUT_S = 15.0  # the server's read timeout is 2 s: anything near 15 s is a hang
ALLOWED_503 = {"overloaded", "model_not_ready"}
API_KEY = "fuzz-key-5e1f"

ENDPOINTS = ["/transcribe", "/v1/audio/transcriptions", "/v1/audio/translations"]
OTHER_PATHS = [
    "/v1/models",
    "/v1/models/whisper-1",
    "/v1/models/../../etc/passwd",
    "/v1/models/%2e%2e%2fetc%2fpasswd",
    "/health",
    "/ready",
    "/metrics",
    "/v1/stream",
    "/",
    "//transcribe",
    "/transcribe/",
    "/v1/audio/transcriptions%00",
    "/v1/audio/../audio/transcriptions",
    "/static/../../etc/passwd",
    "/" + "a" * 3000,
]
# Mostly POSTs to the transcription endpoints: that is where the body parsing and decoding is.
METHODS = ["POST"] * 24 + ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "FOO"]
CONTENT_TYPES = [
    "multipart/form-data; boundary={b}",
    "multipart/form-data; boundary={b}",
    "multipart/form-data; boundary={b}",
    "multipart/form-data",
    "multipart/form-data; boundary=",
    'multipart/form-data; boundary="{b}"; charset=utf-16',
    "multipart/mixed; boundary={b}",
    "audio/wav",
    "audio/flac",
    "audio/*",
    "application/octet-stream",
    "video/webm",
    "text/plain",
    "application/json",
    "application/x-www-form-urlencoded",
    "",
    "audio/wav; charset=\xff",
]
FIELDS = [
    "model",
    "language",
    "prompt",
    "temperature",
    "response_format",
    "timestamp_granularities[]",
    "timestamp_granularities",
    "task",
    "word_timestamps",
    "file",
    "",
    "x" * 300,
    "fi\x00le",
    "r\u00e9sum\u00e9",
]
VALUES = [
    "",
    "whisper-1",
    "tiny.en",
    "en",
    "EN",
    "de",
    "xx",
    "json",
    "text",
    "srt",
    "vtt",
    "verbose_json",
    "xml",
    "word",
    "segment",
    "char",
    "0",
    "1",
    "-1",
    "0.5",
    "1.5",
    "nan",
    "inf",
    "1e309",
    "true",
    "false",
    "maybe",
    "transcribe",
    "translate",
    "../../etc/passwd",
    "/dev/zero",
    "%s%s%s%n",
    "{{7*7}}",
    "' OR 1=1 --",
    "\x00",
    "\u202e\u0000\ufeff",
    "a" * 70_000,  # over the 64 KiB text-field cap
    "word " * 2000,
]
# Python looks these up in its codec registry: some are not text codecs at all, some raise
# odd exception types (`undefined` raises UnicodeError on anything)
CHARSETS = ["latin-1", "utf-16", "undefined", "idna", "rot13", "hex", "utf-7", "nope", "x" * 200]
AUDIO_TYPES = ["audio/wav", "application/octet-stream", "audio/flac", "", "text/plain"]


@cache
def corpus() -> tuple[bytes, ...]:
    """Real files to mutate: 1.5 s of speech, then 1.5 s of near-silence (-70 dBFS hiss), each
    as WAV, FLAC and Ogg/Opus. Containers and codecs get the same exercise either way, but
    only speech reaches the model (VAD drops the rest before it), and the model is the one
    slow step: mostly-silent files keep 1,000+ requests under a minute."""
    samples, rate = read_pcm16(clip("goforward.wav").path)
    speech = samples[: int(1.5 * rate)]
    hiss = (np.random.default_rng(0).normal(0, 10, speech.shape[0])).astype(np.int16)
    out = []
    for audio in (speech, hiss):
        for fmt, subtype in (("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("OGG", "OPUS")):
            buffer = io.BytesIO()
            soundfile.write(buffer, audio, rate, format=fmt, subtype=subtype)
            out.append(buffer.getvalue())
    return tuple(out)


@cache
def container_corpus() -> tuple[bytes, ...]:
    """The near-silent hiss in every other allowed container (MP3, M4A, WebM, ADTS AAC, AIFF,
    CAF, Matroska/PCM), and the formats that must never be opened (issue #10): concat lists,
    playlists, SDP, manifests, images, allowed magic bytes in front of a playlist, and an MP4
    whose audio lives in another file. Mutating them probes the sniffing and the demuxers."""
    rate = 16000
    hiss = (np.random.default_rng(0).normal(0, 10, int(1.5 * rate))).astype(np.int16)
    out = []
    for container, codec in (
        ("mp3", "libmp3lame"),
        ("ipod", "aac"),
        ("webm", "libopus"),
        ("adts", "aac"),
        ("aiff", "pcm_s16be"),
        ("caf", "pcm_s16le"),
        ("matroska", "pcm_s16le"),
    ):
        buffer = io.BytesIO()
        out_rate = 48000 if codec == "libopus" else rate
        with av.open(buffer, "w", format=container) as muxer:
            stream = muxer.add_stream(codec, rate=out_rate, layout="mono")
            frame = av.AudioFrame.from_ndarray(hiss.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = rate
            resampler = av.AudioResampler(
                format=stream.codec_context.codec.audio_formats[0].name,
                layout="mono",
                rate=out_rate,
            )
            for resampled in resampler.resample(frame) + resampler.resample(None):
                resampled.pts = None
                muxer.mux(stream.encode(resampled))
            muxer.mux(stream.encode(None))
        out.append(buffer.getvalue())
    hostile = [*text_payloads(Path("/srv") / CANARY).values(), *disguised_payloads().values()]
    with tempfile.TemporaryDirectory() as tmp:
        hostile.append(mp4_with_external_audio(clip("goforward.wav").path, Path(tmp) / "d.mp4"))
    return tuple(out), tuple(hostile)


def pick_audio(rng: random.Random) -> bytes:
    files = corpus()
    speech, silent = files[:3], files[3:]
    roll = rng.random()
    if roll < 0.1:
        return rng.choice(container_corpus()[0])
    if roll < 0.2:
        return rng.choice(container_corpus()[1])
    return rng.choice(speech if roll < 0.36 else silent)


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    """One to three byte-level mutations of real audio."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(7)
        if kind == 0 and out:  # truncate
            del out[rng.randrange(len(out)) :]
        elif kind == 1:  # bit flips
            for _ in range(rng.randint(1, 64)):
                if out:
                    out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        elif kind == 2 and len(out) > 44:  # overwrite a header word with a hostile value
            value = rng.choice([0, 1, 0xFFFF, 0xFFFFFFFF, 10_000_000, rng.getrandbits(32)])
            struct.pack_into("<I", out, rng.randrange(0, 40), value)
        elif kind == 3:  # splice random bytes in
            at = rng.randrange(len(out) + 1)
            out[at:at] = rng.randbytes(rng.randint(1, 2048))
        elif kind == 4:  # random bytes only
            out = bytearray(rng.randbytes(rng.choice([0, 1, 13, 512, 20_000])))
        elif kind == 5:  # duplicate a slice (repeated frames)
            a = rng.randrange(len(out) + 1)
            out[a:a] = out[a : a + rng.randint(1, 8192)] * rng.randint(1, 3)
        # kind 6: unchanged (the request is mutated elsewhere)
    return bytes(out[: 300 * 1024])  # a little over the 256 KiB limit at most


@dataclass
class FuzzRequest:
    index: int
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    raw_head: bytes | None = None  # set: send these bytes as the head, as is

    def describe(self) -> str:
        head = self.raw_head[:200] if self.raw_head else f"{self.method} {self.path[:80]}"
        headers = [(k, v[:60]) for k, v in self.headers]
        return f"#{self.index} {head!r} headers={headers!r} body={len(self.body)} B"


def multipart(rng: random.Random, boundary: str, audio: bytes) -> bytes:
    parts: list[bytes] = []
    names = ["file"] + [rng.choice(FIELDS) for _ in range(rng.randint(0, 6))]
    if rng.random() < 0.1:
        names.remove("file")  # missing file
    if rng.random() < 0.05:
        names += ["x"] * rng.randint(30, 60)  # too many fields
    rng.shuffle(names)
    for name in names:
        if name == "file":
            disposition = (
                f'form-data; name="file"; filename="{rng.choice(["a.wav", "", "../../x"])}"'
            )
            content_type = rng.choice(AUDIO_TYPES)
            value = audio
        else:
            disposition = f'form-data; name="{name}"'
            content_type = rng.choice(
                ["", "", "", "text/plain"] + [f"text/plain; charset={c}" for c in CHARSETS]
            )
            value = rng.choice(VALUES).encode("utf-8", "surrogatepass")
            if rng.random() < 0.1:
                value = rng.randbytes(rng.randint(1, 40))  # not UTF-8
        head = f"Content-Disposition: {disposition}\r\n"
        if content_type:
            head += f"Content-Type: {content_type}\r\n"
        if rng.random() < 0.05:
            head = rng.choice(["", "Content-Disposition: attachment\r\n", "X: y\r\n"])
        parts.append(f"--{boundary}\r\n{head}\r\n".encode("utf-8", "surrogatepass") + value)
    body = b"\r\n".join(parts) + f"\r\n--{boundary}--\r\n".encode()
    structural = rng.random()
    if structural < 0.08:
        body = body[: rng.randrange(len(body) + 1)]  # cut anywhere, closing boundary included
    elif structural < 0.12:
        body = body.replace(b"\r\n", b"\n")  # bare LF
    elif structural < 0.15:
        body = f"--{boundary}\r\n".encode() + body  # an empty first part
    elif structural < 0.18:
        body = body.replace(boundary.encode(), boundary[:-1].encode(), 1)  # wrong boundary
    return body


def make_request(seed: int, index: int) -> FuzzRequest:
    rng = random.Random(f"{seed}:{index}")
    audio = pick_audio(rng)
    if rng.random() < 0.9:
        audio = mutate_bytes(rng, audio)
    method = rng.choice(METHODS)
    path = rng.choice(ENDPOINTS * 12 + OTHER_PATHS)
    if rng.random() < 0.3:
        query = [(rng.choice(FIELDS), rng.choice(VALUES)[:200]) for _ in range(rng.randint(1, 4))]
        path += "?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query)
    boundary = rng.choice(["b0und4ry", "----WebKitFormBoundary7MA4YWxkTrZu0gW", "a", "x" * 70])
    content_type = rng.choice(CONTENT_TYPES).replace("{b}", boundary)
    if content_type.startswith("multipart"):
        body = multipart(rng, boundary, audio)
    else:
        body = audio
    headers: list[tuple[str, str]] = []
    if content_type:
        headers.append(("Content-Type", content_type))
    extras = [
        ("Content-Encoding", rng.choice(["gzip", "deflate", "br", "identity", "zstd", "x"])),
        ("X-Request-Id", rng.choice(["", "a" * 100, "trace-1", "\u00e9\u00e9", "<script>"])),
        # "\udcff" goes out as the raw byte 0xff: header bytes that are not UTF-8
        (
            "Authorization",
            rng.choice(["Bearer x", "Basic", "", "Bearer " + "k" * 5000, "Bearer \udcff"]),
        ),
        ("X-Request-Id", "\udcff\udcfe"),
        ("Content-Type", "audio/wav; charset=\udcff"),
        ("Accept", rng.choice(["text/html", "*/*", "application/json"])),
        ("Expect", "100-continue"),
        ("Accept-Encoding", "gzip"),
        ("X-Forwarded-For", "10.0.0.1, ::1"),
        ("Cookie", "a=" + "b" * 4000),
    ]
    for _ in range(rng.randint(0, 3)):
        headers.append(rng.choice(extras))
    # The server has a key: most requests carry it so they get past auth to the parsers; the
    # rest carry a mutated credential (above) or none.
    if not any(k == "Authorization" for k, _ in headers) and rng.random() < 0.9:
        headers.insert(0, ("Authorization", f"Bearer {API_KEY}"))
    request = FuzzRequest(index, method, path, headers, body)
    # aiohttp's parser answers a second Content-Type (a singleton field) with 400 and closes
    # before reading the body, so the client library may see a reset instead of the answer:
    # such a request is malformed on the wire, and goes out raw like the other malformed ones.
    duplicated_content_type = sum(k == "Content-Type" for k, _ in headers) > 1
    if duplicated_content_type or rng.random() < 0.25:
        request.raw_head = raw_head(rng, request)
    return request


def raw_head(rng: random.Random, request: FuzzRequest, *, mutate: bool = True) -> bytes:
    """The request head as bytes with line-level mutations; always terminated."""
    lines = [f"{request.method} {request.path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in request.headers]
    length = len(request.body)
    choice = rng.random() if mutate else 0.0
    if choice < 0.5:
        lines.append(f"Content-Length: {length}")
    elif choice < 0.6:
        lines.append(f"Content-Length: {rng.choice([0, length // 2, length + 10, -1])}")
    elif choice < 0.7:
        lines.append(
            f"Content-Length: {rng.choice(['abc', '1e3', '0x10', ' 5', '99999999999999'])}"
        )
    elif choice < 0.8:
        lines += [f"Content-Length: {length}", "Transfer-Encoding: chunked"]
    elif choice < 0.9:
        lines += [f"Content-Length: {length}", f"Content-Length: {length + 1}"]
    # else: no length at all
    encoded = [line.encode("utf-8", "surrogateescape") for line in lines]
    for _ in range(rng.randint(0, 3) if mutate else 0):
        i = rng.randrange(len(encoded))
        line = bytearray(encoded[i])
        kind = rng.randrange(6)
        if kind == 0 and line:
            line[rng.randrange(len(line))] ^= 1 << rng.randrange(8)  # bit 7 too: not UTF-8
        elif kind == 1:
            line = bytearray(b"X-Long: " + b"v" * rng.choice([100, 9000]))
        elif kind == 2:
            line += b"\x00"
        elif kind == 3:
            line = bytearray(line.replace(b"HTTP/1.1", rng.choice([b"HTTP/1.0", b"HTTP/9.9", b""])))
        elif kind == 4:
            line = bytearray(b" " + bytes(line))  # obsolete line folding
        else:
            line = bytearray(line.replace(b":", b"", 1))
        encoded[i] = bytes(line).replace(b"\r", b"").replace(b"\n", b"")
    return b"\r\n".join(encoded) + b"\r\n\r\n"


@dataclass
class Outcome:
    request: FuzzRequest
    status: int | None  # None: the server closed without answering
    body: str
    seconds: float


async def send_with_client(
    http: aiohttp.ClientSession, base_url: str, request: FuzzRequest
) -> Outcome:
    started = time.monotonic()
    async with http.request(
        request.method,
        URL(base_url + request.path, encoded=True),  # as generated: no normalisation
        data=request.body if request.method not in ("GET", "HEAD") or request.body else None,
        headers=request.headers,
        skip_auto_headers=("Content-Type",),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
    ) as response:
        body = await response.read()
    return Outcome(
        request, response.status, body.decode("utf-8", "replace"), time.monotonic() - started
    )


async def send_raw(port: int, request: FuzzRequest) -> Outcome:
    started = time.monotonic()
    assert request.raw_head is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            writer.write(request.raw_head + request.body)
            try:
                await writer.drain()
            except ConnectionError:
                pass  # answered and closed before reading everything (e.g. 413, 400)
            while True:
                status_line = await reader.readline()
                if not status_line:
                    return Outcome(request, None, "", time.monotonic() - started)
                head = [status_line]
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    head.append(line)
                if b" 100 " not in status_line:  # skip an interim "100 Continue"
                    break
            # Connection: close may have been mutated away, so read what Content-Length says
            # (or nothing, for HEAD) rather than to EOF.
            length = 0
            for line in head[1:]:
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            body = b""
            if request.raw_head.startswith(b"HEAD ") or length == 0:
                body = b""
            else:
                try:
                    body = await reader.readexactly(length)
                except asyncio.IncompleteReadError as exc:
                    body = exc.partial
    finally:
        writer.close()
    status = int(status_line.split()[1])
    return Outcome(request, status, body.decode("utf-8", "replace"), time.monotonic() - started)


def error_code(body: str) -> str | None:
    """The `error.code` of an OpenAI-shaped error body (None for aiohttp's own plain 400s)."""
    try:
        return json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def violations(outcome: Outcome) -> list[str]:
    """The invariants one outcome breaks (empty when it holds them all)."""
    found = []
    if outcome.status is not None and outcome.status >= 500:
        code = error_code(outcome.body)
        if not (outcome.status == 503 and code in ALLOWED_503):
            found.append(f"status {outcome.status} code {code}")
    if leaked := leak_markers_in(outcome.body):
        found.append(f"leaked {leaked}")
    if outcome.status is None and outcome.request.raw_head is None:
        found.append("no answer to a well-formed request")
    return found


@pytest.fixture(scope="module")
def server() -> Iterator[SidecarProcess]:
    proc = SidecarProcess(
        STT_API_KEY=API_KEY,
        STT_MAX_UPLOAD_MB="0.25",
        STT_MAX_AUDIO_SECONDS="3",
        STT_READ_TIMEOUT_S="2",
        STT_MAX_PENDING="7",  # one under the 8 clients: overload happens, parsing dominates
    ).start()
    yield proc
    proc.stop()


def test_generation_is_reproducible() -> None:
    for i in (0, 1, 537):
        a, b = make_request(SEED, i), make_request(SEED, i)
        assert (a.method, a.path, a.headers, a.body, a.raw_head) == (
            b.method,
            b.path,
            b.headers,
            b.body,
            b.raw_head,
        )
    assert make_request(SEED, 1).body != make_request(SEED + 1, 1).body


async def test_fuzz_http(server: SidecarProcess, capsys: pytest.CaptureFixture[str]) -> None:
    assert server.proc is not None
    process = psutil.Process(server.proc.pid)
    rss_before, fds_before = rss_bytes(server), process.num_fds()
    outcomes: list[Outcome] = []
    failures: list[str] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(COUNT):
        queue.put_nowait(i)
    started = time.monotonic()

    # A fresh connection per request: the server rightly closes connections after some errors,
    # and a pooled connection it already closed would show up here as a client-side reset.
    connector = aiohttp.TCPConnector(limit=CONCURRENCY, force_close=True)
    shutil.copyfile(clip("jfk.wav").path, server.cwd / CANARY)  # what concat & co. would read
    watch = ResourceWatch(server).__enter__()
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker() -> None:
            while not queue.empty():
                request = make_request(SEED, queue.get_nowait())
                try:
                    if request.raw_head is not None:
                        outcome = await send_raw(server.port, request)
                    else:
                        try:
                            outcome = await send_with_client(http, server.url, request)
                        except ValueError:
                            # aiohttp's client refuses some header values (control
                            # characters): send those bytes ourselves instead
                            request.raw_head = raw_head(random.Random(0), request, mutate=False)
                            outcome = await send_raw(server.port, request)
                except TimeoutError:
                    failures.append(f"hang (> {REQUEST_TIMEOUT_S} s): {request.describe()}")
                    continue
                except aiohttp.ClientResponseError as exc:
                    # an answer the client could not accept, e.g. aiohttp's parser-level 400
                    # to a HEAD request comes with a body; the status is still the server's
                    outcome = Outcome(request, exc.status, exc.message, 0.0)
                except (aiohttp.ClientError, ConnectionError) as exc:
                    # the server may close on a malformed request; a refused connection or a
                    # reset on a well-formed one is a failure
                    if request.raw_head is None and not isinstance(
                        exc, aiohttp.ServerDisconnectedError
                    ):
                        failures.append(f"{type(exc).__name__}: {request.describe()}")
                    outcome = Outcome(request, None, "", 0.0)
                outcomes.append(outcome)
                if outcome.status == 503:
                    await asyncio.sleep(0.05)  # back off like a client would, not spin on 503s
                LEAK_LOG.seen.append((f"fuzz {request.index}", outcome.body))
                failures.extend(f"{v}: {request.describe()}" for v in violations(outcome))

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    elapsed = time.monotonic() - started
    watch.__exit__(None, None, None)
    assert not watch.files, f"the server opened {watch.files}"
    assert not watch.sockets, f"the server opened sockets: {watch.sockets}"
    statuses = Counter(o.status for o in outcomes)
    codes = Counter(error_code(o.body) for o in outcomes if o.status and o.status >= 400)
    summary = (
        f"fuzz_http: seed={SEED} tried={len(outcomes)} in {elapsed:.1f} s "
        f"raw={sum(o.request.raw_head is not None for o in outcomes)} "
        f"statuses={dict(sorted(statuses.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)))} "
        f"codes={dict(codes.most_common())}"
    )
    with capsys.disabled():
        print("\n" + summary)
    assert not failures, f"{summary}\nreplay with FUZZ_SEED={SEED}:\n" + "\n".join(failures[:20])
    assert len(outcomes) >= min(COUNT, 1000)
    assert statuses[200] > 0, "no request survived the mutations: the fuzzer is too blunt"
    await assert_transcribes(server, {"Authorization": f"Bearer {API_KEY}"})
    await asyncio.sleep(1.0)  # let closed connections be reaped
    assert rss_bytes(server) - rss_before < 200 * 1024 * 1024
    assert process.num_fds() - fds_before < 20, (fds_before, process.num_fds())
    assert "internal_error" not in server.log()
    # Metric labels come from a fixed set (route, status, error code), never from the request:
    # thousands of odd paths and values must not grow the exposition.
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_KEY}"}) as http:
        async with http.get(server.url + "/metrics") as response:
            metrics = await response.text()
    assert response.status == 200
    assert len(metrics) < 64 * 1024, len(metrics)
    for echoed in ("passwd", "xxxxxxxx", "r\u00e9sum\u00e9", "{{7*7}}", API_KEY):
        assert echoed not in metrics, echoed


def test_leak_scan() -> None:
    """Every body, error message and stream message this session has seen so far."""
    assert_no_leaks()
