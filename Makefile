# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(abspath $(VENV))/bin
comma := ,
# Optional extras, e.g. `make install EXTRAS=multilingual` (offline Whisper base).
EXTRAS ?=
# Re-install only when a project file that declares dependencies changed (or EXTRAS did).
STAMP := $(VENV)/.installed$(if $(EXTRAS),-$(subst $(comma),-,$(EXTRAS)))

.PHONY: install run sidecar agent test test-fast test-live lint typecheck bench bench-batch bench-stream bench-capacity bench-flood bench-soak bench-end-of-turn clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml plugin/pyproject.toml
	$(PY) -m pip install --disable-pip-version-check -q -e ./plugin -e ".[test$(if $(EXTRAS),$(comma)$(EXTRAS))]"
	touch $(STAMP)

install: $(STAMP)

# The tests also cover the offline multilingual model, so they install its extra.
TEST_STAMP := $(VENV)/.installed-test-multilingual
$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install --disable-pip-version-check -q -e ".[test,multilingual]"
	touch $(TEST_STAMP)

# honcho would apply .env over the shell's variables; `--env /dev/null` leaves .env to the
# sidecar and the worker, which load it without overriding (real environment variables win).
run: install
	@test -f .env || cp .env.example .env
	PATH="$(BIN):$$PATH" $(BIN)/honcho start --env /dev/null

sidecar: install
	$(PY) -m stt_sidecar

agent: install
	$(PY) agent/main.py dev

# The fast tier first (tests/unit: in-process fakes, no model, no subprocess), then the rest in
# two processes (pytest-xdist, a file per process at a time, each with its own shared sidecar:
# much of the suite is audio replayed at real time); the live tests need a LiveKit server and
# run in `make test-live`.
test: test-fast
	$(PY) -m pytest --ignore=tests/unit -m "not live" -n 2 --dist loadfile --durations=15

test-fast: $(TEST_STAMP)
	$(PY) -m pytest tests/unit

# Against a real LiveKit server: LIVEKIT_URL/LIVEKIT_API_KEY/LIVEKIT_API_SECRET, or a
# `livekit-server` on PATH or in LIVEKIT_SERVER_BIN (started with --dev on free loopback ports).
test-live: $(TEST_STAMP)
	@if [ -f tests/browser/package-lock.json ]; then $(MAKE) browser-deps; fi
	$(PY) -m pytest -m live tests/live $(wildcard tests/browser)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

bench: bench-batch bench-stream

bench-batch: install
	$(PY) bench/batch.py tests/data

bench-stream: install
	$(PY) bench/stream.py tests/data/conversation.wav --streams 1,4,8

# Turn-taking and synchronized streams up to 32; add --baseline PYTHONPATH=<other checkout>.
bench-capacity: install
	$(PY) bench/stream.py tests/data/conversation.wav --modes sync,turns --streams 1,4,8,16,24,32

bench-flood: install
	$(PY) bench/flood.py tests/data/conversation.wav --streams 1 --rounds 2

bench-soak: install
	$(PY) bench/soak.py --minutes 20 --streams 4

# The text rule beside Pipecat's Smart Turn v3.2, whose ONNX weights ship in the pipecat-ai
# wheel: only that file is read, so none of pipecat's dependencies are installed.
bench-end-of-turn: install
	$(PY) -m pip install --disable-pip-version-check -q --no-deps pipecat-ai==1.14.0
	$(PY) bench/end_of_turn.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache tests/browser/node_modules

.PHONY: browser-deps
# The browser tests' page (livekit-client) and driver (puppeteer-core, which uses the system
# chromium and downloads no browser), from tests/browser/package-lock.json.
browser-deps: tests/browser/node_modules/.package-lock.json

tests/browser/node_modules/.package-lock.json: tests/browser/package-lock.json
	npm ci --prefix tests/browser --no-audit --no-fund
