"""faster-whisper speech-to-text sidecar: batch HTTP (native + OpenAI-compatible) and streaming WebSocket."""

__version__ = "0.1.0"
