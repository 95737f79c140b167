"""Moved to `tests.support.speech`; kept for tests/agent_support.py and tests/browser until
their owner's branch lands."""

from .support.speech import DATA, Clip, clip, clips, conversation, normalize, read_pcm16, wer

__all__ = ["DATA", "Clip", "clip", "clips", "conversation", "normalize", "read_pcm16", "wer"]
