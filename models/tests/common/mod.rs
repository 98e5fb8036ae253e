//! Helpers shared by the Wan golden tests (`wan_transformer.rs`, `wan_vae.rs`, `wan_t5.rs`):
//! the fixture directory and its `manifest.json`, typed tensor readers for the goldens' SafeTensors
//! files, the relative error metric `max|ours − reference| / max|reference|`, and damaged
//! checkpoint copies in temporary directories for the loader-error tests.
//!
//! Included with `mod common;` from each test file; not every file uses every helper.

#![allow(dead_code)]

use longshot_models::wan::WanError;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `tests/fixtures/wan`, written by `scripts/goldens/wan.py`. `LONGSHOT_WAN_FIXTURES` overrides
/// the path, for test binaries run away from the build tree (the GPU device harness).
pub fn fixtures() -> PathBuf {
    match std::env::var_os("LONGSHOT_WAN_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wan"),
    }
}

/// The manifest entry of case `name` under `components.<component>`; panics (naming the golden
/// script) when the manifest, the component or the case is missing.
pub fn manifest_entry(component: &str, name: &str) -> serde_json::Value {
    let path = fixtures().join("manifest.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run scripts/goldens/wan.py --only {component})",
            path.display()
        )
    });
    let manifest: serde_json::Value = serde_json::from_str(&text).expect("manifest.json is JSON");
    let cases = manifest["components"][component]
        .as_array()
        .unwrap_or_else(|| panic!("manifest lists {component} cases (run scripts/goldens/wan.py --only {component})"));
    cases
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{component} case '{name}' missing from the manifest"))
        .clone()
}

/// A path-valued field of a manifest entry, resolved against [`fixtures`].
pub fn fixture_path(entry: &serde_json::Value, key: &str) -> PathBuf {
    fixtures().join(
        entry[key]
            .as_str()
            .unwrap_or_else(|| panic!("case {} has no '{key}'", entry["name"])),
    )
}

/// A model case: its checkpoint directory and its inputs/expected-values file.
pub struct Case {
    pub model_dir: PathBuf,
    pub inputs: PathBuf,
}

/// The `model_dir` and `inputs` of case `name` under `components.<component>`.
pub fn case(component: &str, name: &str) -> Case {
    let entry = manifest_entry(component, name);
    Case {
        model_dir: fixture_path(&entry, "model_dir"),
        inputs: fixture_path(&entry, "inputs"),
    }
}

/// Every one of `names` is listed under `components.<component>` and its model directory and
/// inputs file exist (so a dropped case fails rather than vanishes).
pub fn assert_cases_exist(component: &str, names: &[&str]) {
    for name in names {
        let c = case(component, name);
        assert!(c.model_dir.is_dir(), "{name}: {} missing", c.model_dir.display());
        assert!(c.inputs.is_file(), "{name}: {} missing", c.inputs.display());
    }
}

// ---------------------------------------------------------------------------------------------
// Tensor readers (little-endian payloads, shape alongside).
// ---------------------------------------------------------------------------------------------

fn view<'a>(st: &'a SafeTensors<'_>, name: &str) -> TensorView<'a> {
    st.tensor(name).unwrap_or_else(|e| panic!("tensor '{name}': {e}"))
}

fn f32s(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn f64s(bytes: &[u8]) -> impl Iterator<Item = f64> + '_ {
    bytes
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
}

fn i64s(bytes: &[u8]) -> impl Iterator<Item = i64> + '_ {
    bytes
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
}

/// An F32 tensor with its shape (any other dtype panics).
pub fn tensor_f32(st: &SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = view(st, name);
    assert_eq!(t.dtype(), Dtype::F32, "tensor '{name}'");
    (t.shape().to_vec(), f32s(t.data()).collect())
}

/// An F32 or I64 tensor as f32 (timesteps may be int64), with its shape.
pub fn tensor_f32_or_i64(st: &SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = view(st, name);
    let data = match t.dtype() {
        Dtype::F32 => f32s(t.data()).collect(),
        Dtype::I64 => i64s(t.data()).map(|v| v as f32).collect(),
        other => panic!("tensor '{name}' has dtype {other:?}"),
    };
    (t.shape().to_vec(), data)
}

/// An F32 or F64 tensor as f64, with its shape.
pub fn tensor_f64(st: &SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<f64>) {
    let t = view(st, name);
    let data = match t.dtype() {
        Dtype::F32 => f32s(t.data()).map(f64::from).collect(),
        Dtype::F64 => f64s(t.data()).collect(),
        other => panic!("tensor '{name}' has dtype {other:?}"),
    };
    (t.shape().to_vec(), data)
}

/// An I64 tensor with its shape (any other dtype panics).
pub fn tensor_i64(st: &SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<i64>) {
    let t = view(st, name);
    assert_eq!(t.dtype(), Dtype::I64, "tensor '{name}'");
    (t.shape().to_vec(), i64s(t.data()).collect())
}

/// `max|got − want| / max|want|` in f64 (normalised by the reference's scale, so near-zero
/// elements do not dominate). Panics if the lengths differ.
pub fn rel_error<W: Copy + Into<f64>>(got: &[f32], want: &[W]) -> f64 {
    assert_eq!(got.len(), want.len(), "output length");
    let diff = got
        .iter()
        .zip(want)
        .map(|(a, b)| (*a as f64 - (*b).into()).abs())
        .fold(0.0, f64::max);
    let scale = want.iter().map(|b| (*b).into().abs()).fold(0.0, f64::max);
    diff / scale
}

/// [`rel_error`] of `got` against `want`, printed after `what` and asserted to be at most
/// `tolerance`; returns it.
pub fn assert_rel_error<W: Copy + Into<f64>>(what: &str, got: &[f32], want: &[W], tolerance: f64) -> f64 {
    let err = rel_error(got, want);
    println!("{what}: max|a-b|/max|b| = {err:.3e}");
    assert!(err <= tolerance, "{what}: relative error {err:.3e} > {tolerance:e}");
    err
}

// ---------------------------------------------------------------------------------------------
// Damaged checkpoint copies.
// ---------------------------------------------------------------------------------------------

/// A checkpoint's tensors by name, editable: dtype, shape, raw bytes.
pub type Tensors = BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>;

/// All tensors of a safetensors file.
pub fn read_tensors(path: &Path) -> Tensors {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    st.tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect()
}

/// `tensors` as safetensors file bytes.
pub fn serialize(tensors: &Tensors) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).expect("view")))
        .collect();
    safetensors::serialize(views, &None).expect("serialize")
}

/// A temporary checkpoint directory: `config.json` copied from `config`, and `weights` written as
/// `weights_name`. Returns the directory guard and the weights path.
pub fn damaged_dir(config: &Path, weights_name: &str, weights: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(config, dir.path().join("config.json")).expect("copy config");
    let path = dir.path().join(weights_name);
    std::fs::write(&path, weights).expect("write weights");
    (dir, path)
}

/// Rewrites `src` (a safetensors file) into `dir/name`, dropping the tensor `drop` and adding a
/// one-element F32 tensor named `extra`.
pub fn rewrite(src: &Path, dir: &Path, name: &str, drop: &str, extra: Option<&str>) -> PathBuf {
    let mut tensors = read_tensors(src);
    tensors.remove(drop);
    if let Some(e) = extra {
        tensors.insert(e.to_string(), (Dtype::F32, vec![1], 1.0f32.to_le_bytes().to_vec()));
    }
    let out = dir.join(name);
    std::fs::write(&out, serialize(&tensors)).expect("write");
    out
}

/// Asserts that a loader error's message names `file` and contains `what` (a tensor name or a
/// config detail).
pub fn assert_names(err: &WanError, file: &Path, what: &str) {
    let msg = err.to_string();
    assert!(msg.contains(&file.display().to_string()), "no file in: {msg}");
    assert!(msg.contains(what), "no '{what}' in: {msg}");
}
