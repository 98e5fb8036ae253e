//! One `.safetensors` file, memory-mapped: its validated tensor table, and tensors read out as f32.
//!
//! The header is parsed and validated by the `safetensors` crate (offsets contiguous, sizes
//! consistent with dtype × shape, no overflow). When it rejects a file whose data section is
//! shorter than the header promises, we re-read the header to name the first tensor that is cut
//! off, so a truncated download says which tensor (and file) is damaged.
//!
//! Reading a tensor converts F32 / BF16 / F16 (little-endian) to f32 and rejects NaN and ±inf:
//! a non-finite weight would otherwise surface much later as a NaN video.

use crate::wan::error::WanError;
use half::{bf16, f16};
use longshot_kernels::mmap::MappedFile;
use safetensors::tensor::TensorInfo;
use safetensors::{Dtype, SafeTensorError, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Where one tensor's bytes sit in the file.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorEntry {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Absolute byte range in the file.
    pub bytes: std::ops::Range<usize>,
}

/// An open, validated safetensors file.
#[derive(Debug)]
pub struct SafetensorsFile {
    path: PathBuf,
    map: MappedFile,
    tensors: BTreeMap<String, TensorEntry>,
}

impl SafetensorsFile {
    /// Maps and validates `path`. Fails on unreadable, malformed or truncated files.
    pub fn open(path: &Path) -> Result<Self, WanError> {
        let map = MappedFile::open(path).map_err(|e| WanError::io(path, e))?;
        let (header_len, metadata) = match SafeTensors::read_metadata(map.bytes()) {
            Ok(v) => v,
            Err(SafeTensorError::MetadataIncompleteBuffer) => return Err(diagnose_size_mismatch(path, map.bytes())),
            Err(e) => return Err(format_error(path, e)),
        };
        let data_start = 8 + header_len;
        let tensors = metadata
            .tensors()
            .into_iter()
            .map(|(name, info)| {
                let (s, e) = info.data_offsets;
                let entry = TensorEntry {
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    bytes: data_start + s..data_start + e,
                };
                (name, entry)
            })
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            map,
            tensors,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn entry(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.get(name)
    }

    /// The tensor `name` converted to f32, checked finite. The shape is not checked here.
    pub fn read_f32(&self, name: &str) -> Result<Vec<f32>, WanError> {
        let entry = self.tensors.get(name).ok_or_else(|| WanError::MissingFromShard {
            path: self.path.clone(),
            tensor: name.to_string(),
        })?;
        let raw = &self.map.bytes()[entry.bytes.clone()];
        let values: Vec<f32> = match entry.dtype {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(WanError::Dtype {
                    path: self.path.clone(),
                    tensor: name.to_string(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(WanError::NonFinite {
                path: self.path.clone(),
                tensor: name.to_string(),
                index,
                value,
            });
        }
        Ok(values)
    }
}

fn format_error(path: &Path, e: SafeTensorError) -> WanError {
    let reason = match e {
        SafeTensorError::HeaderTooSmall => "shorter than the 8-byte header length".to_string(),
        SafeTensorError::InvalidHeaderLength => "the header length runs past the end of the file".to_string(),
        SafeTensorError::InvalidHeaderDeserialization | SafeTensorError::InvalidHeader => {
            "the header is not valid UTF-8 JSON".to_string()
        }
        SafeTensorError::InvalidOffset(t) => format!("tensor '{t}' has invalid data offsets"),
        other => format!("{other}"),
    };
    WanError::Format {
        path: path.to_path_buf(),
        reason,
    }
}

/// The header parsed fine but the data section is not exactly the size it declares: name the
/// first tensor (in file order) that does not fit, or report trailing bytes.
fn diagnose_size_mismatch(path: &Path, bytes: &[u8]) -> WanError {
    let fallback = |reason: &str| WanError::Format {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    // `read_metadata` already checked the 8-byte length, its bound and the UTF-8 JSON.
    let Some(len_bytes) = bytes.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) else {
        return fallback("data section size mismatch");
    };
    let header_len = u64::from_le_bytes(len_bytes) as usize;
    let Some(header) = bytes.get(8..8 + header_len) else {
        return fallback("data section size mismatch");
    };
    let Ok(raw) = serde_json::from_slice::<HashMap<String, serde_json::Value>>(header) else {
        return fallback("data section size mismatch");
    };
    let available = bytes.len() - 8 - header_len;
    let mut infos: Vec<(String, TensorInfo)> = raw
        .into_iter()
        .filter(|(k, _)| k != "__metadata__")
        .filter_map(|(k, v)| serde_json::from_value::<TensorInfo>(v).ok().map(|i| (k, i)))
        .collect();
    infos.sort_by_key(|(_, i)| i.data_offsets);
    match infos.iter().find(|(_, i)| i.data_offsets.1 > available) {
        Some((name, info)) => WanError::Truncated {
            path: path.to_path_buf(),
            tensor: name.clone(),
            start: info.data_offsets.0,
            end: info.data_offsets.1,
            available,
        },
        None => {
            let end = infos.last().map_or(0, |(_, i)| i.data_offsets.1);
            fallback(&format!(
                "{} bytes follow the last tensor's data",
                available.saturating_sub(end)
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;

    fn write(dir: &Path, name: &str, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) -> PathBuf {
        let views: Vec<(String, TensorView<'_>)> = tensors
            .iter()
            .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).expect("view")))
            .collect();
        let bytes = safetensors::serialize(views, &None).expect("serialize");
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("write");
        path
    }

    #[test]
    fn reads_all_float_dtypes_and_rejects_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vals = [1.5f32, -2.25, 0.0, 3.0];
        let f32b: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let bf: Vec<u8> = vals.iter().flat_map(|v| bf16::from_f32(*v).to_le_bytes()).collect();
        let hf: Vec<u8> = vals.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect();
        let ints: Vec<u8> = [1i32, 2].iter().flat_map(|v| v.to_le_bytes()).collect();
        let p = write(
            dir.path(),
            "t.safetensors",
            &[
                ("a", Dtype::F32, vec![2, 2], f32b),
                ("b", Dtype::BF16, vec![4], bf),
                ("c", Dtype::F16, vec![1, 4], hf),
                ("i", Dtype::I32, vec![2], ints),
            ],
        );
        let f = SafetensorsFile::open(&p).expect("open");
        for n in ["a", "b", "c"] {
            assert_eq!(f.read_f32(n).expect(n), vals.to_vec(), "{n}");
        }
        assert_eq!(f.entry("c").map(|e| e.shape.clone()), Some(vec![1, 4]));
        assert!(matches!(f.read_f32("i"), Err(WanError::Dtype { .. })));
        assert!(matches!(f.read_f32("zz"), Err(WanError::MissingFromShard { .. })));
    }

    #[test]
    fn garbage_and_trailing_bytes_are_format_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("junk.safetensors");
        std::fs::write(&p, b"not a safetensors file at all").expect("write");
        let e = SafetensorsFile::open(&p).expect_err("junk");
        assert!(matches!(e, WanError::Format { .. }), "{e}");
        let good = write(
            dir.path(),
            "g.safetensors",
            &[("a", Dtype::F32, vec![1], 1f32.to_le_bytes().to_vec())],
        );
        let mut bytes = std::fs::read(&good).expect("read");
        bytes.extend_from_slice(&[0, 0]);
        std::fs::write(&good, bytes).expect("write");
        let e = SafetensorsFile::open(&good).expect_err("trailing");
        assert!(e.to_string().contains("2 bytes follow"), "{e}");
    }
}
