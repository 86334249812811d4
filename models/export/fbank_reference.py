"""Writes the fbank test vector: torchaudio's Kaldi fbank of jfk.wav, 1.00-1.50 s.

Usage: python fbank_reference.py ../shared/fixtures/jfk.wav tests/data/fbank_jfk_1s.txt
Output: first line "frames bins", then one line of 80 log energies per frame (no mean removal).
Input samples are the WAV's int16 values as float (Kaldi's usual scale).
"""

import sys
import wave

import numpy as np
import torch
import importlib.util
import os
import types

# torchaudio's compliance/kaldi.py is pure torch; load it alone (the package's __init__ refuses to
# import when the torch and torchaudio wheels were built for different CUDA versions).
_pkg = importlib.util.find_spec("torchaudio").submodule_search_locations[0]
sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))
_spec = importlib.util.spec_from_file_location("kaldi", os.path.join(_pkg, "compliance", "kaldi.py"))
kaldi = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kaldi)

with wave.open(sys.argv[1]) as w:
    assert w.getframerate() == 16000 and w.getsampwidth() == 2 and w.getnchannels() == 1
    pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32)
clip = torch.from_numpy(pcm[16000:24000].copy()).unsqueeze(0)
feats = kaldi.fbank(clip, num_mel_bins=80, frame_length=25.0, frame_shift=10.0, dither=0.0,
                    preemphasis_coefficient=0.97, window_type="povey", sample_frequency=16000,
                    low_freq=20.0, high_freq=0.0, use_energy=False, use_log_fbank=True, use_power=True,
                    remove_dc_offset=True, round_to_power_of_two=True, snip_edges=True)
with open(sys.argv[2], "w") as out:
    out.write(f"{feats.shape[0]} {feats.shape[1]}\n")
    for row in feats.numpy():
        out.write(" ".join(f"{v:.5f}" for v in row) + "\n")
print(feats.shape)
