"""Per-connection state of a stream, and where the replay buffer may be trimmed.

The sidecar's times are seconds since the connection's first sample, which after a reconnect is
the replay buffer's base, not stream time 0. Unit-tested in ``tests/unit/test_plugin_replay.py``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ._protocol import SAMPLE_RATE
from ._replay import Entry

# With no utterance open, audio older than this cannot hold speech the server has not reported
# (its VAD answers within a second), so it is dropped from the replay buffer without a warning.
QUIET_KEEP_S = 10.0
# The sidecar reports an utterance's start at the VAD onset but decodes from ~0.4 s before it
# (Silero fires late); a trim never cuts into that pre-roll of a reported next utterance.
PRE_ROLL_S = 0.5


@dataclass
class Connection:
    """State of one WebSocket connection to the sidecar."""

    base: int  # stream sample index of this connection's time 0
    live_from: int = 0  # stream sample where live audio starts (after the replay)
    session_id: str = ""
    # utterance id -> whether its final has arrived; removed at speech_ended
    open: dict[int, bool] = field(default_factory=dict)
    starts: dict[int, int] = field(default_factory=dict)  # utterance id -> start sample
    flushes: deque[Entry] = field(default_factory=deque)  # sent, awaiting "flushed"
    closing: bool = False
    closed: bool = False

    def to_sample(self, t: Any) -> int:
        """A sidecar time (seconds on this connection) as a stream sample index."""
        return self.base + round(float(t) * SAMPLE_RATE)

    def has_unfinalized(self) -> bool:
        return any(not has_final for has_final in self.open.values())

    def next_start(self, after_id: int) -> int | None:
        later = [s for uid, s in self.starts.items() if uid > after_id]
        return min(later) if later else None

    def trim_point(self, uid: int, end_sample: int) -> int:
        """Where to trim once utterance ``uid`` ended at ``end_sample``: never into the
        (pre-rolled) start of a later utterance the sidecar already reported."""
        nxt = self.next_start(uid)
        if nxt is not None:
            end_sample = min(end_sample, nxt - int(PRE_ROLL_S * SAMPLE_RATE))
        return end_sample

    def quiet_trim_point(self, replay_end: int) -> int | None:
        """Where to trim old silence with nothing pending, or None to keep everything.

        Only once this connection has had live audio for a while: right after a replay the
        sidecar has not yet reported on the replayed audio, silence or not.
        """
        keep = int(QUIET_KEEP_S * SAMPLE_RATE)
        if not self.open and not self.flushes and replay_end - self.live_from > keep:
            return replay_end - keep
        return None
