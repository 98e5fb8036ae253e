//! GPU parity of the VAE decoder's ops whose references live in `longshot_kernels::cpu`: causal
//! 3D convolution (`nn_conv::CausalConv3d`), f32 direct and on tensor cores (with its activation
//! pack, `tensor_core::conv::pack_channels_last`), channel RMS norm and nearest ×2 upsampling
//! (`nn_vae`), and the mid block's frame attention (`nn_attention`). The RGB output conversion is checked against models' own
//! `DecodedFrames::rgb_frame` in longshot-tests (`tests/tests/gpu_parity_models.rs`).
//!
//! Needs a GPU: without one every test FAILS with the probe's reason. Not run by CI.

use longshot_kernels::cpu::nn_attention::{self, AttentionShape};
use longshot_kernels::cpu::{nn_conv::CausalConv3d, nn_vae};
use longshot_kernels::cuda::parity::{assert_bits, assert_close, down, gpu, poisoned, up, Rng, BF16_TOL, F32_TOL};
use longshot_kernels::cuda::{pack_conv_weight, ConvGeometry, ConvShape};
use longshot_kernels::tensor_core::conv::pack_channels_last;
use longshot_kernels::tensor_core::fragments::{bf16_bits, bf16_value};

#[test]
fn causal_conv3d_matches() {
    let mut rng = Rng::new("causal_conv3d");
    for &(frames, cin, cout, h, w, kt, ks) in &[
        (4, 8, 6, 9, 11, 3, 3),
        (3, 5, 4, 6, 7, 1, 3),
        (2, 16, 12, 5, 5, 1, 1),
        (3, 4, 5, 47, 50, 3, 3),
    ] {
        let x = rng.vec(frames * cin * h * w, 1.0);
        let (weight, bias) = (rng.vec(cout * cin * kt * ks * ks, 0.3), rng.vec(cout, 0.3));
        let want = CausalConv3d::new(&weight, &bias, cout, cin, kt, ks).forward(&x, frames, h, w);
        let mut out = poisoned(want.len());
        let s = ConvShape {
            frames,
            cin,
            cout,
            h,
            w,
            kt,
            ks,
        };
        gpu()
            .causal_conv3d(&up(&x), &up(&weight), &up(&bias), s, &mut out)
            .unwrap();
        assert_close(&format!("causal_conv3d {s:?}"), &down(&out), &want, F32_TOL);
    }
}

#[test]
fn channel_rms_norm_and_upsample_are_bit_identical() {
    let mut rng = Rng::new("vae_pointwise");
    let (frames, c, hw) = (3, 96, 37 * 29);
    let x = rng.vec(frames * c * hw, 2.0);
    let gamma = rng.vec(c, 1.0);
    let mut want = x.clone();
    nn_vae::channel_rms_norm(&mut want, c, hw, &gamma);
    let mut d = up(&x);
    gpu().channel_rms_norm(&mut d, c, hw, &up(&gamma)).unwrap();
    assert_bits("channel_rms_norm", &down(&d), &want);

    let (planes, h, w) = (7, 13, 9);
    let x = rng.vec(planes * h * w, 1.0);
    let want = nn_vae::upsample_nearest2x(&x, planes, h, w);
    let mut out = poisoned(want.len());
    gpu().upsample_nearest2x(&up(&x), planes, h, w, &mut out).unwrap();
    assert_bits("upsample_nearest2x", &down(&out), &want);
}

fn round_bf16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| bf16_value(bf16_bits(x))).collect()
}

fn geometry(
    frames: usize,
    hist: usize,
    cin: usize,
    cout: usize,
    (h, w): (usize, usize),
    (kt, ks): (usize, usize),
    upsample: bool,
) -> ConvGeometry {
    ConvGeometry {
        frames,
        hist,
        cin,
        cout,
        h,
        w,
        kt,
        ks,
        upsample,
    }
}

/// The tensor-core conv against nn_conv on the same bf16-rounded operands (the difference is the
/// f32 summation order only) and on the unrounded f32 ones (the bf16 tolerance), over every kernel
/// shape the Wan decoder uses, odd channel counts, pixel/channel tails, fewer frames than taps,
/// history frames, the fused upsample and the fused residual.
#[test]
fn causal_conv3d_bf16_matches() {
    let mut rng = Rng::new("causal_conv3d_bf16");
    for g in [
        geometry(4, 0, 8, 6, (9, 11), (3, 3), false),
        geometry(2, 0, 5, 70, (13, 17), (3, 3), false),
        geometry(1, 0, 16, 96, (6, 10), (3, 3), false),
        geometry(3, 2, 33, 40, (7, 9), (3, 3), false),
        geometry(5, 0, 48, 96, (6, 8), (3, 1), false),
        geometry(2, 0, 96, 200, (12, 23), (1, 1), false),
        geometry(3, 0, 40, 24, (14, 18), (1, 3), true),
        geometry(3, 0, 96, 3, (20, 26), (3, 3), false),
        geometry(2, 1, 192, 192, (30, 52), (3, 3), false),
    ] {
        let in_hw = g.in_h() * g.in_w();
        let x = rng.vec(g.in_frames() * g.cin * in_hw, 1.0);
        // PyTorch's default init scale (±1/√fan_in): outputs of order 1 whatever the reduction
        // length, so the bf16 tolerance means the same for every shape.
        let fan_in = g.cin * g.kt * g.ks * g.ks;
        let weight = rng.vec(g.cout * fan_in, 1.0 / (fan_in as f32).sqrt());
        let bias = rng.vec(g.cout, 0.3);
        let reference = |x: &[f32], w: &[f32]| {
            let x = if g.upsample {
                nn_vae::upsample_nearest2x(x, g.in_frames() * g.cin, g.in_h(), g.in_w())
            } else {
                x.to_vec()
            };
            let all = CausalConv3d::new(w, &bias, g.cout, g.cin, g.kt, g.ks).forward(&x, g.in_frames(), g.h, g.w);
            all[g.hist * g.cout * g.h * g.w..].to_vec()
        };
        let want_rounded = reference(&round_bf16(&x), &round_bf16(&weight));
        let want = reference(&x, &weight);

        let be = gpu();
        let mut packed = be.filled(g.input_len(), 0xffffu16).unwrap();
        be.pack_channels_last_bf16(&up(&x).slice(..), g.cin, in_hw, None, false, &mut packed.slice_mut(..))
            .unwrap();
        assert_eq!(
            down_u16(&packed),
            pack_channels_last(&x, g.cin, in_hw, None, false),
            "pack {g:?}"
        );
        let w = be
            .upload(&pack_conv_weight(&weight, g.cout, g.cin, g.kt, g.ks))
            .unwrap();
        let mut out = poisoned(g.output_len());
        be.causal_conv3d_bf16(&packed.slice(..), &w, &up(&bias), g, false, &mut out.slice_mut(..))
            .unwrap();
        let got = down(&out);
        assert_close(
            &format!("causal_conv3d_bf16 {g:?} vs rounded operands"),
            &got,
            &want_rounded,
            1e-4,
        );
        assert_close(&format!("causal_conv3d_bf16 {g:?} vs f32"), &got, &want, BF16_TOL);

        // The fused residual: (conv + bias) + r, bit for bit.
        let r = rng.vec(g.output_len(), 2.0);
        let mut acc = up(&r);
        be.causal_conv3d_bf16(&packed.slice(..), &w, &up(&bias), g, true, &mut acc.slice_mut(..))
            .unwrap();
        let sum: Vec<f32> = got.iter().zip(&r).map(|(a, b)| a + b).collect();
        assert_bits(&format!("causal_conv3d_bf16 {g:?} residual"), &down(&acc), &sum);
    }
}

/// Output frames launched in chunks (history frames in front) reproduce the one-launch result
/// bit for bit: the property the chunked decoder and the sharded decode rest on.
#[test]
fn causal_conv3d_bf16_chunks_are_bit_identical() {
    let mut rng = Rng::new("causal_conv3d_bf16_chunks");
    let g = geometry(7, 0, 24, 40, (10, 13), (3, 3), false);
    let hw = g.h * g.w;
    let x = rng.vec(g.frames * g.cin * hw, 1.0);
    let (weight, bias) = (rng.vec(g.cout * g.cin * 27, 0.3), up(&rng.vec(g.cout, 0.3)));
    let be = gpu();
    let mut packed = be.filled(g.input_len(), 0u16).unwrap();
    be.pack_channels_last_bf16(&up(&x).slice(..), g.cin, hw, None, false, &mut packed.slice_mut(..))
        .unwrap();
    let w = be.upload(&pack_conv_weight(&weight, g.cout, g.cin, 3, 3)).unwrap();
    let mut whole = poisoned(g.output_len());
    be.causal_conv3d_bf16(&packed.slice(..), &w, &bias, g, false, &mut whole.slice_mut(..))
        .unwrap();
    let mut chunked = poisoned(g.output_len());
    let (fin, fout) = (hw * g.cpad(), g.cout * hw);
    for (t0, t1) in [(0, 1), (1, 3), (3, 7)] {
        let hist = t0.min(2);
        let gc = ConvGeometry {
            frames: t1 - t0,
            hist,
            ..g
        };
        be.causal_conv3d_bf16(
            &packed.slice((t0 - hist) * fin..t1 * fin),
            &w,
            &bias,
            gc,
            false,
            &mut chunked.slice_mut(t0 * fout..t1 * fout),
        )
        .unwrap();
    }
    assert_bits("causal_conv3d_bf16 in chunks", &down(&chunked), &down(&whole));
}

/// The pack kernel's norm + SiLU against the CPU reference: bit for bit without SiLU (the norm is
/// the reference's formula), within one bf16 step with it (expf vs Rust's exp).
#[test]
fn pack_channels_last_matches() {
    let mut rng = Rng::new("pack_channels_last");
    for &(frames, c, p) in &[(3, 96, 37 * 29), (2, 5, 70), (1, 384, 64 * 3 + 5)] {
        let x = rng.vec(frames * c * p, 2.0);
        let gamma = rng.vec(c, 1.0);
        let be = gpu();
        let g = up(&gamma);
        for silu in [false, true] {
            let want = pack_channels_last(&x, c, p, Some(&gamma), silu);
            let mut out = be.filled(want.len(), 0xffffu16).unwrap();
            be.pack_channels_last_bf16(&up(&x).slice(..), c, p, Some(&g), silu, &mut out.slice_mut(..))
                .unwrap();
            let got = down_u16(&out);
            if silu {
                let as_f32 = |v: &[u16]| v.iter().map(|&h| bf16_value(h)).collect::<Vec<_>>();
                assert_close("pack norm + silu", &as_f32(&got), &as_f32(&want), BF16_TOL);
            } else {
                assert_eq!(got, want, "pack norm, {frames}×{c}×{p}");
            }
        }
    }
}

/// The frame attention (warp-per-row softmax) against nn_attention on the transposed q, k, v.
#[test]
fn vae_frame_attention_matches() {
    let mut rng = Rng::new("vae_frame_attention");
    for &(frames, c, p) in &[(2, 384, 6 * 10), (1, 24, 1000), (1, 8, 33)] {
        let qkv = rng.vec(frames * 3 * c * p, 1.0);
        let scale = 1.0 / (c as f32).sqrt();
        let be = gpu();
        let dq = up(&qkv);
        let mut out = poisoned(frames * c * p);
        let mut scores = be.filled(p * p, 0f32).unwrap();
        let mut denom = be.filled(p, 0f32).unwrap();
        for t in 0..frames {
            be.vae_frame_attention(&dq, t, c, p, scale, &mut scores, &mut denom, &mut out)
                .unwrap();
        }
        let got = down(&out);
        let mut want = vec![0f32; frames * c * p];
        for t in 0..frames {
            let frame = &qkv[t * 3 * c * p..(t + 1) * 3 * c * p];
            // Channel-major [C, P] → token-major [P, C].
            let tokens =
                |block: usize| -> Vec<f32> { (0..p * c).map(|i| frame[(block * c + i % c) * p + i / c]).collect() };
            let mut o = vec![0f32; p * c];
            let shape = AttentionShape {
                q_tokens: p,
                kv_tokens: p,
                heads: 1,
                head_dim: c,
            };
            nn_attention::attention(&tokens(0), &tokens(1), &tokens(2), shape, scale, &mut o);
            for i in 0..p * c {
                want[(t * c + i % c) * p + i / c] = o[i];
            }
        }
        assert_close(&format!("vae_frame_attention {frames}×{c}×{p}"), &got, &want, 1e-4);
    }
}

fn down_u16(d: &cudarc::driver::CudaSlice<u16>) -> Vec<u16> {
    gpu().download(d).expect("download")
}
