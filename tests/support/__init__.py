"""What the tests and the benchmarks share: a real sidecar process (`sidecar`), real speech and
WER (`speech`), PCM and WAV helpers (`audio`), a long recording made from the clips
(`long_audio`) and a process's resource figures (`resources`).

Importable as `tests.support` from anywhere in the venv: the editable install puts the repo root
on `sys.path`, so `bench/*.py` need no `sys.path` edits.
"""
