//! Longshot's output writers: the last stage of the data path, turning decoded RGB frames
//! into files people can play, edit or re-decode.
//!
//! Layout:
//! - [`FrameWriter`] / [`open_writer`]: one streaming interface over every video format;
//!   frames arrive in order and are never all held in memory (a 60 s 832x480 clip is ~1 GB RGB).
//! - `mp4_writer`: H.264 in MP4 via OpenH264 (built from source) + the `mp4` crate; needs no
//!   ffmpeg. `yuv` does the BT.709 RGB→I420 conversion, `avcc` the Annex B → MP4 framing.
//! - `prores_writer`: ProRes 422 HQ `.mov` through an `ffmpeg` child process (optional tool).
//! - `png_writer`: lossless `frame_000000.png` sequences.
//! - `latents`: final latents as a safetensors f32 tensor with provenance metadata.
//! - `staging`: single files are written as `<name>.partial` and renamed when complete, so a
//!   file at the requested path is always a finished one.
//!
//! Invariant: only `prores_writer` runs external programs.

#![forbid(unsafe_code)]

mod avcc;
mod error;
mod latents;
mod meta;
mod mp4_writer;
mod png_writer;
mod prores_writer;
mod staging;
mod yuv;

#[cfg(test)]
mod no_ffmpeg_tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use error::MediaError;
pub use latents::{read_latents, write_latents, Latents};
pub use meta::VideoMeta;
pub use mp4_writer::{default_bitrate_bps, Mp4FrameWriter, Mp4Options};
pub use png_writer::{png_frame_name, PngSequenceWriter};
pub use prores_writer::{ffmpeg_available, ProResWriter};

/// A streaming video writer: call `write_frame` once per frame, in order, then `finish`.
///
/// Dropping a writer without `finish` abandons the output (single-file formats leave nothing
/// at the target path).
pub trait FrameWriter: Send {
    /// Appends one RGB frame of exactly `width * height * 3` bytes.
    fn write_frame(&mut self, rgb: &[u8]) -> Result<(), MediaError>;
    /// Completes the output and reports what was written.
    fn finish(self: Box<Self>) -> Result<OutputSummary, MediaError>;
}

/// The video formats Longshot writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutputFormat {
    /// H.264 yuv420p in `.mp4`; built in, no ffmpeg needed.
    Mp4,
    /// ProRes 422 HQ yuv422p10le in `.mov`; needs ffmpeg on PATH.
    ProRes,
    /// A directory of lossless RGB PNGs.
    Png,
}

impl OutputFormat {
    /// The name accepted by `from_str`.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputFormat::Mp4 => "mp4",
            OutputFormat::ProRes => "prores",
            OutputFormat::Png => "png",
        }
    }
}

impl fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OutputFormat {
    type Err = MediaError;

    fn from_str(s: &str) -> Result<Self, MediaError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "mp4" => Ok(OutputFormat::Mp4),
            "prores" => Ok(OutputFormat::ProRes),
            "png" => Ok(OutputFormat::Png),
            _ => Err(MediaError::UnknownFormat {
                value: s.to_string(),
            }),
        }
    }
}

/// What a finished writer produced.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputSummary {
    pub format: OutputFormat,
    /// The file (MP4, ProRes) or directory (PNG) written.
    pub path: PathBuf,
    pub frames: u64,
    /// `frames / fps`.
    pub duration_secs: f64,
    /// Total bytes on disk.
    pub bytes: u64,
}

/// Per-format tuning for [`open_writer_with`]; `Default` is what [`open_writer`] uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterOptions {
    pub mp4: Mp4Options,
}

/// Opens a streaming writer with default options. For `Png`, `path` is a directory.
pub fn open_writer(
    format: OutputFormat,
    path: &Path,
    meta: VideoMeta,
) -> Result<Box<dyn FrameWriter>, MediaError> {
    open_writer_with(format, path, meta, WriterOptions::default())
}

/// Opens a streaming writer with explicit options. For `Png`, `path` is a directory.
pub fn open_writer_with(
    format: OutputFormat,
    path: &Path,
    meta: VideoMeta,
    options: WriterOptions,
) -> Result<Box<dyn FrameWriter>, MediaError> {
    Ok(match format {
        OutputFormat::Mp4 => Box::new(Mp4FrameWriter::create(path, meta, options.mp4)?),
        OutputFormat::ProRes => Box::new(ProResWriter::create(path, meta)?),
        OutputFormat::Png => Box::new(PngSequenceWriter::create(path, meta)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_display_round_trip() {
        for format in [OutputFormat::Mp4, OutputFormat::ProRes, OutputFormat::Png] {
            assert_eq!(format.to_string().parse::<OutputFormat>().unwrap(), format);
        }
        assert_eq!(" MP4 ".parse::<OutputFormat>().unwrap(), OutputFormat::Mp4);
    }

    #[test]
    fn unknown_format_lists_the_allowed_values() {
        let err = "gif".parse::<OutputFormat>().unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown output format \"gif\": allowed values are mp4, prores, png"
        );
    }

    #[test]
    fn writers_are_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Mp4FrameWriter>();
        assert_send::<ProResWriter>();
        assert_send::<PngSequenceWriter>();
    }
}
