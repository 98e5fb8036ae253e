//! GPU ops against their CPU references (`longshot_kernels::cpu`), on fresh random inputs every
//! run (the seed is printed, `LONGSHOT_PARITY_SEED` replays one), outputs poisoned with NaN before
//! each launch. Tolerances: f32 ≤ 1e-5 relative (`|gpu − cpu| ≤ 1e-5·max(1, |cpu|)`), bf16 ≤ 1e-2;
//! ops documented as bit-identical are checked bit for bit.
//!
//! Needs a GPU: without one every test FAILS with the probe's reason. It is therefore not part of
//! the CI command; `scripts/gpu/pack.sh` builds it for the device machine.
//! References that live outside this crate are restated here from their source (marked
//! "restated"): Philox noise (core::noise), UniPC's update (core::scheduler::unipc), the gated
//! residual (models::wan::block), patchify/unpatchify (models::wan::embed), RGB output
//! (models::wan::vae). Parity against those crates themselves belongs in longshot-tests.

use longshot_kernels::cpu::{
    self, nn_act, nn_attention, nn_attention::AttentionShape, nn_attention_bias,
    nn_conv::CausalConv3d, nn_linear, nn_norm, nn_rope, nn_vae,
};
use longshot_kernels::cuda::{BlasLt, ConvShape, CudaBackend, UniPcCoefficients};
use std::sync::OnceLock;

const F32_TOL: f32 = 1e-5;
const BF16_TOL: f32 = 1e-2;

fn gpu() -> &'static CudaBackend {
    static GPU: OnceLock<CudaBackend> = OnceLock::new();
    GPU.get_or_init(|| match CudaBackend::open(0) {
        Ok(b) => {
            eprintln!(
                "GPU parity on {} (sm_{}{})",
                b.info().name,
                b.info().compute_capability.0,
                b.info().compute_capability.1
            );
            b
        }
        Err(e) => panic!("GPU parity tests need a CUDA device and NVRTC, and found none: {e}"),
    })
}

/// xorshift64* seeded per test from the clock (or LONGSHOT_PARITY_SEED), printed for replay.
struct Rng(u64);

impl Rng {
    fn new(test: &str) -> Self {
        let seed = std::env::var("LONGSHOT_PARITY_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("{test}: LONGSHOT_PARITY_SEED={seed}");
        Self(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [−scale, scale).
    fn vec(&mut self, len: usize, scale: f32) -> Vec<f32> {
        (0..len)
            .map(|_| ((self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale)
            .collect()
    }
}

fn assert_close(op: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{op}: length");
    let mut worst = (0.0f32, 0usize);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs() / w.abs().max(1.0);
        assert!(
            !g.is_nan() || w.is_nan(),
            "{op}: element {i} is NaN (poison left unwritten?), want {w}"
        );
        if err > worst.0 {
            worst = (err, i);
        }
    }
    let i = worst.1;
    assert!(
        worst.0 <= tol,
        "{op}: element {i}: gpu {} vs cpu {} (relative error {:e} > {tol:e})",
        got[i],
        want[i],
        worst.0
    );
    eprintln!(
        "{op}: {} values, max relative error {:e}",
        got.len(),
        worst.0
    );
}

fn assert_bits(op: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{op}: length");
    if let Some(i) = got
        .iter()
        .zip(want)
        .position(|(g, w)| g.to_bits() != w.to_bits())
    {
        panic!(
            "{op}: element {i}: gpu {} ({:#010x}) vs cpu {} ({:#010x}), expected bit-identical",
            got[i],
            got[i].to_bits(),
            want[i],
            want[i].to_bits()
        );
    }
    eprintln!("{op}: {} values bit-identical", got.len());
}

fn up(v: &[f32]) -> cudarc::driver::CudaSlice<f32> {
    gpu().upload(v).expect("upload")
}
fn poisoned(len: usize) -> cudarc::driver::CudaSlice<f32> {
    gpu().filled(len, f32::NAN).expect("alloc")
}
fn down(d: &cudarc::driver::CudaSlice<f32>) -> Vec<f32> {
    gpu().download(d).expect("download")
}

#[test]
fn philox_known_answers() {
    // Random123's kat_vectors, as in core::noise's tests.
    let cases: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
        (
            [0; 4],
            [0; 2],
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8],
        ),
        (
            [u32::MAX; 4],
            [u32::MAX; 2],
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
        ),
        (
            [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
            [0xa4093822, 0x299f31d0],
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
        ),
    ];
    for (ctr, key, want) in cases {
        let c = gpu().upload(&ctr).unwrap();
        let mut out = gpu().filled(4, 0u32).unwrap();
        gpu().philox4x32_10(&c, key, &mut out).unwrap();
        assert_eq!(
            gpu().download(&out).unwrap(),
            want,
            "ctr {ctr:08x?} key {key:08x?}"
        );
    }
}

/// core::noise restated (Philox words, then Box–Muller in f64 rounded once to f32).
fn cpu_noise(seed: u64, step: u32, first_frame: u32, [f, c, h, w]: [usize; 4]) -> Vec<f32> {
    fn philox(mut ctr: [u32; 4], mut key: [u32; 2]) -> [u32; 4] {
        for r in 0..10 {
            if r > 0 {
                key[0] = key[0].wrapping_add(0x9E37_79B9);
                key[1] = key[1].wrapping_add(0xBB67_AE85);
            }
            let p0 = u64::from(0xD251_1F53u32) * u64::from(ctr[0]);
            let p1 = u64::from(0xCD9E_8D57u32) * u64::from(ctr[2]);
            ctr = [
                (p1 >> 32) as u32 ^ ctr[1] ^ key[0],
                p1 as u32,
                (p0 >> 32) as u32 ^ ctr[3] ^ key[1],
                p0 as u32,
            ];
        }
        ctr
    }
    fn bm(a: u32, b: u32) -> (f32, f32) {
        let u1 = (f64::from(a) + 1.0) * (1.0 / 4_294_967_296.0);
        let u2 = f64::from(b) * (1.0 / 4_294_967_296.0);
        let r = (-2.0 * u1.ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        ((r * t.cos()) as f32, (r * t.sin()) as f32)
    }
    let mut out = Vec::with_capacity(f * c * h * w);
    for fr in 0..f {
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let r = philox(
                        [
                            (x / 4) as u32,
                            y as u32,
                            (step << 16) | ch as u32,
                            first_frame + fr as u32,
                        ],
                        [seed as u32, (seed >> 32) as u32],
                    );
                    let (a, b) = bm(r[0], r[1]);
                    let (cc, d) = bm(r[2], r[3]);
                    out.push([a, b, cc, d][x % 4]);
                }
            }
        }
    }
    out
}

#[test]
fn philox_gaussian_matches_the_cpu_noise_within_one_ulp() {
    let mut rng = Rng::new("philox_gaussian");
    let (seed, step, first) = (
        rng.next(),
        (rng.next() % 50) as u32,
        (rng.next() % 100) as usize,
    );
    let shape = [3, 16, 30, 54]; // width not a multiple of 4: the tail block is cut
    let mut out = poisoned(shape.iter().product());
    gpu()
        .philox_gaussian(&mut out, seed, step, first, shape)
        .unwrap();
    let got = down(&out);
    let want = cpu_noise(seed, step, first as u32, shape);
    // Bits match except where CUDA's double log/sin/cos land on the other side of a float rounding
    // boundary (see noise_philox.cu): allow one ulp, and report how many differ.
    let mut differ = 0;
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let ulps = (g.to_bits() as i64 - w.to_bits() as i64).abs();
        assert!(
            ulps <= 1,
            "noise element {i}: gpu {g} vs cpu {w} ({ulps} ulps)"
        );
        differ += usize::from(ulps != 0);
    }
    eprintln!(
        "philox_gaussian: {} values, {differ} differ by one ulp",
        got.len()
    );
}

#[test]
fn denoise_updates_are_bit_identical() {
    let mut rng = Rng::new("denoise_updates");
    let n = 100_003;
    let (a, b, c, d) = (
        rng.vec(n, 3.0),
        rng.vec(n, 3.0),
        rng.vec(n, 3.0),
        rng.vec(n, 3.0),
    );
    let g = 1.0 + rng.vec(1, 6.0)[0].abs();

    let mut want = a.clone();
    cpu::cfg_combine(&mut want, &b, g);
    let mut cond = up(&a);
    gpu().cfg_combine(&mut cond, &up(&b), g).unwrap();
    assert_bits("cfg_combine", &down(&cond), &want);

    let (overlap, frame_len) = (5, n / 5);
    let (mut wl, mut wr) = (
        a[..overlap * frame_len].to_vec(),
        b[..overlap * frame_len].to_vec(),
    );
    cpu::blend_overlap(&mut wl, &mut wr, overlap, frame_len);
    let (mut l, mut r) = (up(&a[..overlap * frame_len]), up(&b[..overlap * frame_len]));
    gpu()
        .blend_overlap(&mut l, &mut r, overlap, frame_len)
        .unwrap();
    assert_bits("blend_overlap left", &down(&l), &wl);
    assert_bits("blend_overlap right", &down(&r), &wr);

    let coefs = rng.vec(4, 2.0);
    let srcs = [&a, &b, &c, &d];
    let dev: Vec<_> = srcs.iter().map(|s| up(s)).collect();
    for terms in 1..=4 {
        let cpu_terms: Vec<(f32, &[f32])> =
            (0..terms).map(|k| (coefs[k], srcs[k].as_slice())).collect();
        let mut want = vec![0.0; n];
        cpu::lincomb(&mut want, &cpu_terms);
        let gpu_terms: Vec<_> = (0..terms).map(|k| (coefs[k], &dev[k])).collect();
        let mut out = poisoned(n);
        gpu().lincomb(&mut out, &gpu_terms).unwrap();
        assert_bits(&format!("lincomb ({terms} terms)"), &down(&out), &want);
    }

    // UniPC's update, restated from core::scheduler::unipc (`Update::apply`).
    let k = rng.vec(6, 1.5);
    for (hist, cur) in [
        (Some((k[3], k[4])), Some(k[5])),
        (Some((k[3], k[4])), None),
        (None, Some(k[5])),
    ] {
        let co = UniPcCoefficients {
            cx: k[0],
            cm: k[1],
            cr: k[2],
            hist,
            cur,
        };
        let want: Vec<f32> = (0..n)
            .map(|j| {
                let base = co.cx * a[j] - co.cm * b[j];
                let res = match (hist, cur) {
                    (Some((rk, r0)), Some(r1)) => r0 * ((c[j] - b[j]) / rk) + r1 * (d[j] - b[j]),
                    (Some((rk, r0)), None) => r0 * ((c[j] - b[j]) / rk),
                    (None, Some(r1)) => r1 * (d[j] - b[j]),
                    (None, None) => unreachable!(),
                };
                base - co.cr * res
            })
            .collect();
        let mut out = poisoned(n);
        gpu()
            .unipc_update(&mut out, &dev[0], &dev[1], Some(&dev[2]), Some(&dev[3]), co)
            .unwrap();
        assert_bits(
            &format!("unipc_update {hist:?} {cur:?}"),
            &down(&out),
            &want,
        );
    }
}

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
        gpu()
            .layer_norm(&up(&x), dim, 1e-6, None, &mut out)
            .unwrap();
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
fn pointwise_ops_match() {
    let mut rng = Rng::new("pointwise");
    let (rows, dim) = (33, 1536);
    let x = rng.vec(rows * dim, 8.0);
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

    // Gated residual, restated from models::wan::block (`x + y * gate`).
    let (y, gate) = (rng.vec(rows * dim, 2.0), rng.vec(dim, 1.0));
    let want: Vec<f32> = x
        .iter()
        .zip(&y)
        .enumerate()
        .map(|(i, (&xv, &yv))| xv + yv * gate[i % dim])
        .collect();
    let mut d = up(&x);
    gpu().gated_residual(&mut d, &up(&y), &up(&gate)).unwrap();
    assert_bits("gated_residual", &down(&d), &want);

    // RGB output, restated from models::wan::vae (`(x·0.5 + 0.5).clamp(0, 1)`, planar → HWC).
    let (h, w) = (17, 23);
    let img = rng.vec(3 * h * w, 1.3);
    let want: Vec<f32> = (0..3 * h * w)
        .map(|j| (img[(j % 3) * h * w + j / 3] * 0.5 + 0.5).clamp(0.0, 1.0))
        .collect();
    let mut out = poisoned(3 * h * w);
    gpu().rgb_from_planar(&up(&img), &mut out).unwrap();
    assert_bits("rgb_from_planar", &down(&out), &want);
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

#[test]
fn patchify_and_unpatchify_are_the_reference_permutations() {
    let mut rng = Rng::new("patchify");
    let (c, grid, patch) = (16usize, [3usize, 4, 5], [1usize, 2, 2]);
    let [pt, ph, pw] = patch;
    let (t, h, w) = (grid[0] * pt, grid[1] * ph, grid[2] * pw);
    let x = rng.vec(c * t * h * w, 1.0);
    let tokens = grid.iter().product::<usize>();
    let feat = c * pt * ph * pw;
    // Restated from models::wan::embed (PatchEmbedding::forward's gather and unpatchify).
    let mut want = vec![0.0f32; tokens * feat];
    for s in 0..tokens {
        let (fi, hi, wi) = (
            s / (grid[1] * grid[2]),
            (s / grid[2]) % grid[1],
            s % grid[2],
        );
        let mut j = 0;
        for ch in 0..c {
            for kt in 0..pt {
                for kh in 0..ph {
                    for kw in 0..pw {
                        want[s * feat + j] =
                            x[((ch * t + fi * pt + kt) * h + hi * ph + kh) * w + wi * pw + kw];
                        j += 1;
                    }
                }
            }
        }
    }
    let mut out = poisoned(want.len());
    gpu().patchify(&up(&x), c, grid, patch, &mut out).unwrap();
    assert_bits("patchify", &down(&out), &want);

    let y = rng.vec(tokens * feat, 1.0);
    let mut want = vec![0.0f32; c * t * h * w];
    for s in 0..tokens {
        let (fi, hi, wi) = (
            s / (grid[1] * grid[2]),
            (s / grid[2]) % grid[1],
            s % grid[2],
        );
        for kt in 0..pt {
            for kh in 0..ph {
                for kw in 0..pw {
                    let base = ((kt * ph + kh) * pw + kw) * c;
                    for ch in 0..c {
                        want[((ch * t + fi * pt + kt) * h + hi * ph + kh) * w + wi * pw + kw] =
                            y[s * feat + base + ch];
                    }
                }
            }
        }
    }
    let mut out = poisoned(want.len());
    gpu().unpatchify(&up(&y), c, grid, patch, &mut out).unwrap();
    assert_bits("unpatchify", &down(&out), &want);
}

#[test]
fn attention_matches_with_and_without_relative_bias() {
    let mut rng = Rng::new("attention");
    for &shape in &[
        AttentionShape {
            q_tokens: 150,
            kv_tokens: 70,
            heads: 3,
            head_dim: 128,
        },
        AttentionShape {
            q_tokens: 65,
            kv_tokens: 513,
            heads: 2,
            head_dim: 64,
        },
        AttentionShape {
            q_tokens: 1,
            kv_tokens: 1,
            heads: 1,
            head_dim: 8,
        },
    ] {
        let w = shape.width();
        let (q, k, v) = (
            rng.vec(shape.q_tokens * w, 1.5),
            rng.vec(shape.kv_tokens * w, 1.5),
            rng.vec(shape.kv_tokens * w, 1.5),
        );
        let scale = 1.0 / (shape.head_dim as f32).sqrt();
        let mut want = vec![0.0; q.len()];
        nn_attention::attention(&q, &k, &v, shape, scale, &mut want);
        let mut out = poisoned(q.len());
        gpu()
            .attention(&up(&q), &up(&k), &up(&v), None, shape, scale, &mut out)
            .unwrap();
        assert_close(&format!("attention {shape:?}"), &down(&out), &want, F32_TOL);

        let bias = rng.vec(shape.heads * (shape.q_tokens + shape.kv_tokens - 1), 2.0);
        nn_attention_bias::attention_rel_bias(&q, &k, &v, shape, scale, &bias, &mut want);
        let mut out = poisoned(q.len());
        gpu()
            .attention(
                &up(&q),
                &up(&k),
                &up(&v),
                Some(&up(&bias)),
                shape,
                scale,
                &mut out,
            )
            .unwrap();
        assert_close(
            &format!("attention_rel_bias {shape:?}"),
            &down(&out),
            &want,
            F32_TOL,
        );
    }
}

#[test]
fn vae_ops_match() {
    let mut rng = Rng::new("vae");
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
    gpu()
        .upsample_nearest2x(&up(&x), planes, h, w, &mut out)
        .unwrap();
    assert_bits("upsample_nearest2x", &down(&out), &want);
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
        lt.linear_bf16(&xb, rows, in_f, &wb, out_f, &mut out)
            .unwrap();
        gpu().add_bias_rows(&mut out, &up(&bias)).unwrap();
        assert_close(
            &format!("linear_bf16 {rows}x{in_f}x{out_f}"),
            &down(&out),
            &want,
            BF16_TOL,
        );
    }
}
