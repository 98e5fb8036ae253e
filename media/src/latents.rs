//! Latents as safetensors: one named f32 tensor plus string metadata (model, seed, prompt, …).
//!
//! Saving the final latents next to a clip lets it be re-decoded (another VAE, another
//! format) without re-running diffusion; the metadata records how they were made.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::staging::StagedOutput;
use crate::MediaError;

/// One latent tensor as stored on disk.
#[derive(Clone, Debug, PartialEq)]
pub struct Latents {
    /// Tensor name inside the file, e.g. `"latents"`.
    pub name: String,
    /// Row-major shape; its product equals `data.len()`.
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
    /// Free-form provenance, stored in the safetensors `__metadata__` header.
    pub metadata: BTreeMap<String, String>,
}

/// Writes `latents` to `path` (via `path.partial`, renamed when complete); returns bytes written.
pub fn write_latents(path: &Path, latents: &Latents) -> Result<u64, MediaError> {
    let bad = |reason: String| MediaError::Latents {
        path: path.to_path_buf(),
        tensor: latents.name.clone(),
        reason,
    };
    if latents.name.is_empty() {
        return Err(bad("tensor name must not be empty".into()));
    }
    let elements =
        checked_product(&latents.shape).ok_or_else(|| bad(format!("shape {:?} overflows usize", latents.shape)))?;
    if elements != latents.data.len() {
        return Err(bad(format!(
            "shape {:?} needs {elements} values but {} were given",
            latents.shape,
            latents.data.len()
        )));
    }
    // safetensors stores little-endian; converting value by value needs no byte reinterpretation.
    let bytes: Vec<u8> = latents.data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = TensorView::new(Dtype::F32, latents.shape.clone(), &bytes)
        .map_err(|e| bad(format!("cannot build tensor view: {e}")))?;
    let metadata: HashMap<String, String> = latents.metadata.clone().into_iter().collect();
    let mut staged = StagedOutput::new(path)?;
    safetensors::serialize_to_file([(latents.name.as_str(), view)], &Some(metadata), staged.partial()).map_err(
        |e| MediaError::Safetensors {
            path: path.to_path_buf(),
            message: format!("cannot write: {e}"),
        },
    )?;
    staged.commit()
}

/// Reads tensor `name` from `path`, which must be f32; if `expected_shape` is given the
/// stored shape must equal it.
pub fn read_latents(path: &Path, name: &str, expected_shape: Option<&[usize]>) -> Result<Latents, MediaError> {
    let buffer = std::fs::read(path).map_err(|e| MediaError::io(format!("cannot read {}", path.display()), e))?;
    let not_safetensors = |e: safetensors::SafeTensorError| MediaError::Safetensors {
        path: path.to_path_buf(),
        message: format!("not a valid safetensors file ({e})"),
    };
    let (_, header) = SafeTensors::read_metadata(&buffer).map_err(not_safetensors)?;
    let tensors = SafeTensors::deserialize(&buffer).map_err(not_safetensors)?;
    let bad = |reason: String| MediaError::Latents {
        path: path.to_path_buf(),
        tensor: name.to_string(),
        reason,
    };
    let view = tensors.tensor(name).map_err(|_| {
        let mut names = tensors.names();
        names.sort();
        bad(format!("no such tensor; the file holds {names:?}"))
    })?;
    if view.dtype() != Dtype::F32 {
        return Err(bad(format!("dtype is {:?}, expected F32", view.dtype())));
    }
    if let Some(expected) = expected_shape {
        if view.shape() != expected {
            return Err(bad(format!("shape is {:?}, expected {expected:?}", view.shape())));
        }
    }
    let data = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let metadata = header
        .metadata()
        .clone()
        .map(|m| m.into_iter().collect())
        .unwrap_or_default();
    Ok(Latents {
        name: name.to_string(),
        shape: view.shape().to_vec(),
        data,
        metadata,
    })
}

fn checked_product(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}
