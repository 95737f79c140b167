"""Speech a final's decode skipped: Whisper sometimes stops before the audio does.

Whisper can end its text early, on a lone timestamp, and faster-whisper (like Whisper itself)
then moves past the rest of the window: the words after it are never decoded. tiny.en did so
on "he was not an [0.62 s pause] ill disposed young man", which came out "He was not an ill-"
with the hyphen's time stretched over "disposed young man", whether the sentence was decoded
whole or after its first part (a continuation), where the three words were lost altogether.

The sign is a decode whose last word ends long before the VAD's end of speech. Whisper ends a
last word early on a fading syllable, by a few hundred ms, and the VAD holds on to speech
a little past its end; `SKIPPED_SPEECH_S` is well past both. The VAD must also have heard
`MIN_SKIPPED_SPEECH_S` of speech after that word (not a breath or a click after a pause). The
speech after it is then decoded on its own and its words are sent after the ones heard. On the
pauses set, conversation.wav and the held-out set streamed with both endpoints (341 final
decodes with words), only the decode above ended more than 0.75 s before the end of speech.

The stretched word can be a real one: a continuation of "... how much there might be" heard
the earlier audio again and ended on "be", stretched over the new "prudently in his power to
do for them". That "be" was the earlier final's last word, so the echo rule dropped it and
nothing was sent. A word is therefore taken to last at most `MAX_WORD_S`.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from ..audio_format import SAMPLE_RATE
from .transcripts import comparable_word, with_words
from .vad import WINDOW

if TYPE_CHECKING:
    from faster_whisper.transcribe import Segment

SKIPPED_SPEECH_S = 1.0
MIN_SKIPPED_SPEECH_S = 0.3
# A word is said in less: a longer last word is Whisper's alignment stretching it over the rest
# of the audio, as it did with "be" (3.1 s) over "prudently in his power to do for them"
MAX_WORD_S = 1.0


def heard_until(segments: list[Segment]) -> float | None:
    """Decode time where the last word with a letter or digit ends, that word taken as at most
    `MAX_WORD_S` long; None without one."""
    heard = [w for s in segments for w in s.words or () if comparable_word(w.word)]
    return min(heard[-1].end, heard[-1].start + MAX_WORD_S) if heard else None


def skipped_from(
    segments: list[Segment], speech_end_s: float, speech_windows_s: np.ndarray
) -> float | None:
    """Decode time from which speech went undecoded (the end of the last word heard), or None
    when the words reach the end of speech. Decode times: `speech_end_s`, the VAD's end of
    speech; `speech_windows_s`, where each VAD window it took for speech begins."""
    until = heard_until(segments)
    if until is None or speech_end_s - until < SKIPPED_SPEECH_S:
        return None
    heard_after = np.count_nonzero(speech_windows_s >= until) * WINDOW / SAMPLE_RATE
    return until if heard_after >= MIN_SKIPPED_SPEECH_S else None


def words_until(segments: list[Segment], until_s: float) -> list[Segment]:
    """`segments` without the words said from `until_s` on (the stretched rest of a decode
    that stopped early, a "-" or "..."), a word stretched past it ending there."""
    kept: list[Segment] = []
    for segment in segments:
        words = [
            w if w.end <= until_s else dataclasses.replace(w, end=until_s)
            for w in segment.words or ()
            if w.start < until_s
        ]
        if words == list(segment.words or ()):
            kept.append(segment)
        elif words:
            kept.append(with_words(segment, words))
    return kept
