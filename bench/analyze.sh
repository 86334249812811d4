#!/usr/bin/env bash
# Benchmark of the local analyze stage (not a test): wall time, prompt and generation tokens/s
# for a synthesised 5-minute and 30-minute meeting transcript, both local models, plus thread
# count, OpenMP wait policy and greedy-first grammar checking. Ratios are against the baseline
# run of this same invocation (0.5B, 5 min, 1 thread, passive waiting, greedy-first).
#
# Usage: bench/analyze.sh [quick]   (quick: 5-minute runs only)
# Models are installed into $MODELS_DIR (default models-cache/) if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p diarized-llm
cargo build -q --example analyze_bench
export DIARIZED_LLM_BIN="$PWD/target/release/diarized-llm"
BENCH=target/release/examples/analyze_bench
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT

run() { # label, env..., -- args...
  local label=$1; shift
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done; shift
  echo "== $label" >&2
  env "${envs[@]}" "$BENCH" "$@" | sed "s/^{/{\"label\":\"$label\",/" | tee -a "$OUT"
}

run baseline          OMP_WAIT_POLICY=PASSIVE -- qwen2.5-coder-0.5b 5 1
run full-grammar      OMP_WAIT_POLICY=PASSIVE -- qwen2.5-coder-0.5b 5 1 full-grammar
run 2-threads-passive OMP_WAIT_POLICY=PASSIVE -- qwen2.5-coder-0.5b 5 2
run 2-threads-active  OMP_WAIT_POLICY=ACTIVE  -- qwen2.5-coder-0.5b 5 2
run 1.5b-5min         OMP_WAIT_POLICY=PASSIVE -- qwen2.5-coder-1.5b 5 1
if [ "${1:-}" != quick ]; then
  run 0.5b-30min      OMP_WAIT_POLICY=PASSIVE -- qwen2.5-coder-0.5b 30 1
  run 1.5b-30min      OMP_WAIT_POLICY=PASSIVE -- qwen2.5-coder-1.5b 30 1
fi

python3 - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
base = rows[0]
print(f"\n{'run':18} {'model':20} {'min':>4} {'thr':>3} {'wall s':>7} {'calls':>5} {'prompt tok':>10} "
      f"{'prompt t/s':>10} {'gen tok':>7} {'gen t/s':>7} {'full chk':>8} {'wall/base':>9} {'gen t/s/base':>12}")
for r in rows:
    if not r["ok"]:
        print(f"{r['label']:18} FAILED: {r['error']}")
        continue
    print(f"{r['label']:18} {r['model']:20} {r['minutes']:>4g} {r['threads']:>3} {r['wall_s']:>7} {r['calls']:>5} "
          f"{r['prompt_tokens']:>10g} {r['prompt_tok_s']:>10} {r['generated_tokens']:>7g} {r['gen_tok_s']:>7} "
          f"{r['full_grammar_checks']:>8} {r['wall_s']/base['wall_s']:>9.2f} {r['gen_tok_s']/base['gen_tok_s']:>12.2f}")
PY
