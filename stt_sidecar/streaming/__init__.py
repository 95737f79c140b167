"""Streaming transcription over WebSocket (`GET /v1/stream`)."""

from .handler import add_streaming_routes

__all__ = ["add_streaming_routes"]
