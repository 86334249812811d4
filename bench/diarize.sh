#!/usr/bin/env bash
# Diarization benchmark (not a test): DER per fixture and corpus-wide at collar 0 and 0.25 s,
# real-time factor of the stage at 1 and 2 threads, peak RSS on a 60-minute file.
# Usage: bash bench/diarize.sh            (from the repo root; needs sox and GNU time)
set -euo pipefail
cd "$(dirname "$0")/.."
FX=../shared/fixtures
cargo build --example diarize_eval -q
BIN=target/release/examples/diarize_eval
CORPUS=("$FX/ami_sample.wav=$FX/ami_sample.rttm" "$FX/ami_dev00.wav=$FX/ami_dev00.rttm" "$FX/ami_dev01.wav=$FX/ami_dev01.rttm")

echo "== anchor (measured elsewhere, same three files): senko 0.2.2 corpus DER 0.237 (collar 0) / 0.117 (collar 0.25), RTF 0.036, 1.2 GB RSS; all speech as one speaker: 0.389"
echo "== DER and RTF, 1 thread"
"$BIN" --threads 1 "${CORPUS[@]}" "$FX/stereo_diarization.wav" "$FX/jfk.wav"
echo "== RTF, 2 threads (the three AMI files)"
"$BIN" --threads 2 "${CORPUS[@]}" | tail -1

LONG=${TMPDIR:-/tmp}/diarize_bench_60min.wav
if [ ! -f "$LONG" ]; then
  parts=()
  for _ in $(seq 40); do parts+=("$FX/ami_sample.wav" "$FX/ami_dev00.wav" "$FX/ami_dev01.wav"); done
  sox "${parts[@]}" -b 16 -e signed-integer "$LONG"
fi
# Reference for the concatenation: each fixture's RTTM shifted by its offset (speaker names kept,
# so the same AMI speakers recur across copies).
python3 - "$FX" "${LONG%.wav}.rttm" <<'PY'
import subprocess, sys
fx, out = sys.argv[1], sys.argv[2]
names = ["ami_sample", "ami_dev00", "ami_dev01"]
lens = {n: int(subprocess.check_output(["soxi", "-s", f"{fx}/{n}.wav"])) / 16000 for n in names}
lines, off = [], 0.0
for _ in range(40):
    for n in names:
        for l in open(f"{fx}/{n}.rttm"):
            f = l.split()
            if f and f[0] == "SPEAKER":
                lines.append(f"SPEAKER long 1 {float(f[3]) + off:.3f} {f[4]} <NA> <NA> {f[7]} <NA> <NA>")
        off += lens[n]
open(out, "w").write("\n".join(lines) + "\n")
PY
echo "== 60-minute file ($(soxi -D "$LONG") s), 1 thread: DER, wall/CPU time and peak RSS"
/usr/bin/time -f "peak_rss_kb %M  wall_s %e" "$BIN" --threads 1 "$LONG=${LONG%.wav}.rttm"
