# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(abspath $(VENV))/bin
# Re-install only when a project file that declares dependencies changed.
STAMP := $(VENV)/.installed

.PHONY: install run sidecar agent test test-live lint bench bench-batch bench-stream bench-soak clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml plugin/pyproject.toml
	$(PY) -m pip install --disable-pip-version-check -q -e ./plugin -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# honcho would apply .env over the shell's variables; `--env /dev/null` leaves .env to the
# sidecar and the worker, which load it without overriding (real environment variables win).
run: install
	@test -f .env || cp .env.example .env
	PATH="$(BIN):$$PATH" $(BIN)/honcho start --env /dev/null

sidecar: install
	$(PY) -m stt_sidecar

agent: install
	$(PY) agent/main.py dev

test: install
	$(PY) -m pytest -m "not live"

# Against a real LiveKit server: LIVEKIT_URL/LIVEKIT_API_KEY/LIVEKIT_API_SECRET, or a
# `livekit-server` on PATH or in LIVEKIT_SERVER_BIN (started with --dev on free loopback ports).
# tests/browser (the browser engineer's) brings its own `browser-deps` target (npm ci).
test-live: install
	@if [ -f tests/browser/package-lock.json ]; then $(MAKE) browser-deps; fi
	$(PY) -m pytest -m live tests/live $(wildcard tests/browser)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: bench-batch bench-stream

bench-batch: install
	$(PY) bench/batch.py tests/data

bench-stream: install
	$(PY) bench/stream.py tests/data/conversation.wav --streams 1,4,8

bench-soak: install
	$(PY) bench/soak.py --minutes 20 --streams 4

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
