"""faster-whisper STT sidecar: batch HTTP (native and OpenAI-compatible), streaming WebSocket."""

__version__ = "0.1.0"
