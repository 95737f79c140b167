"""A sidecar process's resource figures, for leak checks and benchmarks."""

from __future__ import annotations

import psutil

from .sidecar import SidecarProcess


def _process(sidecar: SidecarProcess) -> psutil.Process:
    assert sidecar.proc is not None
    return psutil.Process(sidecar.proc.pid)


def rss_bytes(sidecar: SidecarProcess) -> int:
    """Resident memory of the sidecar process."""
    return int(_process(sidecar).memory_info().rss)


def rss_mb(sidecar: SidecarProcess) -> float:
    return rss_bytes(sidecar) / 2**20


def open_fds(sidecar: SidecarProcess) -> int:
    return int(_process(sidecar).num_fds())
