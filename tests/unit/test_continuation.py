"""Continuations: which audio a final is decoded after, and which words it keeps."""

from __future__ import annotations

import numpy as np

from stt_sidecar.audio_format import SAMPLE_RATE
from stt_sidecar.streaming.audio_input import SampleBuffer
from stt_sidecar.streaming.continuation import (
    CONTEXT_AUDIO_S,
    CONTINUATION_WINDOW_S,
    MAX_GAP_FILL_S,
    PreviousUtterance,
    echoed_words,
    without_first_words,
    words_from,
)

from .whisper_results import segment


def test_words_from_keeps_the_words_said_mostly_after_the_boundary() -> None:
    first = segment((0.0, 0.4, " And"), (0.4, 0.9, " mister"), (0.9, 1.5, " John."))
    second = segment((2.2, 2.9, " Dashwood"), (2.9, 3.1, " had"))
    # " John." straddles 1.3 s with most of it before: the previous utterance's word
    kept = words_from([first, second], 1.3)
    assert kept == [second]
    # the boundary inside a segment: that segment is cut, its text rebuilt from its words
    kept = words_from([first, second], 0.6)
    assert [s.text for s in kept] == [" mister John.", " Dashwood had"]
    # " mister" (0.4-0.9) is mostly after 0.6: kept, starting at the boundary, since the
    # earlier final ends before it
    assert kept[0].start == kept[0].words[0].start == 0.6 and kept[0].end == 1.5
    assert words_from([first, second], 3.5) == []


def test_a_word_the_earlier_final_guessed_before_it_was_said_is_not_sent_again() -> None:
    # the earlier final, decoded in a pause after "young", ended "... young man."; this
    # decode hears "young" end the earlier audio and "man" after the boundary (2.0 s)
    heard = [
        segment((0.0, 0.5, " He"), (0.5, 1.1, " was"), (1.1, 1.8, " young")),
        segment((2.2, 2.6, " man.")),
    ]
    sent = ["He", "was", "young", "man."]
    assert echoed_words(heard, 2.0, sent) == 1
    assert without_first_words(words_from(heard, 2.0), 1) == []
    # "than he was." sent, "was" said now, and a word after it, which is kept
    heard = [
        segment((0.0, 0.5, " than"), (0.5, 0.8, " he"), (2.2, 2.5, " was"), (2.5, 3.0, " so."))
    ]
    assert echoed_words(heard, 2.0, ["than", "he", "was."]) == 1
    kept = without_first_words(words_from(heard, 2.0), 1)
    assert [s.text for s in kept] == [" so."] and kept[0].start == 2.5


def test_a_word_said_again_after_a_pause_is_kept() -> None:
    # "No." then "No!": this decode hears both, one on each side of the boundary
    heard = [segment((0.0, 0.4, " No."), (2.2, 2.6, " No!"))]
    assert echoed_words(heard, 2.0, ["No."]) == 0
    # new words that merely differ from the earlier final's end: nothing to drop
    heard = [segment((0.0, 0.4, " Go"), (0.4, 0.9, " forward."), (2.2, 2.6, " Ten"))]
    assert echoed_words(heard, 2.0, ["Go", "forward."]) == 0
    assert echoed_words(heard, 2.0, []) == 0  # the earlier final had none (or is not known)
    # words said again, one of them misheard in the earlier audio this time: still kept
    heard = [
        segment((0.0, 0.4, " I"), (0.4, 0.8, " said"), (0.8, 1.2, " know."), (2.2, 2.6, " No!"))
    ]
    assert echoed_words(heard, 2.0, ["I", "said", "no."]) == 0
    heard = [
        segment((0.0, 0.4, " Cool"), (0.4, 0.8, " me"), (0.8, 1.2, " later.")),
        segment(
            (2.2, 2.6, " Call"), (2.6, 2.9, " me"), (2.9, 3.3, " later,"), (3.3, 3.7, " okay?")
        ),
    ]
    assert echoed_words(heard, 2.0, ["Call", "me", "later."]) == 0


def remembering(audio: np.ndarray, end: int, speech_end: int, gap: int) -> PreviousUtterance:
    """A PreviousUtterance that remembers `audio`, an utterance ending at sample `end`."""
    buffer = SampleBuffer(end)
    buffer.append(np.zeros(end - audio.size, np.float32))
    buffer.append(audio)
    previous = PreviousUtterance(gap=gap)
    previous.remember(buffer, end - audio.size, end, speech_end)
    return previous


WINDOW = int(CONTINUATION_WINDOW_S * SAMPLE_RATE)


def test_a_continuation_is_decoded_after_the_previous_utterance_and_the_pause() -> None:
    rate = SAMPLE_RATE
    previous = remembering(np.ones(2 * rate, np.float32), 3 * rate, int(2.7 * rate), gap=rate)
    # speech again 0.5 s after the end of speech: the old audio, then the unkept pause
    context = previous.context_for(start=int(3.2 * rate), onset=int(3.2 * rate), samples=rate)
    assert context is not None
    assert context.size == 2 * rate + int(0.2 * rate)
    assert np.all(context[2 * rate :] == 0)
    # a longer pause: no continuation
    assert previous.context_for(start=4 * rate, onset=int(3.8 * rate), samples=rate) is None
    previous.forget()
    assert previous.context_for(start=int(3.2 * rate), onset=int(3.2 * rate), samples=rate) is None


def test_context_audio_and_gap_fill_are_bounded() -> None:
    rate = SAMPLE_RATE
    previous = remembering(np.ones(25 * rate, np.float32), 25 * rate, 25 * rate, gap=5 * rate)
    context = previous.context_for(start=29 * rate, onset=29 * rate, samples=rate)
    assert context is not None
    assert context.size == int((CONTEXT_AUDIO_S + MAX_GAP_FILL_S) * rate)


def test_a_zero_gap_turns_continuations_off() -> None:
    rate = SAMPLE_RATE
    previous = remembering(np.ones(rate, np.float32), rate, rate, gap=0)
    assert previous.context_for(start=rate, onset=rate, samples=rate) is None


def test_context_and_utterance_fit_one_whisper_window() -> None:
    rate = SAMPLE_RATE
    audio = np.arange(8 * rate, dtype=np.float32)
    previous = remembering(audio, 8 * rate, 8 * rate, gap=rate)
    # room for 3 s: the last 2.5 s of the previous utterance, then the 0.5 s pause
    start = int(8.5 * rate)
    context = previous.context_for(start, start, samples=WINDOW - 3 * rate)
    assert context is not None and context.size == 3 * rate
    assert context[0] == 8 * rate - int(2.5 * rate)
    # room for less than a second of it: no continuation
    assert previous.context_for(start, start, samples=WINDOW - int(1.4 * rate)) is None
