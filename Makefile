# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(abspath $(VENV))/bin
# Re-install only when a project file that declares dependencies changed.
STAMP := $(VENV)/.installed

.PHONY: install run sidecar agent test lint bench bench-batch bench-stream bench-flood bench-soak clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml plugin/pyproject.toml
	$(PY) -m pip install --disable-pip-version-check -q -e ./plugin -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

run: install
	@test -f .env || cp .env.example .env
	PATH="$(BIN):$$PATH" $(BIN)/honcho start

sidecar: install
	$(PY) -m stt_sidecar

agent: install
	$(PY) agent/main.py dev

test: install
	$(PY) -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: bench-batch bench-stream

bench-batch: install
	$(PY) bench/batch.py tests/data

bench-stream: install
	$(PY) bench/stream.py tests/data/conversation.wav --streams 1,4,8

bench-flood: install
	$(PY) bench/flood.py tests/data/conversation.wav --streams 1 --rounds 2

bench-soak: install
	$(PY) bench/soak.py --minutes 20 --streams 4

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
