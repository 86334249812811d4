#!/usr/bin/env python3
"""Transcription benchmark (not a test): diarized::asr vs whisper.cpp's whisper-cli vs faster-whisper.

One invocation, same audio, same model weights, same threads, greedy decoding, language fixed
to English for the 120 s clip. Prints a Markdown table of wall times and real-time factors
(RTF = seconds of compute per second of audio; lower is faster) and the ratios against
whisper-cli and faster-whisper measured in the same run, plus WER on jfk and language/agreement
checks on multilingual.mp3.

Setup (see the report): models installed with `cargo run -- models install tiny.en base base-q8_0
base-q5_1` (or the tests); `cargo build --example transcribe`; whisper-cli built from the
whisper.cpp sources whisper-rs-sys bundles (WHISPER_CLI=path); faster-whisper in a Python env
(FW_PYTHON=path to its python) with the CTranslate2 model folders extracted (CT2_DIR).

Usage: bench/transcribe.py [--threads 1,2] [--models tiny.en,base] [--quant base-q8_0,base-q5_1]
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT.parent / "shared" / "fixtures"
MODELS = Path(os.environ.get("MODELS_DIR", ROOT / "models-cache"))
OURS = ROOT / "target" / "release" / "examples" / "transcribe"
WHISPER_CLI = os.environ.get("WHISPER_CLI", "/tmp/whisper.cpp-1.8.3/build/bin/whisper-cli")
FW_PYTHON = os.environ.get("FW_PYTHON", "/tmp/fwenv/bin/python")
CT2_DIR = Path(os.environ.get("CT2_DIR", "/tmp/ct2"))
JFK = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."

FW_SCRIPT = r"""
import sys, time, json
from faster_whisper import WhisperModel
model_dir, audio, threads, lang = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
t0 = time.time()
m = WhisperModel(model_dir, device="cpu", compute_type="int8", cpu_threads=threads)
t1 = time.time()
segs, info = m.transcribe(audio, beam_size=1, language=None if lang == "auto" else lang)
text = " ".join(s.text.strip() for s in segs)
t2 = time.time()
print(json.dumps({"load_s": t1 - t0, "transcribe_s": t2 - t1, "text": text, "language": info.language}))
"""


def words(s):
    return [w for w in (re.sub(r"[^\w']", "", x.lower()) for x in s.split()) if w]


def wer(ref, hyp):
    r, h = words(ref), words(hyp)
    prev = list(range(len(h) + 1))
    for i, rw in enumerate(r):
        cur = [i + 1] * (len(h) + 1)
        for j, hw in enumerate(h):
            cur[j + 1] = min(prev[j] + (rw != hw), prev[j + 1] + 1, cur[j] + 1)
        prev = cur
    return prev[len(h)] / max(1, len(r))


def make_clip():
    """120 s of English speech: three AMI meeting excerpts, jfk, LDC93S1, multilingual's first 17 s."""
    out = Path(tempfile.gettempdir()) / "bench-120s.wav"
    if out.exists():
        return out
    parts = []
    for i, f in enumerate(["ami_sample.wav", "ami_dev00.wav", "ami_dev01.wav", "jfk.wav", "en_ldc93s1.wav", "multilingual.mp3"]):
        p = Path(tempfile.gettempdir()) / f"bench-part{i}.wav"
        subprocess.run(["sox", "-R", str(FIX / f), "-r", "16000", "-c", "1", "-b", "16", "-e", "signed-integer", str(p)], check=True)
        parts.append(str(p))
    subprocess.run(["sox", *parts, str(out), "trim", "0", "120"], check=True)
    return out


def run(cmd):
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t0
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{p.stderr[-2000:]}")
    return wall, p.stdout


def ours(model, audio, threads, lang):
    cmd = [str(OURS), model, str(audio), "--threads", str(threads)]
    if lang != "auto":
        cmd += ["--language", lang]
    wall, out = run(cmd)
    j = json.loads(out.strip().splitlines()[-1])
    return wall, j["transcribe_s"], j["text"], j


def cli(model, audio, threads, lang):
    wall, out = run([WHISPER_CLI, "-m", str(MODELS / f"ggml-{model}.bin"), "-f", str(audio), "-t", str(threads),
                     "-bs", "1", "-l", lang, "-np", "-nt"])
    return wall, None, " ".join(out.split()), {}


def fw(model, audio, threads, lang):
    base = model.split("-q")[0]
    wall, out = run([FW_PYTHON, "-c", FW_SCRIPT, str(CT2_DIR / base), str(audio), str(threads), lang])
    j = json.loads(out.strip().splitlines()[-1])
    return wall, j["transcribe_s"], j["text"], j


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--models", default="tiny.en,base")
    ap.add_argument("--quant", default="base-q8_0,base-q5_1")
    a = ap.parse_args()
    clip = make_clip()
    dur = 120.0
    jfk_wav = FIX / "jfk.wav"
    print(f"audio: {clip} ({dur:.0f} s); load: {os.getloadavg()[0]:.1f}\n")
    print("| model | threads | engine | wall s | transcribe s | RTF (wall) | ours/whisper-cli | ours/faster-whisper | jfk WER |")
    print("|---|---|---|---|---|---|---|---|---|")
    for threads in [int(t) for t in a.threads.split(",")]:
        for model in a.models.split(",") + [q for q in a.quant.split(",") if q]:
            engines = [("ours", ours), ("whisper-cli", cli)]
            if "-q" not in model:
                engines.append(("faster-whisper int8", fw))
            res = {}
            for name, fn in engines:
                wall, inner, text, _ = fn(model, clip, threads, "en")
                _, _, jtext, _ = fn(model, jfk_wav, threads, "en")
                res[name] = (wall, inner, wer(JFK, jtext))
            w_ours = res["ours"][0]
            for name, (wall, inner, jw) in res.items():
                r_cli = f"{w_ours / res['whisper-cli'][0]:.2f}" if name == "ours" else ""
                r_fw = f"{w_ours / res['faster-whisper int8'][0]:.2f}" if name == "ours" and "faster-whisper int8" in res else ""
                inner_s = f"{inner:.1f}" if inner is not None else ""
                print(f"| {model} | {threads} | {name} | {wall:.1f} | {inner_s} | {wall / dur:.3f} | {r_cli} | {r_fw} | {jw:.2f} |",
                      flush=True)

    print("\nmultilingual.mp3, language auto-detected, 1 thread (ours: per-chunk languages):")
    ref_text = None
    for model in ["base"] + [q for q in a.quant.split(",") if q]:
        wall, inner, text, j = ours(model, FIX / "multilingual.mp3", 1, "auto")
        if ref_text is None:
            ref_text = text
        print(f"- {model}: {inner:.1f} s, language {j['language']} p={j['language_probability']}, "
              f"word disagreement vs base f16: {wer(ref_text, text):.3f}; text: {text[:160]}…")


if __name__ == "__main__":
    main()
