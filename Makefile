# One profile (dev, dependencies optimised) for building, running and testing.
SHELL := /bin/bash
CARGO ?= cargo
# --release everywhere: build, clippy and test share one optimised build of the C++ libraries.
PROFILE := --release
BIN := target/release/diarized
# Models the default configuration uses, and the (smaller) ones the tests use.
RUN_MODELS := base diarization qwen2.5-coder-1.5b onnxruntime
TEST_MODELS := tiny.en base diarization qwen2.5-coder-0.5b onnxruntime
# The real OpenAI Python client, pinned, for tests/openai.rs (tests/openai_client.py).
PYENV := target/pyenv
OPENAI_VERSION := 3.51.0

.PHONY: setup build run test lint bench pyenv check-unit install deb

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
	./scripts/check-unit.sh $(CURDIR)/$(BIN)
	@# A throwaway PostgreSQL cluster for the store's PostgreSQL tests, stopped however they end.
	set -o pipefail; pg=$$(scripts/pg-test-cluster.sh start) && eval "$$pg" && \
	  trap 'scripts/pg-test-cluster.sh stop' EXIT && \
	  $(CARGO) test $(PROFILE) --workspace --lib --bins --tests -- --test-threads=1 2>&1 | tee target/test.log
	@# One closing line for the whole run (cargo's last block is a crate with no tests).
	@awk '/^test result:/ { p += $$4; f += $$6 } END { printf "%d passed, %d failed\n", p, f; exit (p == 0 || f > 0) }' target/test.log

# The unit: `systemd-analyze verify` and the offline security review (exposure ≤ 1.5).
check-unit: build
	./scripts/check-unit.sh $(CURDIR)/$(BIN)

# `sudo make install` after `make build`: binaries, diarization model files, the unit, the
# configuration (from the example, never overwritten), the service user, /var/lib/diarized and
# the default models; then `systemctl enable --now diarized`. PREFIX and DESTDIR (staging: no
# user, no chown) as usual; MODELS= (empty) skips the models.
PREFIX ?= /usr/local
DESTDIR ?=
UNITDIR ?= /etc/systemd/system
MODELS ?= $(RUN_MODELS)
SHARE = $(DESTDIR)$(PREFIX)/share

install:
	@for b in diarized diarized-llm; do \
	  test -x target/release/$$b || { echo "target/release/$$b is missing: run make build first" >&2; exit 1; }; done
	install -D -m 0755 target/release/diarized $(DESTDIR)$(PREFIX)/bin/diarized
	install -D -m 0755 target/release/diarized-llm $(DESTDIR)$(PREFIX)/bin/diarized-llm
	install -d $(SHARE)/diarized/models/licenses $(SHARE)/doc/diarized
	install -m 0644 models/SHA256SUMS models/*.onnx $(SHARE)/diarized/models/
	install -m 0644 models/licenses/* $(SHARE)/diarized/models/licenses/
	install -m 0755 scripts/setup-service.sh $(SHARE)/diarized/
	install -m 0644 README.md config.toml.example $(SHARE)/doc/diarized/
	install -d $(DESTDIR)$(UNITDIR)
	sed 's|/usr/local/|$(PREFIX)/|g' systemd/diarized.service > $(DESTDIR)$(UNITDIR)/diarized.service
	ROOT="$(DESTDIR)" BIN="$(DESTDIR)$(PREFIX)/bin/diarized" CONFIG_EXAMPLE=config.toml.example \
	  MODELS="$(MODELS)" ./scripts/setup-service.sh
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "installed; start it with: sudo systemctl enable --now diarized"

# A Debian package (target/debian/*.deb) of the binaries `make build` made; see
# [package.metadata.deb] in Cargo.toml. Installs cargo-deb on first use.
deb: build
	./scripts/setup.sh deb
	mkdir -p target/debian-unit
	sed 's|/usr/local/|/usr/|g' systemd/diarized.service > target/debian-unit/diarized.service
	$(CARGO) deb --no-build

# Benchmarks (not tests); each prints its table with ratios against a baseline of the same run.
bench: build
	python3 bench/api.py
	python3 bench/transcribe.py
	bash bench/diarize.sh
	bash bench/analyze.sh
	bash bench/store.sh
