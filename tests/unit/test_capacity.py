"""The default stream budget (`capacity.derive_max_streams`) and how STT_MAX_STREAMS selects it."""

from __future__ import annotations

import math

import pytest

from stt_sidecar.capacity import MAX_STREAMS, derive_max_streams
from stt_sidecar.config import SidecarSettings


def test_more_streams_on_faster_decodes_and_more_workers() -> None:
    slow = derive_max_streams(1.0, workers=2)
    assert derive_max_streams(0.5, workers=2) == pytest.approx(2 * slow, abs=1)
    assert derive_max_streams(1.0, workers=4) == pytest.approx(2 * slow, abs=1)
    assert derive_max_streams(1.0, workers=1) < slow


def test_models_streaming_in_full_windows_count_a_final_per_more_stream_seconds() -> None:
    # multilingual models keep 30 s finals: one timed decode stands for more of a stream
    full = derive_max_streams(1.39, workers=2, short_windows=False)  # base, measured here
    assert full == 3 > derive_max_streams(1.39, workers=2) == 2


def test_bounded_whatever_the_measurement() -> None:
    assert derive_max_streams(60.0, workers=1) == 1  # a machine far too slow still serves one
    assert derive_max_streams(1e-6, workers=2) == MAX_STREAMS
    assert derive_max_streams(0.0, workers=2) == MAX_STREAMS
    assert derive_max_streams(math.nan, workers=2) == MAX_STREAMS


def test_derived_unless_set() -> None:
    assert SidecarSettings.from_env({}).max_streams == 0  # 0: derived at start
    assert SidecarSettings.from_env({"STT_MAX_STREAMS": "5"}).max_streams == 5
    assert SidecarSettings.from_env({"STT_MAX_STREAMS": "0"}).max_streams == 0
