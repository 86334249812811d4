# One profile (dev, dependencies optimised) for building, running and testing.
CARGO ?= cargo
BIN := target/debug/diarized
# Models the default configuration uses, and the (smaller) ones the tests use.
RUN_MODELS := base diarization qwen2.5-coder-1.5b
TEST_MODELS := tiny.en base diarization qwen2.5-coder-0.5b

.PHONY: setup build run test lint bench

setup:
	./scripts/setup.sh

build: setup
	$(CARGO) build --workspace --all-targets

run: build
	$(BIN) models install $(RUN_MODELS)
	$(BIN) serve

test: build
	$(BIN) models install $(TEST_MODELS)
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --workspace -- --test-threads=1

bench: build
	./bench/run.sh
