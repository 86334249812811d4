#!/usr/bin/env bash
# Job-store benchmark (not a test), on SQLite and on a throwaway PostgreSQL cluster:
#  1. claim throughput and enqueue → claimed latency, 4 workers, 10,000 no-op jobs
#     (examples/store_bench.rs);
#  2. GET /api/jobs latency (p50/p99) with 100,000 jobs stored on PostgreSQL, against GET /healthz
#     in the same run (`diarized serve --no-workers`).
# Usage: bash bench/store.sh   (after `make build`; needs Debian's postgresql package)
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-10000}
export LIST_JOBS=${LIST_JOBS:-100000}
cargo build --release --workspace --all-targets >/dev/null
work=$(mktemp -d)
eval "$(scripts/pg-test-cluster.sh start)"
trap 'scripts/pg-test-cluster.sh stop; rm -rf "$work"' EXIT
server=${DIARIZED_TEST_PG_URL%/*}
psql -q "$DIARIZED_TEST_PG_URL" -c "CREATE DATABASE bench_claims" -c "CREATE DATABASE bench_list"

bench=target/release/examples/store_bench
$bench "$work/claims.db" --jobs "$JOBS" --workers 4
$bench "$server/bench_claims" --jobs "$JOBS" --workers 4
$bench "$server/bench_list" --seed "$LIST_JOBS" >/dev/null

mkdir -p "$work/serve"
python3 - "$server/bench_list" "$work/serve" <<'PY'
import http.client, os, statistics, subprocess, sys, time
url, workdir = sys.argv[1], sys.argv[2]
env = dict(os.environ, BIND="127.0.0.1:0", LOG_DIR="none", LLM_MODEL="none", DIARIZATION="false",
           RUST_LOG="warn", UPLOAD_FOLDER="uploads", DATABASE_URL=url)
p = subprocess.Popen([os.path.abspath("target/release/diarized"), "serve", "--no-workers"], cwd=workdir,
                     env=env, stdout=subprocess.PIPE)
try:
    host, port = p.stdout.readline().decode().strip().rsplit("/", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port))
    def timed(path, n):
        out = []
        for _ in range(n):
            t = time.perf_counter()
            conn.request("GET", path)
            r = conn.getresponse()
            body = r.read()
            out.append((time.perf_counter() - t) * 1000)
            assert r.status == 200, (r.status, body[:200])
        out.sort()
        return out
    timed("/api/jobs", 20)
    for path in ["/api/jobs", "/api/jobs?offset=99000", "/healthz"]:
        ms = timed(path, 500)
        print(f'{{"backend": "postgres", "stored_jobs": {os.environ.get("LIST_JOBS", 100000)}, "path": "{path}", '
              f'"p50_ms": {statistics.median(ms):.2f}, "p99_ms": {ms[int(len(ms) * 0.99) - 1]:.2f}}}')
finally:
    p.terminate()
    p.wait()
PY
