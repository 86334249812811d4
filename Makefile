# One profile (dev, dependencies optimised) for building, running and testing.
SHELL := /bin/bash
CARGO ?= cargo
# --release everywhere: build, clippy and test share one optimised build of the C++ libraries.
PROFILE := --release
BIN := target/release/diarized
# Models the default configuration uses, and the (smaller) ones the tests use.
RUN_MODELS := base diarization qwen2.5-coder-1.5b
TEST_MODELS := tiny.en base diarization qwen2.5-coder-0.5b
# The real OpenAI Python client, pinned, for tests/openai.rs (tests/openai_client.py).
PYENV := target/pyenv
OPENAI_VERSION := 3.51.0

.PHONY: setup build run test lint bench pyenv

setup:
	./scripts/setup.sh

build: setup
	$(CARGO) build $(PROFILE) --workspace --all-targets

run: build
	$(BIN) models install $(RUN_MODELS)
	$(BIN) serve

pyenv: $(PYENV)/.openai-$(OPENAI_VERSION)

$(PYENV)/.openai-$(OPENAI_VERSION):
	python3 -m venv $(PYENV)
	$(PYENV)/bin/pip install --quiet openai==$(OPENAI_VERSION)
	touch $@

test: build pyenv
	$(BIN) models install $(TEST_MODELS)
	$(CARGO) fmt --all --check
	$(CARGO) clippy $(PROFILE) --workspace --all-targets -- -D warnings
	@# A throwaway PostgreSQL cluster for the store's PostgreSQL tests, stopped however they end.
	set -o pipefail; pg=$$(scripts/pg-test-cluster.sh start) && eval "$$pg" && \
	  trap 'scripts/pg-test-cluster.sh stop' EXIT && \
	  $(CARGO) test $(PROFILE) --workspace --lib --bins --tests -- --test-threads=1 2>&1 | tee target/test.log
	@# One closing line for the whole run (cargo's last block is a crate with no tests).
	@awk '/^test result:/ { p += $$4; f += $$6 } END { printf "%d passed, %d failed\n", p, f; exit (p == 0 || f > 0) }' target/test.log

# Benchmarks (not tests); each prints its table with ratios against a baseline of the same run.
bench: build
	python3 bench/api.py
	python3 bench/transcribe.py
	bash bench/diarize.sh
	bash bench/analyze.sh
	bash bench/store.sh
