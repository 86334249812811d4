#!/usr/bin/env python3
"""Long-file benchmark (not a test): peak memory and wall time of `diarized transcribe` with
diarization on (analysis off) on meeting recordings of growing length.

The recordings are bench/meeting.py's meetings; lengths above 60 minutes repeat the 60-minute
one (`sox` concatenation, so a 4-hour file is 4 × the same hour). Peak RSS is `/usr/bin/time`'s
maximum resident set size of the whole process. Prints one Markdown table.

Setup as for bench/meeting.py (`make build`, the model installed); `apt-get install time sox`.
Usage: bench/long.py [--minutes 5,60,240] [--model base] [--threads 2]
"""

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import meeting  # noqa: E402  (the recordings and paths of the meeting benchmark)


def recording(minutes):
    if minutes <= 60:
        return meeting.meeting(minutes)
    out = meeting.TMP / f"meeting-{minutes}min.wav"
    if not out.exists():
        hour = meeting.meeting(60)
        parts = [str(hour)] * (minutes // 60)
        subprocess.run(["sox", *parts, str(out), "trim", "0", str(minutes * 60)], check=True)
    return out


def run(audio, model, threads):
    env = dict(os.environ, WHISPER_MODEL=model, WHISPER_THREADS=str(threads), LLM_MODEL="none",
               DIARIZATION="true", MODELS_DIR=str(meeting.MODELS), RUST_LOG="warn")
    start = time.monotonic()
    p = subprocess.run(["/usr/bin/time", "-f", "maxrss_kb %M", str(meeting.BIN), "transcribe", str(audio),
                        "--format", "json"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       text=True)
    wall = time.monotonic() - start
    if p.returncode != 0:
        sys.exit(f"{audio.name}: exit {p.returncode}: {p.stderr[-2000:]}")
    kb = int(p.stderr.rsplit("maxrss_kb", 1)[1].split()[0])
    return wall, kb


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", default="5,60,240")
    ap.add_argument("--model", default="base")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    print(f"model {a.model}, {a.threads} threads, diarization on, load average {os.getloadavg()[0]:.2f}\n")
    print("| recording | wall s | RTF | peak RSS MiB | MiB per hour of audio over the 5-minute run |")
    print("|---|---|---|---|---|")
    base = None
    for minutes in [int(x) for x in a.minutes.split(",")]:
        wall, kb = run(recording(minutes), a.model, a.threads)
        mib = kb / 1024
        if base is None:
            base = (minutes, mib)
        slope = f"{(mib - base[1]) / ((minutes - base[0]) / 60):.0f}" if minutes > base[0] else "—"
        print(f"| {minutes} min | {wall:.0f} | {wall / (minutes * 60):.3f} | {mib:.0f} | {slope} |", flush=True)


if __name__ == "__main__":
    main()
