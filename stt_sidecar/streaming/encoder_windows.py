"""How many seconds the encoder sees for a streaming decode.

Whisper was trained on 30 s windows and faster-whisper pads every input to 30 s, but an
utterance of a few seconds decodes as well in a window a little longer than itself, at a
fraction of the cost (the encoder is ~65 % of a decode and its attention grows with the
window). Measured on tiny.en, final-style decodes (word timestamps) of the 7 test sentences,
the conversation's utterances and the pauses set, one thread: 30 s windows 0.59-0.65 s CPU
and 5.7-7.2 % WER; audio + 3 s (at least 8 s) 0.20-0.22 s CPU and 4.1-5.2 % WER.
"""

from __future__ import annotations

WINDOW_LIMIT_S = 30.0  # Whisper's own window: longer audio is cut into 30 s windows anyway

# Finals: audio + 3 s, at least 8 s. Shorter minimums (6 s) lost words on the pauses set.
FINAL_MARGIN_S = 3.0
FINAL_MIN_WINDOW_S = 8.0

# Interims: prefixes of a sentence, often cut mid-word; below ~15 s tiny.en drifted from what
# the 30 s window gave and sometimes looped.
INTERIM_MARGIN_S = 1.0
INTERIM_MIN_WINDOW_S = 15.0


def final_window_s(audio_s: float) -> float:
    return min(WINDOW_LIMIT_S, max(FINAL_MIN_WINDOW_S, audio_s + FINAL_MARGIN_S))


def interim_window_s(audio_s: float) -> float:
    return min(WINDOW_LIMIT_S, max(INTERIM_MIN_WINDOW_S, audio_s + INTERIM_MARGIN_S))
