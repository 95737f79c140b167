"""How many seconds of audio the encoder sees for a streaming decode.

Whisper was trained on 30 s windows and faster-whisper pads every input to 30 s, but an
utterance of a few seconds decodes as well in a window a few seconds longer than itself, at a
fraction of the cost: the encoder is ~65 % of a decode, and its attention grows faster than
the window. Measured on tiny.en, one thread, against the 30 s window:

- finals (word timestamps) of the 7 test sentences, the conversation's utterances and the
  pauses set: 0.59-0.65 s CPU and 5.7-7.2 % WER in 30 s windows; 0.20-0.22 s and 4.1-5.2 %
  in this rule's windows;
- interims (124 prefixes of those utterances cut every second, often mid-word), against the
  words the final decode timed before the cut: 16.3 % in 15 s windows (the old interim rule),
  16.4 % in this rule's, at 0.10 s CPU instead of 0.18 s.

Both margin and minimum matter: an 8 s minimum with a 1 s margin, or a 6 s minimum, made
tiny.en loop on fragments and lose words (WER 37-130 % on the prefixes). A decode that loops
anyway is caught by the session (`context.runaway`): a final is redone in 30 s, an interim
dropped.

Finals prompted with the stream's earlier finals (context, off by default) keep Whisper's 30 s
window: in a short one, tiny.en repeated the prompt's sentence ("Go forward 10 meters. Go
forward 10 meters." for one "go forward ten meters").

Multilingual models keep the windows they had (30 s finals, 15 s interims): base did as well
in short windows on the 32 single clips (es/fr/it/en), but in a stream that switched from
French to English it turned "go forward ten meters" into "10m 10 meters", and the 30 s window
did not.
"""

from __future__ import annotations

WINDOW_LIMIT_S = 30.0  # Whisper's own window: longer audio is cut into 30 s windows anyway
MARGIN_S = 3.0
MIN_WINDOW_S = 8.0

MULTILINGUAL_INTERIM_MARGIN_S = 1.0
MULTILINGUAL_INTERIM_MIN_WINDOW_S = 15.0


def encoder_window_s(audio_s: float, *, final: bool, english_only: bool) -> float | None:
    """The encoder window for `audio_s` seconds of endpointed speech (an utterance for a
    final, a prefix of one for an interim); None: Whisper's 30 s."""
    if english_only:
        return min(WINDOW_LIMIT_S, max(MIN_WINDOW_S, audio_s + MARGIN_S))
    if final:
        return None
    return min(
        WINDOW_LIMIT_S,
        max(MULTILINGUAL_INTERIM_MIN_WINDOW_S, audio_s + MULTILINGUAL_INTERIM_MARGIN_S),
    )
