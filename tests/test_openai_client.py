"""The official `openai` client, unchanged, against the sidecar's `/v1` API."""

from __future__ import annotations

import re
from collections.abc import Iterator

import openai
import pytest

from .support.speech import clip, wer

JFK = clip("jfk.wav")
SRT_CUE = re.compile(
    r"(\d+)\n(\d\d):(\d\d):(\d\d),(\d\d\d) --> (\d\d):(\d\d):(\d\d),(\d\d\d)\n(.+)\n"
)
VTT_CUE = re.compile(r"(\d\d):(\d\d):(\d\d)\.(\d\d\d) --> (\d\d):(\d\d):(\d\d)\.(\d\d\d)\n(.+)\n")


@pytest.fixture(scope="module")
def client(sidecar_url: str) -> Iterator[openai.OpenAI]:
    # Any api_key works when the server has none; max_retries=0 so errors show as they are.
    with openai.OpenAI(base_url=sidecar_url + "/v1", api_key="unused", max_retries=0) as c:
        yield c


def _seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


@pytest.mark.parametrize("model", ["whisper-1", "tiny.en"])
def test_json(client: openai.OpenAI, model: str) -> None:
    with JFK.path.open("rb") as f:
        result = client.audio.transcriptions.create(model=model, file=f, language="en")
    assert wer(JFK.text, result.text) == 0.0, result.text


def test_text(client: openai.OpenAI) -> None:
    with JFK.path.open("rb") as f:
        text = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="text")
    assert isinstance(text, str)
    assert wer(JFK.text, text) == 0.0, text


def test_verbose_json_with_word_timestamps(client: openai.OpenAI) -> None:
    with JFK.path.open("rb") as f:
        result = client.audio.transcriptions.create(
            model="whisper-1",
            file=f,
            response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
        )
    assert result.duration == pytest.approx(11.0, abs=0.01)
    assert result.language == "en"
    assert wer(JFK.text, result.text) == 0.0
    assert wer(JFK.text, " ".join(w.word for w in result.words)) == 0.0
    starts = [w.start for w in result.words]
    assert starts == sorted(starts), starts
    for w in result.words:
        assert 0.0 <= w.start <= w.end <= result.duration
    assert result.segments and all(s.end <= result.duration + 0.01 for s in result.segments)


def test_verbose_json_words_only(client: openai.OpenAI) -> None:
    with JFK.path.open("rb") as f:
        result = client.audio.transcriptions.create(
            model="whisper-1",
            file=f,
            response_format="verbose_json",
            timestamp_granularities=["word"],
        )
    assert result.words and not result.segments


def test_srt_is_well_formed(client: openai.OpenAI) -> None:
    with JFK.path.open("rb") as f:
        srt = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="srt")
    blocks = srt.strip().split("\n\n")
    previous_end = 0.0
    for number, block in enumerate(blocks, start=1):
        m = SRT_CUE.fullmatch(block + "\n")
        assert m, block
        assert int(m.group(1)) == number
        start, end = _seconds(*m.group(2, 3, 4, 5)), _seconds(*m.group(6, 7, 8, 9))
        assert previous_end <= start < end <= 11.0
        previous_end = end
    text = " ".join(SRT_CUE.fullmatch(b + "\n").group(10) for b in blocks)
    assert wer(JFK.text, text) == 0.0


def test_vtt_is_well_formed(client: openai.OpenAI) -> None:
    with JFK.path.open("rb") as f:
        vtt = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="vtt")
    header, *cues = vtt.strip().split("\n\n")
    assert header == "WEBVTT"
    previous_end = 0.0
    texts = []
    for cue in cues:
        m = VTT_CUE.fullmatch(cue + "\n")
        assert m, cue
        start, end = _seconds(*m.group(1, 2, 3, 4)), _seconds(*m.group(5, 6, 7, 8))
        assert previous_end <= start < end <= 11.0
        previous_end = end
        texts.append(m.group(9))
    assert wer(JFK.text, " ".join(texts)) == 0.0


def test_prompt_and_temperature_are_accepted(client: openai.OpenAI) -> None:
    short = clip("librivox_0930.wav")
    with short.path.open("rb") as f:
        result = client.audio.transcriptions.create(
            model="whisper-1", file=f, prompt="Sense and Sensibility.", temperature=0.2
        )
    assert wer(short.text, result.text) <= 0.2, result.text


def test_models(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == ["tiny.en", "whisper-1"]
    assert client.models.retrieve("tiny.en").id == "tiny.en"


def test_openai_transcription_model_names_are_served_by_our_model(client: openai.OpenAI) -> None:
    """livekit-plugins-openai's default (gpt-4o-mini-transcribe) works without configuration."""
    with JFK.path.open("rb") as f:
        result = client.audio.transcriptions.create(model="gpt-4o-mini-transcribe", file=f)
    assert wer(JFK.text, result.text) <= 0.2, result.text


def test_unknown_model_is_bad_request(client: openai.OpenAI) -> None:
    with JFK.path.open("rb") as f, pytest.raises(openai.BadRequestError) as info:
        client.audio.transcriptions.create(model="gpt-4", file=f)
    assert info.value.body["param"] == "model"
    assert info.value.body["code"] == "model_not_found"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # openai marks translations deprecated
def test_translation_on_english_only_model_is_bad_request(client: openai.OpenAI) -> None:
    with JFK.path.open("rb") as f, pytest.raises(openai.BadRequestError) as info:
        client.audio.translations.create(model="whisper-1", file=f)
    assert "English-only" in info.value.body["message"]
