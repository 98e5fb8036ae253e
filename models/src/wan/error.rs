//! Errors of the Wan2.1 port: loading (every variant names the file and, where there is one, the
//! tensor) and input validation at the forward's edge.

use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum WanError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    #[error("{path}: invalid JSON: {source}")]
    Json { path: PathBuf, source: serde_json::Error },

    #[error("{path}: {reason}")]
    Config { path: PathBuf, reason: String },

    #[error("{path}: not a valid safetensors file: {reason}")]
    Format { path: PathBuf, reason: String },

    #[error("{path}: tensor '{tensor}' needs data bytes {start}..{end} but the file holds only {available} (truncated file?)")]
    Truncated {
        path: PathBuf,
        tensor: String,
        start: usize,
        end: usize,
        available: usize,
    },

    #[error("tensor '{tensor}' not found in {searched}")]
    MissingTensor { tensor: String, searched: String },

    #[error("{path}: tensor '{tensor}' is listed by the index but not stored in the file")]
    MissingFromShard { path: PathBuf, tensor: String },

    #[error("{path}: tensor '{tensor}' also appears in {other}")]
    DuplicateTensor {
        path: PathBuf,
        tensor: String,
        other: PathBuf,
    },

    #[error("{path}: tensor '{tensor}' has shape {got:?}, expected {want:?}")]
    Shape {
        path: PathBuf,
        tensor: String,
        got: Vec<usize>,
        want: Vec<usize>,
    },

    #[error("{path}: tensor '{tensor}' has dtype {dtype}; only F32, BF16 and F16 weights are supported")]
    Dtype {
        path: PathBuf,
        tensor: String,
        dtype: String,
    },

    #[error("{path}: tensor '{tensor}' holds a non-finite value ({value}) at flat index {index}")]
    NonFinite {
        path: PathBuf,
        tensor: String,
        index: usize,
        value: f32,
    },

    #[error("{path}: {count} tensor(s) the model does not use, e.g. '{example}' (a different model variant?)")]
    UnusedTensors {
        path: PathBuf,
        count: usize,
        example: String,
    },

    #[error("invalid input: {0}")]
    Input(String),
}

impl WanError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        WanError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn config(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        WanError::Config {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl From<WanError> for longshot_core::denoiser::DenoiseError {
    fn from(e: WanError) -> Self {
        longshot_core::denoiser::DenoiseError::Model(e.to_string())
    }
}

/// Reads and parses a JSON file, with errors naming the file.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T, WanError> {
    let text = std::fs::read_to_string(path).map_err(|e| WanError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| WanError::Json {
        path: path.to_path_buf(),
        source: e,
    })
}
