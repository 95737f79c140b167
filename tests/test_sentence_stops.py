"""The stop's own probability, on real speech with the bundled model: the final's decode keeps
sentence stops apart and `attach_sentence_stops` merges them back, so clients get the same words
as before and the endpoint learns how sure Whisper is that the sentence ended."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from faster_whisper import WhisperModel
from faster_whisper.transcribe import Segment

from stt_sidecar.model import bundled_model_path
from stt_sidecar.replay import load_pcm16
from stt_sidecar.scheduler import install_encoder_window, remove_encoder_window, run_whisper
from stt_sidecar.streaming.encoder_windows import encoder_window_s
from stt_sidecar.streaming.endpointing import SPECULATE_MS, Endpoint, classify
from stt_sidecar.streaming.protocol import StreamConfig
from stt_sidecar.streaming.session import PRE_ROLL_S
from stt_sidecar.streaming.transcripts import attach_sentence_stops, final_options
from stt_sidecar.whisper_options import DecodeRequest, decode_options

from .support.speech import DATA, clip

RATE = 16000


@pytest.fixture(scope="module")
def model() -> Iterator[WhisperModel]:
    install_encoder_window()  # finals decode in a window fitted to their audio, as here
    try:
        yield WhisperModel(str(bundled_model_path()), device="cpu", compute_type="int8")
    finally:
        remove_encoder_window()


def decode(model: WhisperModel, audio: np.ndarray, options: dict[str, Any]) -> list[Segment]:
    window = encoder_window_s(audio.size / RATE, final=True, english_only=True)
    segments, _ = run_whisper(model, audio, options, window)
    return segments


def speech(path: Path) -> np.ndarray:
    audio, rate = load_pcm16(path)
    assert rate == RATE
    return audio[:, 0].astype(np.float32) / 32768.0


def test_clients_get_the_words_faster_whisper_would_give(model: WhisperModel) -> None:
    options = final_options(StreamConfig())
    assert "." not in options["append_punctuations"] and "," in options["append_punctuations"]
    merged_by_faster_whisper = {
        **options,
        "append_punctuations": decode_options(DecodeRequest())["append_punctuations"],
    }
    stops = []
    for name in ("jfk.wav", "goforward.wav", "librivox_0880.wav", "librivox_0920.wav"):
        audio = speech(clip(name).path)
        ours, stop = attach_sentence_stops(decode(model, audio, options))
        theirs = decode(model, audio, merged_by_faster_whisper)
        # the same words, times and probabilities (the stop's is kept aside)
        assert [s.words for s in ours] == [s.words for s in theirs], name
        assert [s.text for s in ours] == [s.text for s in theirs], name
        if ours[-1].text.endswith("."):
            assert ours[-1].words and ours[-1].words[-1].word.endswith(".")
            assert stop is not None and 0.0 < stop <= 1.0
            stops.append(name)
        else:
            assert stop is None
    assert len(stops) >= 2, stops


def test_whisper_doubts_the_stop_it_puts_after_a_fragment(model: WhisperModel) -> None:
    """ "He might even have been" (then a 566 ms pause, then "made amiable himself"): tiny.en
    writes a stop after the fragment, but gives it far less probability than the one after the
    whole sentence, so the pause waits long instead of ending the sentence."""
    audio = speech(DATA / "pauses.wav")
    sentence = json.loads((DATA / "pauses.json").read_text())["utterances"][2]
    assert sentence["text"] == "he might even have been made amiable himself"
    start = sentence["speech_start"] - PRE_ROLL_S
    options = final_options(StreamConfig())

    def speculative(at: float) -> tuple[str, Endpoint]:
        piece = audio[int(start * RATE) : int((at + SPECULATE_MS / 1000) * RATE)]
        segments = decode(model, piece, options)
        merged, stop = attach_sentence_stops(segments)
        text = " ".join(s.text.strip() for s in merged)
        return text, classify(text, stop)

    fragment, at_the_pause = speculative(sentence["pauses"][0]["at"])
    whole, at_the_end = speculative(sentence["speech_end"])
    assert fragment.lower().startswith("he might even have been"), fragment
    assert whole.lower().endswith("amiable himself."), whole
    assert (at_the_pause, at_the_end) == (Endpoint.LONG, Endpoint.SHORT), (fragment, whole)
