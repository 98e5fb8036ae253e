//! `longshot watch JOB --preview DIR`: keeps a running job's live preview on disk.
//!
//! DIR holds `frames/frame_NNNNNN.png` (one per latent frame, at latent resolution, replaced as
//! newer previews arrive), `preview.mp4` (the whole clip, scaled up by an integer factor, at
//! least 2, that makes its short side at least [`MP4_MIN_SIDE`] pixels: even sizes the encoder
//! takes, big enough to look at; at the frame rate that keeps the clip's duration) and `preview.json` (the step each
//! frame shows). Every file is written beside itself and renamed into place, so a player or a
//! script polling DIR never reads half a file. The MP4 is rewritten when every frame has a
//! preview of a newer step, and at most every [`MP4_EVERY`] otherwise.

use anyhow::{anyhow, Context, Result};
use longshot_core::api::JobStatus;
use longshot_core::preview::{PreviewClip, PreviewFrames};
use longshot_media::{png_frame_name, write_png, FrameWriter, Mp4FrameWriter, Mp4Options, VideoMeta};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The MP4's shortest side is at least this many pixels.
const MP4_MIN_SIDE: u32 = 64;

/// The longest the MP4 lags the frames while some frames are still behind.
const MP4_EVERY: Duration = Duration::from_secs(2);

/// What `preview.json` says.
#[derive(Serialize)]
struct Manifest<'a> {
    job_id: &'a str,
    total_steps: u32,
    /// Every frame shows at least this step (0 while some frame has no preview yet).
    complete_step: u32,
    /// The step each latent frame's preview was taken after (0: none yet).
    steps: &'a [u32],
    width: u32,
    height: u32,
    mp4_fps: u32,
}

pub struct PreviewDir {
    dir: PathBuf,
    job_id: String,
    /// Output frames per second of the job and its output frames: the MP4 keeps the duration.
    fps: u32,
    output_frames: u32,
    clip: Option<PreviewClip>,
    total_steps: u32,
    /// The complete step the MP4 last showed, and when it was written.
    written: Option<(u32, Instant)>,
    dirty: bool,
}

impl PreviewDir {
    /// Creates DIR (and DIR/frames).
    pub fn create(dir: &Path, status: &JobStatus) -> Result<PreviewDir> {
        std::fs::create_dir_all(dir.join("frames")).with_context(|| format!("creating {}/frames", dir.display()))?;
        Ok(PreviewDir {
            dir: dir.to_path_buf(),
            job_id: status.job_id.clone(),
            fps: status.spec.fps,
            output_frames: status.plan.map_or(0, |p| p.output_frames),
            clip: None,
            total_steps: 0,
            written: None,
            dirty: false,
        })
    }

    /// A new run of the job (after an interruption) previews from its own steps again.
    pub fn restart(&mut self) {
        if let Some(clip) = &mut self.clip {
            clip.steps.fill(0);
        }
    }

    /// Takes in one preview event's frames and writes what changed.
    pub async fn update(&mut self, total_steps: u32, clip_frames: u32, frames: &PreviewFrames) -> Result<()> {
        self.total_steps = total_steps;
        let clip = self
            .clip
            .get_or_insert_with(|| PreviewClip::new(clip_frames as usize, frames.width, frames.height));
        clip.update(frames)
            .map_err(|e| anyhow!("preview from the coordinator: {e}"))?;
        let fl = frames.frame_len();
        let (dir, frames) = (self.dir.join("frames"), frames.clone());
        tokio::task::spawn_blocking(move || -> Result<()> {
            for (i, rgb) in frames.rgb8.chunks_exact(fl).enumerate() {
                let name = png_frame_name(u64::from(frames.first_frame) + i as u64);
                replace(&dir.join(name), |tmp| {
                    write_png(tmp, frames.width, frames.height, rgb)
                        .map(|_| ())
                        .map_err(Into::into)
                })?;
            }
            Ok(())
        })
        .await??;
        self.dirty = true;
        let complete = self.clip.as_ref().map_or(0, PreviewClip::complete_step);
        let due = match self.written {
            None => complete > 0,
            Some((step, at)) => complete > step || at.elapsed() >= MP4_EVERY,
        };
        if due {
            self.write_clip().await?;
        }
        Ok(())
    }

    /// Writes the MP4 and manifest if anything changed since they were last written.
    pub async fn flush(&mut self) -> Result<()> {
        if self.dirty {
            self.write_clip().await?;
        }
        Ok(())
    }

    fn mp4_fps(&self, clip_frames: usize) -> u32 {
        let secs = f64::from(self.output_frames) / f64::from(self.fps.max(1));
        match secs > 0.0 {
            true => ((clip_frames as f64 / secs).round() as u32).max(1),
            false => 1,
        }
    }

    async fn write_clip(&mut self) -> Result<()> {
        let Some(clip) = self.clip.clone() else { return Ok(()) };
        let fps = self.mp4_fps(clip.steps.len());
        let manifest = serde_json::to_vec_pretty(&Manifest {
            job_id: &self.job_id,
            total_steps: self.total_steps,
            complete_step: clip.complete_step(),
            steps: &clip.steps,
            width: clip.width,
            height: clip.height,
            mp4_fps: fps,
        })?;
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            // The MP4 writer stages its own partial file and renames it into place.
            write_mp4(&dir.join("preview.mp4"), &clip, fps)?;
            replace(&dir.join("preview.json"), |tmp| {
                std::fs::write(tmp, &manifest).with_context(|| format!("writing {}", tmp.display()))
            })
        })
        .await??;
        self.written = Some((self.clip.as_ref().map_or(0, PreviewClip::complete_step), Instant::now()));
        self.dirty = false;
        Ok(())
    }
}

/// Writes `path` through a temporary file beside it, renamed into place.
fn replace(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.partial"));
    write(&tmp)?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// The integer nearest-neighbour scale of the MP4: at least 2 (even sizes), and enough for a
/// short side of [`MP4_MIN_SIDE`] (OpenH264 refuses tiny frames).
fn mp4_scale(width: u32, height: u32) -> u32 {
    MP4_MIN_SIDE.div_ceil(width.min(height).max(1)).max(2)
}

/// The clip scaled up by [`mp4_scale`].
fn write_mp4(path: &Path, clip: &PreviewClip, fps: u32) -> Result<()> {
    let n = mp4_scale(clip.width, clip.height);
    let (w, h, s) = (clip.width as usize, clip.height as usize, n as usize);
    let meta = VideoMeta {
        width: n * clip.width,
        height: n * clip.height,
        fps,
    };
    let mut writer: Box<dyn FrameWriter> = Box::new(Mp4FrameWriter::create(path, meta, Mp4Options::default())?);
    let mut big = vec![0u8; s * s * w * h * 3];
    for l in 0..clip.steps.len() {
        let src = clip.frame(l);
        for (y, row) in big.chunks_exact_mut(s * w * 3).enumerate() {
            for (x, px) in row.chunks_exact_mut(3).enumerate() {
                let at = ((y / s) * w + x / s) * 3;
                px.copy_from_slice(&src[at..at + 3]);
            }
        }
        writer.write_frame(&big)?;
    }
    writer.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mp4_scale_is_even_and_makes_the_short_side_at_least_64() {
        assert_eq!(mp4_scale(104, 60), 2);
        assert_eq!(mp4_scale(16, 12), 6);
        assert_eq!(mp4_scale(8, 6), 11);
        for (w, h) in [(104, 60), (16, 12), (8, 6), (7, 5), (1, 1)] {
            let n = mp4_scale(w, h);
            assert!(n >= 2 && (n * w.min(h)) >= MP4_MIN_SIDE, "{w}x{h}: ×{n}");
        }
    }
}
