//! GPU parity of the Wan transformer's ops whose references live in `longshot_kernels::cpu`:
//! LayerNorm (+ affine, + AdaLN modulate), RMSNorm, GELU-tanh, SiLU, interleaved RoPE, attention
//! (with and without umT5's relative bias; the mma.sync and, on Hopper, the wgmma kernel) and the
//! bf16 cuBLASLt linear. Gated residual and
//! patchify/unpatchify are checked against models' own code in longshot-tests
//! (`tests/tests/gpu_parity_models.rs`).
//!
//! Needs a GPU: without one every test FAILS with the probe's reason. Not run by CI.

use longshot_kernels::cpu::{
    nn_act, nn_attention, nn_attention::AttentionShape, nn_attention_bias, nn_linear, nn_norm, nn_rope,
};
use longshot_kernels::cuda::parity::{assert_bits, assert_close, down, gpu, poisoned, up, Rng, BF16_TOL, F32_TOL};
use longshot_kernels::cuda::BlasLt;

#[test]
fn norms_match() {
    let mut rng = Rng::new("norms");
    for &(rows, dim) in &[(37, 1536), (5, 24), (3, 5120)] {
        let x = rng.vec(rows * dim, 4.0);
        let (w, b, sc, sh) = (
            rng.vec(dim, 1.0),
            rng.vec(dim, 1.0),
            rng.vec(dim, 0.5),
            rng.vec(dim, 0.5),
        );
        let mut want = vec![0.0; x.len()];
        let mut out = poisoned(x.len());
        nn_norm::layer_norm(&x, dim, 1e-6, None, &mut want);
        gpu().layer_norm(&up(&x), dim, 1e-6, None, &mut out).unwrap();
        assert_close("layer_norm", &down(&out), &want, F32_TOL);
        nn_norm::layer_norm(&x, dim, 1e-6, Some((&w, &b)), &mut want);
        let mut out = poisoned(x.len());
        gpu()
            .layer_norm(&up(&x), dim, 1e-6, Some((&up(&w), &up(&b))), &mut out)
            .unwrap();
        assert_close("layer_norm affine", &down(&out), &want, F32_TOL);
        nn_norm::layer_norm_modulate(&x, dim, 1e-6, &sc, &sh, &mut want);
        let mut out = poisoned(x.len());
        gpu()
            .layer_norm_modulate(&up(&x), dim, 1e-6, &up(&sc), &up(&sh), &mut out)
            .unwrap();
        assert_close("layer_norm_modulate", &down(&out), &want, F32_TOL);
        let mut want = x.clone();
        nn_norm::rms_norm_in_place(&mut want, dim, 1e-6, &w);
        let mut dx = up(&x);
        gpu().rms_norm(&mut dx, dim, 1e-6, &up(&w)).unwrap();
        assert_close("rms_norm", &down(&dx), &want, F32_TOL);
    }
}

#[test]
fn activations_match() {
    let mut rng = Rng::new("activations");
    let x = rng.vec(33 * 1536, 8.0);
    let mut want = x.clone();
    nn_act::gelu_tanh_in_place(&mut want);
    let mut d = up(&x);
    gpu().gelu_tanh(&mut d).unwrap();
    assert_close("gelu_tanh", &down(&d), &want, F32_TOL);
    let mut want = x.clone();
    nn_act::silu_in_place(&mut want);
    let mut d = up(&x);
    gpu().silu(&mut d).unwrap();
    assert_close("silu", &down(&d), &want, F32_TOL);
}

#[test]
fn rope_is_bit_identical() {
    let mut rng = Rng::new("rope");
    let (tokens, heads, hd) = (77, 12, 128);
    let x = rng.vec(tokens * heads * hd, 2.0);
    let (cos, sin) = (rng.vec(tokens * hd, 1.0), rng.vec(tokens * hd, 1.0));
    let mut want = x.clone();
    nn_rope::rope_interleaved_in_place(&mut want, tokens, heads, hd, &cos, &sin);
    let mut d = up(&x);
    gpu()
        .rope_interleaved(&mut d, tokens, heads, hd, &up(&cos), &up(&sin))
        .unwrap();
    assert_bits("rope_interleaved", &down(&d), &want);
}

/// bf16 tensor cores against the f32 reference: the bf16 tolerance. The shapes have tails in both
/// lengths (partial 64-query blocks and 64-key tiles), fewer keys than a tile, and Wan's
/// self-attention (head 128, 12 heads) and cross-attention (512 text tokens) geometry, and a head
/// of 12 (the test checkpoints'), zero-padded to the 64 kernel.
#[test]
fn attention_matches_with_and_without_relative_bias() {
    let mut rng = Rng::new("attention");
    for &(q_tokens, kv_tokens, heads, head_dim) in &[
        (150, 70, 3, 128),
        (65, 513, 2, 64),
        (1, 1, 1, 64),
        (40, 30, 2, 12),
        (1000, 1000, 12, 128),
        (333, 512, 12, 128),
    ] {
        let shape = AttentionShape {
            q_tokens,
            kv_tokens,
            heads,
            head_dim,
        };
        let w = shape.width();
        let (q, k, v) = (
            rng.vec(q_tokens * w, 1.5),
            rng.vec(kv_tokens * w, 1.5),
            rng.vec(kv_tokens * w, 1.5),
        );
        let scale = 1.0 / (head_dim as f32).sqrt();
        let mut want = vec![0.0; q.len()];
        nn_attention::attention(&q, &k, &v, shape, scale, &mut want);
        let mut out = poisoned(q.len());
        gpu()
            .attention(&up(&q), &up(&k), &up(&v), None, shape, scale, &mut out)
            .unwrap();
        assert_close(&format!("attention {shape:?}"), &down(&out), &want, BF16_TOL);

        let bias = rng.vec(heads * (q_tokens + kv_tokens - 1), 2.0);
        nn_attention_bias::attention_rel_bias(&q, &k, &v, shape, scale, &bias, &mut want);
        let mut out = poisoned(q.len());
        let (dq, dk, dv, db) = (up(&q), up(&k), up(&v), up(&bias));
        gpu()
            .attention(&dq, &dk, &dv, Some(&db), shape, scale, &mut out)
            .unwrap();
        let op = format!("attention_rel_bias {shape:?}");
        assert_close(&op, &down(&out), &want, BF16_TOL);
    }
}

fn bf16(x: &[f32]) -> Vec<u16> {
    x.iter()
        .map(|&f| longshot_kernels::tensor_core::fragments::bf16_bits(f))
        .collect()
}

/// The Hopper kernel (attention_wgmma.cu: wgmma + TMA) against the CPU reference and against the
/// mma.sync kernel on the same bf16 inputs, f32 and bf16 output. Needs compute capability 9.0 (the
/// device machine's H100/H200): elsewhere it FAILS, as every test here does without its device.
/// Shapes: partial 128-query blocks, a last K/V tile of 1..63 keys (70, 513, 130, 1), a single
/// key and query, both head sizes, and cross-attention of many queries against Wan's 512 text
/// tokens (4095 × 512, the 32760 × 512 shape scaled down).
#[test]
fn wgmma_attention_matches_the_reference_and_the_mma_kernel() {
    use longshot_kernels::cuda::AttentionKernel;
    use longshot_kernels::tensor_core::fragments::bf16_value;
    let be = gpu();
    let cc = be.info().compute_capability;
    assert_eq!(
        cc,
        (9, 0),
        "the wgmma kernel needs compute capability 9.0; this device is {cc:?}"
    );
    if std::env::var_os(longshot_kernels::cuda::ATTENTION_ENV).is_none() {
        assert_eq!(be.attention_kernel(false).unwrap(), AttentionKernel::Wgmma);
        assert_eq!(be.attention_kernel(true).unwrap(), AttentionKernel::MmaSync);
    }
    let mut rng = Rng::new("attention_wgmma");
    for &(q_tokens, kv_tokens, heads, head_dim) in &[
        (150, 70, 3, 128),
        (65, 513, 2, 64),
        (1, 1, 1, 64),
        (257, 130, 2, 128),
        (4095, 512, 2, 128),
        (300, 1000, 12, 128),
    ] {
        let shape = AttentionShape {
            q_tokens,
            kv_tokens,
            heads,
            head_dim,
        };
        let w = shape.width();
        let (q, k, v) = (
            rng.vec(q_tokens * w, 1.5),
            rng.vec(kv_tokens * w, 1.5),
            rng.vec(kv_tokens * w, 1.5),
        );
        let scale = 1.0 / (head_dim as f32).sqrt();
        let mut want = vec![0.0; q.len()];
        nn_attention::attention(&q, &k, &v, shape, scale, &mut want);
        let (qb, kb, vb) = (
            be.upload(&bf16(&q)).unwrap(),
            be.upload(&bf16(&k)).unwrap(),
            be.upload(&bf16(&v)).unwrap(),
        );
        let mut wgmma = poisoned(q.len());
        be.attention_bf16_with(AttentionKernel::Wgmma, &qb, &kb, &vb, None, shape, scale, &mut wgmma)
            .unwrap();
        let wgmma = down(&wgmma);
        assert_close(&format!("attention wgmma {shape:?}"), &wgmma, &want, BF16_TOL);
        let mut mma = poisoned(q.len());
        be.attention_bf16_with(AttentionKernel::MmaSync, &qb, &kb, &vb, None, shape, scale, &mut mma)
            .unwrap();
        // Same inputs, same rounding points (P to bf16): the kernels differ by summation order.
        assert_close(
            &format!("attention wgmma vs mma {shape:?}"),
            &wgmma,
            &down(&mma),
            BF16_TOL,
        );
        let mut out16 = be.filled(q.len(), 0x7fc0u16).unwrap(); // NaN bits
        be.attention_bf16_out(&qb, &kb, &vb, shape, scale, &mut out16).unwrap();
        let out16: Vec<f32> = be.download(&out16).unwrap().into_iter().map(bf16_value).collect();
        assert_close(&format!("attention wgmma bf16 out {shape:?}"), &out16, &want, BF16_TOL);
        // The f32-input entry point dispatches to the same kernel on this device.
        let mut out = poisoned(q.len());
        be.attention(&up(&q), &up(&k), &up(&v), None, shape, scale, &mut out)
            .unwrap();
        assert_close(
            &format!("attention (dispatched) {shape:?}"),
            &down(&out),
            &want,
            BF16_TOL,
        );
    }
    // The wgmma kernel has no bias variant: asking for it is an error, not a silent fallback.
    let shape = AttentionShape {
        q_tokens: 2,
        kv_tokens: 2,
        heads: 1,
        head_dim: 64,
    };
    let x = be.upload(&[0u16; 128]).unwrap();
    let bias = up(&[0.0; 3]);
    let mut out = poisoned(128);
    let err = be
        .attention_bf16_with(AttentionKernel::Wgmma, &x, &x, &x, Some(&bias), shape, 1.0, &mut out)
        .unwrap_err();
    assert!(err.to_string().contains("bias"), "{err}");
}

#[test]
fn attention_refuses_a_head_size_without_a_kernel() {
    let shape = AttentionShape {
        q_tokens: 2,
        kv_tokens: 2,
        heads: 1,
        head_dim: 130,
    };
    let x = up(&[0.5; 2 * 130]);
    let mut out = poisoned(2 * 130);
    let err = gpu().attention(&x, &x, &x, None, shape, 1.0, &mut out).unwrap_err();
    assert!(err.to_string().contains("head_dim 130"), "{err}");
}

#[test]
fn bf16_linear_matches_the_f32_reference_on_rounded_inputs() {
    let mut rng = Rng::new("linear_bf16");
    let lt = BlasLt::new(gpu()).expect("cuBLASLt");
    for &(rows, in_f, out_f) in &[(77, 1536, 384), (5, 64, 3), (256, 4096, 512)] {
        let (x, weight, bias) = (
            rng.vec(rows * in_f, 1.0),
            rng.vec(out_f * in_f, 0.05),
            rng.vec(out_f, 0.1),
        );
        // Round on the device, then give the CPU the same rounded values.
        let (mut xb, mut wb) = (
            gpu().filled(x.len(), 0u16).unwrap(),
            gpu().filled(weight.len(), 0u16).unwrap(),
        );
        gpu().f32_to_bf16(&up(&x), &mut xb).unwrap();
        gpu().f32_to_bf16(&up(&weight), &mut wb).unwrap();
        let (mut xr, mut wr) = (poisoned(x.len()), poisoned(weight.len()));
        gpu().bf16_to_f32(&xb, &mut xr).unwrap();
        gpu().bf16_to_f32(&wb, &mut wr).unwrap();
        let (xr, wr) = (down(&xr), down(&wr));
        for (&r, &o) in xr.iter().zip(&x) {
            assert!(
                (r - o).abs() <= o.abs() * (1.0 / 256.0),
                "bf16 rounding of {o} gave {r}"
            );
        }
        let want = nn_linear::linear_new(&xr, rows, in_f, &wr, Some(&bias), out_f);
        let mut out = poisoned(rows * out_f);
        lt.linear_bf16(&xb, rows, in_f, &wb, out_f, &mut out).unwrap();
        gpu().add_bias_rows(&mut out, &up(&bias)).unwrap();
        let op = format!("linear_bf16 {rows}x{in_f}x{out_f}");
        assert_close(&op, &down(&out), &want, BF16_TOL);
    }
}
