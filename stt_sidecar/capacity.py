"""The default stream budget (`STT_MAX_STREAMS=0`): what this machine and model can carry.

Past its capacity a sidecar must refuse new streams (1013 `overloaded`) rather than let every
stream's finals wait in a growing queue. A stream's cost is mostly its finals, each a full
30 s-window decode that cannot be thinned (interims give way under load), so the budget comes
from one such decode timed at start, after the warm-up paid the one-off costs:

    streams = workers x UTILISATION x SECONDS_PER_FINAL / final_decode_seconds

`SECONDS_PER_FINAL`: stream seconds per final-sized decode of work, interims included. On a
quiet 2-core box one stream of conversation.wav cost 0.37 CPU-seconds per second of audio
against a 0.74 s final-sized decode (one per 2 s of speech); a participant who talks half the
time needs one per ~4 s. (Counting finals alone, one per 7.5 s, derived 11-13 streams there,
where 8 synchronized streams already reached final p95 4.0 s and 16 in turn 16.6 s.)
`UTILISATION`: how busy the workers may be on average before a final's queueing delay, not
its decode, makes its latency.
"""

from __future__ import annotations

import math

SECONDS_PER_FINAL = 3.0
UTILISATION = 0.6
MIN_STREAMS = 1
MAX_STREAMS = 256  # a fast GPU's decode would allow more: the socket count is the limit then


def derive_max_streams(final_decode_seconds: float, workers: int) -> int:
    """Streams to admit by default, from one final-sized decode's wall time on this machine.

    Args:
        final_decode_seconds: a 30 s-window decode of speech, one-off costs already paid.
        workers: decodes that run at once (`SidecarSettings.decode_workers`).
    """
    if not math.isfinite(final_decode_seconds) or final_decode_seconds <= 0:
        return MAX_STREAMS
    streams = workers * UTILISATION * SECONDS_PER_FINAL / final_decode_seconds
    return max(MIN_STREAMS, min(MAX_STREAMS, math.floor(streams)))
