"""Shared pieces for the HTTP reliability and security tests (`test_http_*`, `test_security*`,
`test_hallucination*`, `test_fuzz_http*`): a leak log that every response body goes through,
a small recording HTTP client, the sidecar's RSS, and the "still correct afterwards" check.

The leak log is a module-level list (one per pytest process), so every module that records into
it contributes to one session-wide scan; each module also ends with its own scan test so a leak
is reported next to the module that provoked it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import aiohttp
import pytest
from multidict import CIMultiDict

from ..batch_support import form
from ..support.leaks import leak_markers_in
from ..support.sidecar import SidecarProcess
from ..support.speech import clip, wer


@dataclass
class LeakLog:
    """Every response body (and close reason / error message) the suite has seen."""

    seen: list[tuple[str, str]] = field(default_factory=list)  # (where, text)

    def record(self, where: str, text: str) -> None:
        """Keep `text` for the final scan, and fail now if it already leaks."""
        self.seen.append((where, text))
        found = leak_markers_in(text)
        assert not found, f"{where}: {found} leaked in {text[:500]!r}"

    def scan(self) -> list[tuple[str, list[str]]]:
        return [(where, found) for where, text in self.seen if (found := leak_markers_in(text))]


LEAK_LOG = LeakLog()


def assert_no_leaks() -> None:
    """The scan every module ends with: over everything recorded so far in this session."""
    if not LEAK_LOG.seen:
        pytest.skip("no responses were collected in this run")
    leaked = LEAK_LOG.scan()
    assert leaked == [], leaked[:20]


@dataclass
class Answer:
    status: int
    headers: CIMultiDict[str]
    text: str


async def fetch(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    where: str = "",
    timeout: float = 30.0,
    **kwargs,
) -> Answer:
    """One request whose body goes through the leak log; bounded by `timeout` (no hangs)."""
    async with http.request(
        method, url, timeout=aiohttp.ClientTimeout(total=timeout), **kwargs
    ) as response:
        body = await response.read()
    text = body.decode("utf-8", errors="replace")
    LEAK_LOG.record(where or f"{method} {url}", text)
    return Answer(response.status, response.headers.copy(), text)


async def assert_transcribes(
    proc: SidecarProcess, headers: dict[str, str] | None = None, name: str = "goforward.wav"
) -> None:
    """The server is alive and still gives the right words for a real clip."""
    speech = clip(name)
    async with aiohttp.ClientSession(headers=headers) as http:
        answer = await fetch(
            http,
            "POST",
            proc.url + "/v1/audio/transcriptions",
            data=form(speech.path.read_bytes(), model="whisper-1"),
            timeout=60,
        )
    assert answer.status == 200, answer.text
    assert wer(speech.text, json.loads(answer.text)["text"]) <= 0.3, answer.text
