#!/usr/bin/env python3
"""Benchmark (not a test): memory of one daemon with WORKERS=1 and WORKERS=2.

Two different 90-second meeting files (the three AMI excerpts in two orders) are uploaded with
`?run=true` to a fresh daemon (base model, diarization on, analysis off, one ggml thread per
worker); prints idle RSS (models loaded lazily, so this is the bare daemon), peak RSS (VmHWM)
and wall time until both jobs are done. With shared weights the second worker adds only its
decoding state and buffers, not a second copy of the model.

Usage: bench/workers.py [path/to/diarized]   (build first: make build; models: base, diarization)
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from api import rss_kb, start, stop  # noqa: E402  (one way of starting the daemon)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FX = os.path.join(ROOT, "..", "shared", "fixtures")
AMI = ["ami_sample.wav", "ami_dev00.wav", "ami_dev01.wav"]


def job(host, port, id_):
    with urllib.request.urlopen(f"http://{host}:{port}/api/jobs/{id_}") as r:
        return json.load(r)


def run(workers, files):
    os.environ.update(WORKERS=str(workers), WHISPER_MODEL="base", WHISPER_THREADS="1",
                      DIARIZATION="true", MODELS_DIR=os.environ.get("MODELS_DIR", os.path.join(ROOT, "models-cache")))
    with tempfile.TemporaryDirectory() as d:
        p, host, port = start(d)
        try:
            time.sleep(1.0)
            idle = rss_kb(p.pid, "VmRSS")
            t0 = time.time()
            ids = []
            for f in files:
                out = subprocess.run(["curl", "-sf", "-F", f"file=@{f}",
                                      f"http://{host}:{port}/api/jobs?run=true"],
                                     check=True, capture_output=True, text=True).stdout
                ids.append(json.loads(out)["id"])
            while True:
                states = [job(host, port, i)["status"] for i in ids]
                if all(s in ("done", "error") for s in states):
                    break
                time.sleep(0.5)
            wall = time.time() - t0
            peak = rss_kb(p.pid, "VmHWM")
        finally:
            stop(p)
    assert all(s == "done" for s in states), states
    return idle, peak, wall


def main():
    with tempfile.TemporaryDirectory() as d:
        files = [os.path.join(d, "a.wav"), os.path.join(d, "b.wav")]
        subprocess.run(["sox", *[os.path.join(FX, n) for n in AMI], files[0]], check=True)
        subprocess.run(["sox", *[os.path.join(FX, n) for n in reversed(AMI)], files[1]], check=True)
        print(f"load average: {open('/proc/loadavg').read().split()[:3]}")
        print("| WORKERS | idle RSS MiB | peak RSS MiB | wall s (2 jobs of 90 s) |")
        print("|---|---|---|---|")
        for w in (1, 2):
            idle, peak, wall = run(w, files)
            print(f"| {w} | {idle / 1024:.1f} | {peak / 1024:.1f} | {wall:.1f} |")


if __name__ == "__main__":
    main()
