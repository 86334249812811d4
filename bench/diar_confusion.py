#!/usr/bin/env python3
"""Seconds each hypothesis speaker shares with each reference speaker, on a 10 ms grid ("-": no
reference speech). Shows which real voices a surplus speaker holds.

Usage: python3 bench/diar_confusion.py HYP.rttm REF.rttm   (HYP from diarize_eval --rttm DIR)
"""

import sys
from collections import defaultdict


def load(path):
    turns = []
    for line in open(path):
        f = line.split()
        if f and f[0] == "SPEAKER":
            turns.append((float(f[3]), float(f[3]) + float(f[4]), f[7]))
    return turns


def grid(turns):
    g = defaultdict(set)
    for s, e, who in turns:
        for i in range(int(s * 100), int(e * 100)):
            g[i].add(who)
    return g


def main():
    hyp, ref = load(sys.argv[1]), load(sys.argv[2])
    gh, gr = grid(hyp), grid(ref)
    shared, total = defaultdict(float), defaultdict(float)
    for i, found in gh.items():
        real = gr.get(i) or {"-"}
        for w in found:
            total[w] += 0.01
            for r in real:
                shared[(w, r)] += 0.01 / len(real)
    refs = sorted({w for _, _, w in ref}) + ["-"]
    print("found".ljust(10) + "".join(r[:9].rjust(10) for r in refs) + "total".rjust(10))
    for w in sorted(total):
        print(w.ljust(10) + "".join(f"{shared[(w, r)]:10.1f}" for r in refs) + f"{total[w]:10.1f}")


if __name__ == "__main__":
    main()
