#!/usr/bin/env python3
"""Benchmark (not a test) of the daemon core.

1. GET /api/jobs latency (p50/p99) with 10,000 jobs stored, against GET /healthz in the same run.
2. Peak RSS while a ~199 MB upload streams in, against idle RSS.

Usage: bench/api.py [path/to/diarized]   (build first: cargo build)
"""
import http.client
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

BIN = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/diarized")


def start(workdir):
    env = dict(os.environ, BIND="127.0.0.1:0", LOG_DIR="none", LLM_MODEL="none", RUST_LOG="warn",
               UPLOAD_FOLDER="uploads", DATABASE_URL="sqlite:///jobs.db")
    p = subprocess.Popen([BIN, "serve"], cwd=workdir, env=env, stdout=subprocess.PIPE)
    line = p.stdout.readline().decode()
    host, port = line.strip().rsplit("/", 1)[1].split(":")
    return p, host, int(port)


def stop(p):
    p.terminate()
    p.wait(timeout=60)


def rss_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def latencies(host, port, path, n):
    conn = http.client.HTTPConnection(host, port)
    out = []
    for _ in range(n):
        t = time.perf_counter()
        conn.request("GET", path)
        r = conn.getresponse()
        r.read()
        assert r.status == 200, r.status
        out.append((time.perf_counter() - t) * 1000)
    conn.close()
    return out


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main():
    with tempfile.TemporaryDirectory() as wd:
        p, host, port = start(wd)
        stop(p)  # schema created
        db = sqlite3.connect(os.path.join(wd, "jobs.db"))
        now = "2026-01-01T00:00:00.000Z"
        rows = [(str(uuid.uuid4()), f"uploads/{i}.wav", f"meeting-{i}.wav", f"{i:064x}", "upload", "done",
                 "meeting", "A summary of meeting %d." % i, '["point one","point two"]', "en",
                 "Speaker00: hello\nSpeaker01: hi", now[:-5] + "%03dZ" % (i % 1000), now) for i in range(10_000)]
        db.executemany("INSERT INTO jobs (uuid, audio_path, original_filename, sha256, source, status,"
                       " conversation_type, summary, keypoints, language, clean_transcript, created_at, updated_at)"
                       " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        db.commit()
        db.close()

        p, host, port = start(wd)
        try:
            latencies(host, port, "/healthz", 20)  # warm-up
            base = latencies(host, port, "/healthz", 300)
            page = latencies(host, port, "/api/jobs?limit=50", 300)
            full = latencies(host, port, "/api/jobs?limit=10000", 20)
            print("| request (10,000 jobs stored) | p50 ms | p99 ms | p50 / healthz p50 |")
            print("|---|---|---|---|")
            b50 = statistics.median(base)
            for name, xs in [("GET /healthz (baseline)", base), ("GET /api/jobs?limit=50", page),
                             ("GET /api/jobs?limit=10000 (all)", full)]:
                print(f"| {name} | {pct(xs, .5):.2f} | {pct(xs, .99):.2f} | {statistics.median(xs) / b50:.1f}x |")

            idle = rss_kb(p.pid, "VmRSS")
            big = os.path.join(wd, "big.wav")
            subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", "-b", "16", big, "synth", "6200", "sine", "440",
                            "vol", "0.1"], check=True)
            size = os.path.getsize(big)
            t = time.perf_counter()
            r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-F", f"file=@{big}",
                                f"http://{host}:{port}/api/jobs"], capture_output=True, text=True)
            secs = time.perf_counter() - t
            peak = rss_kb(p.pid, "VmHWM")
            print()
            print(f"upload of {size / 1e6:.0f} MB: HTTP {r.stdout} in {secs:.1f} s; idle RSS {idle / 1024:.1f} MiB, "
                  f"peak RSS {peak / 1024:.1f} MiB (peak/idle {peak / idle:.2f}x)")
        finally:
            stop(p)


if __name__ == "__main__":
    main()
