#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests (Debian's `postgresql` package).
#   eval "$(pg-test-cluster.sh start)"   initdb + pg_ctl in a new temp folder on a free loopback
#                                         port; sets DIARIZED_TEST_PG_DIR and DIARIZED_TEST_PG_URL
#   pg-test-cluster.sh stop [DIR]         stops it and removes the folder (default $DIARIZED_TEST_PG_DIR)
# Run as root, the cluster runs as the `postgres` user (else `nobody`): PostgreSQL refuses root.
set -euo pipefail
action=${1:-}
usage() { echo "usage: $0 start | stop [DIR]" >&2; exit 2; }

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
[ -x "$bindir/pg_ctl" ] || bindir=$(dirname "$(command -v pg_ctl 2>/dev/null || echo /nonexistent/x)")
[ -x "$bindir/pg_ctl" ] || { echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    local user=postgres
    id -u "$user" >/dev/null 2>&1 || user=nobody
    runuser -u "$user" -- "$@"
  else
    "$@"
  fi
}

case "$action" in
  start)
    dir=$(mktemp -d "${TMPDIR:-/tmp}/diarized-pg.XXXXXX")
    chmod 755 "$dir"
    if [ "$(id -u)" -eq 0 ]; then
      user=postgres
      id -u "$user" >/dev/null 2>&1 || user=nobody
      chown "$user" "$dir"
    fi
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_owner "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    # Loopback only, the socket inside DIR; fsync off: the data is thrown away.
    as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=200" start >/dev/null \
      || { cat "$dir/server.log" >&2; exit 1; }
    echo "export DIARIZED_TEST_PG_DIR=$dir"
    echo "export DIARIZED_TEST_PG_URL=postgres://postgres@127.0.0.1:$port/postgres"
    ;;
  stop)
    dir=${2:-${DIARIZED_TEST_PG_DIR:-}}
    case "$dir" in */diarized-pg.*) ;; *) usage ;; esac
    if [ -f "$dir/data/postmaster.pid" ]; then
      as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    fi
    rm -rf "$dir"
    ;;
  *) usage ;;
esac
