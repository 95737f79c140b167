"""Batch audio decoded in pieces of at most 30 s, cut in pauses.

One scheduler job per piece instead of one per file, so that:

- a streaming final never waits for more than one piece (a whole 10-minute upload used to hold
  a decode worker for tens of seconds: issue #10);
- memory per request is the PCM (int16, 19 MB for 10 minutes) plus one piece's features,
  instead of faster-whisper's features and STFT for the whole file (~200 MB at 10 minutes);
- a client that hangs up stops its decode at the next piece.

The pieces are invisible in the transcript: each cut is in a pause the VAD found, timestamps
are shifted back to the file's clock, and the decode of each piece is the whole-file decode
(same options; VAD inside the piece as faster-whisper applies it to a file). Nothing is carried
from piece to piece because nothing is carried from window to window in the whole-file decode
either (`condition_on_previous_text` is off): the prompt conditions the first piece only, as it
conditions only the first 30 s window of a file, and the language detected on the first piece
is kept for the others, as a file's is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from faster_whisper.transcribe import Segment, TranscriptionInfo
from faster_whisper.vad import VadOptions, get_speech_timestamps

from .audio_format import SAMPLE_RATE
from .scheduler import DecodeResult

PIECE_MAX_S = 30.0  # Whisper's window: a piece never needs a second encoder pass for length
PIECE_MIN_S = 15.0  # cuts are looked for in the second half of each 30 s span
# Planning only needs pauses between words, so a shorter silence than the decode's 2 s VAD
# setting, and no padding (the cut goes in the middle of the pause).
_PLAN_VAD = VadOptions(threshold=0.5, min_silence_duration_ms=200, speech_pad_ms=0)
_FRAME = SAMPLE_RATE // 50  # 20 ms, for the quietest-point fallback


def _quietest_point(window: np.ndarray, lo: int, hi: int) -> int:
    """Sample index in [lo, hi) of the quietest 20 ms frame: between words, usually."""
    frames = window[lo : lo + (hi - lo) // _FRAME * _FRAME].reshape(-1, _FRAME)
    energy = np.square(frames.astype(np.float32)).mean(axis=1)
    return lo + int(np.argmin(energy)) * _FRAME + _FRAME // 2


def plan_pieces(audio: np.ndarray) -> list[tuple[int, int]]:
    """Split 16 kHz PCM (int16) into consecutive (start, end) sample ranges of at most
    `PIECE_MAX_S`, each cut in the middle of the longest pause in the second half of its span
    (or, in unbroken speech, at the quietest 20 ms there).

    Blocking: the VAD runs over every span but the last. Run it in an executor.
    """
    total = audio.shape[0]
    max_len = int(PIECE_MAX_S * SAMPLE_RATE)
    min_len = int(PIECE_MIN_S * SAMPLE_RATE)
    pieces: list[tuple[int, int]] = []
    start = 0
    while total - start > max_len:
        window = audio[start : start + max_len]
        speech = get_speech_timestamps(window.astype(np.float32) / 32768.0, _PLAN_VAD)
        edges = [0] + [t for chunk in speech for t in (chunk["start"], chunk["end"])] + [max_len]
        gaps = [(a, b) for a, b in zip(edges[::2], edges[1::2], strict=True) if b > a]
        usable = [(b - a, (a + b) // 2) for a, b in gaps if min_len <= (a + b) // 2 <= max_len]
        cut = max(usable)[1] if usable else _quietest_point(window, min_len, max_len)
        pieces.append((start, start + cut))
        start += cut
    pieces.append((start, total))
    return pieces


@dataclass
class PieceProgress:
    """What one request's pieces added up to."""

    decode_seconds: float = 0.0
    queue_seconds: float = 0.0
    pieces: int = 0


def _shift(segment: Segment, offset: float, index: int) -> Segment:
    words = segment.words
    if words:
        words = [
            dataclasses.replace(w, start=round(w.start + offset, 3), end=round(w.end + offset, 3))
            for w in words
        ]
    return dataclasses.replace(
        segment,
        id=index,
        start=round(segment.start + offset, 3),
        end=round(segment.end + offset, 3),
        words=words,
    )


Decode = Callable[[np.ndarray, dict[str, Any]], Awaitable[DecodeResult]]


async def transcribe_pieces(
    audio: np.ndarray,
    pieces: list[tuple[int, int]],
    options: dict[str, Any],
    decode: Decode,
) -> tuple[list[Segment], TranscriptionInfo, PieceProgress]:
    """Decode `pieces` of `audio` (int16) one after another through `decode` (one scheduler
    job each) and stitch the results on the file's clock.

    Args:
        options: `WhisperModel.transcribe` keywords for the whole file.
        decode: submits one piece (float32 PCM, options) and waits for its result.
    """
    segments: list[Segment] = []
    progress = PieceProgress()
    first_info: TranscriptionInfo | None = None
    after_vad = 0.0
    options = dict(options)
    for index, (start, end) in enumerate(pieces):
        piece = audio[start:end].astype(np.float32) / 32768.0
        result = await decode(piece, options)
        del piece
        progress.decode_seconds += result.decode_seconds
        progress.queue_seconds += result.queue_seconds
        progress.pieces += 1
        offset = start / SAMPLE_RATE
        first_id = len(segments)
        segments.extend(_shift(s, offset, first_id + i) for i, s in enumerate(result.segments))
        after_vad += result.info.duration_after_vad
        if index == 0:
            first_info = result.info
            options["initial_prompt"] = None  # the file's prompt conditions its start only
            options["language"] = result.info.language  # detected once per file
    assert first_info is not None
    info = dataclasses.replace(
        first_info, duration=audio.shape[0] / SAMPLE_RATE, duration_after_vad=after_vad
    )
    return segments, info, progress
