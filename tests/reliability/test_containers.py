"""Uploads may only be audio containers that read nothing but themselves (issue #10).

Before the fix, a two-line ffconcat list made FFmpeg read a file from the server's disk and an
SDP file made it bind UDP sockets for ~20 s. Each payload here names a canary file (real speech,
put in the server's working directory) or a local port; the server must answer 400
`invalid_audio` promptly, and while it works on the request its process must never have the
canary open nor any socket but its own listener and the test's connection (psutil, polled).
"""

from __future__ import annotations

import asyncio
import ctypes
import io
import json
import os
import shutil
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import av
import psutil
import pytest

from ..batch_support import form
from ..container_payloads import (
    CANARY,
    disguised_payloads,
    mp4_with_external_audio,
    text_payloads,
)
from ..sidecar_process import SidecarProcess
from ..speech import clip, normalize
from .http_support import LEAK_LOG, assert_no_leaks, assert_transcribes, fetch

CANARY_SPEECH = clip("jfk.wav")  # "ask not what your country can do for you ..."
CANARY_WORDS = {"country", "americans", "ask"}
# Refusals are decided from the first bytes, on the event loop; the old SDP path took ~20 s.
# Generous for a shared machine, far below anything that waits on FFmpeg.
REFUSAL_BOUND_S = 3.0
ENDPOINTS = ("/v1/audio/transcriptions", "/transcribe")


class _Inotify:
    """Linux inotify on one directory: every open of a file in it, by any process, is an event.
    Polling a process's open files can miss a file opened and closed within a millisecond
    (FFmpeg's HLS demuxer does exactly that); the kernel does not."""

    IN_ACCESS, IN_OPEN = 0x1, 0x20

    def __init__(self, directory: Path) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self._fd >= 0, ctypes.get_errno()
        wd = self._libc.inotify_add_watch(
            self._fd, str(directory).encode(), self.IN_OPEN | self.IN_ACCESS
        )
        assert wd >= 0, ctypes.get_errno()

    def names(self) -> set[str]:
        """Names of the files opened or read since the last call; closes nothing."""
        seen: set[str] = set()
        while True:
            try:
                buffer = os.read(self._fd, 65536)
            except BlockingIOError:
                return seen
            pos = 0
            while pos < len(buffer):
                _wd, _mask, _cookie, length = struct.unpack_from("iIII", buffer, pos)
                name = buffer[pos + 16 : pos + 16 + length].rstrip(b"\0").decode()
                seen.add(name)
                pos += 16 + length

    def close(self) -> None:
        os.close(self._fd)


class ResourceWatch:
    """While a request runs: inotify on the server's working directory (the canary's), and the
    server's sockets polled from a thread (psutil)."""

    def __init__(self, sidecar: SidecarProcess) -> None:
        assert sidecar.proc is not None
        self._process = psutil.Process(sidecar.proc.pid)
        self._port = sidecar.port
        self._inotify = _Inotify(sidecar.cwd)
        self._stop = threading.Event()
        self.files: set[str] = set()
        self.sockets: set[str] = set()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _poll(self) -> None:
        for f in self._process.open_files():
            if CANARY in f.path:
                self.files.add(f.path)
        for c in self._process.net_connections(kind="inet"):
            local = c.laddr.port if c.laddr else None
            # our listener and the test client's connections to it are expected; anything else
            # (UDP for RTP/RTCP, outgoing TCP for http:/rtsp:) was opened on an upload's behalf
            if local != self._port:
                self.sockets.add(f"{c.type.name} {c.laddr} -> {c.raddr} {c.status}")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._poll()
            except psutil.Error:
                return
            time.sleep(0.002)

    def __enter__(self) -> ResourceWatch:
        self._inotify.names()  # drop anything from before
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._poll()  # and once more after the answer: nothing left behind
        self.files |= self._inotify.names() & {CANARY}
        self._inotify.close()


@pytest.fixture(scope="module")
def canary(sidecar: SidecarProcess) -> Iterator[Path]:
    path = sidecar.cwd / CANARY
    shutil.copyfile(CANARY_SPEECH.path, path)
    yield path
    path.unlink(missing_ok=True)


async def _post(sidecar: SidecarProcess, path: str, data: bytes, where: str):
    async with aiohttp.ClientSession() as http:
        if path == "/transcribe":  # raw body, as curl --data-binary sends it
            return await fetch(
                http,
                "POST",
                sidecar.url + path,
                data=data,
                headers={"Content-Type": "application/octet-stream"},
                where=where,
            )
        return await fetch(http, "POST", sidecar.url + path, data=form(data), where=where)


def _assert_refused(answer, name: str) -> None:
    assert answer.status == 400, (name, answer.status, answer.text)
    assert json.loads(answer.text)["error"]["code"] in ("invalid_audio", "empty_audio"), name
    assert not CANARY_WORDS & set(normalize(answer.text).split()), (name, answer.text)


def test_dref_payload_is_live(tmp_path: Path) -> None:
    """The hand-built MP4 really points FFmpeg at the canary when data references are on (in
    this process, with the nested open recorded and refused): otherwise the server test below
    would prove nothing. (The text payloads are FFmpeg's own formats, each checked under strace
    against an unrestricted `av.open` when this was written: concat and HLS open the file, SDP
    binds the ports.)"""
    attempts: list[str] = []

    def record(url: str, flags: int, options: dict) -> None:
        attempts.append(url)
        raise PermissionError(url)

    mp4 = mp4_with_external_audio(clip("goforward.wav").path, tmp_path / "dref.mp4")
    with pytest.raises(Exception):  # noqa: B017 - whatever FFmpeg makes of the refusal
        with av.open(
            io.BytesIO(mp4), format="mov", options={"enable_drefs": "1"}, io_open=record
        ) as container:
            for _ in container.decode(audio=0):
                pass
    assert attempts == [CANARY]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("name", sorted(text_payloads(Path("/x"))))
async def test_reference_formats_refused_at_once(
    sidecar: SidecarProcess, canary: Path, endpoint: str, name: str
) -> None:
    payload = text_payloads(canary)[name]
    with ResourceWatch(sidecar) as watch:
        started = time.monotonic()
        answer = await _post(sidecar, endpoint, payload, f"{name} {endpoint}")
        elapsed = time.monotonic() - started
    _assert_refused(answer, name)
    assert json.loads(answer.text)["error"]["code"] == "invalid_audio"
    assert elapsed < REFUSAL_BOUND_S, (name, elapsed)
    assert not watch.files, (name, watch.files)
    assert not watch.sockets, (name, watch.sockets)


@pytest.mark.parametrize("name", sorted(disguised_payloads()))
async def test_allowed_magic_never_follows_references(
    sidecar: SidecarProcess, canary: Path, name: str
) -> None:
    """An allowed container's header in front of a playlist is opened with that container's
    demuxer only: refused as unreadable, or decoded as the junk samples it is. Never the
    canary's words, never the file or a socket."""
    payload = disguised_payloads()[name]
    with ResourceWatch(sidecar) as watch:
        answer = await _post(sidecar, "/v1/audio/transcriptions", payload, name)
    if answer.status == 200:
        assert not CANARY_WORDS & set(normalize(answer.text).split()), (name, answer.text)
    else:
        _assert_refused(answer, name)
    assert not watch.files, (name, watch.files)
    assert not watch.sockets, (name, watch.sockets)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_mp4_data_reference_not_followed(
    sidecar: SidecarProcess, canary: Path, tmp_path: Path, endpoint: str
) -> None:
    """A real MP4 whose sample data lives in another file (the canary): data references stay
    off, so there are no samples to decode."""
    payload = mp4_with_external_audio(clip("goforward.wav").path, tmp_path / "dref.mp4")
    with ResourceWatch(sidecar) as watch:
        answer = await _post(sidecar, endpoint, payload, f"mp4 dref {endpoint}")
    _assert_refused(answer, "mp4 dref")
    assert not watch.files, watch.files
    assert not watch.sockets, watch.sockets


async def test_sdp_flood_holds_nothing(sidecar: SidecarProcess, canary: Path) -> None:
    """Eight SDP uploads at once (once enough to hold every batch slot for 80 s): all refused
    at once, no socket bound, and a real clip is transcribed right after."""
    payload = text_payloads(canary)["sdp_250_streams"]
    with ResourceWatch(sidecar) as watch:
        async with aiohttp.ClientSession() as http:
            started = time.monotonic()
            answers = await asyncio.gather(
                *(
                    fetch(http, "POST", sidecar.url + "/transcribe", data=form(payload))
                    for _ in range(8)
                )
            )
            elapsed = time.monotonic() - started
    for answer in answers:
        _assert_refused(answer, "sdp flood")
    assert elapsed < 2 * REFUSAL_BOUND_S, elapsed
    assert not watch.sockets, watch.sockets
    await assert_transcribes(sidecar)


def test_leak_scan() -> None:
    assert LEAK_LOG.seen
    assert_no_leaks()
