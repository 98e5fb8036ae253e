//! GPU kernel throughput at Wan2.1-1.3B shapes (480×832×81: 32 760 tokens, width 1536), each
//! against a baseline measured in the same run: memory-bound kernels against the device's own
//! device-to-device copy bandwidth (goal ≥ 80%), the bf16 GEMMs and attention in TFLOP/s.
//! Needs a GPU (built by `scripts/gpu/pack.sh`, run on the device machine); prints a Markdown
//! table. Bytes counted are the bytes each kernel must read and write once. Each row allocates,
//! measures and frees on its own: a row that fails (a shape error, a launch error, a panic) prints
//! `FAILED: <why>` in its row and the next rows still run; the last line is
//! `RESULT gpu_kernels rows=N failed=M` and the exit status is 1 when any row failed.

use cudarc::driver::CudaSlice;
use longshot_kernels::cpu::nn_attention::AttentionShape;
use longshot_kernels::cuda::{
    pack_conv_weight, AttentionKernel, BlasLt, ConvGeometry, ConvShape, CudaBackend, CudaError, UniPcCoefficients,
};
use std::time::Instant;

const TOKENS: usize = 21 * 30 * 52; // latent 21×60×104 in 1×2×2 patches
const DIM: usize = 1536;
const HEADS: usize = 12;
const FFN: usize = 8960;

/// Median seconds of one call of `f` (each sample: `reps` calls then a synchronize).
fn time(be: &CudaBackend, reps: usize, f: impl FnMut() -> Result<(), CudaError>) -> Result<f64, CudaError> {
    time_samples(be, reps, 3, 7, f)
}

/// As [`time`], with `warmup` calls first and `samples` samples.
fn time_samples(
    be: &CudaBackend,
    reps: usize,
    warmup: usize,
    samples: usize,
    mut f: impl FnMut() -> Result<(), CudaError>,
) -> Result<f64, CudaError> {
    for _ in 0..warmup {
        f()?;
    }
    be.synchronize()?;
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        for _ in 0..reps {
            f()?;
        }
        be.synchronize()?;
        times.push(t.elapsed().as_secs_f64() / reps as f64);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
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

/// One row's measurement.
enum Measured {
    /// Bytes each call must move, and seconds per call: reported against the copy bandwidth.
    Bandwidth(f64, f64),
    /// Floating-point operations per call, and seconds per call.
    Flops(f64, f64),
}

/// The table: each row runs on its own, so one row's error (or panic) is printed in its row and
/// the next rows still run; the exit status says whether any failed.
struct Table<'a> {
    be: &'a CudaBackend,
    copy_gbs: f64,
    rows: usize,
    failed: Vec<String>,
}

impl Table<'_> {
    fn row(&mut self, name: &str, measure: impl FnOnce(&CudaBackend) -> Result<Measured, CudaError>) {
        self.rows += 1;
        let be = self.be;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| measure(be)));
        let error = match result {
            Ok(Ok(Measured::Bandwidth(bytes, secs))) => {
                let gbs = bytes / secs / 1e9;
                println!(
                    "| {name} | {:.1} | {gbs:.0} GB/s | {:.0}% of copy |",
                    secs * 1e6,
                    100.0 * gbs / self.copy_gbs
                );
                return;
            }
            Ok(Ok(Measured::Flops(flops, secs))) => {
                println!("| {name} | {:.1} | {:.1} TFLOP/s | |", secs * 1e6, flops / secs / 1e12);
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(panic) => format!(
                "panicked: {}",
                panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)")
            ),
        };
        // One line per row, so a failure is visible in the table, not only on stderr.
        let error = error.replace('\n', " ");
        println!("| {name} | FAILED: {error} | | |");
        eprintln!("gpu_kernels: {name}: {error}");
        self.failed.push(name.to_string());
    }
}

fn main() {
    match run() {
        Ok(table) => {
            println!("\nRESULT gpu_kernels rows={} failed={}", table.0, table.1.len());
            if !table.1.is_empty() {
                eprintln!("gpu_kernels: {} row(s) failed: {}", table.1.len(), table.1.join(", "));
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("gpu_kernels: {e}");
            println!("\nRESULT gpu_kernels rows=0 failed=setup");
            std::process::exit(1);
        }
    }
}

/// Opens the device and measures the copy baseline (a failure here stops the bench: no row could
/// be judged), then runs every row. Returns (rows, failed rows).
fn run() -> Result<(usize, Vec<String>), CudaError> {
    let be = CudaBackend::open(0)?;
    let info = be.info().clone();
    let n = TOKENS * DIM;
    let copy = {
        let a = rand_f32(&be, n, 1)?;
        let mut b = rand_f32(&be, n, 2)?;
        time(&be, 20, || Ok(be.stream().memcpy_dtod(&a, &mut b)?))?
    };
    let mut t = Table {
        be: &be,
        copy_gbs: 8.0 * n as f64 / copy / 1e9,
        rows: 0,
        failed: Vec::new(),
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
    use Measured::{Bandwidth, Flops};
    let f4 = 4.0 * n as f64;
    // Denoising loop: latent window 21×16×60×104.
    let lat = 21 * 16 * 60 * 104;
    let fl = 4.0 * lat as f64;
    t.row("cfg combine (latent window)", |be| {
        let (mut v, u) = (rand_f32(be, lat, 3)?, rand_f32(be, lat, 4)?);
        Ok(Bandwidth(3.0 * fl, time(be, 50, || be.cfg_combine(&mut v, &u, 5.0))?))
    });
    t.row("UniPC update (latent window)", |be| {
        let (v, u, x0, x1) = (
            rand_f32(be, lat, 3)?,
            rand_f32(be, lat, 4)?,
            rand_f32(be, lat, 5)?,
            rand_f32(be, lat, 6)?,
        );
        let mut out = be.filled(lat, 0f32)?;
        let c = UniPcCoefficients {
            cx: 0.9,
            cm: -0.1,
            cr: 0.05,
            hist: Some((0.7, 0.3)),
            cur: Some(0.2),
        };
        let secs = time(be, 50, || be.unipc_update(&mut out, &x0, &x1, Some(&u), Some(&v), c))?;
        Ok(Bandwidth(5.0 * fl, secs))
    });
    t.row("Philox noise (latent window)", |be| {
        let mut out = be.filled(lat, 0f32)?;
        let secs = time(be, 50, || be.philox_gaussian(&mut out, 42, 3, 0, [21, 16, 60, 104]))?;
        Ok(Bandwidth(fl, secs))
    });
    // Transformer activations [32760, 1536].
    t.row("LayerNorm + AdaLN modulate", |be| {
        let (a, scale, shift) = (rand_f32(be, n, 1)?, rand_f32(be, DIM, 7)?, rand_f32(be, DIM, 8)?);
        let mut y = be.filled(n, 0f32)?;
        let secs = time(be, 20, || be.layer_norm_modulate(&a, DIM, 1e-6, &scale, &shift, &mut y))?;
        Ok(Bandwidth(2.0 * f4, secs))
    });
    t.row("RMSNorm (q/k across heads)", |be| {
        let (mut y, w) = (rand_f32(be, n, 2)?, rand_f32(be, DIM, 9)?);
        Ok(Bandwidth(
            2.0 * f4,
            time(be, 20, || be.rms_norm(&mut y, DIM, 1e-6, &w))?,
        ))
    });
    t.row("gated residual", |be| {
        let (mut y, a, w) = (rand_f32(be, n, 2)?, rand_f32(be, n, 1)?, rand_f32(be, DIM, 9)?);
        Ok(Bandwidth(3.0 * f4, time(be, 20, || be.gated_residual(&mut y, &a, &w))?))
    });
    let hd = DIM / HEADS;
    t.row("3D RoPE", |be| {
        let mut y = rand_f32(be, n, 2)?;
        // The wrapper takes one cos and one sin per (token, head-dim element), i.e. tokens × head_dim
        // (the pairs repeat each value), as the transformer's RoPE table is laid out.
        let (cos, sin) = (rand_f32(be, TOKENS * hd, 10)?, rand_f32(be, TOKENS * hd, 11)?);
        let secs = time(be, 20, || be.rope_interleaved(&mut y, TOKENS, HEADS, hd, &cos, &sin))?;
        Ok(Bandwidth(2.0 * f4, secs))
    });
    let ffn = TOKENS * FFN;
    t.row("GELU-tanh (FFN hidden)", |be| {
        let mut h = rand_f32(be, ffn, 12)?;
        Ok(Bandwidth(8.0 * ffn as f64, time(be, 10, || be.gelu_tanh(&mut h))?))
    });
    t.row("f32 → bf16 (FFN hidden)", |be| {
        let (h, mut hb) = (rand_f32(be, ffn, 12)?, be.filled(ffn, 0u16)?);
        Ok(Bandwidth(
            6.0 * ffn as f64,
            time(be, 10, || be.f32_to_bf16(&h, &mut hb))?,
        ))
    });
    t.row("patchify", |be| {
        let (px, mut pp) = (rand_f32(be, lat, 13)?, be.filled(lat, 0f32)?);
        let secs = time(be, 50, || be.patchify(&px, 16, [21, 30, 52], [1, 2, 2], &mut pp))?;
        Ok(Bandwidth(2.0 * fl, secs))
    });
    // VAE at 480×832, 96 channels.
    let planes = 96;
    t.row("nearest upsample ×2 (96×240×416)", |be| {
        let (vx, mut vy) = (
            rand_f32(be, planes * 240 * 416, 14)?,
            be.filled(planes * 480 * 832, 0f32)?,
        );
        let secs = time(be, 20, || be.upsample_nearest2x(&vx, planes, 240, 416, &mut vy))?;
        Ok(Bandwidth(4.0 * 5.0 * (planes * 240 * 416) as f64, secs))
    });
    t.row("channel RMS norm (96×480×832)", |be| {
        let (mut vy, g) = (rand_f32(be, planes * 480 * 832, 14)?, rand_f32(be, planes, 15)?);
        let secs = time(be, 10, || be.channel_rms_norm(&mut vy, planes, 480 * 832, &g))?;
        Ok(Bandwidth(8.0 * (planes * 480 * 832) as f64, secs))
    });
    t.row("RGB conversion (one frame)", |be| {
        let (rgb_in, mut rgb) = (rand_f32(be, 3 * 480 * 832, 16)?, be.filled(3 * 480 * 832, 0f32)?);
        let secs = time(be, 100, || be.rgb_from_planar(&rgb_in, &mut rgb))?;
        Ok(Bandwidth(8.0 * (3 * 480 * 832) as f64, secs))
    });
    // The decoder's convs at 480×832: a residual conv of up-block 2 (192 → 192, 3×3×3 at 240×416)
    // over 5 frames, and up-block 3's (96 → 96 at 480×832) over 3, on tensor cores (operands
    // packed beforehand, as the decoder holds them) and, for the first, the f32 direct kernel.
    for (name, cin, (h, w), frames) in [
        ("conv3d 3×3×3 192→192 240×416×5 (bf16 tensor cores)", 192, (240, 416), 5),
        ("conv3d 3×3×3 96→96 480×832×3 (bf16 tensor cores)", 96, (480, 832), 3),
    ] {
        t.row(name, |be| {
            let g = ConvGeometry {
                frames,
                hist: 0,
                cin,
                cout: cin,
                h,
                w,
                kt: 3,
                ks: 3,
                upsample: false,
            };
            let x = rand_f32(be, frames * cin * h * w, 22)?;
            let mut xb = be.filled(g.input_len(), 0u16)?;
            be.pack_channels_last_bf16(&x.slice(..), cin, h * w, None, false, &mut xb.slice_mut(..))?;
            drop(x);
            let host_w: Vec<f32> = (0..cin * cin * 27)
                .map(|i| ((i * 7919) % 1000) as f32 * 1e-4 - 0.05)
                .collect();
            let wb = be.upload(&pack_conv_weight(&host_w, cin, cin, 3, 3))?;
            let bias = rand_f32(be, cin, 23)?;
            let mut o = be.filled(g.output_len(), 0f32)?;
            let secs = time_samples(be, 2, 1, 5, || {
                be.causal_conv3d_bf16(&xb.slice(..), &wb, &bias, g, false, &mut o.slice_mut(..))
            })?;
            Ok(Flops(g.flops(), secs))
        });
    }
    t.row("conv3d 3×3×3 192→192 240×416×5 (f32 direct, before)", |be| {
        let s = ConvShape {
            frames: 5,
            cin: 192,
            cout: 192,
            h: 240,
            w: 416,
            kt: 3,
            ks: 3,
        };
        let x = rand_f32(be, s.frames * s.cin * s.h * s.w, 22)?;
        let (wt, bias) = (rand_f32(be, s.cout * s.cin * 27, 24)?, rand_f32(be, s.cout, 23)?);
        let mut o = be.filled(s.frames * s.cout * s.h * s.w, 0f32)?;
        let secs = time_samples(be, 1, 1, 3, || be.causal_conv3d(&x, &wt, &bias, s, &mut o))?;
        let flops = 2.0 * (s.frames * s.h * s.w * s.cout) as f64 * (s.cin * 27) as f64;
        Ok(Flops(flops, secs))
    });
    t.row("pack f32 → bf16 channels-last, norm + SiLU (96×480×832)", |be| {
        let (x, g) = (rand_f32(be, planes * 480 * 832, 14)?, rand_f32(be, planes, 15)?);
        let mut xb = be.filled(planes * 480 * 832, 0u16)?;
        let secs = time(be, 10, || {
            be.pack_channels_last_bf16(&x.slice(..), planes, 480 * 832, Some(&g), true, &mut xb.slice_mut(..))
        })?;
        // Read twice (the norm's pass, then the values), written once in bf16.
        Ok(Bandwidth(10.0 * (planes * 480 * 832) as f64, secs))
    });
    // GEMMs: bf16 in, f32 accumulate and out.
    for (name, out_f, in_f) in [
        ("GEMM qkv/o projection 32760×1536×1536", DIM, DIM),
        ("GEMM FFN up 32760×1536→8960", FFN, DIM),
    ] {
        t.row(name, |be| {
            let blas = BlasLt::new(be)?;
            let (xb, wb) = (rand_bf16(be, n, 17)?, rand_bf16(be, out_f * in_f, 18)?);
            let mut o = be.filled(TOKENS * out_f, 0f32)?;
            let secs = time(be, 5, || blas.linear_bf16(&xb, TOKENS, in_f, &wb, out_f, &mut o))?;
            Ok(Flops(2.0 * (TOKENS * in_f * out_f) as f64, secs))
        });
    }
    // Self-attention: 32760 × 32760, 12 heads of 128, from f32 q, k, v (bf16 packing included).
    t.row("self-attention 32760² × 12 heads × 128 (bf16 tensor cores)", |be| {
        let shape = AttentionShape {
            q_tokens: TOKENS,
            kv_tokens: TOKENS,
            heads: HEADS,
            head_dim: hd,
        };
        let (q, k, vv) = (rand_f32(be, n, 19)?, rand_f32(be, n, 20)?, rand_f32(be, n, 21)?);
        let mut o = be.filled(n, 0f32)?;
        let secs = time_samples(be, 1, 1, 3, || {
            be.attention(&q, &k, &vv, None, shape, 1.0 / (hd as f32).sqrt(), &mut o)
        })?;
        Ok(Flops(4.0 * (TOKENS * TOKENS * DIM) as f64, secs))
    });
    // The two attention kernels head to head on bf16 inputs (no packing): mma.sync
    // (attention_flash.cu) and, on Hopper, wgmma + TMA (attention_wgmma.cu); self-attention and
    // cross-attention against 512 text tokens.
    let mut kernels = vec![("mma.sync", AttentionKernel::MmaSync)];
    if info.compute_capability == (9, 0) {
        kernels.push(("wgmma+TMA", AttentionKernel::Wgmma));
    } else {
        println!("| attention wgmma+TMA | (needs compute capability 9.0) | | |");
    }
    for (label, kernel) in kernels {
        for (what, kv_tokens, reps) in [("self", TOKENS, 1), ("cross", 512, 20)] {
            let name = format!("{what}-attention 32760×{kv_tokens} × 12 × 128, bf16 in, {label}");
            t.row(&name, |be| {
                let shape = AttentionShape {
                    q_tokens: TOKENS,
                    kv_tokens,
                    heads: HEADS,
                    head_dim: hd,
                };
                let (q, k, vv) = (
                    rand_bf16(be, n, 22)?,
                    rand_bf16(be, kv_tokens * DIM, 23)?,
                    rand_bf16(be, kv_tokens * DIM, 24)?,
                );
                let mut o = be.filled(n, 0f32)?;
                let scale = 1.0 / (hd as f32).sqrt();
                let secs = time_samples(be, reps, 1, 3, || {
                    be.attention_bf16_with(kernel, &q, &k, &vv, None, shape, scale, &mut o)
                })?;
                Ok(Flops(4.0 * (TOKENS * kv_tokens * DIM) as f64, secs))
            });
        }
    }
    Ok((t.rows, t.failed))
}
