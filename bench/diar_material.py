#!/usr/bin/env python3
"""Builds diarization evaluation material from ../shared/fixtures (recipe only; audio is never
committed). Writes 16 kHz mono s16 WAVs and reference RTTMs under OUT (default
target/diar-material):

  calib/    CALIBRATION set: tune parameters on these only
  heldout/  HELD-OUT set: built from other source segments (second half of every AMI excerpt,
            other single-speaker clips or clip halves) and another random seed; never tune on it
  long/     a 60-minute concatenation of the four AMI voices (speaker-count check)
  longheld/ 30 minutes of the held-out AMI halves and single voices, another seed (never tuned on)
  longcal/  the same from the calibration halves and single voices (speaker-count calibration)
  midcal/   2, 3, 5 and 8 minutes of the calibration halves and single voices (calibration)
  midheld/  the same lengths from the held-out halves and single voices, other seeds (held out)
  NAME.list per folder: `wav=rttm` lines for examples/diarize_eval.rs

Item kinds: AMI excerpts at other offsets, concatenations of 1-4 speakers with pauses and gains,
the same at -20 dB, and files of a few short utterances in near-silence. References: AMI RTTMs
clipped and shifted; single-speaker clips get speech regions from an energy detector (clean read
speech, boundaries well inside the 0.25 s collar). Needs python3 and sox.

Usage: python3 bench/diar_material.py [OUT]
       PERTURB=SEED python3 bench/diar_material.py OUT   (the same material plus seeded noise of
       one step: a reproducible other rendering, for checking how stable results are)
"""

import array
import math
import os
import random
import subprocess
import sys
import tempfile
import wave

SR = 16000
FX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "fixtures")
FX = os.path.normpath(os.environ.get("FIXTURES", FX))


def load(name, remix=None):
    """Fixture → array('h') of 16 kHz mono s16 (sox converts float WAVs and picks channels)."""
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "x.wav")
        # -R: sox dithers the 16-bit conversion with a random seed unless told to repeat.
        cmd = ["sox", "-R", os.path.join(FX, name), "-b", "16", "-e", "signed-integer", out]
        cmd += ["remix", str(remix)] if remix else ["channels", "1"]
        cmd += ["rate", str(SR)]
        subprocess.run(cmd, check=True)
        with wave.open(out) as w:
            a = array.array("h")
            a.frombytes(w.readframes(w.getnframes()))
    return a


def energy_regions(x, frame=320, floor_db=-25.0, above_noise_db=8.0, min_gap=0.30, min_len=0.10, pad=0.04):
    """Speech regions [(s, e)] of a clean single-speaker clip: frames within `floor_db` of the
    loud frames and `above_noise_db` over the quiet ones, gaps under `min_gap` bridged."""
    n = len(x) // frame
    e = []
    for i in range(n):
        seg = x[i * frame:(i + 1) * frame]
        e.append(10 * math.log10(sum(v * v for v in seg) / frame + 1e-9))
    srt = sorted(e)
    thr = max(srt[int(0.95 * (n - 1))] + floor_db, srt[int(0.10 * (n - 1))] + above_noise_db)
    on = [v > thr for v in e]
    regs, start = [], None
    for i, v in enumerate(on + [False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            regs.append([start * frame / SR, i * frame / SR])
            start = None
    merged = []
    for r in regs:
        if merged and r[0] - merged[-1][1] < min_gap:
            merged[-1][1] = r[1]
        else:
            merged.append(r)
    dur = len(x) / SR
    return [(max(0.0, s - pad), min(dur, e + pad)) for s, e in merged if e - s >= min_len]


def read_rttm(name):
    turns = []
    for line in open(os.path.join(FX, name + ".rttm")):
        f = line.split()
        if f and f[0] == "SPEAKER":
            turns.append((float(f[3]), float(f[3]) + float(f[4]), f[7]))
    return turns


class Source:
    """A stretch [a, b) of one fixture with its reference turns (absolute times)."""

    def __init__(self, name, x, turns, a, b):
        self.name, self.x, self.turns, self.a, self.b = name, x, turns, a, b

    def piece(self, s, e):
        """Samples and turns (relative to s) of [s, e) within the source."""
        assert self.a - 1e-6 <= s <= e <= self.b + 1e-6, (self.name, s, e)
        seg = self.x[int(s * SR):int(e * SR)]
        t = [(max(ts, s) - s, min(te, e) - s, who) for ts, te, who in self.turns if te > s and ts < e]
        return seg, [x for x in t if x[1] - x[0] > 0.02]


def scaled(x, db):
    g = 10 ** (db / 20)
    return array.array("h", (max(-32768, min(32767, int(v * g))) for v in x))


def noise(n, rng, level=3):
    """Very low noise (about -80 dBFS) instead of digital silence between pieces."""
    return array.array("h", (rng.randint(-level, level) for _ in range(n)))


def perturbed(x, file_id):
    """`x` plus seeded noise of at most one step (PERTURB=SEED): another rendering of the same
    recipe, as a different dither would give, to see how stable results are (reproducibly)."""
    seed = os.environ.get("PERTURB")
    if not seed:
        return x
    rng = random.Random(f"{seed}/{file_id}")
    noise = rng.choices((-1, 0, 1), k=len(x))
    return array.array("h", (max(-32768, min(32767, v + d)) for v, d in zip(x, noise)))


def write(path, x, turns, file_id):
    x = perturbed(x, file_id)
    with wave.open(path + ".wav", "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(x.tobytes())
    with open(path + ".rttm", "w") as f:
        for s, e, who in sorted(turns):
            f.write(f"SPEAKER {file_id} 1 {s:.3f} {e - s:.3f} <NA> <NA> {who} <NA> <NA>\n")


class Builder:
    def __init__(self, ami, singles, rng):
        self.ami, self.singles, self.rng = ami, singles, rng

    def ami_excerpt(self, lo=8.0, hi=14.0):
        src = self.rng.choice(self.ami)
        length = min(self.rng.uniform(lo, hi), src.b - src.a)
        s = self.rng.uniform(src.a, src.b - length)
        return src.piece(s, s + length)

    def single(self):
        src = self.rng.choice(self.singles)
        return src.piece(src.a, src.b)

    def concat(self, parts, gains=(-6.0, 0.0), pause=(0.3, 2.0)):
        x, turns, t = array.array("h"), [], 0.0
        lead = noise(int(self.rng.uniform(0.2, 1.0) * SR), self.rng)
        x.extend(lead)
        t = len(x) / SR
        for seg, tt in parts:
            x.extend(scaled(seg, self.rng.uniform(*gains)))
            turns += [(s + t, e + t, w) for s, e, w in tt]
            x.extend(noise(int(self.rng.uniform(*pause) * SR), self.rng))
            t = len(x) / SR
        return x, turns

    def mix(self, speakers):
        """1-4 voices: AMI pieces and single-speaker clips, each voice in one or two pieces."""
        parts, voices = [], set()
        for _ in range(12):
            if len(voices) >= speakers:
                break
            if self.rng.random() < 0.5:
                seg, tt = self.ami_excerpt(3.0, 7.0)
            else:
                seg, tt = self.single()
            new = {w for _, _, w in tt} - voices
            if not tt or len(voices | new) > speakers:
                continue
            voices |= new
            parts.append((seg, tt))
        # Revisit a voice so clustering must join its two pieces.
        if len(parts) > 1 and self.rng.random() < 0.7:
            parts.append(parts[0])
        return self.concat(parts)

    def short(self):
        """A few short utterances (0.3-1.4 s) in ~20 s of near-silence."""
        parts = []
        for _ in range(self.rng.randint(2, 4)):
            src = self.rng.choice(self.singles + self.ami)
            regs = [(s, e) for s, e, _ in src.turns if e - s >= 0.35 and src.a <= s and e <= src.b]
            if not regs:
                continue
            s, e = self.rng.choice(regs)
            length = min(e - s, self.rng.uniform(0.3, 1.4))
            parts.append(src.piece(s, s + length))
        return self.concat(parts, gains=(-10.0, 0.0), pause=(2.0, 6.0))


def build_split(out, name, ami, singles, seed, n_each):
    rng = random.Random(seed)
    b = Builder(ami, singles, rng)
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    items = []
    for i in range(n_each):
        items.append((f"off{i}", b.concat([b.ami_excerpt()], gains=(-3.0, 0.0), pause=(0.5, 1.0))))
        items.append((f"mix{i}", b.mix(1 + i % 4)))
        x, t = b.mix(2 + i % 3)
        items.append((f"low{i}", (scaled(x, -20.0), t)))
        items.append((f"short{i}", b.short()))
    lines = []
    for item, (x, turns) in items:
        path = os.path.join(d, item)
        write(path, x, turns, f"{name}_{item}")
        lines.append(f"{path}.wav={path}.rttm")
    with open(os.path.join(out, name + ".list"), "w") as f:
        f.write("\n".join(lines) + "\n")


def build_long(out, ami, seed, minutes=60, name="long"):
    """Pieces of the given sources, random order, gains and pauses. Returns the `wav=rttm` line."""
    rng = random.Random(seed)
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    gains = {}
    x, turns = array.array("h"), []
    while len(x) < minutes * 60 * SR:
        src = rng.choice(ami)
        # Pieces of 5 s or more, or the whole clip when it is shorter.
        length = rng.uniform(min(5.0, src.b - src.a), src.b - src.a)
        s = rng.uniform(src.a, src.b - length)
        g = rng.choice((-6, -3, 0))
        key = (id(src), g)
        if key not in gains:
            gains[key] = scaled(src.x, g)
        t = len(x) / SR
        seg, tt = Source(src.name, gains[key], src.turns, src.a, src.b).piece(s, s + length)
        x.extend(seg)
        turns += [(a + t, e + t, w) for a, e, w in tt]
        x.extend(noise(int(rng.uniform(0.3, 2.0) * SR), rng))
    path = os.path.join(d, f"{name}{minutes}")
    write(path, x, turns, name)
    return f"{path}.wav={path}.rttm\n"


def write_list(out, name, lines):
    with open(os.path.join(out, f"{name}.list"), "w") as f:
        f.writelines(lines)


# Lengths of the medium files (minutes): between the short cuts and the long files, where a
# meeting upload usually is.
MID_MINUTES = (2, 3, 5, 8)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "target/diar-material"
    os.makedirs(out, exist_ok=True)
    ami = {n: (load(n + ".wav"), read_rttm(n)) for n in ("ami_sample", "ami_dev00", "ami_dev01")}
    singles = {
        "jfk": load("jfk.wav"),
        "ldc": load("en_ldc93s1.wav"),
        "de": load("de_cheetah_test.wav"),
        "fr": load("fr_cheetah_test.wav"),
        "stL": load("stereo_diarization.wav", 1),
        "stR": load("stereo_diarization.wav", 2),
    }
    regions = {k: energy_regions(v) for k, v in singles.items()}

    def single(name, a=None, b=None):
        x = singles[name]
        a, b = a or 0.0, b or len(x) / SR
        return Source(name, x, [(s, e, name) for s, e in regions[name]], a, b)

    def half(n, first):
        x, t = ami[n]
        return Source(n, x, t, 0.0, 15.0) if first else Source(n, x, t, 15.0, len(x) / SR)

    # The AMI excerpts are split in time: first halves calibrate, second halves are held out.
    # jfk is split the same way; the other clips go to one side only.
    jfk_mid = 5.5
    calib_ami = [half(n, True) for n in ami]
    calib_single = [single("jfk", 0.0, jfk_mid), single("ldc"), single("de"), single("stL")]
    held_ami = [half(n, False) for n in ami]
    held_single = [single("jfk", jfk_mid), single("fr"), single("stR")]
    build_split(out, "calib", calib_ami, calib_single, seed=1, n_each=6)
    build_split(out, "heldout", held_ami, held_single, seed=2, n_each=6)
    minutes = int(os.environ.get("LONG_MINUTES", "60"))
    if minutes > 0:
        write_list(out, "long", [build_long(out, calib_ami + held_ami, seed=3, minutes=minutes)])
        # Held out of calibration: other voices too, another order, half the length.
        held = build_long(out, held_ami + held_single, seed=4, minutes=minutes // 2, name="longheld")
        write_list(out, "longheld", [held])
        # Calibration's twin of longheld: the calibration halves and single voices.
        cal = build_long(out, calib_ami + calib_single, seed=5, minutes=minutes // 2, name="longcal")
        write_list(out, "longcal", [cal])
        # Medium lengths, each side from its own sources and seeds.
        for name, sources, seed in (("midcal", calib_ami + calib_single, 6), ("midheld", held_ami + held_single, 16)):
            lines = [build_long(out, sources, seed + i, m, name) for i, m in enumerate(MID_MINUTES)]
            write_list(out, name, lines)
    print(f"material in {out}: calib, heldout, long, longheld, longcal, midcal and midheld .list")


if __name__ == "__main__":
    main()
