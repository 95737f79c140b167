"""Moved to `tests.support.sidecar`; kept for tests/agent_support.py and tests/browser until
their owner's branch lands."""

from .support.sidecar import ROOT, SidecarProcess, free_port, sidecar_env

__all__ = ["ROOT", "SidecarProcess", "free_port", "sidecar_env"]
