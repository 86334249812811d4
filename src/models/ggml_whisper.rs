//! Converter from a CTranslate2 Whisper model to whisper.cpp's ggml model file.
//!
//! ggml file layout (little-endian), as whisper.cpp's loader reads it:
//! magic `0x67676d6c`; eleven `i32` hparams (n_vocab, n_audio_ctx, n_audio_state, n_audio_head,
//! n_audio_layer, n_text_ctx, n_text_state, n_text_head, n_text_layer, n_mels, ftype);
//! mel filters (`i32` n_mel, `i32` n_fft, n_mel×n_fft `f32`); vocabulary (`i32` count, then per
//! token `u32` length + raw bytes; special tokens are not written, whisper.cpp names them);
//! then tensors: `i32` n_dims, `i32` name length, `i32` ggml type, `i32` ne[n_dims] (innermost
//! first), name, data. Matrices use the weight type, convolution kernels f16, the rest f32.

use std::io::Write;

use half::f16;

use super::ModelError;
use super::ct2::Ct2Model;

const GGML_MAGIC: u32 = 0x6767_6d6c;
const QNT_VERSION: i32 = 2;
const QNT_VERSION_FACTOR: i32 = 1000;
/// Whisper's STFT: 400-sample window, 201 frequency bins.
const N_FFT_BINS: usize = 201;
const SAMPLE_RATE: f64 = 16_000.0;

/// Storage type of the weight matrices in the written file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightType {
    /// Half precision (what the CTranslate2 packages hold; lossless).
    F16,
    /// 8-bit blocks of 32 with an f16 scale (34 bytes per block).
    Q8_0,
    /// 5-bit blocks of 32 with f16 scale and minimum (24 bytes per block).
    Q5_1,
}

impl WeightType {
    /// The file-level `ftype` hparam.
    fn ftype(self) -> i32 {
        match self {
            WeightType::F16 => 1,
            WeightType::Q8_0 => 7 + QNT_VERSION * QNT_VERSION_FACTOR,
            WeightType::Q5_1 => 9 + QNT_VERSION * QNT_VERSION_FACTOR,
        }
    }

    fn ggml_type(self) -> GgmlType {
        match self {
            WeightType::F16 => GgmlType::F16,
            WeightType::Q8_0 => GgmlType::Q8_0,
            WeightType::Q5_1 => GgmlType::Q5_1,
        }
    }
}

/// ggml tensor element types used here (values are ggml's `enum ggml_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q5_1 = 7,
    Q8_0 = 8,
}

/// Hyper-parameters derived from the CTranslate2 variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hparams {
    pub n_vocab: usize,
    pub n_audio_ctx: usize,
    pub n_audio_state: usize,
    pub n_audio_head: usize,
    pub n_audio_layer: usize,
    pub n_text_ctx: usize,
    pub n_text_state: usize,
    pub n_text_head: usize,
    pub n_text_layer: usize,
    pub n_mels: usize,
}

impl Hparams {
    /// Reads the shapes and head counts of a CTranslate2 `WhisperSpec` model.
    pub fn from_ct2(m: &Ct2Model) -> Result<Self, ModelError> {
        let dims = |name: &str, rank: usize| -> Result<Vec<usize>, ModelError> {
            let v = m.get(name)?;
            if v.dims.len() != rank {
                return Err(ModelError::Format(format!("{name}: expected rank {rank}, got {:?}", v.dims)));
            }
            Ok(v.dims.clone())
        };
        let count_layers = |prefix: &str| {
            (0..).take_while(|i| m.get(&format!("{prefix}/layer_{i}/ffn/linear_0/weight")).is_ok()).count()
        };
        let emb = dims("decoder/embeddings/weight", 2)?;
        let epe = dims("encoder/position_encodings/encodings", 2)?;
        let dpe = dims("decoder/position_encodings/encodings", 2)?;
        let conv1 = dims("encoder/conv1/weight", 3)?;
        let head = |name: &str| -> Result<usize, ModelError> {
            let n = m.get(name)?.scalar_int()?;
            usize::try_from(n)
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| ModelError::Format(format!("{name} = {n}")))
        };
        let h = Hparams {
            n_vocab: emb[0],
            n_audio_ctx: epe[0],
            n_audio_state: epe[1],
            n_audio_head: head("encoder/num_heads")?,
            n_audio_layer: count_layers("encoder"),
            n_text_ctx: dpe[0],
            n_text_state: dpe[1],
            n_text_head: head("decoder/num_heads")?,
            n_text_layer: count_layers("decoder"),
            n_mels: conv1[1],
        };
        if h.n_audio_state != h.n_text_state
            || emb[1] != h.n_text_state
            || h.n_audio_layer == 0
            || h.n_text_layer == 0
        {
            return Err(ModelError::Format(format!("inconsistent Whisper model shapes: {h:?}")));
        }
        Ok(h)
    }
}

/// Converts `model` (a CTranslate2 `WhisperSpec`) plus its `vocabulary.txt` into a ggml file.
pub fn convert(
    model: &Ct2Model,
    vocabulary: &str,
    wtype: WeightType,
    out: &mut impl Write,
) -> Result<(), ModelError> {
    if model.spec != "WhisperSpec" {
        return Err(ModelError::Format(format!("not a Whisper model (spec {:?})", model.spec)));
    }
    let h = Hparams::from_ct2(model)?;
    let tokens = regular_tokens(vocabulary, h.n_vocab)?;

    let mut w = Out { out, err: None };
    w.u32(GGML_MAGIC);
    for v in [
        h.n_vocab,
        h.n_audio_ctx,
        h.n_audio_state,
        h.n_audio_head,
        h.n_audio_layer,
        h.n_text_ctx,
        h.n_text_state,
        h.n_text_head,
        h.n_text_layer,
        h.n_mels,
    ] {
        w.i32(v as i32);
    }
    w.i32(wtype.ftype());

    w.i32(h.n_mels as i32);
    w.i32(N_FFT_BINS as i32);
    for x in mel_filters(h.n_mels) {
        w.bytes(&x.to_le_bytes());
    }

    w.i32(tokens.len() as i32);
    for t in &tokens {
        w.u32(t.len() as u32);
        w.bytes(t);
    }
    w.done()?;

    for spec in tensor_plan(&h) {
        let var = model.get(&spec.source)?;
        let all = var.to_f32()?;
        let data = match spec.rows {
            Some((from, to)) => {
                let row = var.dims.iter().skip(1).product::<usize>().max(1);
                if to * row > all.len() {
                    return Err(ModelError::Format(format!("{}: too small to split", spec.source)));
                }
                all[from * row..to * row].to_vec()
            }
            None => all,
        };
        if data.len() != spec.dims.iter().product::<usize>() {
            return Err(ModelError::Format(format!(
                "{}: {} values, expected shape {:?} for {}",
                spec.source,
                data.len(),
                spec.dims,
                spec.name
            )));
        }
        let ttype = match spec.kind {
            Kind::Matrix => wtype.ggml_type(),
            Kind::Conv => GgmlType::F16,
            Kind::F32 => GgmlType::F32,
        };
        write_tensor(&mut w, &spec.name, &spec.dims, ttype, &data)?;
    }
    Ok(())
}

/// The vocabulary as raw bytes, without special tokens (`<|endoftext|>` and after).
///
/// `vocabulary.txt` holds one GPT-2 byte-level token per line; it is split on `\n` only,
/// because one token (50256 in multilingual models) is empty.
fn regular_tokens(vocabulary: &str, n_vocab: usize) -> Result<Vec<Vec<u8>>, ModelError> {
    let mut lines: Vec<&str> = vocabulary.split('\n').collect();
    if lines.len() > n_vocab && lines.last() == Some(&"") {
        lines.pop();
    }
    if lines.len() != n_vocab {
        return Err(ModelError::Format(format!(
            "vocabulary has {} tokens, model has {n_vocab}",
            lines.len()
        )));
    }
    let eot = lines
        .iter()
        .position(|t| *t == "<|endoftext|>")
        .ok_or_else(|| ModelError::Format("vocabulary has no <|endoftext|>".into()))?;
    let table = unicode_to_byte();
    lines[..eot]
        .iter()
        .map(|t| {
            t.chars()
                .map(|c| {
                    table.get(c as usize).copied().flatten().ok_or_else(|| {
                        ModelError::Format(format!("token {t:?}: {c:?} is not a GPT-2 byte character"))
                    })
                })
                .collect()
        })
        .collect()
}

/// Inverse of GPT-2's `bytes_to_unicode`: printable Latin-1 bytes map to themselves, the other
/// 68 bytes, in increasing order, to U+0100 onwards.
fn unicode_to_byte() -> Vec<Option<u8>> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut table = vec![None; 256 + 68];
    let mut n = 0;
    for b in 0..=255u8 {
        if printable(b) {
            table[b as usize] = Some(b);
        } else {
            table[256 + n] = Some(b);
            n += 1;
        }
    }
    table
}

/// Slaney-style mel filterbank (librosa's default, as Whisper uses): `n_mels` × 201 bins for
/// 16 kHz audio and a 400-point FFT, area-normalised triangles from 0 Hz to 8 kHz.
pub fn mel_filters(n_mels: usize) -> Vec<f32> {
    fn hz_to_mel(f: f64) -> f64 {
        let (f_sp, min_log_hz, logstep) = (200.0 / 3.0, 1000.0, (6.4f64).ln() / 27.0);
        if f >= min_log_hz { min_log_hz / f_sp + (f / min_log_hz).ln() / logstep } else { f / f_sp }
    }
    fn mel_to_hz(m: f64) -> f64 {
        let (f_sp, min_log_hz, logstep) = (200.0 / 3.0, 1000.0, (6.4f64).ln() / 27.0);
        let min_log_mel = min_log_hz / f_sp;
        if m >= min_log_mel { min_log_hz * (logstep * (m - min_log_mel)).exp() } else { f_sp * m }
    }
    let fft_freqs: Vec<f64> =
        (0..N_FFT_BINS).map(|i| i as f64 * (SAMPLE_RATE / 2.0) / (N_FFT_BINS - 1) as f64).collect();
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(SAMPLE_RATE / 2.0));
    let mel_f: Vec<f64> =
        (0..n_mels + 2).map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (n_mels + 1) as f64)).collect();
    let mut out = Vec::with_capacity(n_mels * N_FFT_BINS);
    for i in 0..n_mels {
        let enorm = 2.0 / (mel_f[i + 2] - mel_f[i]);
        for &f in &fft_freqs {
            let lower = (f - mel_f[i]) / (mel_f[i + 1] - mel_f[i]);
            let upper = (mel_f[i + 2] - f) / (mel_f[i + 2] - mel_f[i + 1]);
            out.push((lower.min(upper).max(0.0) * enorm) as f32);
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Weight matrix: stored in the chosen weight type.
    Matrix,
    /// Convolution kernel: always f16.
    Conv,
    /// Norms, biases, positional embeddings: always f32.
    F32,
}

/// One ggml tensor and where its data comes from.
struct TensorSpec {
    name: String,
    source: String,
    /// Row range of the source (outer dimension) for fused q/k/v splits.
    rows: Option<(usize, usize)>,
    /// Shape, outermost first (ggml's `ne` is this reversed).
    dims: Vec<usize>,
    kind: Kind,
}

/// Appends one tensor to the plan: (ggml name, CTranslate2 source, row range, dims, kind).
type Add<'a> = dyn FnMut(String, String, Option<(usize, usize)>, Vec<usize>, Kind) + 'a;

fn tensor_plan(h: &Hparams) -> Vec<TensorSpec> {
    let n = h.n_audio_state;
    let mut plan = Vec::new();
    let mut add =
        |name: String, source: String, rows: Option<(usize, usize)>, dims: Vec<usize>, kind: Kind| {
            plan.push(TensorSpec { name, source, rows, dims, kind });
        };
    let norm = |add: &mut Add<'_>, g: &str, c: &str| {
        add(format!("{g}.weight"), format!("{c}/gamma"), None, vec![n], Kind::F32);
        add(format!("{g}.bias"), format!("{c}/beta"), None, vec![n], Kind::F32);
    };
    let linear = |add: &mut Add<'_>,
                  g: &str,
                  c: &str,
                  part: Option<usize>,
                  bias: bool,
                  (rows, cols): (usize, usize)| {
        let range = part.map(|p| (p * rows, (p + 1) * rows));
        add(format!("{g}.weight"), format!("{c}/weight"), range, vec![rows, cols], Kind::Matrix);
        if bias {
            add(format!("{g}.bias"), format!("{c}/bias"), range, vec![rows], Kind::F32);
        }
    };

    // Self-attention: q/k/v fused in `linear_0` (split in three; the key has no bias).
    let self_attention = |add: &mut Add<'_>, g: &str, c: &str| {
        norm(add, &format!("{g}.attn_ln"), &format!("{c}/self_attention/layer_norm"));
        let qkv = format!("{c}/self_attention/linear_0");
        linear(add, &format!("{g}.attn.query"), &qkv, Some(0), true, (n, n));
        linear(add, &format!("{g}.attn.key"), &qkv, Some(1), false, (n, n));
        linear(add, &format!("{g}.attn.value"), &qkv, Some(2), true, (n, n));
        linear(add, &format!("{g}.attn.out"), &format!("{c}/self_attention/linear_1"), None, true, (n, n));
    };

    add(
        "encoder.positional_embedding".into(),
        "encoder/position_encodings/encodings".into(),
        None,
        vec![h.n_audio_ctx, n],
        Kind::F32,
    );
    add("encoder.conv1.weight".into(), "encoder/conv1/weight".into(), None, vec![n, h.n_mels, 3], Kind::Conv);
    add("encoder.conv1.bias".into(), "encoder/conv1/bias".into(), None, vec![n, 1], Kind::F32);
    add("encoder.conv2.weight".into(), "encoder/conv2/weight".into(), None, vec![n, n, 3], Kind::Conv);
    add("encoder.conv2.bias".into(), "encoder/conv2/bias".into(), None, vec![n, 1], Kind::F32);
    norm(&mut add, "encoder.ln_post", "encoder/layer_norm");
    for i in 0..h.n_audio_layer {
        let (g, c) = (format!("encoder.blocks.{i}"), format!("encoder/layer_{i}"));
        self_attention(&mut add, &g, &c);
        norm(&mut add, &format!("{g}.mlp_ln"), &format!("{c}/ffn/layer_norm"));
        linear(&mut add, &format!("{g}.mlp.0"), &format!("{c}/ffn/linear_0"), None, true, (4 * n, n));
        linear(&mut add, &format!("{g}.mlp.2"), &format!("{c}/ffn/linear_1"), None, true, (n, 4 * n));
    }

    add(
        "decoder.positional_embedding".into(),
        "decoder/position_encodings/encodings".into(),
        None,
        vec![h.n_text_ctx, n],
        Kind::F32,
    );
    add(
        "decoder.token_embedding.weight".into(),
        "decoder/embeddings/weight".into(),
        None,
        vec![h.n_vocab, n],
        Kind::Matrix,
    );
    norm(&mut add, "decoder.ln", "decoder/layer_norm");
    for i in 0..h.n_text_layer {
        let (g, c) = (format!("decoder.blocks.{i}"), format!("decoder/layer_{i}"));
        self_attention(&mut add, &g, &c);
        norm(&mut add, &format!("{g}.cross_attn_ln"), &format!("{c}/attention/layer_norm"));
        linear(
            &mut add,
            &format!("{g}.cross_attn.query"),
            &format!("{c}/attention/linear_0"),
            None,
            true,
            (n, n),
        );
        let kv = format!("{c}/attention/linear_1");
        linear(&mut add, &format!("{g}.cross_attn.key"), &kv, Some(0), false, (n, n));
        linear(&mut add, &format!("{g}.cross_attn.value"), &kv, Some(1), true, (n, n));
        linear(
            &mut add,
            &format!("{g}.cross_attn.out"),
            &format!("{c}/attention/linear_2"),
            None,
            true,
            (n, n),
        );
        norm(&mut add, &format!("{g}.mlp_ln"), &format!("{c}/ffn/layer_norm"));
        linear(&mut add, &format!("{g}.mlp.0"), &format!("{c}/ffn/linear_0"), None, true, (4 * n, n));
        linear(&mut add, &format!("{g}.mlp.2"), &format!("{c}/ffn/linear_1"), None, true, (n, 4 * n));
    }
    plan
}

fn write_tensor(
    w: &mut Out<'_, impl Write>,
    name: &str,
    dims: &[usize],
    ttype: GgmlType,
    data: &[f32],
) -> Result<(), ModelError> {
    w.i32(dims.len() as i32);
    w.i32(name.len() as i32);
    w.i32(ttype as i32);
    for d in dims.iter().rev() {
        w.i32(*d as i32);
    }
    w.bytes(name.as_bytes());
    let row = *dims.last().unwrap_or(&1);
    match ttype {
        GgmlType::F32 => data.iter().for_each(|x| w.bytes(&x.to_le_bytes())),
        GgmlType::F16 => data.iter().for_each(|x| w.bytes(&f16::from_f32(*x).to_le_bytes())),
        GgmlType::Q8_0 | GgmlType::Q5_1 => {
            if !row.is_multiple_of(QK) {
                return Err(ModelError::Format(format!(
                    "{name}: row length {row} is not a multiple of {QK}"
                )));
            }
            let mut buf = Vec::with_capacity(data.len() / QK * 34);
            for block in data.chunks_exact(QK) {
                if ttype == GgmlType::Q8_0 {
                    quantize_q8_0(block, &mut buf)
                } else {
                    quantize_q5_1(block, &mut buf)
                }
            }
            w.bytes(&buf);
        }
    }
    w.done()
}

/// Elements per quantization block.
const QK: usize = 32;

/// ggml's reference `q8_0`: scale = max|x| / 127 (f16), then 32 rounded `i8`.
fn quantize_q8_0(x: &[f32], out: &mut Vec<u8>) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    out.extend(x.iter().map(|v| (v * id).round() as i8 as u8));
}

/// ggml's reference `q5_1`: f16 scale and minimum, 16 bytes of low nibbles, a `u32` of 5th bits.
fn quantize_q5_1(x: &[f32], out: &mut Vec<u8>) {
    let min = x.iter().copied().fold(f32::INFINITY, f32::min);
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let d = (max - min) / 31.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    out.extend_from_slice(&f16::from_f32(min).to_le_bytes());
    let mut qh = 0u32;
    let mut qs = [0u8; QK / 2];
    for j in 0..QK / 2 {
        let a = ((x[j] - min) * id + 0.5) as u8;
        let b = ((x[j + QK / 2] - min) * id + 0.5) as u8;
        qs[j] = (a & 0x0F) | ((b & 0x0F) << 4);
        qh |= (((a & 0x10) >> 4) as u32) << j;
        qh |= (((b & 0x10) >> 4) as u32) << (j + QK / 2);
    }
    out.extend_from_slice(&qh.to_le_bytes());
    out.extend_from_slice(&qs);
}

/// Writer that remembers the first I/O error (keeps the serialisation code linear).
struct Out<'a, W: Write> {
    out: &'a mut W,
    err: Option<std::io::Error>,
}

impl<W: Write> Out<'_, W> {
    fn bytes(&mut self, b: &[u8]) {
        if self.err.is_none()
            && let Err(e) = self.out.write_all(b)
        {
            self.err = Some(e);
        }
    }
    fn i32(&mut self, v: i32) {
        self.bytes(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    fn done(&mut self) -> Result<(), ModelError> {
        match self.err.take() {
            Some(e) => Err(ModelError::Format(format!("writing ggml model: {e}"))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::models::ct2::{Ct2Dtype, Ct2Variable};

    const N: usize = 32;

    /// Deterministic pseudo-random values, exactly representable in f16.
    fn values(seed: usize, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let x = ((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.0 - 1.0;
                f16::from_f32(x).to_f32()
            })
            .collect()
    }

    fn var(name: &str, dims: &[usize], seed: usize) -> Ct2Variable {
        let n = dims.iter().product();
        let data = values(seed, n).iter().flat_map(|x| f16::from_f32(*x).to_le_bytes()).collect();
        Ct2Variable { name: name.into(), dims: dims.to_vec(), dtype: Ct2Dtype::F16, data }
    }

    fn scalar(name: &str, v: i16) -> Ct2Variable {
        Ct2Variable { name: name.into(), dims: vec![], dtype: Ct2Dtype::I16, data: v.to_le_bytes().to_vec() }
    }

    /// A one-layer Whisper with width 32, 4 mel bins, 6 tokens.
    fn synthetic() -> Ct2Model {
        let mut v = vec![scalar("encoder/num_heads", 2), scalar("decoder/num_heads", 2)];
        let mut seed = 0;
        let mut add = |v: &mut Vec<Ct2Variable>, name: String, dims: &[usize]| {
            seed += 1;
            v.push(var(&name, dims, seed));
        };
        add(&mut v, "encoder/conv1/weight".into(), &[N, 4, 3]);
        add(&mut v, "encoder/conv1/bias".into(), &[N]);
        add(&mut v, "encoder/conv2/weight".into(), &[N, N, 3]);
        add(&mut v, "encoder/conv2/bias".into(), &[N]);
        add(&mut v, "encoder/position_encodings/encodings".into(), &[4, N]);
        add(&mut v, "decoder/position_encodings/encodings".into(), &[3, N]);
        add(&mut v, "decoder/embeddings/weight".into(), &[6, N]);
        for side in ["encoder", "decoder"] {
            add(&mut v, format!("{side}/layer_norm/gamma"), &[N]);
            add(&mut v, format!("{side}/layer_norm/beta"), &[N]);
            let l = format!("{side}/layer_0");
            let mut blocks = vec![("self_attention/linear_0", 3 * N, N), ("self_attention/linear_1", N, N)];
            blocks.extend([("ffn/linear_0", 4 * N, N), ("ffn/linear_1", N, 4 * N)]);
            if side == "decoder" {
                blocks.extend([
                    ("attention/linear_0", N, N),
                    ("attention/linear_1", 2 * N, N),
                    ("attention/linear_2", N, N),
                ]);
            }
            for (b, rows, cols) in blocks {
                add(&mut v, format!("{l}/{b}/weight"), &[rows, cols]);
                add(&mut v, format!("{l}/{b}/bias"), &[rows]);
            }
            for n in ["self_attention", "ffn", "attention"] {
                add(&mut v, format!("{l}/{n}/layer_norm/gamma"), &[N]);
                add(&mut v, format!("{l}/{n}/layer_norm/beta"), &[N]);
            }
        }
        Ct2Model {
            version: 6,
            spec: "WhisperSpec".into(),
            revision: 3,
            variables: v,
            aliases: vec![("decoder/projection/weight".into(), "decoder/embeddings/weight".into())],
        }
    }

    const VOCAB: &str = "a\n\u{0120}b\n\u{010A}\n\n<|endoftext|>\n<|startoftranscript|>\n";

    struct Parsed {
        hparams: Vec<i32>,
        filters: (i32, i32, Vec<f32>),
        vocab: Vec<Vec<u8>>,
        tensors: HashMap<String, (i32, Vec<i32>, Vec<u8>)>,
    }

    struct Cursor<'a>(&'a [u8], usize);

    impl Cursor<'_> {
        fn take(&mut self, n: usize) -> Vec<u8> {
            let s = self.0[self.1..self.1 + n].to_vec();
            self.1 += n;
            s
        }
        fn i32(&mut self) -> i32 {
            i32::from_le_bytes(self.take(4).try_into().unwrap())
        }
    }

    fn parse(b: &[u8]) -> Parsed {
        let mut c = Cursor(b, 0);
        assert_eq!(c.i32() as u32, GGML_MAGIC);
        let hparams: Vec<i32> = (0..11).map(|_| c.i32()).collect();
        let (n_mel, n_fft) = (c.i32(), c.i32());
        let filters = (0..n_mel * n_fft).map(|_| f32::from_bits(c.i32() as u32)).collect();
        let n_vocab = c.i32();
        let vocab = (0..n_vocab)
            .map(|_| {
                let len = c.i32() as usize;
                c.take(len)
            })
            .collect();
        let mut tensors = HashMap::new();
        while c.1 < b.len() {
            let (n_dims, name_len, ttype) = (c.i32(), c.i32() as usize, c.i32());
            let ne: Vec<i32> = (0..n_dims).map(|_| c.i32()).collect();
            let name = String::from_utf8(c.take(name_len)).unwrap();
            let n: usize = ne.iter().map(|&x| x as usize).product();
            let bytes = match ttype {
                0 => n * 4,
                1 => n * 2,
                8 => n / 32 * 34,
                7 => n / 32 * 24,
                t => panic!("type {t}"),
            };
            tensors.insert(name, (ttype, ne, c.take(bytes)));
        }
        Parsed { hparams, filters: (n_mel, n_fft, filters), vocab, tensors }
    }

    fn decode(ttype: i32, b: &[u8]) -> Vec<f32> {
        match ttype {
            0 => b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
            1 => b.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            8 => b
                .chunks_exact(34)
                .flat_map(|blk| {
                    let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
                    blk[2..].iter().map(move |q| *q as i8 as f32 * d)
                })
                .collect(),
            7 => b
                .chunks_exact(24)
                .flat_map(|blk| {
                    let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
                    let m = f16::from_le_bytes([blk[2], blk[3]]).to_f32();
                    let qh = u32::from_le_bytes(blk[4..8].try_into().unwrap());
                    let qs = &blk[8..];
                    (0..32).map(move |j| {
                        let lo = if j < 16 { qs[j] & 0x0F } else { qs[j - 16] >> 4 };
                        let hi = ((qh >> j) & 1) as u8;
                        (lo | (hi << 4)) as f32 * d + m
                    })
                })
                .collect(),
            t => panic!("type {t}"),
        }
    }

    fn convert_to_vec(m: &Ct2Model, w: WeightType) -> Vec<u8> {
        let mut out = Vec::new();
        convert(m, VOCAB, w, &mut out).unwrap();
        out
    }

    #[test]
    fn round_trip_names_shapes_values() {
        let m = synthetic();
        let p = parse(&convert_to_vec(&m, WeightType::F16));
        assert_eq!(p.hparams, vec![6, 4, N as i32, 2, 1, 3, N as i32, 2, 1, 4, 1]);
        assert_eq!((p.filters.0, p.filters.1, p.filters.2.len()), (4, 201, 4 * 201));
        // Raw bytes: Ġ → space, Ċ → newline, the empty token stays empty; specials are left out.
        assert_eq!(p.vocab, vec![b"a".to_vec(), b" b".to_vec(), b"\n".to_vec(), vec![]]);
        // 5 + 2 (ln_post) + 15 per encoder layer + 2 + 2 (ln) + 24 per decoder layer.
        assert_eq!(p.tensors.len(), 5 + 2 + 15 + 2 + 2 + 24);

        let get = |name: &str| -> Vec<f32> { m.get(name).unwrap().to_f32().unwrap() };
        let check = |name: &str, ttype: i32, ne: &[i32], expected: &[f32]| {
            let (t, shape, bytes) = p.tensors.get(name).unwrap_or_else(|| panic!("missing {name}"));
            assert_eq!((*t, shape.as_slice()), (ttype, ne), "{name}");
            assert_eq!(decode(*t, bytes), expected, "{name}");
        };
        let qkv = get("decoder/layer_0/self_attention/linear_0/weight");
        check("decoder.blocks.0.attn.query.weight", 1, &[32, 32], &qkv[..N * N]);
        check("decoder.blocks.0.attn.key.weight", 1, &[32, 32], &qkv[N * N..2 * N * N]);
        check("decoder.blocks.0.attn.value.weight", 1, &[32, 32], &qkv[2 * N * N..]);
        let qkv_b = get("decoder/layer_0/self_attention/linear_0/bias");
        check("decoder.blocks.0.attn.query.bias", 0, &[32], &qkv_b[..N]);
        check("decoder.blocks.0.attn.value.bias", 0, &[32], &qkv_b[2 * N..]);
        assert!(!p.tensors.contains_key("decoder.blocks.0.attn.key.bias"));
        let kv = get("decoder/layer_0/attention/linear_1/weight");
        check("decoder.blocks.0.cross_attn.key.weight", 1, &[32, 32], &kv[..N * N]);
        check("decoder.blocks.0.cross_attn.value.weight", 1, &[32, 32], &kv[N * N..]);
        check(
            "decoder.blocks.0.cross_attn.query.weight",
            1,
            &[32, 32],
            &get("decoder/layer_0/attention/linear_0/weight"),
        );
        check("encoder.blocks.0.mlp.2.weight", 1, &[128, 32], &get("encoder/layer_0/ffn/linear_1/weight"));
        check("encoder.conv1.weight", 1, &[3, 4, 32], &get("encoder/conv1/weight"));
        check("encoder.conv1.bias", 0, &[1, 32], &get("encoder/conv1/bias"));
        check("encoder.positional_embedding", 0, &[32, 4], &get("encoder/position_encodings/encodings"));
        check("decoder.token_embedding.weight", 1, &[32, 6], &get("decoder/embeddings/weight"));
        check("decoder.ln.weight", 0, &[32], &get("decoder/layer_norm/gamma"));
        check("encoder.ln_post.bias", 0, &[32], &get("encoder/layer_norm/beta"));
        check(
            "decoder.blocks.0.cross_attn_ln.weight",
            0,
            &[32],
            &get("decoder/layer_0/attention/layer_norm/gamma"),
        );
    }

    #[test]
    fn quantized_matrices_are_close() {
        let m = synthetic();
        for (w, ftype, ttype, tol) in [(WeightType::Q8_0, 2007, 8, 0.01), (WeightType::Q5_1, 2009, 7, 0.04)] {
            let p = parse(&convert_to_vec(&m, w));
            assert_eq!(p.hparams[10], ftype);
            let (t, _, bytes) = &p.tensors["encoder.blocks.0.mlp.0.weight"];
            assert_eq!(*t, ttype);
            let expected = m.get("encoder/layer_0/ffn/linear_0/weight").unwrap().to_f32().unwrap();
            let got = decode(*t, bytes);
            assert_eq!(got.len(), expected.len());
            let err = got.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(err < tol, "{w:?}: max error {err}");
            // Convolutions stay f16, vectors f32.
            assert_eq!(p.tensors["encoder.conv2.weight"].0, 1);
            assert_eq!(p.tensors["encoder.blocks.0.mlp.0.bias"].0, 0);
        }
    }

    #[test]
    fn mel_filters_match_librosa_slaney() {
        let f = mel_filters(80);
        assert_eq!(f.len(), 80 * 201);
        // Reference values from librosa.filters.mel(sr=16000, n_fft=400, n_mels=80).
        assert!((f[1] - 0.024_862_13).abs() < 1e-6, "{}", f[1]);
        let row_max = |r: usize| f[r * 201..(r + 1) * 201].iter().copied().fold(0.0, f32::max);
        assert!(row_max(0) > 0.0 && row_max(79) > 0.0);
        // Every filter is a single triangle: non-zero bins are contiguous.
        for r in 0..80 {
            let nz: Vec<usize> = (0..201).filter(|&i| f[r * 201 + i] > 0.0).collect();
            assert!(!nz.is_empty() && nz.last().unwrap() - nz[0] + 1 == nz.len(), "row {r}");
        }
    }

    #[test]
    fn rejects_inconsistent_vocabulary() {
        let mut out = Vec::new();
        assert!(convert(&synthetic(), "a\nb\n", WeightType::F16, &mut out).is_err());
    }
}
