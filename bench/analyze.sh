#!/usr/bin/env bash
# Benchmark and evaluation of the local analyze stage (not a test).
#
#   bench/analyze.sh eval [MODEL] [THREADS]   evaluation set (default qwen2.5-coder-1.5b, 2 threads)
#   bench/analyze.sh heldout [MODEL] [THREADS]  held-out dialogues (never used to tune; see below)
#   bench/analyze.sh speed [quick]            speed table on synthesised 5- and 30-minute meetings
#
# eval: builds recordings in target/analyze-eval/ — the AMI excerpts (alone and concatenated),
# jfk (speech), and dialogues from bench/analyze_eval/*.txt spoken by espeak-ng voices and
# joined with sox (interview, phone call at telephone bandwidth, voicemail, a five-minute
# four-person meeting) — transcribes and diarizes each once with the real pipeline
# (`diarized transcribe --format json`, whisper base, no LLM), then analyses each transcript and
# prints per file: type right, summary multi-party (2–5 sentences, ≥ 2 participants named, no
# "the speaker"), highest keypoint/summary-sentence overlap, keypoints and duplicates, action
# items, retry/repair, keypoints added by a top-up request, keypoints quoted and action items
# taken from the transcript's commitments (when the model listed none), time. Models are installed into
# $MODELS_DIR (default models-cache/).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q --workspace --bins --examples
export DIARIZED_LLM_BIN="$PWD/target/release/diarized-llm"
BENCH=target/release/examples/analyze_bench
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT

# distinct_voices DIALOGUE.txt: stops when two voices of the dialogue sound the same. espeak-ng
# 1.51 drops the variant of a voice named by language tag and region ("en-gb+f3", "en-gb+m1" and
# "en-gb" are one voice, byte for byte; "en+f3" works), and two names that render one voice make
# a dialogue of one speaker.
distinct_voices() {
  local src=$1 voice sum
  declare -A seen=()
  for voice in $(grep -v '^#' "$src" | grep -o '^[^:]*:' | tr -d : | sort -u); do
    sum=$(espeak-ng -v "$voice" --stdout "One two three." | md5sum | cut -d' ' -f1)
    if [ -n "${seen[$sum]:-}" ]; then
      echo "$src: voices ${seen[$sum]} and $voice of espeak-ng sound the same" >&2
      exit 1
    fi
    seen[$sum]=$voice
  done
}

# speak DIALOGUE.txt OUT.wav [narrow]: each line "voice: text", 0.4 s between turns, 16 kHz mono.
speak() {
  local src=$1 out=$2 narrow=${3:-} tmp i=0 voice text
  distinct_voices "$src"
  tmp=$(mktemp -d)
  local parts=()
  while IFS= read -r line; do
    [[ -z "$line" || "$line" == \#* ]] && continue
    voice=${line%%: *}
    text=${line#*: }
    espeak-ng -v "$voice" -s 160 -w "$tmp/$i.raw.wav" "$text"
    sox -R "$tmp/$i.raw.wav" -r 16000 -c 1 -b 16 "$tmp/$i.wav" pad 0 0.4
    parts+=("$tmp/$i.wav")
    i=$((i + 1))
  done <"$src"
  if [ -n "$narrow" ]; then
    sox "${parts[@]}" "$tmp/all.wav"
    sox -R "$tmp/all.wav" -r 16000 "$out" sinc 300-3400 rate 8000 rate 16000
  else
    sox "${parts[@]}" "$out"
  fi
  rm -rf "$tmp"
}

eval_set() {
  local model=${1:-qwen2.5-coder-1.5b} threads=${2:-2} dir=target/analyze-eval fx=../shared/fixtures
  mkdir -p "$dir"
  [ -f "$dir/ami_dev00.wav" ] || sox -R "$fx/ami_dev00.wav" -b 16 "$dir/ami_dev00.wav"
  if [ ! -f "$dir/ami_meeting.wav" ]; then
    for f in ami_sample ami_dev00 ami_dev01; do sox -R "$fx/$f.wav" -b 16 -r 16000 -c 1 "$dir/part_$f.wav"; done
    sox "$dir"/part_ami_sample.wav "$dir"/part_ami_dev00.wav "$dir"/part_ami_dev01.wav "$dir/ami_meeting.wav"
    rm -f "$dir"/part_*.wav
  fi
  [ -f "$dir/jfk.wav" ] || cp "$fx/jfk.wav" "$dir/jfk.wav"
  [ -f "$dir/interview.wav" ] || speak bench/analyze_eval/interview.txt "$dir/interview.wav"
  [ -f "$dir/phone_call.wav" ] || speak bench/analyze_eval/phone_call.txt "$dir/phone_call.wav" narrow
  [ -f "$dir/voicemail.wav" ] || speak bench/analyze_eval/voicemail.txt "$dir/voicemail.wav"
  [ -f "$dir/meeting.wav" ] || speak bench/analyze_eval/meeting.txt "$dir/meeting.wav"
  analyse_set "$model" "$threads" "$dir" ami_dev00:multi ami_meeting:multi jfk:solo interview:multi \
    phone_call:multi voicemail:solo meeting:multi
}

# heldout: dialogues from bench/analyze_heldout/*.txt (written after the rules were set, never
# used to tune them), run once per change to report on material the levers were not chosen on.
heldout_set() {
  local model=${1:-qwen2.5-coder-1.5b} threads=${2:-2} dir=target/analyze-heldout
  mkdir -p "$dir"
  [ -f "$dir/support_call.wav" ] || speak bench/analyze_heldout/support_call.txt "$dir/support_call.wav" narrow
  [ -f "$dir/standup.wav" ] || speak bench/analyze_heldout/standup.txt "$dir/standup.wav"
  [ -f "$dir/lecture.wav" ] || speak bench/analyze_heldout/lecture.txt "$dir/lecture.wav"
  analyse_set "$model" "$threads" "$dir" support_call:multi standup:multi lecture:solo
}

# analyse_set MODEL THREADS DIR NAME:multi|solo…: transcribes DIR/NAME.wav once (kept as
# DIR/NAME.json), analyses each transcript and prints the table.
analyse_set() {
  local model=$1 threads=$2 dir=$3 name kind entry
  shift 3
  # Times depend on the processor as much as on the code: name it with the numbers.
  echo "== $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2 | xargs) (family $(grep -m1 '^cpu family' /proc/cpuinfo | cut -d: -f2 | xargs), model $(grep -m1 '^model\s*:' /proc/cpuinfo | cut -d: -f2 | xargs)), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
  for entry in "$@"; do
    name=${entry%%:*}
    kind=${entry#*:}
    if [ ! -s "$dir/$name.json" ]; then
      echo "== transcribing $name" >&2
      LLM_MODEL=none DIARIZATION=true WHISPER_MODEL=base target/release/diarized transcribe "$dir/$name.wav" \
        --format json >"$dir/$name.json"
    fi
    echo "== analysing $name" >&2
    "$BENCH" file "$model" "$threads" "$dir/$name.json" "$kind" | tee -a "$OUT"
  done
  python3 - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"\n{'file':12} {'audio s':>7} {'spk':>3} {'type':20} {'type ok':>7} {'summary ok':>10} {'max ovl':>7} "
      f"{'kp':>3} {'dup':>3} {'actions':>7} {'retry':>5} {'repair':>6} {'added':>5} {'quoted':>6} {'commit':>6} {'wall s':>6} {'prompt s':>8} {'gen s':>5}")
for r in rows:
    name = r["file"].split("/")[-1].removesuffix(".json")
    if not r["ok"]:
        print(f"{name:12} FAILED: {r['error']}")
        continue
    s = r["score"]
    print(f"{name:12} {r['audio_s']:>7g} {r['speakers']:>3} {s['conversation_type']:20} {str(s['type_right']):>7} "
          f"{str(s['summary_ok']):>10} {s['max_keypoint_overlap']:>7} {s['keypoints']:>3} {s['duplicate_keypoints']:>3} "
          f"{s['action_items']:>7} {str(r.get('retried')):>5} {str(r.get('repaired')):>6} "
          f"{'-' if r.get('topped_up') is None else r['topped_up']:>5} {r.get('quoted', 0):>6} {r.get('committed', 0):>6} {r['wall_s']:>6} "
          f"{r['prompt_s']:>8} {r['generate_s']:>5}")
PY
}

run() { # label, env..., -- args...
  local label=$1; shift
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done; shift
  echo "== $label" >&2
  env "${envs[@]}" "$BENCH" synth "$@" | sed "s/^{/{\"label\":\"$label\",/" | tee -a "$OUT"
}

speed() {
  run baseline          OMP_WAIT_POLICY=PASSIVE -- qwen2.5-coder-0.5b 5 1
  run full-grammar      OMP_WAIT_POLICY=PASSIVE -- qwen2.5-coder-0.5b 5 1 full-grammar
  run 2-threads-passive OMP_WAIT_POLICY=PASSIVE -- qwen2.5-coder-0.5b 5 2
  run 1.5b-5min         OMP_WAIT_POLICY=PASSIVE -- qwen2.5-coder-1.5b 5 1
  run 1.5b-5min-2thr    OMP_WAIT_POLICY=PASSIVE -- qwen2.5-coder-1.5b 5 2
  if [ "${1:-}" != quick ]; then
    run 0.5b-30min      OMP_WAIT_POLICY=PASSIVE -- qwen2.5-coder-0.5b 30 1
    run 1.5b-30min      OMP_WAIT_POLICY=PASSIVE -- qwen2.5-coder-1.5b 30 1
  fi
  python3 - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
base = rows[0]
print(f"\n{'run':18} {'model':20} {'min':>4} {'thr':>3} {'wall s':>7} {'calls':>5} {'prompt tok':>10} "
      f"{'prompt t/s':>10} {'gen tok':>7} {'gen t/s':>7} {'full chk':>8} {'wall/base':>9}")
for r in rows:
    if not r["ok"]:
        print(f"{r['label']:18} FAILED: {r['error']}")
        continue
    print(f"{r['label']:18} {r['model']:20} {r['minutes']:>4g} {r['threads']:>3} {r['wall_s']:>7} {r['calls']:>5} "
          f"{r['prompt_tokens']:>10g} {r['prompt_tok_s']:>10} {r['generated_tokens']:>7g} {r['gen_tok_s']:>7} "
          f"{r['full_grammar_checks']:>8} {r['wall_s']/base['wall_s']:>9.2f}")
PY
}

case "${1:-eval}" in
  eval) shift || true; eval_set "$@" ;;
  heldout) shift; heldout_set "$@" ;;
  speed) shift; speed "$@" ;;
  *) echo "usage: bench/analyze.sh eval|heldout [MODEL] [THREADS] | speed [quick]" >&2; exit 2 ;;
esac
