"""Sidecar JSON -> SpeechData: words, confidence clamping, time offsets, language fallback."""

from __future__ import annotations

import math

import pytest
from livekit.agents.types import NOT_GIVEN
from livekit.plugins.custom_stt._results import (
    clamp01,
    speech_data_from_final,
    speech_data_from_interim,
    speech_data_from_verbose,
    timed_words,
    word_confidence,
)


@pytest.mark.parametrize(
    ("x", "clamped"),
    [(0.5, 0.5), (-0.1, 0.0), (1.7, 1.0), (math.nan, 0.0), (math.inf, 0.0), (-math.inf, 0.0)],
)
def test_clamp01(x: float, clamped: float) -> None:
    assert clamp01(x) == clamped


def test_word_confidence_prefers_confidence_then_probability() -> None:
    assert word_confidence({"confidence": 0.25, "probability": 0.75}) == 0.25
    assert word_confidence({"probability": 0.75}) == 0.75
    assert word_confidence({"probability": 3}) == 1.0
    assert word_confidence({"confidence": "high"}) is None
    assert word_confidence({}) is None


def test_timed_words_skip_blanks_and_shift_by_offset() -> None:
    words = timed_words(
        [
            {"word": " Go", "start": 0.1, "end": 0.3, "probability": 0.9},
            {"word": "  ", "start": 0.3, "end": 0.3},
            {"word": "forward", "start": 0.3, "end": 0.7},
        ],
        10.0,
    )
    assert [str(w) for w in words] == ["Go", "forward"]
    assert [(w.start_time, w.end_time) for w in words] == [
        pytest.approx((10.1, 10.3)),
        pytest.approx((10.3, 10.7)),
    ]
    assert words[0].confidence == 0.9 and words[1].confidence is NOT_GIVEN
    assert all(w.start_time_offset == 10.0 for w in words)


def test_final_shifts_times_clamps_confidence_and_reports_its_language() -> None:
    data = {
        "type": "final",
        "text": "  Go forward. ",
        "start": 0.5,
        "end": 1.5,
        "confidence": 1.2,
        "language": "de",
        "words": [{"word": "Go", "start": 0.5, "end": 0.8, "confidence": -0.5}],
    }
    sd = speech_data_from_final(data, offset=2.0, fallback_language="en")
    assert (sd.text, sd.language, sd.confidence) == ("Go forward.", "de", 1.0)
    assert (sd.start_time, sd.end_time) == (2.5, 3.5)
    assert sd.words is not None and sd.words[0].start_time == 2.5
    assert sd.words[0].confidence == 0.0


def test_final_defaults() -> None:
    sd = speech_data_from_final({"text": "hi"}, offset=1.0, fallback_language=None)
    assert (sd.language, sd.confidence, sd.start_time, sd.end_time) == ("", 0.0, 1.0, 1.0)
    assert sd.words == []
    assert speech_data_from_final({"text": "hi"}, offset=0, fallback_language="en").language == "en"
    no_conf = {"text": "hi", "confidence": None}
    assert speech_data_from_final(no_conf, offset=0, fallback_language=None).confidence == 0.0


def test_interim_keeps_stable_text_and_tolerates_missing_times() -> None:
    sd = speech_data_from_interim(
        {"text": " go for ", "start": 0.25, "end": None, "stable_text": " go "},
        offset=3.0,
        language="en-GB",
    )
    assert (sd.text, sd.language, sd.start_time, sd.end_time) == ("go for", "en-GB", 3.25, 3.0)
    assert sd.metadata == {"stable_text": "go"}
    assert speech_data_from_interim({"text": "x"}, offset=0.0, language=None).language == ""


def test_verbose_with_words_averages_word_confidence() -> None:
    data = {
        "text": " Hello there ",
        "language": "english",
        "duration": 3.0,
        "words": [
            {"word": "Hello", "start": 0.2, "end": 0.6, "probability": 0.8},
            {"word": "there", "start": 0.6, "end": 1.1, "probability": 0.4},
        ],
        "segments": [{"start": 0.0, "end": 1.2, "avg_logprob": -5.0}],
    }
    sd = speech_data_from_verbose(data, fallback_language="de")
    assert (sd.text, sd.language) == ("Hello there", "en")
    assert (sd.start_time, sd.end_time) == (0.2, 1.1)  # the words' span, not the segments'
    assert sd.confidence == pytest.approx(0.6)
    assert sd.words is not None and [str(w) for w in sd.words] == ["Hello", "there"]


def test_verbose_with_segments_only_uses_mean_logprob() -> None:
    data = {
        "text": "Hi",
        "segments": [
            {"start": 0.5, "end": 1.0, "avg_logprob": -0.1},
            {"start": 1.0, "end": 2.0, "avg_logprob": -0.3},
        ],
    }
    sd = speech_data_from_verbose(data, fallback_language="en")
    assert (sd.start_time, sd.end_time, sd.language) == (0.5, 2.0, "en")
    assert sd.confidence == pytest.approx(math.exp(-0.2))
    partial = {"text": "Hi", "segments": [{"start": 0, "end": 1}]}
    assert speech_data_from_verbose(partial, fallback_language=None).confidence == 0.0


def test_verbose_text_only_spans_the_duration() -> None:
    sd = speech_data_from_verbose({"text": "", "duration": 2.5}, fallback_language=None)
    assert (sd.text, sd.start_time, sd.end_time, sd.confidence) == ("", 0.0, 2.5, 0.0)
    assert speech_data_from_verbose({"text": "x"}, fallback_language=None).end_time == 0.0
