"""Which model names a request may use: the served model's own name, and OpenAI's.

A stock OpenAI client names an OpenAI model (the `openai` SDK's examples say `whisper-1`,
livekit-plugins-openai defaults to `gpt-4o-mini-transcribe`). This server has one model, so
those names are aliases of it; anything else is `model_not_found`, compared as a string and
never used to open a file or reach a hub.
"""

from __future__ import annotations

OPENAI_MODEL_ALIAS = "whisper-1"  # what OpenAI clients send by default; listed in /v1/models

# OpenAI's transcription models: all served by this server's one model. Not the realtime-only
# gpt-realtime-whisper / gpt-live-transcribe, whose clients commit by themselves with no
# server endpointing: accepting them on /v1/realtime would endpoint twice.
OPENAI_TRANSCRIPTION_MODELS = frozenset(
    {
        OPENAI_MODEL_ALIAS,
        "gpt-4o-transcribe",
        "gpt-4o-mini-transcribe",
        "gpt-4o-mini-transcribe-2025-12-15",
        "gpt-transcribe",
    }
)


def accepts_model(name: str, served: str) -> bool:
    """Whether a request naming `name` is served by the model called `served`."""
    return name == served or name in OPENAI_TRANSCRIPTION_MODELS
