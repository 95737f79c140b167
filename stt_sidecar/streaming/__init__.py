"""Streaming transcription over WebSocket (`GET /v1/stream`)."""

from aiohttp import web


def add_streaming_routes(app: web.Application) -> None:
    pass
