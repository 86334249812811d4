//! The tiled flash-attention kernel that the build adds to whisper.cpp's ggml
//! (`cpp/flash_attn_tiled.inc`, patched in by `cpp/whisper-flash-attn.cmake`), checked through
//! ggml's own graph API against a plain softmax attention computed in f64.

use whisper_rs_sys as g;

/// Deterministic values in [-1, 1).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// Largest absolute difference between ggml's `flash_attn_ext` (Q f32 `[d, n_q, heads]`, K and V
/// f16 `[d, n_kv, heads]`, no mask) and the f64 reference on the same (f16-rounded) values.
fn max_error(n_q: usize, n_kv: usize, heads: usize, d: usize, threads: i32) -> f64 {
    let scale = 1.0 / (d as f32).sqrt();
    let mut rng = Lcg(n_q as u64 * 31 + n_kv as u64);
    // SAFETY: plain ggml C API on a context owned here; every tensor is created in it with the
    // sizes read and written below, and the context is freed once.
    unsafe {
        let ctx = g::ggml_init(g::ggml_init_params {
            mem_size: 256 << 20,
            mem_buffer: std::ptr::null_mut(),
            no_alloc: false,
        });
        assert!(!ctx.is_null());
        let (d_, q_, kv_, h_) = (d as i64, n_q as i64, n_kv as i64, heads as i64);
        let q = g::ggml_new_tensor_3d(ctx, g::ggml_type_GGML_TYPE_F32, d_, q_, h_);
        let k = g::ggml_new_tensor_3d(ctx, g::ggml_type_GGML_TYPE_F16, d_, kv_, h_);
        let v = g::ggml_new_tensor_3d(ctx, g::ggml_type_GGML_TYPE_F16, d_, kv_, h_);
        let qs = std::slice::from_raw_parts_mut((*q).data as *mut f32, d * n_q * heads);
        // Large enough scores that the running maximum moves from one key block to the next.
        qs.iter_mut().for_each(|x| *x = rng.next() * 3.0);
        let mut fill = |t: *mut g::ggml_tensor| {
            let s = std::slice::from_raw_parts_mut((*t).data as *mut g::ggml_fp16_t, d * n_kv * heads);
            s.iter_mut().for_each(|x| *x = g::ggml_fp32_to_fp16(rng.next() * 3.0));
            s.iter().map(|&x| g::ggml_fp16_to_fp32(x) as f64).collect::<Vec<f64>>()
        };
        let (ks, vs) = (fill(k), fill(v));
        let out = g::ggml_flash_attn_ext(ctx, q, k, v, std::ptr::null_mut(), scale, 0.0, 0.0);
        let graph = g::ggml_new_graph(ctx);
        g::ggml_build_forward_expand(graph, out);
        assert_eq!(g::ggml_graph_compute_with_ctx(ctx, graph, threads), g::ggml_status_GGML_STATUS_SUCCESS);
        // The result is laid out [d, heads, n_q].
        let os = std::slice::from_raw_parts((*out).data as *const f32, d * heads * n_q);
        let mut worst = 0.0f64;
        for h in 0..heads {
            for i in 0..n_q {
                let qi = &qs[(h * n_q + i) * d..][..d];
                let scores: Vec<f64> = (0..n_kv)
                    .map(|j| {
                        let kj = &ks[(h * n_kv + j) * d..][..d];
                        scale as f64 * qi.iter().zip(kj).map(|(&a, &b)| a as f64 * b).sum::<f64>()
                    })
                    .collect();
                let top = scores.iter().cloned().fold(f64::MIN, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - top).exp()).collect();
                let total: f64 = weights.iter().sum();
                for c in 0..d {
                    let want: f64 =
                        weights.iter().enumerate().map(|(j, w)| w * vs[(h * n_kv + j) * d + c]).sum::<f64>()
                            / total;
                    let got = os[(i * heads + h) * d + c] as f64;
                    worst = worst.max((got - want).abs());
                }
            }
        }
        g::ggml_free(ctx);
        worst
    }
}

#[test]
fn tiled_attention_matches_the_reference() {
    // Whisper's shape (head size 64), many queries: the tiled kernel. 300 keys: two full key
    // blocks and a part block that is not a whole tile (the padding must get no weight).
    let err = max_error(70, 300, 3, 64, 2);
    assert!(err < 2e-3, "tiled kernel off by {err}");
    // One thread, and a query count that leaves a part block of rows at the end of each head.
    let err = max_error(37, 1536, 2, 64, 1);
    assert!(err < 2e-3, "tiled kernel off by {err}");
}

#[test]
fn few_queries_below_the_tiled_minimum_are_right_too() {
    // Below the tiled kernel's row minimum (a decoder step); ggml's kernel accumulates in f16.
    let err = max_error(4, 300, 3, 64, 2);
    assert!(err < 2e-2, "ggml's kernel off by {err}");
}
