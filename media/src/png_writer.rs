//! `PngSequenceWriter`: one lossless RGB PNG per frame, `frame_000000.png`, … in a directory.
//!
//! The lossless escape hatch: every frame is independent, so a partial sequence from a dead
//! worker is still usable, and any tool can assemble it later.

use longshot_core::output::OutputKind;
use std::path::{Path, PathBuf};

use crate::{FrameWriter, MediaError, OutputSummary, VideoMeta};

/// File name of frame `index` inside a PNG sequence directory.
pub fn png_frame_name(index: u64) -> String {
    format!("frame_{index:06}.png")
}

/// Writes `rgb` (`[height, width, 3]` 8-bit) to `path` as an sRGB PNG; its size in bytes.
pub fn write_png(path: &Path, width: u32, height: u32, rgb: &[u8]) -> Result<u64, MediaError> {
    let png_err = |e: png::EncodingError| MediaError::Png {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    // Encode in memory, then one write: a failed flush cannot hide in a BufWriter's drop.
    let mut encoded = Vec::with_capacity(rgb.len() / 2);
    let mut encoder = png::Encoder::new(&mut encoded, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    // Fast: frames are intermediates, and Balanced is several times slower for ~10% less.
    encoder.set_compression(png::Compression::Fast);
    encoder.set_source_srgb(png::SrgbRenderingIntent::Perceptual);
    let mut writer = encoder.write_header().map_err(png_err)?;
    writer.write_image_data(rgb).map_err(png_err)?;
    writer.finish().map_err(png_err)?;
    std::fs::write(path, &encoded).map_err(|e| MediaError::io(format!("cannot write {}", path.display()), e))?;
    Ok(encoded.len() as u64)
}

/// Writes each frame as its own PNG; see the module doc.
pub struct PngSequenceWriter {
    dir: PathBuf,
    meta: VideoMeta,
    frames: u64,
    bytes: u64,
}

impl PngSequenceWriter {
    /// Creates `dir` if needed. Refuses a directory that already holds `frame_*.png` files,
    /// since a longer old sequence would silently mix into the new one.
    pub fn create(dir: &Path, meta: VideoMeta) -> Result<Self, MediaError> {
        meta.frame_len()?;
        std::fs::create_dir_all(dir)
            .map_err(|e| MediaError::io(format!("cannot create directory {}", dir.display()), e))?;
        let entries = std::fs::read_dir(dir)
            .map_err(|e| MediaError::io(format!("cannot list directory {}", dir.display()), e))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("frame_") && name.ends_with(".png") {
                return Err(MediaError::io(
                    format!("cannot write a png sequence into {}", dir.display()),
                    std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        format!("it already holds {name}; use an empty or new directory"),
                    ),
                ));
            }
        }
        Ok(PngSequenceWriter {
            dir: dir.to_path_buf(),
            meta,
            frames: 0,
            bytes: 0,
        })
    }
}

impl FrameWriter for PngSequenceWriter {
    fn write_frame(&mut self, rgb: &[u8]) -> Result<(), MediaError> {
        self.meta.check_frame(self.frames, rgb)?;
        let path = self.dir.join(png_frame_name(self.frames));
        let size = write_png(&path, self.meta.width, self.meta.height, rgb)?;
        self.bytes += size;
        self.frames += 1;
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<OutputSummary, MediaError> {
        if self.frames == 0 {
            return Err(MediaError::NoFrames { path: self.dir });
        }
        Ok(OutputSummary {
            format: OutputKind::Png,
            path: self.dir,
            frames: self.frames,
            duration_secs: self.meta.duration_secs(self.frames),
            bytes: self.bytes,
        })
    }
}
