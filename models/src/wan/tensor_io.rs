//! Named-tensor safetensors files for the `longshot dev` commands: read any of f32 / f64 / bf16 /
//! f16 / i64 / i32 as f32 (timesteps arrive as int64 from PyTorch), write f32.

use crate::wan::WanError;
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::Path;

/// A tensor read as f32.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Reads `names` from `path`; every one must be present.
pub fn read(path: &Path, names: &[&str]) -> Result<BTreeMap<String, Tensor>, WanError> {
    let bytes = std::fs::read(path).map_err(|source| WanError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| WanError::Format {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut out = BTreeMap::new();
    for &name in names {
        let view = st.tensor(name).map_err(|_| WanError::MissingTensor {
            tensor: name.to_string(),
            searched: path.display().to_string(),
        })?;
        let raw = view.data();
        let bad = |reason: String| WanError::Format {
            path: path.to_path_buf(),
            reason: format!("tensor '{name}': {reason}"),
        };
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F64 => raw
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::I64 => raw
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
            Dtype::I32 => raw
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
                .collect(),
            other => {
                return Err(bad(format!(
                    "dtype {other:?} is not one of f32, f64, bf16, f16, i64, i32"
                )))
            }
        };
        if data.iter().any(|v| !v.is_finite()) {
            return Err(bad("contains NaN or infinite values".into()));
        }
        out.insert(
            name.to_string(),
            Tensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok(out)
}

/// Writes f32 tensors to `path`.
pub fn write(path: &Path, tensors: &[(&str, &Tensor)]) -> Result<(), WanError> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, t)| t.data.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views: Vec<(&str, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, t), b)| {
            safetensors::tensor::TensorView::new(Dtype::F32, t.shape.clone(), b)
                .map(|v| (*name, v))
                .map_err(|e| WanError::Format {
                    path: path.to_path_buf(),
                    reason: format!("tensor '{name}': {e}"),
                })
        })
        .collect::<Result<_, _>>()?;
    safetensors::serialize_to_file(views, &None, path).map_err(|e| WanError::Format {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}
