"""OpenAI's Realtime transcription protocol (`GET /v1/realtime?intent=transcription`), served by
the same streaming engine as `/v1/stream` (`streaming.session.StreamSession`)."""
