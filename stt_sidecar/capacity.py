"""The default stream budget (`STT_MAX_STREAMS=0`): what this machine and model can carry.

Past its capacity a sidecar must refuse new streams (1013 `overloaded`) rather than let every
stream's finals wait in a growing queue. A stream's cost is mostly its finals, each a full
30 s-window decode that cannot be thinned (interims give way under load), so the budget comes
from one such decode timed at start, after the warm-up paid the one-off costs:

    streams = workers x UTILISATION x SECONDS_PER_FINAL / final_decode_seconds

`SECONDS_PER_FINAL`: a conversation participant needs one final-sized decode (finals and the
speculative decodes a pause starts) per ~7.5 s of stream time: 13 per 50 s of
tests/data/conversation.wav, a stream that speaks about 75 % of the time, streamed as half of
each participant's time (bench/stream.py `--modes turns`, two people in turn).
`UTILISATION`: how busy the workers may be on average before a final's queueing delay, not
its decode, makes its latency.
"""

from __future__ import annotations

import math

SECONDS_PER_FINAL = 7.5
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
