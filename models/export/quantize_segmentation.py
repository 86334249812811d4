"""Write segmentation-3.0-int8.onnx: segmentation-3.0.onnx with its LSTM weights in 8 bits.

The four bidirectional LSTM layers are ~60 % of a window's time in ONNX Runtime; with 8-bit
weights (ONNX Runtime's dynamic quantization: weights quantized here, activations per call) a
10 s window takes ~24 ms instead of ~36 ms on one core. Everything else (SincNet, linears,
classifier) stays f32. Only ONNX Runtime runs this file (`DynamicQuantizeLSTM` is one of its
own operators); tract keeps the f32 export.

Weights are unsigned 8-bit (QUInt8), so the products are u8 x u8: ONNX Runtime computes them
exactly in 32-bit integers on every x86 CPU, with or without VNNI (u8 x s8 can saturate in
AVX2's 16-bit intermediate sums on CPUs without it, and give other results there).

Usage: python quantize_segmentation.py segmentation-3.0.onnx segmentation-3.0-int8.onnx
(needs `onnx` and `onnxruntime`, both from PyPI; measured with onnx 1.23.2 and onnxruntime 1.32.0.)
"""

import sys

from onnxruntime.quantization import QuantType, quantize_dynamic


def main():
    src, out = sys.argv[1], sys.argv[2]
    quantize_dynamic(src, out, op_types_to_quantize=["LSTM"], weight_type=QuantType.QUInt8)
    print("wrote", out)


if __name__ == "__main__":
    main()
