"""Shared fixtures: one real sidecar per test session, started on a free port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .support.sidecar import SidecarProcess


@pytest.fixture(scope="session")
def sidecar() -> Iterator[SidecarProcess]:
    """The real sidecar with the bundled tiny.en model and no API key.

    Limits are set explicitly so the tests never depend on defaults changing or on a .env.
    """
    proc = SidecarProcess(
        STT_MAX_UPLOAD_MB="25",
        STT_MAX_AUDIO_SECONDS="600",
        STT_MAX_PENDING="8",
        STT_MAX_STREAMS="8",
        STT_IDLE_TIMEOUT_S="30",
        STT_CONFIG_TIMEOUT_S="3",  # tests/reliability/test_fuzz_ws.py's squatters wait for it
    ).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def sidecar_url(sidecar: SidecarProcess) -> str:
    return sidecar.url
