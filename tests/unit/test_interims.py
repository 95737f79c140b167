"""When a stream starts an interim (`streaming.interims`): only after enough new speech, never
while a pause is beginning, and later interims further apart than the first."""

from __future__ import annotations

from stt_sidecar.streaming.interims import (
    LATER_INTERIM_FACTOR,
    interim_due,
    interim_interval,
    new_speech_windows,
)

T = 0.35  # the session's SPEECH_CONTINUE


def test_counts_speech_windows_after_the_snapshot_only() -> None:
    probs = [0.9, 0.9, 0.1, 0.9, 0.2, 0.8]
    assert new_speech_windows(probs, 0, T) == 4
    assert new_speech_windows(probs, 3, T) == 2
    assert new_speech_windows(probs, 6, T) == 0


def test_due_after_enough_new_speech() -> None:
    assert interim_due([0.9] * 4, 0, needed_windows=4, threshold=T)
    assert not interim_due([0.9] * 4, 1, needed_windows=4, threshold=T)


def test_silence_since_the_snapshot_does_not_count() -> None:
    # as much audio as needed, but half of it silence: no new words to show yet
    probs = [0.9] * 2 + [0.1] * 2 + [0.9]
    assert not interim_due(probs, 0, needed_windows=4, threshold=T)
    assert interim_due([*probs, 0.9], 0, needed_windows=4, threshold=T)


def test_not_while_a_pause_begins() -> None:
    assert not interim_due([0.9] * 8 + [0.2], 0, needed_windows=4, threshold=T)
    assert not interim_due([], 0, needed_windows=0, threshold=T)


def test_later_interims_wait_longer() -> None:
    assert interim_interval(8000, first=True) == 8000
    assert interim_interval(8000, first=False) == int(8000 * LATER_INTERIM_FACTOR) > 8000
