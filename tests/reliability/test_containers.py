"""Uploads may only be audio containers that read nothing but themselves (issue #10).

Before the fix, a two-line ffconcat list made FFmpeg read a file from the server's disk and an
SDP file made it bind UDP sockets for ~20 s. Each payload here names a canary file (real speech,
put in the server's working directory) or a local port; the server must answer 400
`invalid_audio` promptly, and while it works on the request its process must never have the
canary open nor any socket but its own listener and the test's connection (psutil, polled).
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import av
import pytest

from ..batch_support import form
from ..container_payloads import (
    CANARY,
    disguised_payloads,
    mp4_with_external_audio,
    text_payloads,
)
from ..support.sidecar import SidecarProcess
from ..support.speech import clip, normalize
from .http_support import LEAK_LOG, assert_no_leaks, assert_transcribes, fetch
from .resource_watch import ResourceWatch

CANARY_SPEECH = clip("jfk.wav")  # "ask not what your country can do for you ..."
CANARY_WORDS = {"country", "americans", "ask"}
# Refusals are decided from the first bytes, on the event loop; the old SDP path took ~20 s.
# Generous for a shared machine, far below anything that waits on FFmpeg.
REFUSAL_BOUND_S = 3.0
ENDPOINTS = ("/v1/audio/transcriptions", "/transcribe")


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
