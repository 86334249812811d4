#!/usr/bin/env bash
# Installs diarized into a fresh Debian system and runs it under systemd as PID 1, the way a
# server would: `make install` in a debootstrap root, the root booted with systemd-nspawn, then
# `systemctl enable --now diarized`, a job over HTTP, a restart, and the online security review.
# Not part of `make test` (it needs root, debootstrap and systemd-container from apt, and about
# five minutes); run it after `make build`:
#
#   sudo scripts/check-install.sh [ROOTFS]     (default target/install-check/rootfs)
#
# Everything systemd does stays inside ROOTFS: never boot systemd on the host itself (its boot
# services clean the host's /tmp). Models are copied from models-cache/ when present there, else
# `make install` fetches them.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(realpath -m "${1:-target/install-check/rootfs}")
fixture=../shared/fixtures/jfk.wav
[ "$(id -u)" = 0 ] || { echo "check-install: run as root" >&2; exit 1; }
for b in diarized diarized-llm; do
  [ -x "target/release/$b" ] || { echo "check-install: target/release/$b is missing: make build first" >&2; exit 1; }
done
for tool in debootstrap systemd-nspawn; do
  command -v "$tool" >/dev/null || { echo "check-install: $tool is missing (apt-get install debootstrap systemd-container)" >&2; exit 1; }
done
[ -f "$fixture" ] || { echo "check-install: $fixture is missing" >&2; exit 1; }

say() { printf '\n== %s\n' "$*"; }
nspawn_pid=
stop() {
  if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
    [ -z "${init:-}" ] || nsenter -t "$init" -a systemctl poweroff >/dev/null 2>&1 || true
    for _ in $(seq 30); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 1; done
    kill "$nspawn_pid" 2>/dev/null || true
  fi
}
trap stop EXIT

if [ ! -x "$root/usr/bin/systemctl" ]; then
  say "debootstrap bookworm into $root"
  mkdir -p "$root"
  debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,curl,ca-certificates,passwd,make \
    bookworm "$root" http://deb.debian.org/debian >"$root.debootstrap.log" 2>&1 \
    || { tail -20 "$root.debootstrap.log" >&2; exit 1; }
fi

say "make install inside the fresh system"
rm -rf "$root/src" && mkdir -p "$root/src/target/release" "$root/root"
cp -a Makefile README.md config.toml.example models scripts systemd "$root/src/"
cp target/release/diarized target/release/diarized-llm "$root/src/target/release/"
cp "$fixture" "$root/root/jfk.wav"
cache="$root/var/lib/diarized/models-cache"
mkdir -p "$cache/llm"
[ ! -f models-cache/ggml-base.bin ] || cp -a models-cache/ggml-base.bin "$cache/"
[ ! -d models-cache/diarization ] || cp -a models-cache/diarization "$cache/"
[ ! -f models-cache/llm/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf ] || cp -a models-cache/llm/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf "$cache/llm/"
mount -t proc proc "$root/proc"
chroot "$root" sh -c 'cd /src && make install' || { umount "$root/proc"; exit 1; }
umount "$root/proc"

say "boot it (systemd-nspawn, systemd as PID 1)"
systemd-nspawn -D "$root" -b --register=no --keep-unit --machine=diarized-check --console=pipe \
  >"$root.boot.log" 2>&1 &
nspawn_pid=$!
# The container's init: a systemd that is PID 1 in its own PID namespace (NSpid ends in 1).
container_init() {
  local pid
  for pid in $(pgrep -x systemd); do
    if grep -Eq '^NSpid:\s+[0-9]+\s+1$' "/proc/$pid/status" 2>/dev/null; then
      echo "$pid"
      return
    fi
  done
}
init=
for _ in $(seq 60); do
  init=$(container_init)
  [ -n "$init" ] && nsenter -t "$init" -a systemctl is-system-running --wait >/dev/null 2>&1 && break
  sleep 1
done
[ -n "$init" ] || { cat "$root.boot.log" >&2; echo "check-install: the container did not boot" >&2; exit 1; }
inside() { nsenter -t "$init" -a "$@"; }

say "systemctl enable --now diarized"
inside systemctl enable --now diarized
inside systemctl show diarized -p Type -p ActiveState -p WatchdogUSec -p MemoryMax -p TasksMax
port=$(sed -nE 's/^bind = "[^"]*:([0-9]+)"/\1/p' "$root/etc/diarized/config.toml")
url=http://127.0.0.1:${port:-5000}
for _ in $(seq 30); do inside curl -sf "$url/healthz" >/dev/null && break; sleep 1; done
inside curl -sf "$url/healthz"; echo

say "a job over HTTP (jfk.wav, default models)"
id=$(inside curl -sf -F file=@/root/jfk.wav "$url/api/jobs?run=true" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
status=
for _ in $(seq 600); do
  status=$(inside curl -sf "$url/api/jobs/$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
  case $status in done | error) break ;; esac
  sleep 1
done
inside curl -sf "$url/api/jobs/$id" | python3 -c '
import json, sys
j = json.load(sys.stdin)
for k in ("status", "conversation_type", "summary", "keypoints", "clean_transcript", "error_message"):
    print(f"{k}: {j[k]}")'
[ "$status" = done ] || { inside journalctl -u diarized --no-pager | tail -30 >&2; echo "check-install: job $id is $status" >&2; exit 1; }

say "systemctl restart: the job is still there"
inside systemctl restart diarized
for _ in $(seq 30); do inside curl -sf "$url/healthz" >/dev/null && break; sleep 1; done
after=$(inside curl -sf "$url/api/jobs/$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
[ "$after" = done ] || { echo "check-install: after a restart job $id is $after" >&2; exit 1; }
inside journalctl -u diarized --no-pager | tail -8

say "systemd-analyze security (online)"
inside systemd-analyze security diarized --no-pager | tail -1
echo "check-install: OK"
