//! `MediaError`: every way an output writer or the latents reader can fail.
//!
//! Messages are lowercase, name the file or tool involved, and say what was expected.

use longshot_core::output::OutputKind;
use std::path::PathBuf;

/// Errors from the output writers and the safetensors latents functions.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The `VideoMeta` cannot be written by the chosen format.
    #[error("invalid video meta {width}x{height} at {fps} fps: {reason}")]
    InvalidMeta {
        width: u32,
        height: u32,
        fps: u32,
        reason: String,
    },

    /// A frame did not have `width * height * 3` bytes.
    #[error("frame {index} has {actual} bytes but a {width}x{height} rgb frame needs {expected}")]
    FrameLength {
        index: u64,
        width: u32,
        height: u32,
        expected: usize,
        actual: usize,
    },

    /// A frame writer was asked for an output that is not a video (latents).
    #[error("{0} is not a video format: frame writers write mp4, prores and png")]
    NotVideo(OutputKind),

    /// A filesystem operation failed; `action` says which and on what path.
    #[error("{action}: {source}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },

    /// OpenH264 rejected its configuration or a frame.
    #[error("h264 encoder failed on {path}: {message}")]
    Encoder { path: PathBuf, message: String },

    /// The MP4 muxer failed (usually an i/o failure underneath).
    #[error("mp4 muxing failed for {path}: {message}")]
    Mux { path: PathBuf, message: String },

    /// ProRes was requested on a machine without ffmpeg.
    #[error("ffmpeg not found on PATH: ProRes output needs ffmpeg; MP4 and PNG do not")]
    FfmpegNotFound,

    /// ffmpeg exited unsuccessfully or stopped reading frames.
    #[error("ffmpeg failed writing {path} ({status}); stderr tail: {stderr_tail}")]
    FfmpegFailed {
        path: PathBuf,
        status: String,
        stderr_tail: String,
    },

    /// The PNG encoder failed on one frame.
    #[error("png encoding failed for {path}: {message}")]
    Png { path: PathBuf, message: String },

    /// `finish` was called before any frame was written.
    #[error("no frames were written to {path}: an output needs at least one frame")]
    NoFrames { path: PathBuf },

    /// A safetensors file could not be parsed or written.
    #[error("safetensors file {path}: {message}")]
    Safetensors { path: PathBuf, message: String },

    /// A latent tensor is missing or has the wrong dtype or shape.
    #[error("tensor \"{tensor}\" in {path}: {reason}")]
    Latents {
        path: PathBuf,
        tensor: String,
        reason: String,
    },
}

impl MediaError {
    /// Wraps an `io::Error` with what was being done, e.g. `"cannot create /out/a.mp4"`.
    pub(crate) fn io(action: impl Into<String>, source: std::io::Error) -> Self {
        MediaError::Io {
            action: action.into(),
            source,
        }
    }
}
