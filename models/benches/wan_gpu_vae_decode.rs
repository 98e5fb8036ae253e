//! The Wan2.1 VAE decode of one 480×832×81 clip on the GPU (`wan::gpu`, feature `cuda`): latent
//! `[21, 16, 60, 104]` → 81 RGB frames, with seeded random weights (`GpuWanVaeDecoder::random`: the
//! checkpoint loader's code with other values, so the timed decode is the production one). The
//! counterpart of `scripts/gpu/torch_wan_vae_decode.py` (diffusers' `AutoencoderKLWan.decode`);
//! the device harness runs both and prints the ratio.
//!
//! A decode is `WanVae::decode_window` from the first latent, as the frame decoder calls it: the
//! latent's upload, the decode, and the download of the f32 frames to the host. diffusers' decode
//! leaves its frames on the device, so the download is also timed alone (`download_ms`, the same
//! bytes) for the comparison.
//!
//! Device-only (harness = false; `cargo bench` runs it, and so does the binary directly). Without
//! a GPU it exits 1 with the probe's reason. Environment:
//! - `LONGSHOT_VAE_BENCH_ITERS` (default 2): timed decodes after one warm-up (0: the warm-up only);
//! - `LONGSHOT_VAE_BENCH_LATENT_FRAMES` (default 21): fewer latent frames for a quick check;
//! - `LONGSHOT_VAE_BENCH_BUDGET_S` (default: none): wall seconds since the start of the process.
//!   A timed decode is started only when the last one's time says it ends within the budget, so a
//!   harness step under `timeout` gets its RESULT line (`timed=0`: only the warm-up fitted).
//!
//! The last line is machine-readable:
//! `RESULT wan_gpu_vae_decode latent=21x16x60x104 frames=81 warmup_ms=… timed=N ms=… median_ms=… download_ms=…`
//! (`ms` the best timed decode, `median_ms` their median; both the warm-up's when `timed=0`).

use longshot_kernels::cuda::CudaBackend;
use longshot_models::wan::gpu::{GpuWanError, GpuWanVaeDecoder};
use longshot_models::wan::vae::config::VaeConfig;
use longshot_models::wan::vae::WanVae;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

const SEED: u64 = 20250611;
/// 480×832 → 60×104 latents (8× in space); 21 latent frames → 81 frames.
const LATENT_HW: [usize; 2] = [60, 104];

fn env_num<T: std::str::FromStr>(name: &str) -> Result<Option<T>, String> {
    match std::env::var(name) {
        Ok(v) => v.parse().map(Some).map_err(|_| format!("{name}={v} is not a number")),
        Err(_) => Ok(None),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wan_gpu_vae_decode: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A decoder error with what was being done.
fn gpu(what: &'static str) -> impl Fn(GpuWanError) -> String {
    move |e| format!("{what}: {e}")
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn run() -> Result<(), String> {
    let start = Instant::now();
    let iters = env_num::<usize>("LONGSHOT_VAE_BENCH_ITERS")?.unwrap_or(2);
    let latent_frames = env_num::<usize>("LONGSHOT_VAE_BENCH_LATENT_FRAMES")?.unwrap_or(21);
    let budget = env_num::<f64>("LONGSHOT_VAE_BENCH_BUDGET_S")?;
    if latent_frames == 0 {
        return Err("LONGSHOT_VAE_BENCH_LATENT_FRAMES must be at least 1".into());
    }

    let backend = Arc::new(CudaBackend::open(0).map_err(|e| format!("needs a CUDA GPU: {e}"))?);
    println!("device: {:?}", backend.info());
    let cfg = VaeConfig::wan2_1();
    let t = Instant::now();
    let vae = GpuWanVaeDecoder::random(backend.clone(), cfg.clone(), SEED).map_err(gpu("random Wan2.1 VAE"))?;
    backend.synchronize().map_err(|e| format!("synchronize: {e}"))?;
    println!(
        "weights: Wan2.1 VAE decoder, random (seed {SEED}), built in {:.0} ms",
        ms_since(t)
    );

    let [h, w] = LATENT_HW;
    let dims = [latent_frames, cfg.z_dim, h, w];
    let z = longshot_kernels::cuda::parity::Rng::seeded(SEED + 1).vec(dims.iter().product(), 1.0);
    let shape = format!("{latent_frames}x{}x{h}x{w}", cfg.z_dim);
    let frames = cfg.output_frames(latent_frames);

    // Whether one more decode of `last_ms` ends within the budget.
    let fits = |last_ms: f64| budget.is_none_or(|b| start.elapsed().as_secs_f64() + 1.1 * last_ms / 1e3 <= b);
    let t = Instant::now();
    let out = vae.decode_window(&z, dims, 0).map_err(gpu("warm-up decode"))?;
    let warmup_ms = ms_since(t);
    println!(
        "warm-up decode (latent {shape} -> {} frames of {}x{}x{}; includes kernel compilation on a cold cache): {warmup_ms:.1} ms",
        out.frames, out.channels, out.height, out.width
    );
    if out.frames != frames {
        return Err(format!("decoded {} frames, expected {frames}", out.frames));
    }
    if let Some(bad) = out.data.iter().position(|v| !v.is_finite()) {
        return Err(format!("non-finite output value at index {bad}"));
    }
    let max_abs = out.data.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    println!("output: {} values, all finite, max |y| = {max_abs:.3}", out.data.len());
    let out_len = out.data.len();
    drop(out);

    let mut ms = Vec::with_capacity(iters);
    for i in 0..iters {
        if !fits(ms.last().copied().unwrap_or(warmup_ms)) {
            println!(
                "decode {i}: not started, LONGSHOT_VAE_BENCH_BUDGET_S={} would be exceeded",
                budget.unwrap_or(0.0)
            );
            break;
        }
        let t = Instant::now();
        drop(vae.decode_window(&z, dims, 0).map_err(gpu("decode"))?);
        let dt = ms_since(t);
        println!("decode {i}: {dt:.1} ms");
        ms.push(dt);
    }
    let timed = ms.len();
    if ms.is_empty() {
        ms.push(warmup_ms);
    }
    ms.sort_by(f64::total_cmp);
    let (best, median) = (ms[0], ms[ms.len() / 2]);

    // The part of a decode diffusers does not do: the frames' device-to-host copy, alone.
    let dev = backend
        .stream()
        .alloc_zeros::<f32>(out_len)
        .map_err(|e| format!("alloc: {e}"))?;
    let t = Instant::now();
    let host = backend.download(&dev).map_err(|e| format!("download: {e}"))?;
    let download_ms = ms_since(t);
    drop((dev, host));

    println!(
        "decode (latent {shape}, {frames} frames): best {best:.1} ms, median {median:.1} ms of {timed} timed{}; of which about {download_ms:.1} ms is the download of {:.2} GB",
        if timed == 0 { " (the warm-up's time)" } else { "" },
        out_len as f64 * 4.0 / 1e9
    );
    println!(
        "RESULT wan_gpu_vae_decode latent={shape} frames={frames} warmup_ms={warmup_ms:.1} timed={timed} ms={best:.1} median_ms={median:.1} download_ms={download_ms:.1}"
    );
    Ok(())
}
