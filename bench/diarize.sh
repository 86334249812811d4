#!/usr/bin/env bash
# Diarization benchmark (not a test): DER at collar 0 and 0.25 s and the one-speaker baseline on
# the calibration and held-out cuts of bench/diar_material.py, the three AMI fixtures, speaker
# count on the 60-minute file, and the stage's real-time factor at 1 and 2 threads.
# Usage: bash bench/diarize.sh [EXTRA diarize_eval OPTIONS]   (repo root; needs sox, python3)
set -euo pipefail
cd "$(dirname "$0")/.."
FX=../shared/fixtures
MAT=${MATERIAL:-target/diar-material}
cargo build --release --example diarize_eval -q
BIN=target/release/examples/diarize_eval
[ -f "$MAT/midheld.list" ] || python3 bench/diar_material.py "$MAT"
echo "== load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== calibration set, 2 threads"
"$BIN" --threads 2 "$@" "@$MAT/calib.list"
echo "== held-out set, 2 threads"
"$BIN" --threads 2 "$@" "@$MAT/heldout.list"
echo "== AMI fixtures (30 s each), 1 and 2 threads"
AMI=("$FX/ami_sample.wav=$FX/ami_sample.rttm" "$FX/ami_dev00.wav=$FX/ami_dev00.rttm" "$FX/ami_dev01.wav=$FX/ami_dev01.rttm")
"$BIN" --threads 1 "$@" "${AMI[@]}"
"$BIN" --threads 2 "$@" "${AMI[@]}" | tail -1
echo "== 60-minute file (4 AMI voices), 2 threads: speakers, DER, time, peak RSS"
/usr/bin/time -f "peak_rss_kb %M  wall_s %e" "$BIN" --threads 2 "$@" "@$MAT/long.list"
echo "== 30-minute held-out file (7 voices), 2 threads"
"$BIN" --threads 2 "$@" "@$MAT/longheld.list"
echo "== 2-, 3-, 5- and 8-minute files, calibration then held out (8 and 7 voices), 2 threads"
"$BIN" --threads 2 "$@" "@$MAT/midcal.list"
"$BIN" --threads 2 "$@" "@$MAT/midheld.list"
echo "== load average: $(cut -d' ' -f1-3 /proc/loadavg)"
