//! `ProResWriter`: ProRes 422 HQ `.mov` by piping raw RGB into an `ffmpeg` child process.
//!
//! ffmpeg is optional on the cluster, so it is looked up on PATH when the writer opens and a
//! missing binary is a clear error, not a failed spawn. ffmpeg's stderr is drained on its
//! own thread (a full pipe would stall ffmpeg and then us) and its tail goes into errors. A
//! dead ffmpeg closes its stdin, so the next write fails with EPIPE instead of hanging.

use longshot_core::output::OutputKind;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread::JoinHandle;

use crate::staging::StagedOutput;
use crate::{FrameWriter, MediaError, OutputSummary, VideoMeta};

/// RGB → 10-bit 4:2:2 BT.709 limited range, tagged as such.
const PRORES_FILTERS: &str = "scale=out_color_matrix=bt709:out_range=tv,format=yuv422p10le,\
     setparams=range=tv:colorspace=bt709:color_primaries=bt709:color_trc=bt709";

/// How much of ffmpeg's stderr is kept for error messages.
const STDERR_TAIL_BYTES: usize = 4096;

/// Whether an executable named `ffmpeg` is on PATH (ProRes output needs it; MP4/PNG do not).
pub fn ffmpeg_available() -> bool {
    find_on_path("ffmpeg").is_some()
}

/// The first executable file called `program` in the directories of PATH.
pub(crate) fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file() || path.with_extension("exe").is_file()
}

/// Streams RGB frames to ffmpeg's stdin; see the module doc.
pub struct ProResWriter {
    meta: VideoMeta,
    staged: StagedOutput,
    child: Child,
    stdin: Option<ChildStdin>,
    stderr_reader: Option<JoinHandle<Vec<u8>>>,
    frames: u64,
    exited: bool,
}

impl ProResWriter {
    /// Starts ffmpeg writing `path` (via `path.partial`, renamed on `finish`).
    pub fn create(path: &Path, meta: VideoMeta) -> Result<Self, MediaError> {
        meta.frame_len()?;
        meta.require_even()?;
        let ffmpeg = find_on_path("ffmpeg").ok_or(MediaError::FfmpegNotFound)?;
        let staged = StagedOutput::new(path)?;
        let mut child = Command::new(&ffmpeg)
            .args(["-hide_banner", "-nostats", "-loglevel", "error", "-y"])
            .args(["-f", "rawvideo", "-pix_fmt", "rgb24"])
            .args(["-video_size", &format!("{}x{}", meta.width, meta.height)])
            .args(["-framerate", &meta.fps.to_string(), "-i", "pipe:0"])
            // Same BT.709 limited-range matrix as the MP4 path (swscale would otherwise pick
            // BT.601 for RGB input), tagged with setparams: ffmpeg 5.x takes the tags from the
            // filtered frames and ignores -colorspace and friends on the output.
            .args(["-vf", PRORES_FILTERS])
            .args(["-c:v", "prores_ks", "-profile:v", "3", "-vendor", "apl0"])
            .args(["-pix_fmt", "yuv422p10le"])
            // The partial file has no .mov extension, so name the container explicitly.
            .args(["-f", "mov"])
            .arg(staged.partial())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| MediaError::io(format!("cannot start {}", ffmpeg.display()), e))?;
        let stdin = child.stdin.take();
        let stderr_reader = child.stderr.take().map(|mut stderr| {
            std::thread::spawn(move || {
                let mut tail = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = stderr.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    tail.extend_from_slice(&buf[..n]);
                    if tail.len() > 4 * STDERR_TAIL_BYTES {
                        tail.drain(..tail.len() - STDERR_TAIL_BYTES);
                    }
                }
                tail
            })
        });
        Ok(ProResWriter {
            meta,
            staged,
            child,
            stdin,
            stderr_reader,
            frames: 0,
            exited: false,
        })
    }

    /// Closes stdin, waits for ffmpeg, and turns a non-zero exit into `FfmpegFailed`.
    fn wait_for_exit(&mut self) -> Result<(), MediaError> {
        drop(self.stdin.take());
        let status = self
            .child
            .wait()
            .map_err(|e| MediaError::io("cannot wait for ffmpeg", e));
        self.exited = true;
        let tail = self
            .stderr_reader
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let status = status?;
        if status.success() {
            return Ok(());
        }
        let tail = String::from_utf8_lossy(&tail);
        let start = tail.len().saturating_sub(STDERR_TAIL_BYTES);
        let start = (start..tail.len()).find(|&i| tail.is_char_boundary(i)).unwrap_or(0);
        Err(MediaError::FfmpegFailed {
            path: self.staged.target().to_path_buf(),
            status: status.to_string(),
            stderr_tail: tail[start..].trim().to_string(),
        })
    }
}

impl FrameWriter for ProResWriter {
    fn write_frame(&mut self, rgb: &[u8]) -> Result<(), MediaError> {
        self.meta.check_frame(self.frames, rgb)?;
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(MediaError::io(
                "cannot write to ffmpeg",
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "ffmpeg already exited"),
            ));
        };
        if let Err(write_err) = stdin.write_all(rgb) {
            // Usually EPIPE because ffmpeg died; its exit status and stderr say why.
            self.wait_for_exit()?;
            return Err(MediaError::io("ffmpeg stopped reading frames", write_err));
        }
        self.frames += 1;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<OutputSummary, MediaError> {
        if self.frames == 0 {
            return Err(MediaError::NoFrames {
                path: self.staged.target().to_path_buf(),
            });
        }
        self.wait_for_exit()?;
        let bytes = self.staged.commit()?;
        Ok(OutputSummary {
            format: OutputKind::Prores,
            path: self.staged.target().to_path_buf(),
            frames: self.frames,
            duration_secs: self.meta.duration_secs(self.frames),
            bytes,
        })
    }
}

impl Drop for ProResWriter {
    fn drop(&mut self) {
        if !self.exited {
            // Abandoned or failed mid-clip: stop ffmpeg rather than leave it waiting on stdin.
            drop(self.stdin.take());
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
