"""Streaming transcription over WebSocket (`GET /v1/stream`); `handler.add_streaming_routes`.

Nothing is imported here, so a unit test can import `session` without the app's model code.
"""
