//! `longshot dev …` as an outside check would call it, on the diffusers golden fixtures of
//! `models/tests/fixtures/wan` (made by `scripts/goldens/wan.py`).

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_longshot");

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/wan")
}

/// A pipeline directory holding only the fixture's `component` (`transformer` or `vae`).
fn pipeline_with(case: &str, component: &str, class: &str, dir: &Path) -> PathBuf {
    let root = dir.join(case);
    std::fs::create_dir_all(&root).unwrap();
    let index = format!(r#"{{"_class_name": "WanPipeline", "{component}": ["diffusers", "{class}"]}}"#);
    std::fs::write(root.join("model_index.json"), index).unwrap();
    std::os::unix::fs::symlink(fixtures().join(case).join(component), root.join(component)).unwrap();
    root
}

fn pipeline_with_transformer(case: &str, dir: &Path) -> PathBuf {
    pipeline_with(case, "transformer", "WanTransformer3DModel", dir)
}

/// max |a − b| / max |b|.
fn rel_error(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    got.iter().zip(want).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale
}

fn tensor(path: &Path, name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st
        .tensor(name)
        .unwrap_or_else(|_| panic!("{} has no {name}", path.display()));
    let data = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (t.shape().to_vec(), data)
}

/// Runs `longshot dev <command>` on each case's `<component>` (a pipeline directory made around
/// the fixture) with the case file as IN, and checks OUT's `output` against the case's `expected`
/// (max error 1e-5 relative to max |reference|).
fn check_component(command: &str, component: &str, class: &str, cases: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    for case in cases {
        let model = pipeline_with(case, component, class, tmp.path());
        let inputs = fixtures().join("cases").join(format!("{case}.safetensors"));
        let out = tmp.path().join(format!("{case}-out.safetensors"));
        let run = Command::new(BIN)
            .args(["dev", command, "--model"])
            .arg(&model)
            .arg("--inputs")
            .arg(&inputs)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(run.status.success(), "{case}: {}", String::from_utf8_lossy(&run.stderr));
        let (shape, got) = tensor(&out, "output");
        let (want_shape, want) = tensor(&inputs, "expected");
        assert_eq!(shape, want_shape, "{case}");
        let err = rel_error(&got, &want);
        assert!(err <= 1e-5, "{case}: max error {err:e} relative to max |reference|");
    }
}

#[test]
fn dev_dit_matches_diffusers() {
    check_component(
        "dit",
        "transformer",
        "WanTransformer3DModel",
        &["unit_test", "pipeline_test", "i2v_test", "flf2v_test"],
    );
}

#[test]
fn dev_dit_names_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let model = pipeline_with_transformer("unit_test", tmp.path());
    // Inputs without `timestep`.
    let bad = tmp.path().join("bad.safetensors");
    let hs = vec![0u8; 4 * 4 * 2 * 16 * 16];
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1, 4, 2, 16, 16], &hs).unwrap();
    safetensors::serialize_to_file(vec![("hidden_states", view)], &None, &bad).unwrap();
    let run = Command::new(BIN)
        .args(["dev", "dit", "--model"])
        .arg(&model)
        .arg("--inputs")
        .arg(&bad)
        .arg("--out")
        .arg(tmp.path().join("o"))
        .output()
        .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("timestep") && err.contains("bad.safetensors"), "{err}");
    // A directory that is not a pipeline.
    let run = Command::new(BIN)
        .args(["dev", "dit", "--model"])
        .arg(tmp.path())
        .arg("--inputs")
        .arg(&bad)
        .arg("--out")
        .arg(tmp.path().join("o"))
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("model_index.json"));
}

#[test]
fn dev_text_encode_matches_the_pipeline() {
    let tmp = tempfile::tempdir().unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("manifest.json")).unwrap()).unwrap();
    let cases = manifest["components"]["t5"]
        .as_array()
        .expect("t5 cases in the manifest");
    let case = cases
        .iter()
        .find(|c| c["name"] == "simple")
        .expect("the 'simple' t5 case");
    let prompt = case["prompt"].as_str().unwrap();
    let seq_len = case["seq_len"].as_u64().unwrap() as usize;
    let out = tmp.path().join("embeds.safetensors");
    let run = Command::new(BIN)
        .args(["dev", "text-encode", "--model"])
        .arg(fixtures().join("umt5_tiny"))
        .args(["--prompt", prompt, "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let (shape, got) = tensor(&out, "prompt_embeds");
    assert_eq!(shape, [1, 512, 32]);
    let (_, want) = tensor(&fixtures().join("cases/t5.safetensors"), "simple.prompt_embeds");
    let d = 32;
    let err = rel_error(&got[..seq_len * d], &want[..seq_len * d]);
    assert!(err <= 1e-5, "max error {err:e}");
    assert!(
        got[seq_len * d..].iter().all(|&v| v == 0.0),
        "rows after the prompt must be zero"
    );
}

#[test]
fn dev_vae_decode_matches_diffusers() {
    check_component("vae-decode", "vae", "AutoencoderKLWan", &["vae_unit_test", "vae_small"]);
}

#[test]
fn dev_vae_encode_matches_diffusers() {
    check_component(
        "vae-encode",
        "vae",
        "AutoencoderKLWan",
        &["vae_enc_unit_test", "vae_enc_small"],
    );
}

#[test]
fn dev_image_encode_matches_transformers() {
    check_component(
        "image-encode",
        "image_encoder",
        "CLIPVisionModel",
        &["clip_test", "clip_vit_h_small"],
    );
}
