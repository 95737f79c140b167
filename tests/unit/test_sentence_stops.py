"""`attach_sentence_stops`: stops decoded apart are merged into the word before them, as
faster-whisper merges punctuation, and the probability of the one ending the decode is kept."""

from __future__ import annotations

from faster_whisper.transcribe import Segment, Word

from stt_sidecar.streaming.protocol import StreamConfig
from stt_sidecar.streaming.transcripts import attach_sentence_stops, final_options

APPENDED = final_options(StreamConfig())["append_punctuations"]


def segment(*words: tuple[str, float]) -> Segment:
    return Segment(
        id=0,
        seek=0,
        start=0.0,
        end=1.0,
        text="".join(w for w, _ in words),
        tokens=[],
        avg_logprob=-0.1,
        compression_ratio=1.0,
        no_speech_prob=0.0,
        words=[
            Word(start=i * 0.1, end=i * 0.1 + 0.1, word=w, probability=p)
            for i, (w, p) in enumerate(words)
        ],
        temperature=0.0,
    )


def words(segments: list[Segment]) -> list[list[tuple[str, float]]]:
    return [[(w.word, w.probability) for w in s.words or []] for s in segments]


def test_the_stop_ending_the_decode_is_merged_and_its_probability_kept() -> None:
    merged, stop = attach_sentence_stops(
        [segment((" Ask", 0.9), (" not", 0.99), (".", 0.3))], APPENDED
    )
    assert words(merged) == [[(" Ask", 0.9), (" not.", 0.99)]]  # the word's own probability
    assert stop == 0.3
    assert merged[0].words is not None and merged[0].words[1].end == 0.2  # the word's times


def test_a_closing_quote_after_the_stop_goes_with_it() -> None:
    # faster-whisper has merged the quote into the stop ('."'): it follows its stop
    merged, stop = attach_sentence_stops(
        [segment((' "Go', 0.8), (" on", 0.95), ('."', 0.7))], APPENDED
    )
    assert words(merged) == [[(' "Go', 0.8), (' on."', 0.95)]]
    assert stop == 0.7


def test_a_stop_inside_the_decode_is_merged_but_does_not_end_it() -> None:
    merged, stop = attach_sentence_stops(
        [segment((" Yes", 0.9), ("?", 0.8), (" No", 0.7))], APPENDED
    )
    assert words(merged) == [[(" Yes?", 0.9), (" No", 0.7)]]
    assert stop is None


def test_a_stop_starting_a_segment_goes_to_the_word_before_it() -> None:
    merged, stop = attach_sentence_stops([segment((" Yes", 0.9)), segment(("!", 0.6))], APPENDED)
    assert words(merged) == [[(" Yes!", 0.9)], []]
    assert stop == 0.6


def test_a_stop_with_no_word_before_it_stays_and_nothing_merged_is_untouched() -> None:
    lone = [segment((".", 0.1))]
    merged, stop = attach_sentence_stops(lone, APPENDED)
    assert merged[0] is lone[0] and stop is None
    plain = [segment((" hello", 0.9), (",", 0.5))]  # a comma: merged by faster-whisper already
    merged, stop = attach_sentence_stops(plain, APPENDED)
    assert merged[0] is plain[0] and stop is None
