"""The default stream budget (`STT_MAX_STREAMS=0`): what this machine and model can carry.

Past its capacity a sidecar must refuse new streams (1013 `overloaded`) rather than let every
stream's finals wait in a growing queue. A stream's cost is mostly decodes of its own speech,
so the budget comes from one decode of the warm-up clip in the encoder window a streaming final
of its length gets, timed at start after the warm-up paid the one-off costs:

    streams = workers x UTILISATION x SECONDS_PER_FINAL / final_decode_seconds

`SECONDS_PER_FINAL`: stream seconds per final-sized decode of work, interims included, for
models whose streaming decodes use short encoder windows (English-only ones). On a quiet 2-core
box one stream of conversation.wav cost 0.14-0.23 CPU-seconds per second of audio against a
0.33-0.37 s timed decode (jfk.wav, 14 s window): one per ~1.5-2.5 s of speech, so one per ~3 s
for a participant who talks half the time. That derives 10-14 streams there, where 16 streams
taking turns held final p95 0.74 s and 8 synchronized ones 1.23 s (README, Measured).
`SECONDS_PER_FULL_WINDOW_FINAL`: the same for models that keep 30 s finals and 15 s interims
(multilingual ones), as calibrated when tiny.en decoded that way: 0.37 CPU-seconds per audio
second against a 0.74 s timed decode, one per ~4 s of a participant's stream.
`UTILISATION`: how busy the workers may be on average before a final's queueing delay, not
its decode, makes its latency.
"""

from __future__ import annotations

import math

SECONDS_PER_FINAL = 3.0
SECONDS_PER_FULL_WINDOW_FINAL = 4.0
UTILISATION = 0.6
MIN_STREAMS = 1
MAX_STREAMS = 256  # a fast GPU's decode would allow more: the socket count is the limit then


def derive_max_streams(
    final_decode_seconds: float, workers: int, *, short_windows: bool = True
) -> int:
    """Streams to admit by default, from one final-sized decode's wall time on this machine.

    Args:
        final_decode_seconds: a decode of speech in a streaming final's window, one-off costs
            already paid.
        workers: decodes that run at once (`SidecarSettings.decode_workers`).
        short_windows: whether streaming decodes use short encoder windows
            (`streaming/encoder_windows.py`), which changes what one stream costs.
    """
    if not math.isfinite(final_decode_seconds) or final_decode_seconds <= 0:
        return MAX_STREAMS
    seconds_per_final = SECONDS_PER_FINAL if short_windows else SECONDS_PER_FULL_WINDOW_FINAL
    streams = workers * UTILISATION * seconds_per_final / final_decode_seconds
    return max(MIN_STREAMS, min(MAX_STREAMS, math.floor(streams)))
