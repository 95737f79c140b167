"""When a stream re-decodes its utterance for an interim.

An interim re-decodes the whole utterance so far (~0.1 s of CPU for tiny.en in its encoder
window, `encoder_windows.py`), so each one should show something new:

- the first comes after STT_INTERIM_INTERVAL_MS of speech, as it matters most (the first
  words on screen); later ones after `LATER_INTERIM_FACTOR` times that;
- it waits for the interval of new *speech* since the previous snapshot, counted in VAD windows,
  not in samples: audio that the VAD calls silence adds no words;
- it is not started while the latest window is silent: a pause may be beginning, and if it
  lasts, the final's speculative decode follows within 150 ms and would make the interim's
  result stale before it arrives. When speech resumes the interim starts on the next window.
"""

from __future__ import annotations

from collections.abc import Sequence

# Later interims come this many intervals apart (bench/stream.py: interims are ~60 % of a
# stream's CPU at 2 per second of speech).
LATER_INTERIM_FACTOR = 2


def interim_interval(interval: int, *, first: bool) -> int:
    """Samples of speech before the utterance's next interim (`interval`: the configured one,
    already stretched under load)."""
    return interval if first else int(interval * LATER_INTERIM_FACTOR)


def new_speech_windows(probs: Sequence[float], since: int, threshold: float) -> int:
    """VAD windows at or after index `since` whose speech probability reaches `threshold`."""
    return sum(1 for p in probs[max(since, 0) :] if p >= threshold)


def interim_due(
    probs: Sequence[float],
    since: int,
    *,
    needed_windows: int,
    threshold: float,
) -> bool:
    """Whether to start an interim now.

    Args:
        probs: the utterance's speech probability per VAD window, oldest first.
        since: index in `probs` of the first window after the previous interim's snapshot.
        needed_windows: speech windows that must have arrived since then (the interval).
        threshold: probability from which a window counts as speech.
    """
    if not probs or probs[-1] < threshold:
        return False
    return new_speech_windows(probs, since, threshold) >= needed_windows
