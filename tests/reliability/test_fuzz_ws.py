"""A seeded WebSocket fuzzer for /v1/stream.

Every run generates the same sessions from `FUZZ_SEED` (default below; the seed and the number
of frames sent are printed, so a failure is reproduced with `FUZZ_SEED=<seed>`). Each session
is a script of mutated configs, random text and JSON, control messages in odd orders, binary
frames of random sizes (empty, odd, misaligned, just over 1 s, over the 256 KiB frame limit)
holding silence, noise or speech, WebSocket pings and protocol-level violations, ended by a
`close` message, a WebSocket close, an abrupt TCP abort, or not at all (the server must end it).
A few sessions never send a config, only keepalives, pings and pauses: the server must close
them with `config_timeout` however active they look.

A small model of the protocol predicts how each session must end. The invariants:

- the server only sends messages docs/streaming-protocol.md defines, `error`s only with a known
  code and a message without internals, and per utterance `speech_started` -> `interim`* ->
  `final`? -> `speech_ended`, utterance ids increasing, one final each;
- the first protocol violation ends the session with the documented `error` code and close code
  (1002/1007 only for WebSocket-level violations, as RFC 6455 says); a session ended with
  `close` gets every `flushed`, then `closed`, then 1000;
- nothing hangs: every wait is bounded;
- afterwards no stream is left open, RSS and open FDs are where they were, nothing failed inside
  the server, and a real clip still streams right.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import string
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stt_sidecar.replay import load_pcm16, replay

from ..streaming_helpers import resample_int16
from ..support.resources import open_fds, rss_mb
from ..support.sidecar import SidecarProcess
from ..support.speech import DATA, clip, wer
from .ws_support import (
    CLOSE_CODES,
    Frame,
    RawClient,
    check_server_message,
    wait_streams_gone,
)

SEED = int(os.environ.get("FUZZ_SEED", "20261126"))
SESSIONS = int(os.environ.get("FUZZ_WS_SESSIONS", "400"))
CONCURRENCY = 4  # below the session sidecar's STT_MAX_STREAMS (8): no 1013s by design
MAX_MESSAGE_BYTES = 256 * 1024  # the server's aiohttp frame limit (handler.MAX_MESSAGE_BYTES)
SESSION_TIMEOUT_S = 30.0
CONFIG_TIMEOUT_S = 3.0  # the session sidecar's STT_CONFIG_TIMEOUT_S (tests/conftest.py)
SQUATTERS = 0.015  # share of sessions that never send a config

VALID_RATES = (8000, 16000, 22050, 44100, 48000)
BAD_VALUES: dict[str, list[Any]] = {
    "language": ["klingon", 5, "", ["en", "de"], [], "de", "EN"],
    "sample_rate": [7999, 48001, 0, -16000, 16000.5, "16000", True, None, 10**30],
    "encoding": ["opus", None, 1, "PCM_S16LE"],
    "channels": [0, 3, 1.0, "1", True, -1],
    "task": ["translate", "x", None],  # tiny.en cannot translate
    "interim_results": ["yes", 1, None],
    "prompt": [5, "a" * 1001, ["a"], {"a": 1}],
}


@dataclass
class Action:
    kind: str  # text | binary | ping | raw | abort | ws_close | sleep
    payload: bytes = b""
    opcode: int = 0
    seconds: float = 0.0


@dataclass
class Expectation:
    """What the server must do, from the protocol model."""

    error: str | None = None  # the `error` code that must end the session (None: no error)
    close_code: int | None = None  # its close code (None: the client ends the session)
    flushes: int = 0  # flushes acknowledged (`flushed`) if the session ends with `close`
    closed: bool = False  # `closed` then 1000
    ready: bool = False


@dataclass
class Session:
    actions: list[Action] = field(default_factory=list)
    expect: Expectation = field(default_factory=Expectation)


class Generator:
    """Builds sessions and predicts their outcome; all randomness from one seeded RNG."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        speech, rate = load_pcm16(DATA / "conversation.wav")
        self._speech16 = speech[int(1.0 * rate) : int(8.0 * rate)]  # one long sentence
        self._speech: dict[tuple[int, int], np.ndarray] = {}

    def speech(self, rate: int, channels: int) -> np.ndarray:
        key = (rate, channels)
        if key not in self._speech:
            self._speech[key] = (
                self._speech16
                if key == (16000, 1)
                else resample_int16(self._speech16, 16000, rate, channels)
            )
        return self._speech[key]

    # -- configs ----------------------------------------------------------------------------
    def valid_config(self) -> dict[str, Any]:
        rng = self.rng
        config: dict[str, Any] = {
            "type": "config",
            "language": rng.choice(["en", None]),
            "sample_rate": rng.choice(VALID_RATES),
            "encoding": "pcm_s16le",
            "channels": rng.choice([1, 1, 2]),
            "task": "transcribe",
            "interim_results": rng.choice([True, False]),
            "prompt": rng.choice([None, "", "Dashwood, Norland"]),
        }
        for key in list(config)[1:]:
            if rng.random() < 0.3:
                del config[key]  # every key but type is optional
        return config

    def config_message(self) -> tuple[str, dict[str, Any] | None, str | None]:
        """(text, parsed config if valid, expected error code if not)."""
        rng = self.rng
        config = self.valid_config()
        roll = rng.random()
        if roll < 0.7:
            return json.dumps(config), config, None
        if roll < 0.82:
            key = rng.choice(list(BAD_VALUES))
            config[key] = rng.choice(BAD_VALUES[key])
            return json.dumps(config), None, "invalid_config"
        if roll < 0.87:
            config[rng.choice(["colour", "Type", "rate", "sampleRate", " type"])] = 1
            return json.dumps(config), None, "invalid_config"
        if roll < 0.91:
            text = json.dumps(config)
            return text[: rng.randrange(1, len(text))], None, "protocol_error"
        if roll < 0.95:
            config[rng.choice(["sample_rate", "channels", "prompt"])] = float("nan")
            return json.dumps(config), None, "protocol_error"  # NaN is not JSON
        config["type"] = rng.choice(["flush", "close", "CONFIG", "", "configure"])
        return json.dumps(config), None, "protocol_error"

    # -- other messages ---------------------------------------------------------------------
    def junk_text(self, live: bool) -> str:
        """Text the server must refuse (on a live stream, a second config is junk too)."""
        rng = self.rng
        pick = rng.randrange(8 if live else 7)
        if pick == 0:
            return "".join(rng.choice(string.printable) for _ in range(rng.randrange(0, 200)))
        if pick == 1:
            return "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(rng.randrange(1, 80)))
        if pick == 2:
            return json.dumps(rng.choice([None, 1, "x", [], [1, 2], {}, {"a": 1}, True]))
        if pick == 3:
            return json.dumps({"type": rng.choice([1, None, [], {}, "", "dance", "Flush"])})
        if pick == 4:
            return "[" * rng.randrange(1000, 50_000)
        if pick == 5:
            return json.dumps({"type": "flush"})[: rng.randrange(1, 17)]
        if pick == 6:
            return '{"type": "keepalive", "n": NaN}'
        return json.dumps({"type": "config", "sample_rate": 16000})  # a second config

    def audio_frame(self, config: dict[str, Any], cursor: int) -> tuple[bytes, int]:
        """A valid frame (within 1 s, whole samples) of silence, noise or speech."""
        rng = self.rng
        rate = config.get("sample_rate", 16000)
        channels = config.get("channels", 1)
        frames = rng.choice([0, 1, 3, rate // 100, rate // 50, rate // 10, rate // 2, rate])
        kind = rng.random()
        if kind < 0.5:
            speech = self.speech(rate, channels)
            start = cursor % len(speech)
            chunk = speech[start : start + frames]
            return chunk.tobytes(), cursor + len(chunk)
        if kind < 0.8:
            return bytes(frames * channels * 2), cursor
        noise = np.frombuffer(rng.randbytes(frames * channels * 2), np.int16)
        return (noise // rng.choice([1, 64, 1024])).tobytes(), cursor

    # -- sessions ---------------------------------------------------------------------------
    def squatter(self) -> Session:
        """Never a config: keepalives, pings and pauses past the config deadline (issue #10:
        such clients held every stream slot). The server must end it: `config_timeout`."""
        rng = self.rng
        s = Session(expect=Expectation(error="config_timeout", close_code=1008))
        waited = 0.0
        while waited <= CONFIG_TIMEOUT_S + 0.5:
            roll = rng.random()
            if roll < 0.5:
                s.actions.append(Action("text", b'{"type": "keepalive"}'))
            elif roll < 0.8:
                s.actions.append(Action("ping", rng.randbytes(rng.randrange(0, 16))))
            else:
                pause = rng.uniform(0.2, 1.0)
                s.actions.append(Action("sleep", seconds=pause))
                waited += pause
        return s

    def session(self) -> Session:
        """A script, and the outcome the protocol model predicts for it."""
        rng = self.rng
        if rng.random() < SQUATTERS:
            return self.squatter()
        s = Session()
        e = s.expect
        config: dict[str, Any] | None = None
        cursor = 0

        def fatal(code: str | None, close_code: int) -> None:
            e.error, e.close_code = code, close_code

        for _ in range(rng.randrange(2, 24)):
            roll = rng.random()
            if roll < 0.04:
                s.actions.append(Action("ping", rng.randbytes(rng.randrange(0, 126))))
                continue
            if roll < 0.055:
                # WebSocket-level violations: aiohttp closes per RFC 6455
                opcode, payload, close_code = rng.choice(
                    [(0x1, b"\xff\xfe\xfd", 1007), (0x3, b"abc", 1002), (0x0, b"x", 1002)]
                )
                s.actions.append(Action("raw", payload, opcode))
                fatal(None, close_code)
                break
            if roll < 0.07:
                size = MAX_MESSAGE_BYTES + rng.randrange(1, 50_000)
                opcode = rng.choice([0x1, 0x2])
                s.actions.append(Action("raw", b"x" * size, opcode))
                fatal(None, 1009)  # refused by aiohttp's reader before any of it is buffered
                break
            if config is None:
                if roll < 0.8:
                    text, parsed, code = self.config_message()
                    s.actions.append(Action("text", text.encode()))
                    if parsed is None:
                        fatal(code, 1008)
                        break
                    config, e.ready = parsed, True
                elif roll < 0.85:
                    s.actions.append(Action("text", b'{"type": "keepalive"}'))
                elif roll < 0.92:
                    s.actions.append(Action("binary", bytes(rng.randrange(0, 64))))
                    fatal("protocol_error", 1008)
                    break
                else:
                    s.actions.append(Action("text", self.junk_text(live=False).encode()))
                    fatal("protocol_error", 1008)
                    break
                continue
            # a live stream
            rate, channels = config.get("sample_rate", 16000), config.get("channels", 1)
            limit = rate * channels * 2
            if roll < 0.7:
                payload, cursor = self.audio_frame(config, cursor)
                s.actions.append(Action("binary", payload))
            elif roll < 0.73:
                size = rng.choice([1, 3, 2 * channels * 100 + 1]) + (2 if channels == 2 else 0)
                s.actions.append(Action("binary", bytes(size)))
                if size % (2 * channels):
                    fatal("protocol_error", 1008)
                    break
            elif roll < 0.76:
                s.actions.append(Action("binary", bytes(limit + 2 * channels)))
                fatal("frame_too_large", 1009)
                break
            elif roll < 0.86:
                s.actions.append(Action("text", b'{"type": "flush"}'))
                e.flushes += 1
            elif roll < 0.95:
                s.actions.append(Action("text", b'{"type": "keepalive"}'))
            else:
                s.actions.append(Action("text", self.junk_text(live=True).encode()))
                fatal("protocol_error", 1008)
                break
        if e.close_code is None:
            end = rng.random()
            if config is not None and end < 0.5:
                s.actions.append(Action("text", b'{"type": "close"}'))
                e.closed, e.close_code = True, 1000
                if rng.random() < 0.3:  # more after close: ignored
                    s.actions.append(Action("binary", bytes(64)))
                    s.actions.append(Action("text", self.junk_text(live=True).encode()))
            elif end < 0.75:
                s.actions.append(Action("abort"))
            else:
                s.actions.append(Action("ws_close"))
        return s


@dataclass
class Outcome:
    messages: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    eof: bool = False
    pongs: int = 0
    sent: int = 0


async def run_session(sidecar: SidecarProcess, session: Session) -> Outcome:
    out = Outcome()
    client = await RawClient.open(sidecar)

    async def read() -> None:
        while True:
            frame: Frame | None = await client.read_frame(SESSION_TIMEOUT_S)
            if frame is None:
                out.eof = True
                return
            if frame.opcode == 0x1:
                out.messages.append(check_server_message(frame.text))
            elif frame.opcode == 0xA:
                out.pongs += 1
            elif frame.opcode == 0x8:
                out.close_code = frame.close_code
                return
            else:
                raise AssertionError(f"unexpected frame opcode {frame.opcode}")

    reader = asyncio.create_task(read())
    aborted = False
    try:
        for action in session.actions:
            if reader.done():
                break  # the server already ended it
            try:
                async with asyncio.timeout(10):
                    if action.kind == "text":
                        await client.send(action.payload, 0x1)
                    elif action.kind == "binary":
                        await client.send(action.payload, 0x2)
                    elif action.kind == "ping":
                        await client.ping(action.payload)
                    elif action.kind == "raw":
                        await client.send(action.payload, action.opcode)
                    elif action.kind == "sleep":
                        await asyncio.sleep(action.seconds)
                    elif action.kind == "ws_close":
                        await client.send_close(1000)
                    elif action.kind == "abort":
                        client.abort()
                        aborted = True
                        break
            except (ConnectionError, RuntimeError):
                break  # the server closed on us mid-send: the reader has the story
            out.sent += 1
        if not aborted:
            async with asyncio.timeout(SESSION_TIMEOUT_S):
                await reader
    finally:
        reader.cancel()
        client.abort()
    return out


def check_session(index: int, session: Session, out: Outcome) -> None:
    e = session.expect
    where = f"session {index} (FUZZ_SEED={SEED}): {[a.kind for a in session.actions]}"
    messages = out.messages
    kinds = [m["type"] for m in messages]
    errors = [m for m in messages if m["type"] == "error"]
    aborted = any(a.kind == "abort" for a in session.actions)
    if e.ready and (out.messages or not aborted):
        assert kinds and kinds[0] == "ready", (where, messages)

    # per utterance: started -> interim* -> final? -> ended; ids increase; finals once
    last_started, open_id = 0, None
    finals: set[int] = set()
    for m in messages:
        uid = m.get("utterance_id")
        if m["type"] == "speech_started":
            assert open_id is None and uid > last_started, (where, messages)
            last_started = open_id = uid
        elif m["type"] in ("interim", "final"):
            assert uid == open_id, (where, m, messages)
            if m["type"] == "final":
                assert uid not in finals, (where, messages)
                finals.add(uid)
        elif m["type"] == "speech_ended":
            assert uid == open_id, (where, messages)
            open_id = None

    if aborted:
        assert errors == [], (where, errors)
        return
    assert out.close_code is not None or out.eof, (where, "no close", messages)
    allowed = set(CLOSE_CODES)
    if e.close_code in (1002, 1007):
        allowed.add(e.close_code)
    assert out.close_code in allowed | {None}, (where, out.close_code)
    if e.error is not None:
        assert [m["code"] for m in errors] == [e.error], (where, messages)
        assert out.close_code == e.close_code, (where, out.close_code, messages)
    elif e.close_code is not None and not e.closed:
        # refused by aiohttp itself: a close code, no error message
        assert errors == [] and out.close_code == e.close_code, (where, out.close_code, messages)
    else:
        assert errors == [], (where, messages)
    if e.closed and e.error is None and e.close_code == 1000:
        assert kinds[-1] == "closed" and kinds.count("closed") == 1, (where, kinds)
        assert kinds.count("flushed") == e.flushes, (where, kinds)
        assert out.close_code == 1000, (where, out.close_code)
    if not e.closed and e.error is None and e.close_code is None:
        # ended by our WebSocket close: the server answers it (1000)
        assert out.close_code == 1000, (where, out.close_code)


async def test_websocket_fuzz(sidecar: SidecarProcess) -> None:
    gen = Generator(SEED)
    sessions = [gen.session() for _ in range(SESSIONS)]
    total = sum(len(s.actions) for s in sessions)

    # warm-up so the resource baseline includes first-use allocations (decoder, resamplers):
    # several streams at once, so that every decode worker thread has run (each one's first
    # decode grows the process by tens of MiB that it keeps, which is not a leak)
    c = clip("goforward.wav")
    audio, rate = load_pcm16(c.path)
    await asyncio.gather(*(replay(sidecar.ws_url, audio, rate, speed=0) for _ in range(4)))
    await wait_streams_gone(sidecar)
    fds_before, rss_before = open_fds(sidecar), rss_mb(sidecar)
    failures_before = sidecar.log().count("stream failed")

    started = time.monotonic()
    limit = asyncio.Semaphore(CONCURRENCY)
    sent = 0
    pongs = 0
    peak = rss_before

    async def one(i: int, session: Session) -> None:
        nonlocal sent, pongs, peak
        async with limit:
            try:
                out = await run_session(sidecar, session)
            except TimeoutError:
                raise AssertionError(
                    f"session {i} (FUZZ_SEED={SEED}) hung: {[a.kind for a in session.actions]}"
                ) from None
        sent += out.sent
        pongs += out.pongs
        if i % 25 == 0:
            peak = max(peak, rss_mb(sidecar))
        check_session(i, session, out)

    # Twice: memory that a leak holds grows from one round to the next; what two concurrent
    # decodes use while they run (and the allocator keeps for the next ones) does not.
    after_rounds = []
    for _ in range(2):
        await asyncio.gather(*(one(i, s) for i, s in enumerate(sessions)))
        await wait_streams_gone(sidecar)
        after_rounds.append(rss_mb(sidecar))
    elapsed = time.monotonic() - started
    fds_after, rss_after = open_fds(sidecar), after_rounds[-1]
    outcomes: dict[str, int] = {}
    for s in sessions:
        key = s.expect.error or (
            "closed" if s.expect.closed else f"close {s.expect.close_code or 'by client'}"
        )
        outcomes[key] = outcomes.get(key, 0) + 1
    print(
        f"\nWebSocket fuzz FUZZ_SEED={SEED}: {len(sessions)} sessions, {total} frames/messages "
        f"scripted, {sent} sent, {pongs} pongs, in {elapsed:.1f} s; outcomes {outcomes}; "
        f"FDs {fds_before} -> {fds_after}, RSS {rss_before:.0f} -> "
        f"{' -> '.join(f'{x:.0f}' for x in after_rounds)} MiB "
        f"(peak {peak:.0f})"
    )
    assert sent >= 2000, f"only {sent} frames/messages sent; raise FUZZ_WS_SESSIONS"
    assert fds_after <= fds_before + 2, (fds_before, fds_after)
    # Two decode workers decoding several streams at once cost 130-180 MiB while they run
    # (measured; one worker 90-100 MiB), and the allocator keeps 10-80 MiB of it for the next
    # decodes, give or take 40 MiB from round to round. A leak adds in every round: the one this
    # suite found (sessions held until the cyclic GC ran) added ~80 MiB per 400 sessions.
    assert peak - rss_before < 250, (rss_before, peak, after_rounds)
    assert after_rounds[1] - after_rounds[0] < 50, (rss_before, peak, after_rounds)
    assert rss_after - rss_before < 100, (rss_before, peak, after_rounds)
    log = sidecar.log()
    assert log.count("stream failed") == failures_before, log[log.rfind("stream failed") :][:3000]

    # and it still streams right
    result = await replay(sidecar.ws_url, audio, rate, speed=0)
    assert wer(c.text, " ".join(f["text"] for f in result.finals)) <= 0.25, result.finals
