"""`attach_sentence_stops`: stops decoded apart are merged into the word before them, as
faster-whisper merges punctuation, and the probability of the one ending the decode is kept."""

from __future__ import annotations

from faster_whisper.transcribe import Segment, Word

from stt_sidecar.streaming.transcripts import attach_sentence_stops


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
    merged, stop = attach_sentence_stops([segment((" Ask", 0.9), (" not", 0.99), (".", 0.3))])
    assert words(merged) == [[(" Ask", 0.9), (" not.", 0.99)]]  # the word's own probability
    assert stop == 0.3
    assert merged[0].words is not None and merged[0].words[1].end == 0.2  # the word's times


def test_a_stop_inside_the_decode_is_merged_but_does_not_end_it() -> None:
    merged, stop = attach_sentence_stops([segment((" Yes", 0.9), ("?", 0.8), (" No", 0.7))])
    assert words(merged) == [[(" Yes?", 0.9), (" No", 0.7)]]
    assert stop is None


def test_a_stop_starting_a_segment_goes_to_the_word_before_it() -> None:
    merged, stop = attach_sentence_stops([segment((" Yes", 0.9)), segment(("!", 0.6))])
    assert words(merged) == [[(" Yes!", 0.9)], []]
    assert stop == 0.6


def test_what_faster_whisper_does_not_merge_stays() -> None:
    # a stop after a space (French): a word of its own, and its probability is the stop's
    merged, stop = attach_sentence_stops([segment((" Tu", 0.9), (" viens", 0.9), (" ?", 0.7))])
    assert words(merged) == [[(" Tu", 0.9), (" viens", 0.9), (" ?", 0.7)]]
    assert stop == 0.7
    # one token that is no substring of faster-whisper's punctuation: it does not merge it
    merged, stop = attach_sentence_stops([segment((" Stop", 0.9), ('!"', 0.6))])
    assert words(merged) == [[(" Stop", 0.9), ('!"', 0.6)]]
    assert stop is None  # the quote's probability is in it: no stop's own
    # a stop in one token with the word: no probability of its own
    merged, stop = attach_sentence_stops([segment((" He", 0.9), (' said."', 0.8))])
    assert stop is None


def test_blank_words_and_a_lone_stop_change_nothing() -> None:
    merged, stop = attach_sentence_stops([segment((" Go", 0.9), (".", 0.45), (" ", 0.1))])
    assert words(merged) == [[(" Go.", 0.9), (" ", 0.1)]]
    assert stop == 0.45  # a blank word, dropped from finals, is not what the decode ends on
    lone = [segment((".", 0.1))]
    merged, stop = attach_sentence_stops(lone)
    assert merged[0] is lone[0]
    plain = [segment((" hello", 0.9), (",", 0.5))]  # a comma: merged by faster-whisper already
    merged, stop = attach_sentence_stops(plain)
    assert merged[0] is plain[0] and stop is None
