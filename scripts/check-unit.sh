#!/usr/bin/env bash
# Checks systemd/diarized.service: `systemd-analyze verify` and an offline security review whose
# overall exposure must be at most 1.5. The unit is checked with ExecStart pointing at the built
# binary (verify wants an executable there). Where systemd-analyze cannot run at all, says so
# loudly and exits 0, so a container without systemd still runs the other tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-$PWD/target/release/diarized}
max_exposure=1.5

if ! command -v systemd-analyze >/dev/null; then
  echo "check-unit: SKIPPED: systemd-analyze is not installed (apt package systemd)" >&2
  exit 0
fi
if ! why=$(systemd-analyze --version 2>&1); then
  echo "check-unit: SKIPPED: systemd-analyze cannot run here: $why" >&2
  exit 0
fi
[ -x "$bin" ] || { echo "check-unit: $bin is missing; build first" >&2; exit 1; }

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
sed "s|^ExecStart=/usr/local/bin/diarized |ExecStart=$bin |" systemd/diarized.service >"$dir/diarized.service"
grep -q "^ExecStart=$bin " "$dir/diarized.service" || { echo "check-unit: no ExecStart=/usr/local/bin/diarized line" >&2; exit 1; }

# verify prints problems and may still exit 0 for some of them: any output fails the check.
out=$(systemd-analyze verify --man=no "$dir/diarized.service" 2>&1) || { echo "$out" >&2; echo "check-unit: verify failed" >&2; exit 1; }
[ -z "$out" ] || { echo "$out" >&2; echo "check-unit: verify reported problems" >&2; exit 1; }

# --threshold is exposure × 10.
threshold=$(awk -v m="$max_exposure" 'BEGIN { printf "%d", m * 10 }')
report=$(systemd-analyze security --offline=true --threshold="$threshold" "$dir/diarized.service" 2>&1) && ok=1 || ok=0
level=$(grep -o 'Overall exposure level for diarized.service: [0-9.]*' <<<"$report" | awk '{ print $NF }')
if [ "$ok" = 1 ] && [ -n "$level" ]; then
  echo "check-unit: verify clean; exposure $level (limit $max_exposure)"
else
  grep '✗' <<<"$report" >&2 || echo "$report" >&2
  echo "check-unit: exposure ${level:-unknown} is over $max_exposure (or the review failed)" >&2
  exit 1
fi
