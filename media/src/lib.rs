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
//! - `image_input`: reference images for image-to-video (PNG, JPEG) decoded to RGB, bounded.
//! - `latents`: final latents as a safetensors f32 tensor with provenance metadata.
//! - `staging`: single files are written as `<name>.partial` and renamed when complete, so a
//!   file at the requested path is always a finished one.
//!
//! Invariant: only `prores_writer` runs external programs.

#![forbid(unsafe_code)]

mod avcc;
mod error;
mod image_input;
mod latents;
mod meta;
mod mp4_writer;
mod png_writer;
mod prores_writer;
mod staging;
mod yuv;

#[cfg(test)]
mod no_ffmpeg_tests;

use longshot_core::output::OutputKind;
use std::path::{Path, PathBuf};

pub use error::MediaError;
pub use image_input::{decode_rgb8, ImageInputError, RgbImage, MAX_IMAGE_SIDE};
pub use latents::{read_latent_frames, read_latents, write_latents, Latents, LatentsWriter};
pub use meta::VideoMeta;
pub use mp4_writer::{default_bitrate_bps, Mp4FrameWriter, Mp4Options};
pub use png_writer::{png_frame_name, write_png, PngSequenceWriter};
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

/// What a finished writer produced.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputSummary {
    pub format: OutputKind,
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

/// Opens a streaming writer with default options. For `Png`, `path` is a directory; `Latents`
/// is not a video ([`write_latents`] writes it).
pub fn open_writer(format: OutputKind, path: &Path, meta: VideoMeta) -> Result<Box<dyn FrameWriter>, MediaError> {
    open_writer_with(format, path, meta, WriterOptions::default())
}

/// Opens a streaming writer with explicit options. For `Png`, `path` is a directory.
pub fn open_writer_with(
    format: OutputKind,
    path: &Path,
    meta: VideoMeta,
    options: WriterOptions,
) -> Result<Box<dyn FrameWriter>, MediaError> {
    Ok(match format {
        OutputKind::Mp4 => Box::new(Mp4FrameWriter::create(path, meta, options.mp4)?),
        OutputKind::Prores => Box::new(ProResWriter::create(path, meta)?),
        OutputKind::Png => Box::new(PngSequenceWriter::create(path, meta)?),
        OutputKind::Latents => return Err(MediaError::NotVideo(format)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latents_are_not_a_video() {
        let err = open_writer(
            OutputKind::Latents,
            Path::new("x"),
            VideoMeta {
                width: 16,
                height: 16,
                fps: 16,
            },
        )
        .err()
        .unwrap();
        assert_eq!(
            err.to_string(),
            "latents is not a video format: frame writers write mp4, prores and png"
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
