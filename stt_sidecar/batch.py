"""Batch transcription endpoints (issue 3): placeholder until implemented."""

from aiohttp import web


def add_batch_routes(app: web.Application) -> None:
    pass
