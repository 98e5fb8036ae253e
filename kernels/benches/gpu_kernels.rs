//! GPU kernel throughput at Wan2.1-1.3B shapes (480×832×81: 32 760 tokens, width 1536), each
//! against a baseline measured in the same run: memory-bound kernels against the device's own
//! device-to-device copy bandwidth (goal ≥ 80%), the bf16 GEMMs and attention in TFLOP/s.
//! Needs a GPU (built by `scripts/gpu/pack.sh`, run on the device machine); prints a Markdown
//! table. Bytes counted are the bytes each kernel must read and write once.

use cudarc::driver::CudaSlice;
use longshot_kernels::cpu::nn_attention::AttentionShape;
use longshot_kernels::cuda::{BlasLt, CudaBackend, CudaError, UniPcCoefficients};
use std::time::Instant;

const TOKENS: usize = 21 * 30 * 52; // latent 21×60×104 in 1×2×2 patches
const DIM: usize = 1536;
const HEADS: usize = 12;
const FFN: usize = 8960;

/// Median seconds of one call of `f` (each sample: `reps` calls then a synchronize).
fn time(be: &CudaBackend, reps: usize, mut f: impl FnMut() -> Result<(), CudaError>) -> Result<f64, CudaError> {
    for _ in 0..3 {
        f()?;
    }
    be.synchronize()?;
    let mut samples = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        for _ in 0..reps {
            f()?;
        }
        be.synchronize()?;
        samples.push(t.elapsed().as_secs_f64() / reps as f64);
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

fn rand_f32(be: &CudaBackend, n: usize, seed: u64) -> Result<CudaSlice<f32>, CudaError> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let host: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    be.upload(&host)
}

fn rand_bf16(be: &CudaBackend, n: usize, seed: u64) -> Result<CudaSlice<u16>, CudaError> {
    let x = rand_f32(be, n, seed)?;
    let mut out = be.filled(n, 0u16)?;
    be.f32_to_bf16(&x, &mut out)?;
    Ok(out)
}

struct Table {
    copy_gbs: f64,
}

impl Table {
    fn bw(&self, name: &str, bytes: f64, secs: f64) {
        let gbs = bytes / secs / 1e9;
        println!(
            "| {name} | {:.1} | {gbs:.0} GB/s | {:.0}% of copy |",
            secs * 1e6,
            100.0 * gbs / self.copy_gbs
        );
    }
    fn flops(&self, name: &str, flops: f64, secs: f64) {
        println!("| {name} | {:.1} | {:.1} TFLOP/s | |", secs * 1e6, flops / secs / 1e12);
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("gpu_kernels: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), CudaError> {
    let be = CudaBackend::open(0)?;
    let info = be.info().clone();
    let n = TOKENS * DIM;
    let a = rand_f32(&be, n, 1)?;
    let mut b = rand_f32(&be, n, 2)?;
    let copy = time(&be, 20, || Ok(be.stream().memcpy_dtod(&a, &mut b)?))?;
    let t = Table {
        copy_gbs: 8.0 * n as f64 / copy / 1e9,
    };
    println!(
        "device: {} ({}), {:.1} GiB",
        info.name,
        info.arch(),
        info.total_memory as f64 / (1u64 << 30) as f64
    );
    println!(
        "baseline: device-to-device copy of {} MB: {:.0} GB/s (read + write)\n",
        4 * n / 1_000_000,
        t.copy_gbs
    );
    println!("| kernel (1.3B shape) | µs | achieved | vs baseline |");
    println!("|---|---|---|---|");
    let f4 = 4.0 * n as f64;
    // Denoising loop: latent window 21×16×60×104.
    let lat = 21 * 16 * 60 * 104;
    let (mut v, u, x0, x1) = (
        rand_f32(&be, lat, 3)?,
        rand_f32(&be, lat, 4)?,
        rand_f32(&be, lat, 5)?,
        rand_f32(&be, lat, 6)?,
    );
    let mut out = be.filled(lat, 0f32)?;
    let fl = 4.0 * lat as f64;
    t.bw(
        "cfg combine (latent window)",
        3.0 * fl,
        time(&be, 50, || be.cfg_combine(&mut v, &u, 5.0))?,
    );
    let c = UniPcCoefficients {
        cx: 0.9,
        cm: -0.1,
        cr: 0.05,
        hist: Some((0.7, 0.3)),
        cur: Some(0.2),
    };
    t.bw(
        "UniPC update (latent window)",
        5.0 * fl,
        time(&be, 50, || be.unipc_update(&mut out, &x0, &x1, Some(&u), Some(&v), c))?,
    );
    t.bw(
        "Philox noise (latent window)",
        fl,
        time(&be, 50, || be.philox_gaussian(&mut out, 42, 3, 0, [21, 16, 60, 104]))?,
    );
    // Transformer activations [32760, 1536].
    let (scale, shift) = (rand_f32(&be, DIM, 7)?, rand_f32(&be, DIM, 8)?);
    let mut y = be.filled(n, 0f32)?;
    t.bw(
        "LayerNorm + AdaLN modulate",
        2.0 * f4,
        time(&be, 20, || {
            be.layer_norm_modulate(&a, DIM, 1e-6, &scale, &shift, &mut y)
        })?,
    );
    let w = rand_f32(&be, DIM, 9)?;
    t.bw(
        "RMSNorm (q/k across heads)",
        2.0 * f4,
        time(&be, 20, || be.rms_norm(&mut y, DIM, 1e-6, &w))?,
    );
    t.bw(
        "gated residual",
        3.0 * f4,
        time(&be, 20, || be.gated_residual(&mut y, &a, &w))?,
    );
    let hd = DIM / HEADS;
    let (cos, sin) = (rand_f32(&be, TOKENS * hd / 2, 10)?, rand_f32(&be, TOKENS * hd / 2, 11)?);
    t.bw(
        "3D RoPE",
        2.0 * f4,
        time(&be, 20, || be.rope_interleaved(&mut y, TOKENS, HEADS, hd, &cos, &sin))?,
    );
    let ffn = TOKENS * FFN;
    let mut h = rand_f32(&be, ffn, 12)?;
    t.bw(
        "GELU-tanh (FFN hidden)",
        8.0 * ffn as f64,
        time(&be, 10, || be.gelu_tanh(&mut h))?,
    );
    let mut hb = be.filled(ffn, 0u16)?;
    t.bw(
        "f32 → bf16 (FFN hidden)",
        6.0 * ffn as f64,
        time(&be, 10, || be.f32_to_bf16(&h, &mut hb))?,
    );
    let (px, mut pp) = (rand_f32(&be, lat, 13)?, be.filled(lat, 0f32)?);
    t.bw(
        "patchify",
        2.0 * fl,
        time(&be, 50, || be.patchify(&px, 16, [21, 30, 52], [1, 2, 2], &mut pp))?,
    );
    // VAE at 480×832, 96 channels.
    let planes = 96;
    let (vx, mut vy) = (
        rand_f32(&be, planes * 240 * 416, 14)?,
        be.filled(planes * 480 * 832, 0f32)?,
    );
    t.bw(
        "nearest upsample ×2 (96×240×416)",
        4.0 * 5.0 * (planes * 240 * 416) as f64,
        time(&be, 20, || be.upsample_nearest2x(&vx, planes, 240, 416, &mut vy))?,
    );
    let g = rand_f32(&be, planes, 15)?;
    t.bw(
        "channel RMS norm (96×480×832)",
        8.0 * (planes * 480 * 832) as f64,
        time(&be, 10, || be.channel_rms_norm(&mut vy, planes, 480 * 832, &g))?,
    );
    let (rgb_in, mut rgb) = (rand_f32(&be, 3 * 480 * 832, 16)?, be.filled(3 * 480 * 832, 0f32)?);
    t.bw(
        "RGB conversion (one frame)",
        8.0 * (3 * 480 * 832) as f64,
        time(&be, 100, || be.rgb_from_planar(&rgb_in, &mut rgb))?,
    );
    // GEMMs: bf16 in, f32 accumulate and out.
    let blas = BlasLt::new(&be)?;
    let xb = rand_bf16(&be, n, 17)?;
    for (name, out_f, in_f) in [
        ("GEMM qkv/o projection 32760×1536×1536", DIM, DIM),
        ("GEMM FFN up 32760×1536→8960", FFN, DIM),
    ] {
        let wb = rand_bf16(&be, out_f * in_f, 18)?;
        let mut o = be.filled(TOKENS * out_f, 0f32)?;
        let secs = time(&be, 5, || blas.linear_bf16(&xb, TOKENS, in_f, &wb, out_f, &mut o))?;
        t.flops(name, 2.0 * (TOKENS * in_f * out_f) as f64, secs);
    }
    // Self-attention: 32760 × 32760, 12 heads of 128, from f32 q, k, v (bf16 packing included).
    let shape = AttentionShape {
        q_tokens: TOKENS,
        kv_tokens: TOKENS,
        heads: HEADS,
        head_dim: hd,
    };
    let (q, k, vv) = (rand_f32(&be, n, 19)?, rand_f32(&be, n, 20)?, rand_f32(&be, n, 21)?);
    let mut o = be.filled(n, 0f32)?;
    let secs = time(&be, 1, || {
        be.attention(&q, &k, &vv, None, shape, 1.0 / (hd as f32).sqrt(), &mut o)
    })?;
    t.flops(
        "self-attention 32760² × 12 heads × 128 (bf16 tensor cores)",
        4.0 * (TOKENS * TOKENS * DIM) as f64,
        secs,
    );
    Ok(())
}
