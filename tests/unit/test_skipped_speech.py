"""A final's decode that stops before the speech does: where, and which words are kept."""

from __future__ import annotations

import numpy as np

from stt_sidecar.audio_format import SAMPLE_RATE
from stt_sidecar.streaming.skipped_speech import (
    MAX_WORD_S,
    MIN_SKIPPED_SPEECH_S,
    SKIPPED_SPEECH_S,
    heard_until,
    skipped_from,
    words_until,
)
from stt_sidecar.streaming.transcripts import FinalText, joined_finals
from stt_sidecar.streaming.vad import WINDOW

from .whisper_results import segment

# tiny.en on "he was not an [0.62 s] ill disposed young man" (speech until 3.56 s): the
# hyphen's time stretched over "disposed young man", which were never decoded
STOPPED_EARLY = segment(
    (0.40, 0.70, " He"),
    (0.70, 1.00, " was"),
    (1.00, 1.20, " not"),
    (1.20, 1.40, " an"),
    (1.40, 1.80, " ill"),
    (1.80, 3.70, "-"),
)


def windows(begin: float, end: float) -> np.ndarray:
    """Where the VAD's speech windows between `begin` and `end` begin (decode time)."""
    return np.arange(round(begin * SAMPLE_RATE), round(end * SAMPLE_RATE), WINDOW) / SAMPLE_RATE


SPEECH = windows(0.4, 3.56)  # the VAD heard speech throughout, the pause left out
SPEECH = SPEECH[(SPEECH < 1.45) | (SPEECH >= 2.07)]


def test_a_decode_that_stopped_early_is_found_at_its_last_word_heard() -> None:
    assert heard_until([STOPPED_EARLY]) == 1.80  # "-" has no letter: not a word heard
    assert skipped_from([STOPPED_EARLY], 3.56, SPEECH) == 1.80
    kept = words_until([STOPPED_EARLY], 1.80)
    assert [s.text for s in kept] == [" He was not an ill"]


def test_words_ending_near_the_end_of_speech_are_no_skip() -> None:
    whole = segment(
        (0.4, 0.9, " Go"), (0.9, 1.4, " forward"), (1.5, 2.0, " 10"), (2.0, 2.4, " meters")
    )
    speech = windows(0.4, 4.0)
    # Whisper ends a fading last word early, and the VAD holds on a little past the end
    assert skipped_from([whole], 2.4 + SKIPPED_SPEECH_S - 0.01, speech) is None
    assert skipped_from([whole], 2.4 + SKIPPED_SPEECH_S, speech) == 2.4
    assert heard_until([segment((0.0, 0.5, " ..."))]) is None
    assert skipped_from([], 3.0, speech) is None  # nothing heard: nothing to go on from


def test_a_skip_needs_speech_the_vad_heard_after_the_last_word() -> None:
    whole = segment((0.4, 0.9, " Go"), (0.9, 1.4, " forward."))
    # a breath 1.4 s after the words: 0.19 s the VAD took for speech, then the pause ended
    breath = np.concatenate([windows(0.4, 1.4), windows(2.6, 2.6 + MIN_SKIPPED_SPEECH_S - 0.1)])
    assert skipped_from([whole], 2.8, breath) is None
    words = np.concatenate([windows(0.4, 1.4), windows(2.4, 2.4 + MIN_SKIPPED_SPEECH_S)])
    assert skipped_from([whole], 2.7, words) == 1.4


def test_words_until_drops_segments_left_without_words() -> None:
    second = segment((2.5, 3.0, " young"), (3.0, 3.4, " man."))
    assert words_until([STOPPED_EARLY, second], 1.80) == words_until([STOPPED_EARLY], 1.80)
    assert words_until([STOPPED_EARLY, second], 5.0) == [STOPPED_EARLY, second]


def final(text: str, start: float, end: float, stop: float | None) -> FinalText:
    words = [
        {"word": w, "start": start, "end": end, "confidence": 0.5 + i / 10}
        for i, w in enumerate(text.split())
    ]
    return FinalText(text, start, end, 0.6, "en", words, stop)


def test_the_words_heard_and_the_rest_make_one_final() -> None:
    head = final("He was not an ill", 0.4, 1.8, None)
    tail = final("disposed young man.", 1.8, 3.6, 0.9)
    joined = joined_finals(head, tail)
    assert joined is not None
    assert joined.text == "He was not an ill disposed young man."
    assert (joined.start, joined.end) == (0.4, 3.6)
    assert joined.words == head.words + tail.words
    assert joined.stop_confidence == 0.9  # how the text ends: the rest's stop
    assert joined.language == "en"
    assert abs(joined.confidence - sum(w["confidence"] for w in joined.words) / 8) < 1e-9
    assert joined_finals(None, tail) is tail
    assert joined_finals(head, None) is head
    assert joined_finals(None, None) is None


def test_a_real_word_stretched_over_the_rest_counts_as_heard_for_a_second_at_most() -> None:
    # a continuation of "... how much there might be" (earlier audio until 5.82 s) that heard
    # it again and stretched "be" over the new "prudently in his power to do for them"
    stretched = segment((4.80, 5.02, " might"), (5.02, 8.08, " be"), (8.08, 8.08, "."))
    assert heard_until([stretched]) == 5.02 + MAX_WORD_S
    assert skipped_from([stretched], 7.95, windows(6.23, 7.95)) == 5.02 + MAX_WORD_S
    kept = words_until([stretched], 5.02 + MAX_WORD_S)
    assert [(w.word, w.end) for w in kept[0].words] == [(" might", 5.02), (" be", 6.02)]
    # a long word that ends with the speech is no skip
    drawn_out = segment((0.4, 0.9, " So"), (0.9, 2.3, " sooo."))
    assert skipped_from([drawn_out], 2.4, windows(0.4, 2.4)) is None
