#!/usr/bin/env bash
# Known-speaker calibration (not a test): same- and different-speaker match scores between
# enrolment clips cut from the fixtures and the speakers the diarizer finds in the material of
# bench/diar_material.py, the threshold that minimises false accepts + false rejects on the
# calibration direction, and the error rates and naming outcome on both directions.
# Usage: bash bench/speakers.sh   (repo root; needs sox and python3 for the material)
set -euo pipefail
cd "$(dirname "$0")/.."
MAT=${MATERIAL:-target/diar-material}
cargo build --release --workspace --examples -q
[ -f "$MAT/heldout.list" ] || LONG_MINUTES=0 python3 bench/diar_material.py "$MAT"
echo "== load average: $(cut -d' ' -f1-3 /proc/loadavg)"
target/release/examples/speaker_scores --threads "${THREADS:-2}" "$MAT"
