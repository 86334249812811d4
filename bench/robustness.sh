#!/usr/bin/env bash
# Long run of the property tests (tests/robustness.rs): random and mutated input for the config
# parser, every audio decoder, the query parser and the multipart reader. `make test` runs a
# few dozen cases per property; this runs PROPTEST_CASES (default 2000) each and reports the
# peak memory of the test process.
# Usage: bash bench/robustness.sh [CASES]   (repo root)
set -euo pipefail
cd "$(dirname "$0")/.."
export PROPTEST_CASES=${1:-${PROPTEST_CASES:-2000}}
echo "== $PROPTEST_CASES cases per property; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
start=$(date +%s)
timer=(); [ -x /usr/bin/time ] && timer=(/usr/bin/time -v)   # apt package time
"${timer[@]}" cargo test --release --workspace --test robustness -- --test-threads=1 2>&1 |
  grep -E '^test |test result|Maximum resident|Elapsed'
echo "== $(($(date +%s) - start)) s"
