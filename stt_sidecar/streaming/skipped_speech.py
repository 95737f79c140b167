"""Speech a final's decode skipped: Whisper sometimes stops before the audio does.

Whisper can end its text early, on a lone timestamp, and faster-whisper (like Whisper itself)
then moves past the rest of the window: the words after it are never decoded. tiny.en did so
on "he was not an [0.62 s pause] ill disposed young man", which came out "He was not an ill-"
with the hyphen's time stretched over "disposed young man", whether the sentence was decoded
whole or after its first part (a continuation), where the three words were lost altogether.

The sign is a decode whose last word ends long before the VAD's end of speech. Whisper ends a
last word early on a fading syllable, by a few hundred ms, and the VAD holds on to speech
a little past its end; `SKIPPED_SPEECH_S` is well past both. The speech after that word is then
decoded on its own and its words are sent after the ones heard.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .transcripts import comparable_word, with_words

if TYPE_CHECKING:
    from faster_whisper.transcribe import Segment

SKIPPED_SPEECH_S = 1.0


def heard_until(segments: list[Segment]) -> float | None:
    """Decode time where the last word with a letter or digit ends; None without one."""
    ends = [w.end for s in segments for w in s.words or () if comparable_word(w.word)]
    return ends[-1] if ends else None


def skipped_from(segments: list[Segment], speech_end_s: float) -> float | None:
    """Decode time from which speech went undecoded (the end of the last word heard), or None
    when the words reach the end of speech (`speech_end_s`, decode time)."""
    until = heard_until(segments)
    if until is None or speech_end_s - until < SKIPPED_SPEECH_S:
        return None
    return until


def words_until(segments: list[Segment], until_s: float) -> list[Segment]:
    """`segments` without the words ending after `until_s` (the stretched rest of a decode
    that stopped early, a "-" or "...")."""
    kept: list[Segment] = []
    for segment in segments:
        words = [w for w in segment.words or () if w.end <= until_s]
        if len(words) == len(segment.words or ()):
            kept.append(segment)
        elif words:
            kept.append(with_words(segment, words))
    return kept
