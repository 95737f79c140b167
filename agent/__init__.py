"""The LiveKit agent worker that transcribes every participant of a room through the sidecar.

Run it with `python agent/main.py dev|start|connect --room X` (or `lk agent dev`); see
`agent.main` for the entry point and `agent.transcriber` for the per-participant pipeline.
"""
