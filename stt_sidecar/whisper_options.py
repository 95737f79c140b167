"""Every `WhisperModel.transcribe` option, spelled out in one place.

faster-whisper has two `transcribe` methods whose defaults differ (`vad_filter`,
`without_timestamps`), so nothing here relies on a default: `decode_options()` returns a dict
with every keyword the method takes. Batch uses it as is; streaming can share the same base
and override what it needs (e.g. no VAD on an already-endpointed utterance).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# Greedy decoding: measured with `bench/batch.py --compare-beam 5`, beam 5 gives tiny.en the same
# 3.1 % WER on the speech set at equal or higher latency, so it buys nothing here.
BEAM_SIZE = 1

# Whisper's standard fallback ladder: when a window's output looks like a hallucination
# (compression ratio too high, or mean log-prob too low), it is re-decoded hotter.
TEMPERATURE_FALLBACK: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)

# Hallucination guards: windows that compress too well (loops) or score too low are re-decoded,
# and windows the model itself thinks hold no speech are dropped.
COMPRESSION_RATIO_THRESHOLD = 2.4
LOG_PROB_THRESHOLD = -1.0
NO_SPEECH_THRESHOLD = 0.6

# Silero VAD as faster-whisper applies it before decoding: only speech reaches the model, which
# is what keeps silence and noise from turning into invented words.
VAD_PARAMETERS: dict[str, Any] = {
    "threshold": 0.5,
    "neg_threshold": None,
    "min_speech_duration_ms": 0,
    "max_speech_duration_s": float("inf"),
    "min_silence_duration_ms": 2000,
    "speech_pad_ms": 400,
}


@dataclass(frozen=True)
class DecodeRequest:
    """What a client may choose; everything else is fixed server policy."""

    language: str | None = None  # None: detect (multilingual models only)
    task: str = "transcribe"  # or "translate" (to English; multilingual models only)
    word_timestamps: bool = False
    initial_prompt: str | None = None
    temperature: float | None = None  # None or 0: the fallback ladder from 0.0
    extra: dict[str, Any] = field(default_factory=dict)  # per-caller overrides (streaming)


def temperatures(requested: float | None) -> tuple[float, ...]:
    """The temperature ladder for a request: OpenAI's semantics, where 0 (the default) means
    "start greedy and raise the temperature while the output fails the guards", and a positive
    value starts the ladder there."""
    if not requested:
        return TEMPERATURE_FALLBACK
    return (requested, *(t for t in TEMPERATURE_FALLBACK if t > requested))


# faster-whisper's default: punctuation merged into the word before it
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"


def decode_options(request: DecodeRequest) -> dict[str, Any]:
    """Keyword arguments for `WhisperModel.transcribe`, every one given explicitly.

    Args:
        request: The client's choices (language, task, word timestamps, prompt, temperature)
            plus `extra`, which overrides any option last.

    Returns:
        A fresh dict, safe for the caller to mutate.
    """
    options: dict[str, Any] = {
        "language": request.language,
        "task": request.task,
        "log_progress": False,
        "beam_size": BEAM_SIZE,
        "best_of": 5,  # only used when sampling at temperature > 0
        "patience": 1.0,
        "length_penalty": 1.0,
        "repetition_penalty": 1.0,
        "no_repeat_ngram_size": 0,
        "temperature": list(temperatures(request.temperature)),
        "compression_ratio_threshold": COMPRESSION_RATIO_THRESHOLD,
        "log_prob_threshold": LOG_PROB_THRESHOLD,
        "no_speech_threshold": NO_SPEECH_THRESHOLD,
        # Feeding a window's text into the next one propagates a hallucination; off.
        "condition_on_previous_text": False,
        "prompt_reset_on_temperature": 0.5,
        "initial_prompt": request.initial_prompt,
        "prefix": None,
        "suppress_blank": True,
        "suppress_tokens": [-1],
        "without_timestamps": False,
        "max_initial_timestamp": 1.0,
        "word_timestamps": request.word_timestamps,
        "prepend_punctuations": "\"'“¿([{-",
        "append_punctuations": APPEND_PUNCTUATIONS,
        "multilingual": False,
        "vad_filter": True,
        "vad_parameters": dict(VAD_PARAMETERS),
        "max_new_tokens": None,
        "chunk_length": None,
        "clip_timestamps": "0",
        "hallucination_silence_threshold": None,
        "hotwords": None,
        "language_detection_threshold": 0.5,
        "language_detection_segments": 1,
    }
    options.update(request.extra)
    return options


def with_extra(request: DecodeRequest, **extra: Any) -> DecodeRequest:
    """A copy of `request` whose `extra` also holds `extra`."""
    return dataclasses.replace(request, extra={**request.extra, **extra})
