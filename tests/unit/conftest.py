"""The fast tier: everything here runs in-process, with no model and no subprocess.

`make test-fast` runs only this directory (budget: under 60 s on 2 cores); the autouse guard
makes a test that breaks that contract fail instead of slowly creeping into the tier.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import NoReturn

import pytest


@pytest.fixture(autouse=True)
def _fast_tier_contract(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def refuse(*args: object, **kwargs: object) -> NoReturn:
        raise AssertionError("unit tests start no subprocess: move this test out of tests/unit")

    # asyncio's subprocess transport also goes through subprocess.Popen
    monkeypatch.setattr(subprocess, "Popen", refuse)
    had_whisper = "faster_whisper" in sys.modules
    yield
    assert had_whisper or "faster_whisper" not in sys.modules, "unit tests load no model"
