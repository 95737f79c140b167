"""The replay buffer and the per-connection bookkeeping that decides what it may forget."""

from __future__ import annotations

import numpy as np
from livekit.plugins.custom_stt._connection import PRE_ROLL_S, QUIET_KEEP_S, Connection
from livekit.plugins.custom_stt._protocol import SAMPLE_RATE
from livekit.plugins.custom_stt._replay import ReplayBuffer


def pcm(samples: int, first: int = 0) -> bytes:
    return np.arange(first, first + samples, dtype=np.int16).tobytes()


def audio_of(buf: ReplayBuffer) -> bytes:
    return b"".join(e.data for e in buf.snapshot() if e.data is not None)


def test_replay_buffer_bounds() -> None:
    """Old audio beyond the bound goes (the caller is warned); trims split chunks exactly."""
    buf = ReplayBuffer(max_samples=1000)
    chunk = np.arange(400, dtype=np.int16).tobytes()
    assert buf.append_audio(chunk) == 0
    assert buf.append_audio(chunk) == 0
    marker = buf.append_flush()
    assert buf.append_audio(chunk) == 200  # 1200 > 1000: the oldest 200 samples go
    assert (buf.base, buf.end) == (200, 1200)
    buf.trim(500)
    entries = buf.snapshot()
    assert entries[0].start == 500 and entries[0].samples == 300
    assert marker in entries
    buf.trim(900)  # past the marker: that flush's audio is finalized
    assert marker not in buf.snapshot()
    assert sum(e.samples for e in buf.snapshot()) == buf.end - buf.base == 300


def test_append_keeps_stream_sample_positions() -> None:
    buf = ReplayBuffer(max_samples=10_000)
    assert buf.snapshot() == [] and buf.seconds == 0.0
    buf.append_audio(pcm(800))
    buf.append_audio(pcm(800, 800))
    assert [(e.start, e.samples) for e in buf.snapshot()] == [(0, 800), (800, 800)]
    assert (buf.base, buf.end) == (0, 1600)
    assert buf.seconds == 1600 / SAMPLE_RATE
    assert audio_of(buf) == pcm(1600)


def test_flush_markers_sit_between_audio_and_hold_no_samples() -> None:
    buf = ReplayBuffer(max_samples=10_000)
    buf.append_audio(pcm(800))
    marker = buf.append_flush()
    buf.append_audio(pcm(800, 800))
    assert (marker.start, marker.data, marker.samples) == (800, None, 0)
    assert buf.snapshot()[1] is marker
    assert buf.end == 1600  # a marker adds no samples
    buf.remove_marker(marker)
    assert marker not in buf.snapshot()
    buf.remove_marker(marker)  # already gone (trimmed or acknowledged): not an error
    assert audio_of(buf) == pcm(1600)


def test_trim_splits_a_chunk_at_the_exact_sample() -> None:
    buf = ReplayBuffer(max_samples=10_000)
    buf.append_audio(pcm(800))
    buf.append_audio(pcm(800, 800))
    buf.trim(1000)
    assert buf.base == 1000
    assert [(e.start, e.samples) for e in buf.snapshot()] == [(1000, 600)]
    assert audio_of(buf) == pcm(600, 1000)


def test_trim_never_goes_backwards_or_past_the_end() -> None:
    buf = ReplayBuffer(max_samples=10_000)
    buf.append_audio(pcm(800))
    buf.trim(500)
    buf.trim(100)  # earlier than the base: nothing comes back, nothing changes
    assert buf.base == 500 and audio_of(buf) == pcm(300, 500)
    buf.trim(5000)  # beyond the end: everything is gone, base stops at the end
    assert (buf.base, buf.end, buf.snapshot()) == (800, 800, [])
    buf.append_audio(pcm(10, 800))
    assert buf.snapshot()[0].start == 800


def test_marker_at_the_trim_point_stays() -> None:
    """A flush at sample N still awaits its acknowledgement when audio before N is trimmed."""
    buf = ReplayBuffer(max_samples=10_000)
    buf.append_audio(pcm(800))
    marker = buf.append_flush()
    buf.trim(800)
    assert buf.snapshot() == [marker]


def test_bound_drops_whole_and_partial_chunks() -> None:
    buf = ReplayBuffer(max_samples=1000)
    for i in range(5):
        buf.append_audio(pcm(300, 300 * i))
    assert (buf.base, buf.end) == (500, 1500)
    assert buf.end - buf.base == buf.max_samples
    assert audio_of(buf) == pcm(1000, 500)


def test_connection_times_are_relative_to_its_base() -> None:
    conn = Connection(base=8000)
    assert conn.to_sample(0) == 8000
    assert conn.to_sample(0.5) == 16000
    assert conn.to_sample("1.25") == 8000 + 20000


def test_connection_tracks_unfinalized_utterances() -> None:
    conn = Connection(base=0)
    assert not conn.has_unfinalized()
    conn.open[1] = False
    assert conn.has_unfinalized()
    conn.open[1] = True  # its final arrived
    assert not conn.has_unfinalized()


def test_trim_point_spares_the_pre_roll_of_a_later_utterance() -> None:
    conn = Connection(base=0)
    conn.starts = {1: 1000, 2: 20_000, 3: 40_000}
    pre_roll = int(PRE_ROLL_S * SAMPLE_RATE)
    assert conn.next_start(1) == 20_000 and conn.next_start(3) is None
    assert conn.trim_point(1, 10_000) == 10_000  # before utterance 2's pre-roll
    assert conn.trim_point(1, 19_000) == 20_000 - pre_roll
    assert conn.trim_point(3, 50_000) == 50_000  # nothing reported after it


def test_quiet_trim_only_with_nothing_pending_and_enough_live_audio() -> None:
    keep = int(QUIET_KEEP_S * SAMPLE_RATE)
    conn = Connection(base=0, live_from=1000)
    assert conn.quiet_trim_point(1000 + keep) is None  # not yet more than `keep` of live audio
    assert conn.quiet_trim_point(1001 + keep) == 1001
    conn.open[1] = False  # an utterance is open: keep everything
    assert conn.quiet_trim_point(5 * keep) is None
    conn.open.clear()
    conn.flushes.append(ReplayBuffer(10).append_flush())  # a flush awaits its acknowledgement
    assert conn.quiet_trim_point(5 * keep) is None
