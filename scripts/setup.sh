#!/usr/bin/env bash
# Installs the system packages diarized needs to build and test (Debian/Ubuntu, as root or sudo).
set -euo pipefail
# postgresql: the tests run the store's suite on a throwaway cluster too (scripts/pg-test-cluster.sh).
# systemd: systemd-analyze for the unit check in `make test`.
packages=(cmake clang libclang-dev pkg-config espeak-ng sox libsox-fmt-all postgresql systemd)
# `make test` puts the openai client in a venv (tests/openai.rs); Debian's python3 needs this for it.
python3 -c 'import ensurepip, venv' 2>/dev/null || packages+=(python3-venv)
# `setup.sh deb` (make deb) adds what packaging needs: dpkg-dev (dpkg-shlibdeps) and cargo-deb.
[ "${1:-}" = deb ] && packages+=(dpkg-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi
command -v cargo >/dev/null || { echo "cargo (Rust toolchain) is required" >&2; exit 1; }
python3 -m pip --version >/dev/null 2>&1 || { echo "python3 with pip is required (models come from PyPI)" >&2; exit 1; }
if [ "${1:-}" = deb ] && ! cargo deb --version >/dev/null 2>&1; then
  cargo install cargo-deb --locked
fi
