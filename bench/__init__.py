"""Benchmarks (`make bench`); each runs as `python bench/<name>.py` or `python -m bench.<name>`.

They share the tests' sidecar process, speech clips and WER (`tests.support`), importable from
the repo root that the editable install puts on `sys.path`.
"""
