//! `longshot dev sample` against the real diffusers `WanPipeline` (f32, CPU) on the tiny pipeline
//! fixture `models/tests/fixtures/wan/pipeline_tiny` (made by `scripts/goldens/wan.py`, component
//! `pipeline`): the same latents, prompt embeddings, steps, guidance and shift; the final latents
//! and the decoded video [F,H,W,3] must agree. Likewise video-to-video against the real
//! `WanVideoToVideoPipeline` (`pipeline_v2v`, component `video2video`): the same input video,
//! noise and strength.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_longshot");
/// Relative tolerance, max |a − b| / max |b|.
const TOL: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/wan")
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
    assert_eq!(t.dtype(), safetensors::Dtype::F32, "{} {name}", path.display());
    let data = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (t.shape().to_vec(), data)
}

/// The manifest's entry for `name` under `components.<component>`; missing is a failure.
fn case(component: &str, name: &str) -> serde_json::Value {
    let path = fixtures().join("manifest.json");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let manifest: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let cases = manifest["components"][component]
        .as_array()
        .unwrap_or_else(|| panic!("{component} cases in the manifest (run scripts/goldens/wan.py --only {component})"));
    cases
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {component} case {name} in the manifest"))
        .clone()
}

fn check(component: &str, name: &str, solver: &str) {
    let c = case(component, name);
    assert_eq!(c["solver"], solver, "{name}");
    let model = fixtures().join(c["model_dir"].as_str().unwrap());
    let inputs = fixtures().join(c["inputs"].as_str().unwrap());
    assert!(
        model.join("model_index.json").is_file(),
        "{name}: missing {}",
        model.display()
    );
    assert!(inputs.is_file(), "{name}: missing {}", inputs.display());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.safetensors");
    let strength: Vec<String> = match c["strength"].as_f64() {
        Some(s) => vec!["--strength".into(), s.to_string()],
        None => Vec::new(),
    };
    let run = Command::new(BIN)
        .args(["dev", "sample", "--model"])
        .arg(&model)
        .arg("--inputs")
        .arg(&inputs)
        .args(["--steps", &c["steps"].as_u64().unwrap().to_string()])
        .args(["--guidance", &c["guidance"].as_f64().unwrap().to_string()])
        .args(["--shift", &c["shift"].as_f64().unwrap().to_string()])
        .args(["--solver", solver])
        .args(&strength)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(run.status.success(), "{name}: {}", String::from_utf8_lossy(&run.stderr));

    let (shape, got) = tensor(&out, "latents");
    let (want_shape, want) = tensor(&inputs, "expected_latents");
    assert_eq!(shape, want_shape, "{name} latents");
    let latents_err = rel_error(&got, &want);

    let (shape, got) = tensor(&out, "video");
    let (want_shape, want) = tensor(&inputs, "expected_video");
    assert_eq!(shape, want_shape, "{name} video");
    let video_err = rel_error(&got, &want);
    assert!(
        got.iter().all(|v| (0.0..=1.0).contains(v)),
        "{name}: video outside [0, 1]"
    );

    eprintln!("{name}: latents {latents_err:e}, video {video_err:e}");
    assert!(
        latents_err <= TOL,
        "{name}: final latents max error {latents_err:e} relative to max |diffusers| (video {video_err:e})"
    );
    assert!(
        video_err <= TOL,
        "{name}: video max error {video_err:e} relative to max |diffusers|"
    );
}

#[test]
fn dev_sample_unipc_matches_wan_pipeline() {
    check("pipeline", "pipeline_tiny_unipc", "unipc");
}

#[test]
fn dev_sample_euler_matches_wan_pipeline() {
    check("pipeline", "pipeline_tiny_euler", "euler");
}

#[test]
fn dev_sample_video_to_video_unipc_matches_wan_video_to_video_pipeline() {
    check("video2video", "v2v_unipc", "unipc");
}

#[test]
fn dev_sample_video_to_video_euler_matches_wan_video_to_video_pipeline() {
    check("video2video", "v2v_euler", "euler");
}

/// Image-to-video against the real `WanImageToVideoPipeline` (`pipeline_i2v`, component
/// `image2video`): the image through CLIP and the VAE condition, 36 input channels. CLIP's
/// resize is Pillow's, ported exactly, so the tolerance stays 1e-4 with it on the path.
#[test]
fn dev_sample_image_to_video_matches_wan_image_to_video_pipeline() {
    check("image2video", "i2v", "unipc");
}

#[test]
fn dev_sample_first_and_last_frame_matches_wan_image_to_video_pipeline() {
    check("image2video", "flf2v", "unipc");
}

#[test]
fn dev_sample_image_to_video_with_clip_resize_matches_wan_image_to_video_pipeline() {
    check("image2video", "i2v_resized", "unipc");
}
