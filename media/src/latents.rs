//! Latents as safetensors: one named f32 tensor plus string metadata (model, seed, prompt, …).
//!
//! Saving the final latents next to a clip lets it be re-decoded (another VAE, another
//! format) without re-running diffusion; the metadata records how they were made.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors};

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
    let mut w = LatentsWriter::create(path, &latents.name, &latents.shape, &latents.metadata)?;
    if w.values() != latents.data.len() {
        return Err(w.bad(format!(
            "shape {:?} needs {} values but {} were given",
            latents.shape,
            w.values(),
            latents.data.len()
        )));
    }
    if !latents.data.is_empty() {
        w.write_frames(0, &latents.data)?;
    }
    w.finish()
}

/// A latents file written in pieces: the header first (the shape is known up front), then
/// ranges of the first dimension ("frames") in any order, each at its offset. Whoever assembles a
/// clip's latents never holds the whole tensor. Not committed (the `.partial` file is removed)
/// unless [`LatentsWriter::finish`] finds every frame written.
///
/// The bytes are those of a safetensors file with one F32 tensor: an 8-byte little-endian
/// header length, the JSON header (`__metadata__` and the tensor, keys sorted, so equal inputs
/// give equal bytes) padded with spaces to a multiple of 8, then the values little-endian.
pub struct LatentsWriter {
    staged: StagedOutput,
    file: std::fs::File,
    name: String,
    data_start: u64,
    /// Values per frame (the product of the shape after its first dimension).
    frame_values: usize,
    written: Vec<bool>,
}

impl LatentsWriter {
    /// Creates the file and writes its header; `shape[0]` counts the frames.
    pub fn create(
        path: &Path,
        name: &str,
        shape: &[usize],
        metadata: &BTreeMap<String, String>,
    ) -> Result<Self, MediaError> {
        let bad = |reason: String| MediaError::Latents {
            path: path.to_path_buf(),
            tensor: name.to_string(),
            reason,
        };
        if name.is_empty() || name == "__metadata__" {
            return Err(bad("tensor name must not be empty or __metadata__".into()));
        }
        let (&frames, rest) = shape
            .split_first()
            .ok_or_else(|| bad("shape must have at least one dimension".into()))?;
        let frame_values = checked_product(rest).ok_or_else(|| bad(format!("shape {shape:?} overflows usize")))?;
        let bytes = checked_product(shape)
            .and_then(|n| n.checked_mul(4))
            .ok_or_else(|| bad(format!("shape {shape:?} overflows usize")))?;
        let header = serde_json::json!({
            "__metadata__": metadata,
            name: {"dtype": "F32", "shape": shape, "data_offsets": [0, bytes]},
        });
        let mut header = serde_json::to_vec(&header).map_err(|e| bad(format!("cannot encode the header: {e}")))?;
        header.resize(header.len().div_ceil(8) * 8, b' ');
        let staged = StagedOutput::new(path)?;
        let io = |what: &str, e| MediaError::io(format!("{what} {}", staged.partial().display()), e);
        let file = std::fs::File::create(staged.partial()).map_err(|e| io("cannot create", e))?;
        let data_start = 8 + header.len() as u64;
        file.write_all_at(&(header.len() as u64).to_le_bytes(), 0)
            .and_then(|()| file.write_all_at(&header, 8))
            .and_then(|()| file.set_len(data_start + bytes as u64))
            .map_err(|e| io("cannot write", e))?;
        Ok(Self {
            staged,
            file,
            name: name.to_string(),
            data_start,
            frame_values,
            written: vec![false; frames],
        })
    }

    /// Values the whole tensor holds.
    pub fn values(&self) -> usize {
        self.written.len() * self.frame_values
    }

    fn bad(&self, reason: String) -> MediaError {
        MediaError::Latents {
            path: self.staged.target().to_path_buf(),
            tensor: self.name.clone(),
            reason,
        }
    }

    /// Writes frames `first..first + data.len() / frame_values`; each frame once.
    pub fn write_frames(&mut self, first: usize, data: &[f32]) -> Result<(), MediaError> {
        let fv = self.frame_values.max(1);
        if !data.len().is_multiple_of(fv) || (self.frame_values == 0 && !data.is_empty()) {
            return Err(self.bad(format!("{} values are not whole frames of {fv}", data.len())));
        }
        let count = data.len() / fv;
        let range = first..first.saturating_add(count);
        if range.end > self.written.len() {
            return Err(self.bad(format!("frames {range:?} are outside 0..{}", self.written.len())));
        }
        if let Some(dup) = range.clone().find(|&f| self.written[f]) {
            return Err(self.bad(format!("frame {dup} was already written")));
        }
        // safetensors stores little-endian; converting value by value needs no reinterpretation.
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        let offset = self.data_start + (first * self.frame_values * 4) as u64;
        self.file
            .write_all_at(&bytes, offset)
            .map_err(|e| MediaError::io(format!("cannot write {}", self.staged.partial().display()), e))?;
        self.written[range].iter_mut().for_each(|w| *w = true);
        Ok(())
    }

    /// Checks that every frame was written, syncs, and renames the file into place; returns its
    /// size in bytes.
    pub fn finish(mut self) -> Result<u64, MediaError> {
        if let Some(missing) = self.written.iter().position(|w| !w) {
            return Err(self.bad(format!("frame {missing} was never written")));
        }
        self.file
            .sync_all()
            .map_err(|e| MediaError::io(format!("cannot sync {}", self.staged.partial().display()), e))?;
        self.staged.commit()
    }
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

/// Frames `frames` (ranges of the first dimension) of the F32 tensor `name` in the safetensors file
/// `path`, whose shape must be `shape`. Reads the header and just those bytes: a caller that needs
/// one shard's frames never holds the whole tensor. Blocking.
pub fn read_latent_frames(
    path: &Path,
    name: &str,
    shape: &[usize],
    frames: std::ops::Range<usize>,
) -> Result<Vec<f32>, MediaError> {
    let io = |e| MediaError::io(format!("cannot read {}", path.display()), e);
    let bad = |reason: String| MediaError::Latents {
        path: path.to_path_buf(),
        tensor: name.to_string(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let mut len = [0u8; 8];
    file.read_exact_at(&mut len, 0).map_err(io)?;
    let len = u64::from_le_bytes(len);
    if len > MAX_HEADER_BYTES || len.saturating_add(8) > size {
        return Err(bad(format!(
            "a header of {len} bytes does not fit the file's {size} bytes (at most {MAX_HEADER_BYTES})"
        )));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact_at(&mut header, 8).map_err(io)?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| bad(format!("the header is not JSON: {e}")))?;
    let t = header.get(name).ok_or_else(|| bad("no such tensor".into()))?;
    if t.get("dtype").and_then(|d| d.as_str()) != Some("F32") {
        return Err(bad(format!(
            "dtype is {}, expected F32",
            t.get("dtype").unwrap_or(&serde_json::Value::Null)
        )));
    }
    let stored: Option<Vec<usize>> = t
        .get("shape")
        .and_then(|s| s.as_array())
        .and_then(|a| a.iter().map(|d| d.as_u64().map(|d| d as usize)).collect());
    if stored.as_deref() != Some(shape) {
        return Err(bad(format!("shape is {stored:?}, expected {shape:?}")));
    }
    let start = t
        .get("data_offsets")
        .and_then(|o| o.get(0))
        .and_then(|o| o.as_u64())
        .ok_or_else(|| bad("no data_offsets".into()))?;
    let frame_values = checked_product(&shape[1..]).ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;
    if frames.start > frames.end || frames.end > shape[0] {
        return Err(bad(format!("frames {frames:?} are outside the tensor's {}", shape[0])));
    }
    let mut bytes = vec![0u8; frames.len() * frame_values * 4];
    let at = 8 + len + start + (frames.start * frame_values * 4) as u64;
    file.read_exact_at(&mut bytes, at).map_err(io)?;
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// Safetensors' own limit on a header's size.
const MAX_HEADER_BYTES: u64 = 100_000_000;

fn checked_product(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}
