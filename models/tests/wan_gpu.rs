//! The GPU Wan2.1 transformer (`wan::gpu`, feature `cuda`) against the CPU reference on the tiny
//! fixture checkpoints (`tests/fixtures/wan`). Device-only: run on the GPU machine through the
//! device harness, never by CI; with no GPU every test fails loudly (no silent skips).
//!
//! Tolerance: the GPU runs every Linear as a bf16 × bf16 cuBLASLt GEMM and attention on bf16, so GPU vs CPU is
//! held to the bf16 tolerance, `max|gpu − cpu| / max|cpu| ≤ 1e-2`. The error against the diffusers
//! golden is printed for information.

mod common;

use common::{fixtures, rel_error, tensor_f32_or_i64};
use longshot_kernels::cuda::CudaBackend;
use longshot_models::wan::gpu::{ForwardTimings, GpuWanTransformer};
use longshot_models::wan::{PipelineDir, TransformerConfig, WanForward, WanTransformer, WeightStore};
use safetensors::SafeTensors;
use std::path::Path;
use std::sync::Arc;

const TOLERANCE: f64 = 1e-2;

fn backend() -> Arc<CudaBackend> {
    Arc::new(
        CudaBackend::open(0)
            .unwrap_or_else(|e| panic!("wan_gpu needs a CUDA GPU with NVRTC and cuBLASLt on LD_LIBRARY_PATH: {e}")),
    )
}

fn models(dir: &Path) -> (WanTransformer, GpuWanTransformer) {
    let cpu = WanTransformer::load(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let gpu = GpuWanTransformer::load(backend(), dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    (cpu, gpu)
}

/// Deterministic values in [-scale, scale).
fn values(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    longshot_kernels::cuda::parity::Rng::seeded(seed).vec(n, scale)
}

/// Runs a golden case (`cases/*.safetensors`) through both models; GPU vs CPU within 1e-2.
fn golden_case(name: &str) {
    let case = common::case("transformer", name);
    let (cpu, gpu) = models(&case.model_dir);
    let bytes = std::fs::read(&case.inputs).unwrap_or_else(|e| panic!("{}: {e}", case.inputs.display()));
    let st = SafeTensors::deserialize(&bytes).expect("inputs file");
    let (xs, x) = tensor_f32_or_i64(&st, "hidden_states");
    let (_, t) = tensor_f32_or_i64(&st, "timestep");
    let (_, ctx) = tensor_f32_or_i64(&st, "encoder_hidden_states");
    let (_, expected) = tensor_f32_or_i64(&st, "expected");
    let shape: [usize; 5] = xs.try_into().expect("hidden_states is 5-D");
    let want = cpu.forward_batch(&x, shape, &t, &ctx, None).expect("cpu forward");
    let start = std::time::Instant::now();
    let got = gpu
        .forward_batch(&x, shape, &t, &ctx, None)
        .unwrap_or_else(|e| panic!("{name}: gpu forward: {e}"));
    let secs = start.elapsed().as_secs_f64();
    assert!(got.iter().all(|v| v.is_finite()), "{name}: non-finite GPU output");
    let err = rel_error(&got, &want);
    println!(
        "{name}: gpu vs cpu {err:.3e}, gpu vs diffusers {:.3e}, cpu vs diffusers {:.3e}, gpu forward_batch {:.1} ms (first call compiles kernels)",
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
fn unit_test_int_and_float_timesteps_match_cpu() {
    golden_case("unit_test");
    golden_case("unit_test_float_t");
}

#[test]
fn pipeline_test_non_square_latent_matches_cpu() {
    golden_case("pipeline_test");
}

#[test]
fn rope_split_batch_of_two_with_512_text_tokens_matches_cpu() {
    golden_case("rope_split");
}

#[test]
fn original_names_and_bf16_checkpoints_match_cpu() {
    golden_case("unit_test_original");
    golden_case("unit_test_bf16");
}

/// The pipeline_tiny transformer (16 latent channels, the pipeline's own 512-token text length)
/// on random latents at three timesteps, one text context reused across them.
#[test]
fn pipeline_tiny_transformer_matches_cpu_across_timesteps() {
    let dir = PipelineDir::open(&fixtures().join("pipeline_tiny"))
        .and_then(|p| p.component_dir("transformer"))
        .expect("pipeline_tiny transformer");
    let (cpu, gpu) = models(&dir);
    let c = cpu.config().clone();
    let dims = [c.in_channels, 3, 12, 16];
    let x = values(1, dims.iter().product(), 1.0);
    let ctx = values(2, 512 * c.text_dim, 0.5);
    let text_cpu = cpu.encode_text(&ctx).expect("cpu text");
    let text_gpu = gpu.encode_text(&ctx).expect("gpu text");
    assert_eq!(text_gpu.tokens(), 512);
    for t in [999.0f32, 500.5, 1.0] {
        let want = cpu.forward(&x, dims, t, &text_cpu).expect("cpu forward");
        let got = gpu.forward(&x, dims, t, &text_gpu).expect("gpu forward");
        let err = rel_error(&got, &want);
        println!("pipeline_tiny t={t}: gpu vs cpu {err:.3e}");
        assert!(err <= TOLERANCE, "pipeline_tiny t={t}: {err:.3e} > {TOLERANCE:e}");
    }
    // The per-phase timed forward computes the same values.
    let xd = gpu.backend().upload(&x).expect("upload");
    let mut timings = ForwardTimings::default();
    let timed = gpu
        .forward_device_timed(&xd, dims, 999.0, &text_gpu, &mut timings)
        .expect("timed forward");
    let plain = gpu.forward_device(&xd, dims, 999.0, &text_gpu).expect("forward");
    assert_eq!(
        gpu.backend().download(&timed).expect("download"),
        gpu.backend().download(&plain).expect("download"),
        "timed and plain forwards differ: run-to-run nondeterminism (cuBLASLt algorithm choice or split-K atomics?)"
    );
    assert!(timings.total() > 0.0, "{timings:?}");
}

/// The block stack's CUDA graph: the first forward at a shape runs eagerly, the second captures
/// and launches, later ones replay; every one equals the eager forward bit for bit (same kernels,
/// same cached cuBLASLt algorithms), across timesteps and two text contexts (the K/V copy).
#[test]
fn graph_replay_matches_the_eager_forward_bit_for_bit() {
    let dir = PipelineDir::open(&fixtures().join("pipeline_tiny"))
        .and_then(|p| p.component_dir("transformer"))
        .expect("pipeline_tiny transformer");
    let mut eager = GpuWanTransformer::load(backend(), &dir).expect("load");
    eager.set_cuda_graphs(false);
    let graphed = GpuWanTransformer::load(backend(), &dir).expect("load");
    let c = graphed.config().clone();
    let dims = [c.in_channels, 3, 12, 16];
    let x = values(11, dims.iter().product(), 1.0);
    let ctx = [values(12, 512 * c.text_dim, 0.5), values(13, 512 * c.text_dim, 0.5)];
    let texts_e = ctx.each_ref().map(|t| eager.encode_text(t).expect("text"));
    let texts_g = ctx.each_ref().map(|t| graphed.encode_text(t).expect("text"));
    for (i, t) in [999.0f32, 700.0, 500.5, 1.0].into_iter().enumerate() {
        let which = i % 2;
        let want = eager.forward(&x, dims, t, &texts_e[which]).expect("eager");
        let got = graphed.forward(&x, dims, t, &texts_g[which]).expect("graphed");
        assert_eq!(
            graphed.has_captured_graph(),
            i >= 1,
            "forward {i}: graph captured after the second"
        );
        assert!(!eager.has_captured_graph());
        assert!(
            got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits()),
            "forward {i} (t={t}): graph replay differs from the eager forward"
        );
    }
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let gpu = GpuWanTransformer::load(backend(), &common::case("transformer", "unit_test").model_dir).expect("load");
    let c = gpu.config().clone();
    let text = gpu.encode_text(&values(3, 12 * c.text_dim, 0.5)).expect("text");
    let dims = [c.in_channels, 2, 16, 16];
    let x = values(4, dims.iter().product(), 1.0);
    assert!(gpu.encode_text(&[]).is_err());
    assert!(gpu.encode_text(&[0.0; 5]).is_err());
    assert!(gpu.forward(&x[1..], dims, 1.0, &text).is_err());
    assert!(gpu.forward(&x, [c.in_channels, 2, 15, 16], 1.0, &text).is_err());
    assert!(gpu.forward(&x, dims, f32::NAN, &text).is_err());
    // A latent whose token grid exceeds rope_max_seq_len (32) on an axis.
    let big = [c.in_channels, 1, 2, 2 * 33];
    assert!(gpu
        .forward(&values(5, big.iter().product(), 1.0), big, 1.0, &text)
        .is_err());
    // Unused tensors are refused as on the CPU: load the unit-test weights under a 1-layer config.
    let dir = common::case("transformer", "unit_test").model_dir;
    let store = WeightStore::open(&dir).expect("store");
    let mut one_layer = TransformerConfig::from_file(&dir.join("config.json")).expect("config");
    one_layer.num_layers = 1;
    let err = GpuWanTransformer::from_store(backend(), one_layer, &store)
        .err()
        .expect("leftover block 1 tensors must be refused");
    assert!(err.to_string().contains("does not use"), "{err}");
}

#[test]
fn random_weights_are_seeded_and_finite() {
    let cfg = TransformerConfig::from_file(&common::case("transformer", "unit_test").model_dir.join("config.json"))
        .expect("config");
    let dims = [cfg.in_channels, 2, 8, 8];
    let x = values(6, dims.iter().product(), 1.0);
    let ctx = values(7, 16 * cfg.text_dim, 0.5);
    let run = |seed: u64| {
        let m = GpuWanTransformer::random(backend(), cfg.clone(), seed).expect("random model");
        let text = m.encode_text(&ctx).expect("text");
        m.forward(&x, dims, 700.0, &text).expect("forward")
    };
    let (a, b, c) = (run(11), run(11), run(12));
    assert!(a.iter().all(|v| v.is_finite()));
    assert_eq!(
        a, b,
        "same seed must give the same weights and the same output bits (run-to-run determinism)"
    );
    assert_ne!(a, c, "another seed gives other weights");
}
