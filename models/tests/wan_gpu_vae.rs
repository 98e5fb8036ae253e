//! The GPU Wan VAE decoder (`wan::gpu::GpuWanVaeDecoder`, feature `cuda`) against the CPU
//! decoder on the fixture VAEs (`tests/fixtures/wan`: the golden cases of `wan_vae.rs` and
//! `pipeline_tiny/vae`), and its sharded decode against its own sequential decode.
//! Device-only: run on the GPU machine through the device harness, never by CI; with no GPU every
//! test fails loudly (no silent skips).
//!
//! Tolerance: the GPU's convolutions run on tensor cores with bf16 operands (f32 accumulation and
//! activations), so GPU vs CPU is held to the bf16 tolerance, `max|gpu − cpu| / max|cpu| ≤ 1e-2`
//! (as the GPU transformer, `wan_gpu.rs`). The sharded decode (halo in front) must reproduce the GPU's sequential decode bit for
//! bit, as on the CPU.

mod common;

use common::{fixtures, rel_error, tensor_f32 as tensor};
use longshot_core::denoiser::{FrameDecoder, RgbFrame};
use longshot_core::tensor::{LatentShape, Latents};
use longshot_kernels::cuda::CudaBackend;
use longshot_models::wan::gpu::{GpuWanFrameDecoder, GpuWanVaeDecoder};
use longshot_models::wan::vae::frame_decoder::WanFrameDecoder;
use longshot_models::wan::{WanVae, WanVaeDecoder};
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const TOLERANCE: f64 = 1e-2;

fn backend() -> Arc<CudaBackend> {
    Arc::new(
        CudaBackend::open(0)
            .unwrap_or_else(|e| panic!("wan_gpu_vae needs a CUDA GPU with NVRTC on LD_LIBRARY_PATH: {e}")),
    )
}

fn models(dir: &Path) -> (WanVaeDecoder, GpuWanVaeDecoder) {
    let cpu = WanVaeDecoder::load(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let gpu = GpuWanVaeDecoder::load(backend(), dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    (cpu, gpu)
}

fn pipeline_tiny_vae() -> PathBuf {
    fixtures().join("pipeline_tiny/vae")
}

/// Deterministic latents of plausible scale (as `wan_vae.rs`): `[T, C, H, W]`.
fn latents(t: usize, c: usize, h: usize, w: usize, seed: f32) -> Vec<f32> {
    (0..t * c * h * w)
        .map(|i| ((i as f32 + 1.0) * 0.618_034 * seed).sin() * 2.0 + ((i as f32) * 0.137).cos() * 0.5)
        .collect()
}

/// A golden case's `z` through both decoders (`decode`, batch and all); GPU vs CPU within 1e-2.
fn golden_case(name: &str) {
    let case = common::case("vae", name);
    let (cpu, gpu) = models(&case.model_dir);
    let bytes = std::fs::read(&case.inputs).unwrap_or_else(|e| panic!("{}: {e}", case.inputs.display()));
    let st = SafeTensors::deserialize(&bytes).expect("inputs file");
    let (zs, z) = tensor(&st, "z");
    let (_, expected) = tensor(&st, "expected");
    let shape: [usize; 5] = zs.try_into().expect("z is 5-D");
    let want = cpu.decode(&z, shape).expect("cpu decode");
    let start = std::time::Instant::now();
    let got = gpu
        .decode(&z, shape)
        .unwrap_or_else(|e| panic!("{name}: gpu decode: {e}"));
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(got.len(), want.len(), "{name}: output length");
    assert!(got.iter().all(|v| v.is_finite()), "{name}: non-finite GPU output");
    let err = rel_error(&got, &want);
    println!(
        "{name}: gpu vs cpu {err:.3e}, gpu vs diffusers {:.3e}, cpu vs diffusers {:.3e}, gpu decode {:.1} ms \
         (first call compiles kernels)",
        rel_error(&got, &expected),
        rel_error(&want, &expected),
        secs * 1e3
    );
    assert!(
        err <= TOLERANCE,
        "{name}: GPU vs CPU relative error {err:.3e} > {TOLERANCE:e}"
    );
}

#[test]
fn golden_vaes_match_cpu() {
    for name in ["vae_unit_test", "vae_unit_test_original", "vae_small", "vae_res1"] {
        golden_case(name);
    }
}

#[test]
fn pipeline_tiny_vae_matches_cpu_on_a_non_square_latent() {
    let (cpu, gpu) = models(&pipeline_tiny_vae());
    let c = cpu.config().z_dim;
    let dims = [5, c, 3, 4];
    let z = latents(dims[0], c, dims[2], dims[3], 0.7);
    let want = cpu.decode_range(&z, dims, 0, 0).expect("cpu decode");
    let got = gpu.decode_range(&z, dims, 0, 0).expect("gpu decode");
    assert_eq!(
        (got.first_frame, got.frames, got.channels, got.height, got.width),
        (want.first_frame, want.frames, want.channels, want.height, want.width)
    );
    let err = rel_error(&got.data, &want.data);
    println!("pipeline_tiny/vae: gpu vs cpu {err:.3e} over {} frames", got.frames);
    assert!(
        err <= TOLERANCE,
        "pipeline_tiny/vae: GPU vs CPU relative error {err:.3e} > {TOLERANCE:e}"
    );
}

/// `GpuWanVaeDecoder::random` (the benchmark's decoder) at the fixture's config: the frames of
/// the checkpoint decoder's shape, finite, mostly inside the final clamp (the weight scales keep
/// activations O(1)), the same for the same seed and different for another.
#[test]
fn random_weights_decode_like_a_checkpoint() {
    let dir = pipeline_tiny_vae();
    let (_, loaded) = models(&dir);
    let cfg = loaded.config().clone();
    let dims = [3, cfg.z_dim, 3, 4];
    let z = latents(dims[0], cfg.z_dim, dims[2], dims[3], 0.3);
    let want = loaded.decode_window(&z, dims, 0).expect("checkpoint decode");
    let decode = |seed| {
        GpuWanVaeDecoder::random(backend(), cfg.clone(), seed)
            .unwrap_or_else(|e| panic!("random decoder: {e}"))
            .decode_window(&z, dims, 0)
            .expect("random decode")
    };
    let (a, b, other) = (decode(5), decode(5), decode(6));
    assert_eq!(
        (a.first_frame, a.frames, a.channels, a.height, a.width),
        (want.first_frame, want.frames, want.channels, want.height, want.width)
    );
    assert!(a.data.iter().all(|v| v.is_finite()), "non-finite frames");
    let clamped = a.data.iter().filter(|v| v.abs() >= 1.0).count();
    assert!(
        clamped * 2 < a.data.len(),
        "{clamped} of {} values clamped",
        a.data.len()
    );
    assert_eq!(a.data, b.data, "same seed, different frames");
    assert_ne!(a.data, other.data, "another seed, the same frames");
}

/// As `wan_vae.rs`'s check_sharding, on the GPU: `[0, s)` from the start and `[s, len)` with the
/// halo in front concatenate to the GPU's sequential decode bit for bit.
fn check_sharding(dir: &Path) {
    let gpu = GpuWanVaeDecoder::load(backend(), dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let halo = gpu.halo();
    let (c, h, w) = (gpu.config().z_dim, 1, 2);
    let len = halo + 6;
    let z = latents(len, c, h, w, 1.7);
    let frame_in = c * h * w;
    let full = gpu.decode_range(&z, [len, c, h, w], 0, 0).expect("sequential decode");
    assert_eq!((full.first_frame, full.frames), (0, gpu.config().output_frames(len)));
    for s in [1, 2, halo - 1, halo, halo + 1, len - 1] {
        let head = gpu.decode_range(&z[..s * frame_in], [s, c, h, w], 0, 0).expect("head");
        let start = s.saturating_sub(halo);
        let tail = gpu
            .decode_range(&z[start * frame_in..], [len - start, c, h, w], start, s - start)
            .expect("tail");
        assert_eq!(
            head.frames + tail.frames,
            full.frames,
            "{} split {s}: frame count",
            dir.display()
        );
        assert_eq!(
            tail.first_frame,
            head.frames,
            "{} split {s}: tail's first frame",
            dir.display()
        );
        let joined: Vec<f32> = head.data.iter().chain(&tail.data).copied().collect();
        assert!(
            joined.iter().zip(&full.data).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{} split {s}: GPU sharded decode differs from the GPU sequential one",
            dir.display()
        );
    }
    println!(
        "{}: GPU sharded decode with a {halo}-latent halo is bit-identical",
        dir.display()
    );
}

#[test]
fn sharded_decode_with_the_halo_is_bit_identical() {
    for name in ["vae_res1", "vae_small"] {
        check_sharding(&common::case("vae", name).model_dir);
    }
    check_sharding(&pipeline_tiny_vae());
}

#[test]
fn frame_decoder_matches_the_cpu_frame_decoder() {
    let (cpu, gpu) = models(&pipeline_tiny_vae());
    let (cpu, gpu) = (
        WanFrameDecoder::new(Arc::new(cpu)),
        GpuWanFrameDecoder::new(Arc::new(gpu)),
    );
    assert_eq!(cpu.halo(), gpu.halo());
    let halo = gpu.halo();
    let shape = LatentShape::new(halo + 2, 16, 2, 3);
    let data = latents(shape.frames, shape.channels, shape.height, shape.width, 0.45);
    let lat = Latents::from_vec(shape, data).expect("latents");
    let collect = |d: &dyn FrameDecoder, first: usize, emit: usize| {
        let mut frames: Vec<(usize, RgbFrame)> = Vec::new();
        d.decode(&lat, first, emit, &mut |i, f| frames.push((i, f)))
            .expect("decode");
        frames
    };
    for (first, emit) in [(0, 0), (3, halo)] {
        let want = collect(&cpu, first, emit);
        let got = collect(&gpu, first, emit);
        assert_eq!(got.len(), want.len(), "({first}, {emit}): frame count");
        for ((gi, g), (wi, w)) in got.iter().zip(&want) {
            assert_eq!((gi, g.width, g.height), (wi, w.width, w.height));
            let err = rel_error(&g.data, &w.data);
            assert!(
                err <= TOLERANCE,
                "({first}, {emit}) frame {gi}: rgb relative error {err:.3e}"
            );
        }
    }
}

#[test]
fn input_errors_match_the_cpu() {
    let (cpu, gpu) = models(&pipeline_tiny_vae());
    let c = 16;
    let z = latents(40, c, 1, 1, 0.3);
    let h = gpu.halo();
    let cases: [(&[f32], [usize; 4], usize, usize); 4] = [
        (&z[..(h + 2) * c], [h + 2, c, 1, 1], 5, h - 1),
        (&z[..3 * c], [3, c, 1, 1], 0, 4),
        (&z[..3 * c], [3, 8, 1, 1], 0, 0),
        (&z[..3 * c - 1], [3, c, 1, 1], 0, 0),
    ];
    for (zz, dims, first, emit) in cases {
        let want = cpu.decode_range(zz, dims, first, emit).expect_err("cpu rejects");
        let got = gpu.decode_range(zz, dims, first, emit).expect_err("gpu rejects");
        assert_eq!(got.to_string(), want.to_string());
    }
}
