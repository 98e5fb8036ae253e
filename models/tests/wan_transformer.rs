//! The Wan2.1 transformer and loader against diffusers goldens (`scripts/goldens/wan.py`, fixtures
//! in `tests/fixtures/wan/`, cases listed in its `manifest.json`).
//!
//! Error metric: `max|ours − diffusers| / max|diffusers|` over the whole output (a relative error
//! normalised by the output's scale, so near-zero elements do not dominate). Tolerance 1e-5 for
//! every f32 case. Reduced-precision checkpoints are compared with diffusers run in f32 on the
//! same rounded weights (the loader upcasts exactly, so the same 1e-5 applies). A missing fixture
//! or manifest entry fails the test.

mod common;

use common::{assert_names, damaged_dir as checkpoint_dir, fixtures, read_tensors, rel_error, serialize, Tensors};
use longshot_models::wan::{PipelineDir, SchedulerKind, WanError, WanForward, WanTransformer, WeightStore};
use safetensors::{Dtype, SafeTensors};
use std::path::PathBuf;

const TOLERANCE: f64 = 1e-5;

/// Every transformer case the manifest must list (so a dropped case fails rather than vanishes).
const CASES: &[&str] = &[
    "unit_test",
    "unit_test_float_t",
    "unit_test_sharded",
    "unit_test_original",
    "unit_test_bf16",
    "unit_test_f16",
    "pipeline_test",
    "rope_split",
];

fn case(name: &str) -> common::Case {
    common::case("transformer", name)
}

/// One tensor of an inputs file as f32 (timesteps may be int64) with its shape.
fn tensor(st: &SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<f32>) {
    common::tensor_f32_or_i64(st, name)
}

struct Run {
    got: Vec<f32>,
    expected: Vec<f32>,
    seconds: f64,
}

fn run(name: &str) -> Run {
    let c = case(name);
    let model = WanTransformer::load(&c.model_dir).unwrap_or_else(|e| panic!("{name}: {e}"));
    let bytes = std::fs::read(&c.inputs).unwrap_or_else(|e| panic!("{}: {e}", c.inputs.display()));
    let st = SafeTensors::deserialize(&bytes).expect("inputs file");
    let (xs, x) = tensor(&st, "hidden_states");
    let (_, t) = tensor(&st, "timestep");
    let (_, ctx) = tensor(&st, "encoder_hidden_states");
    let (es, expected) = tensor(&st, "expected");
    let shape: [usize; 5] = xs.try_into().expect("hidden_states is 5-D");
    // Best of three, so the printed time is not one cold run.
    let mut seconds = f64::INFINITY;
    let mut got = Vec::new();
    for _ in 0..3 {
        let start = std::time::Instant::now();
        got = model
            .forward_batch(&x, shape, &t, &ctx, None)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        seconds = seconds.min(start.elapsed().as_secs_f64());
    }
    assert_eq!(got.len(), es.iter().product::<usize>(), "{name}: output length");
    Run { got, expected, seconds }
}

fn check(name: &str) -> Run {
    let r = run(name);
    let err = rel_error(&r.got, &r.expected);
    println!(
        "{name}: max|a-b|/max|b| = {err:.3e}, forward_batch {:.2} ms (best of 3)",
        r.seconds * 1e3
    );
    assert!(err <= TOLERANCE, "{name}: relative error {err:.3e} > {TOLERANCE:e}");
    r
}

#[test]
fn manifest_lists_every_expected_case_and_its_files_exist() {
    common::assert_cases_exist("transformer", CASES);
}

#[test]
fn diffusers_unit_test_config_matches_with_int_and_float_timesteps() {
    check("unit_test");
    check("unit_test_float_t");
}

#[test]
fn pipeline_test_config_with_a_non_square_latent_matches() {
    check("pipeline_test");
}

#[test]
fn uneven_rope_split_batch_of_two_and_512_text_tokens_match() {
    check("rope_split");
}

#[test]
fn bf16_and_f16_checkpoints_match_diffusers_on_the_rounded_weights() {
    check("unit_test_bf16");
    check("unit_test_f16");
}

#[test]
fn sharded_and_original_name_checkpoints_give_bit_identical_output() {
    let reference = check("unit_test");
    for name in ["unit_test_sharded", "unit_test_original"] {
        let r = check(name);
        assert!(
            r.got
                .iter()
                .zip(&reference.got)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{name} differs from unit_test"
        );
    }
}

#[test]
fn text_context_is_reusable_across_timesteps() {
    let c = case("unit_test");
    let model = WanTransformer::load(&c.model_dir).expect("load");
    let cfg = model.config();
    let dims = [cfg.in_channels, 2, 4, 6];
    let x: Vec<f32> = (0..dims.iter().product()).map(|i| (i as f32 * 0.37).sin()).collect();
    let ctx: Vec<f32> = (0..5 * cfg.text_dim).map(|i| (i as f32 * 0.11).cos()).collect();
    let text = model.encode_text(&ctx).expect("text");
    assert_eq!(text.tokens(), 5);
    for t in [999.0f32, 3.0] {
        let once = model.forward(&x, dims, t, &text).expect("forward");
        let fresh = model
            .forward_batch(&x, [1, dims[0], dims[1], dims[2], dims[3]], &[t], &ctx, None)
            .expect("batch");
        assert_eq!(once, fresh);
    }
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let model = WanTransformer::load(&case("unit_test").model_dir).expect("load");
    let text = model.encode_text(&[0.0; 16 * 3]).expect("text");
    let input_err = |r: Result<Vec<f32>, WanError>| matches!(r, Err(WanError::Input(_)));
    assert!(
        input_err(model.forward(&vec![0.0; 3 * 2 * 4 * 4], [3, 2, 4, 4], 1.0, &text)),
        "wrong channels"
    );
    assert!(
        input_err(model.forward(&vec![0.0; 4 * 2 * 5 * 4], [4, 2, 5, 4], 1.0, &text)),
        "odd height"
    );
    assert!(
        input_err(model.forward(&vec![0.0; 4 * 2 * 66 * 2], [4, 2, 66, 2], 1.0, &text)),
        "past rope_max_seq_len"
    );
    assert!(
        input_err(model.forward(&vec![0.0; 4 * 2 * 4 * 4], [4, 2, 4, 4], f32::NAN, &text)),
        "NaN timestep"
    );
    assert!(
        matches!(model.encode_text(&[0.0; 15]), Err(WanError::Input(_))),
        "ragged text"
    );
}

#[test]
fn pipeline_directory_exposes_components_and_scheduler_config() {
    let dir = PipelineDir::open(&fixtures().join("unit_test")).expect("pipeline");
    assert_eq!(dir.class_name(), "WanPipeline");
    let sched = dir.scheduler_config().expect("scheduler");
    assert_eq!(sched.kind(), SchedulerKind::UniPc);
    assert_eq!(
        (sched.effective_shift(), sched.solver_order, sched.use_flow_sigmas),
        (Some(3.0), Some(2), true)
    );
    assert_eq!(dir.transformer_config().expect("config").inner_dim(), 24);
    let store = WeightStore::open(&dir.component_dir("transformer").expect("transformer dir")).expect("store");
    assert!(store.contains("blocks.1.ffn.net.2.bias"));
    let vae = dir.component_dir("vae").expect_err("vae is null in this fixture");
    assert!(vae.to_string().contains("no 'vae' component"), "{vae}");
}

// ---------------------------------------------------------------------------------------------
// Loader errors, on damaged copies of the unit-test checkpoint.
// ---------------------------------------------------------------------------------------------

/// The unit-test checkpoint's tensors, editable.
fn unit_tensors() -> Tensors {
    read_tensors(&case("unit_test").model_dir.join("diffusion_pytorch_model.safetensors"))
}

/// A checkpoint directory holding the unit-test config and `file_bytes` as its weights.
fn damaged_dir(file_bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    checkpoint_dir(
        &case("unit_test").model_dir.join("config.json"),
        "diffusion_pytorch_model.safetensors",
        file_bytes,
    )
}

fn load_error(file_bytes: &[u8]) -> (WanError, PathBuf, tempfile::TempDir) {
    let (dir, weights) = damaged_dir(file_bytes);
    let err = WanTransformer::load(dir.path()).expect_err("damaged checkpoint must not load");
    (err, weights, dir)
}

#[test]
fn missing_tensor_names_file_and_tensor() {
    let mut t = unit_tensors();
    t.remove("blocks.1.attn2.norm_k.weight");
    let (err, file, _d) = load_error(&serialize(&t));
    assert!(matches!(err, WanError::MissingTensor { .. }), "{err}");
    assert_names(&err, &file, "blocks.1.attn2.norm_k.weight");
}

#[test]
fn wrong_shape_names_file_tensor_and_both_shapes() {
    let mut t = unit_tensors();
    if let Some(e) = t.get_mut("blocks.0.ffn.net.0.proj.weight") {
        e.1 = vec![24, 32]; // stored [32, 24]
    }
    let (err, file, _d) = load_error(&serialize(&t));
    assert!(
        matches!(&err, WanError::Shape { got, want, .. } if got == &[24, 32] && want == &[32, 24]),
        "{err}"
    );
    assert_names(&err, &file, "blocks.0.ffn.net.0.proj.weight");
}

#[test]
fn nan_and_inf_weights_name_file_and_tensor() {
    for (bad, name) in [
        (f32::NAN, "scale_shift_table"),
        (f32::INFINITY, "blocks.0.attn1.to_v.bias"),
    ] {
        let mut t = unit_tensors();
        if let Some(e) = t.get_mut(name) {
            e.2[4..8].copy_from_slice(&bad.to_le_bytes());
        }
        let (err, file, _d) = load_error(&serialize(&t));
        assert!(matches!(err, WanError::NonFinite { index: 1, .. }), "{err}");
        assert_names(&err, &file, name);
    }
}

#[test]
fn truncated_file_names_file_and_the_first_cut_tensor() {
    let bytes = serialize(&unit_tensors());
    let (err, file, _d) = load_error(&bytes[..bytes.len() - 100]);
    let WanError::Truncated { tensor, .. } = &err else {
        panic!("expected Truncated, got {err}")
    };
    assert_names(&err, &file, tensor);
    // Cut inside the header: still an error naming the file.
    let (err, file, _d) = load_error(&bytes[..20]);
    assert!(matches!(err, WanError::Format { .. }), "{err}");
    assert!(err.to_string().contains(&file.display().to_string()));
}

#[test]
fn unsupported_dtype_and_unknown_tensors_are_rejected() {
    let mut t = unit_tensors();
    if let Some(e) = t.get_mut("proj_out.bias") {
        e.0 = Dtype::I32;
    }
    let (err, file, _d) = load_error(&serialize(&t));
    assert!(matches!(err, WanError::Dtype { .. }), "{err}");
    assert_names(&err, &file, "proj_out.bias");

    let mut t = unit_tensors();
    t.insert(
        "blocks.0.attn2.add_k_proj.weight".into(),
        (Dtype::F32, vec![1], vec![0; 4]),
    );
    let (err, file, _d) = load_error(&serialize(&t));
    assert!(matches!(err, WanError::UnusedTensors { count: 1, .. }), "{err}");
    assert_names(&err, &file, "add_k_proj");
}

#[test]
fn sharded_checkpoint_errors_name_the_shard() {
    let src = case("unit_test_sharded").model_dir;
    let dir = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(&src).expect("shard dir") {
        let p = entry.expect("entry").path();
        std::fs::copy(&p, dir.path().join(p.file_name().expect("name"))).expect("copy");
    }
    // Drop a tensor from the shard that the index says holds it.
    let index_path = dir.path().join("diffusion_pytorch_model.safetensors.index.json");
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&index_path).expect("index")).expect("json");
    let shard = index["weight_map"]["proj_out.weight"]
        .as_str()
        .expect("proj_out shard")
        .to_string();
    let shard_path = dir.path().join(&shard);
    let mut t: Tensors = read_tensors(&shard_path);
    t.remove("proj_out.weight");
    std::fs::write(&shard_path, serialize(&t)).expect("rewrite shard");
    let err = WanTransformer::load(dir.path()).expect_err("missing from shard");
    assert!(matches!(err, WanError::MissingFromShard { .. }), "{err}");
    assert_names(&err, &shard_path, "proj_out.weight");
    // A shard the index names but the directory lacks.
    std::fs::remove_file(&shard_path).expect("remove shard");
    let err = WanTransformer::load(dir.path()).expect_err("missing shard");
    assert!(
        matches!(err, WanError::Io { .. }) && err.to_string().contains(&shard),
        "{err}"
    );
}

#[test]
fn config_problems_name_the_config_file() {
    let (dir, _w) = damaged_dir(&serialize(&unit_tensors()));
    let cfg = dir.path().join("config.json");
    std::fs::write(
        &cfg,
        r#"{"num_attention_heads": 2, "attention_head_dim": 12, "image_dim": 1280}"#,
    )
    .expect("write");
    let err = WanTransformer::load(dir.path()).expect_err("image_dim without added_kv_proj_dim");
    assert!(
        matches!(err, WanError::Config { .. })
            && err.to_string().contains("config.json")
            && err.to_string().contains("added_kv_proj_dim"),
        "{err}"
    );
    std::fs::write(&cfg, "{ not json").expect("write");
    assert!(matches!(WanTransformer::load(dir.path()), Err(WanError::Json { .. })));
    std::fs::remove_file(&cfg).expect("remove");
    assert!(matches!(WanTransformer::load(dir.path()), Err(WanError::Io { .. })));
}
