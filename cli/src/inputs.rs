//! A job's inputs on the client (reference images, an input video): read and checked before
//! anything is sent, then uploaded to the coordinator by content (`JobService.UploadInput`),
//! once per job. A video is decoded here (PNG frames directly, anything else with ffmpeg) into
//! one canonical frames file, so the coordinator and the workers never run a decoder on it.

use anyhow::{anyhow, bail, Context, Result};
use futures::StreamExt;
use longshot_core::api::JobApi;
use longshot_core::inputs::{InputDigest, VideoHeader, MAX_VIDEO_SIDE, UPLOAD_CHUNK_BYTES};
use longshot_core::shots::Shot;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// Everything a job uploads.
#[derive(Default)]
pub struct LocalInputs {
    /// `--image`, then `--last-image`.
    pub images: Vec<LocalImage>,
    pub video: Option<LocalVideo>,
    /// `--shots`, parsed, each shot given in parts composed (checked with the rest of the spec).
    pub shots: Vec<Shot>,
    /// `--saved`: the prompt from the library.
    pub saved: Option<crate::prompt_library::SavedPrompt>,
}

/// A shot list file (`--shots`): `{"shots": [...]}` in JSON (`.json`) or YAML (anything else).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ShotFile {
    shots: Vec<Shot>,
}

/// Reads a shot list; a syntax error or an unknown key names the file and where.
pub fn read_shots(path: &Path) -> Result<Vec<Shot>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("--shots: cannot read {}", path.display()))?;
    let json = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let file: ShotFile = if json {
        serde_json::from_str(&text).map_err(|e| anyhow!("--shots {}: {e}", path.display()))?
    } else {
        serde_yaml_ng::from_str(&text).map_err(|e| anyhow!("--shots {}: {e}", path.display()))?
    };
    if file.shots.is_empty() {
        bail!("--shots {}: shots: list at least one shot", path.display());
    }
    let mut shots = file.shots;
    if let Err(errors) = longshot_core::shots::compose_prompts(&mut shots) {
        let why: Vec<String> = errors.iter().map(ToString::to_string).collect();
        bail!("--shots {}: {}", path.display(), why.join("; "));
    }
    Ok(shots)
}

impl LocalInputs {
    /// Checks sizes and frame count against the spec (the coordinator checks again; this fails
    /// before anything is sent).
    pub fn check(&self, width: u32, height: u32, frames: u32) -> Result<()> {
        check_sizes(&self.images, width, height)?;
        if let Some(v) = &self.video {
            v.check(width, height, frames, !self.shots.is_empty())?;
        }
        Ok(())
    }

    /// Uploads every input to the coordinator behind `client`.
    pub async fn upload(&self, client: &dyn JobApi) -> Result<()> {
        upload(client, &self.images).await?;
        if let Some(v) = &self.video {
            upload_bytes(client, &v.bytes, &v.digest, &v.path).await?;
            tracing::info!(path = %v.path.display(), digest = %v.digest, frames = v.header.frames, "uploaded the input video");
        }
        Ok(())
    }

    /// The largest input, in bytes.
    pub fn largest(&self) -> u64 {
        let images = self.images.iter().map(|i| i.bytes.len() as u64);
        images
            .chain(self.video.as_ref().map(|v| v.bytes.len() as u64))
            .max()
            .unwrap_or(0)
    }
}

/// An input video, decoded into a canonical frames file (`longshot_core::inputs::VideoHeader`).
pub struct LocalVideo {
    pub path: PathBuf,
    pub header: VideoHeader,
    /// The whole frames file (shared with the upload stream, never copied).
    pub bytes: Arc<Vec<u8>>,
    pub digest: InputDigest,
}

impl LocalVideo {
    /// Reads `path`: a directory of PNG frames (in name order), or a video file ffmpeg decodes
    /// (MP4, MOV, …; every frame, no frame-rate conversion).
    pub fn read(path: &Path) -> Result<Self> {
        let flag = format!("--video {}", path.display());
        let (header, frames) = if path.is_dir() {
            read_png_dir(path, &flag)?
        } else {
            let v = decode_video(path, &flag, None)?;
            (v.header, v.rgb)
        };
        // The header in front of the decoded frames, in place (a long video is gigabytes).
        let mut bytes = frames;
        bytes.splice(0..0, header.encode());
        Ok(Self {
            path: path.to_path_buf(),
            digest: InputDigest::of(&bytes),
            header,
            bytes: Arc::new(bytes),
        })
    }

    /// `shots`: the clip's length comes from a shot list.
    fn check(&self, width: u32, height: u32, frames: u32, shots: bool) -> Result<()> {
        let (h, p) = (&self.header, self.path.display());
        if (h.width, h.height) != (width, height) {
            bail!(
                "--video {p}: the video is {}x{}, but the clip is {width}x{height}: video-to-video keeps the video's \
                 size (leave out --width and --height, or resize the video)",
                h.width,
                h.height
            );
        }
        if h.frames != frames {
            let fix = match shots {
                true => format!("make the shots add up to {} frames, or cut the video", h.frames),
                false => "leave out --frames and --duration, or cut the video".to_string(),
            };
            bail!(
                "--video {p}: the video has {} frames, but the clip asks for {frames}: video-to-video renders as many \
                 frames as the video has ({fix})",
                h.frames
            );
        }
        Ok(())
    }
}

/// The PNG files of `dir` in name order, decoded; all one size. Errors start with `flag`.
pub fn read_png_dir(dir: &Path, flag: &str) -> Result<(VideoHeader, Vec<u8>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{flag}: cannot list it"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{flag}: the directory holds no .png frames");
    }
    let mut rgb = Vec::new();
    let mut size = None;
    for f in &files {
        let bytes = std::fs::read(f).with_context(|| format!("{flag}: cannot read {}", f.display()))?;
        let img = longshot_media::decode_rgb8(&bytes).map_err(|e| anyhow!("{flag}: {}: the file {e}", f.display()))?;
        match size {
            None => size = Some((img.width, img.height)),
            Some(s) if s != (img.width, img.height) => bail!(
                "{flag}: {} is {}x{}, but the first frame is {}x{}: every frame must have one size",
                f.display(),
                img.width,
                img.height,
                s.0,
                s.1
            ),
            Some(_) => {}
        }
        rgb.extend_from_slice(&img.data);
    }
    let (width, height) = size.expect("at least one frame");
    Ok((
        VideoHeader {
            width,
            height,
            frames: files.len() as u32,
        },
        rgb,
    ))
}

/// A video file's frames as 8-bit RGB, and its frame rate.
pub struct DecodedVideo {
    pub header: VideoHeader,
    pub rgb: Vec<u8>,
    /// `None` when the container gives none.
    pub fps: Option<f64>,
}

/// Every frame of a video file as 8-bit RGB, decoded by ffmpeg (size and frame rate from
/// ffprobe); `max_width`: scaled down (area filter) to at most that width, aspect kept. Errors
/// start with `flag`.
pub fn decode_video(path: &Path, flag: &str, max_width: Option<u32>) -> Result<DecodedVideo> {
    if !path.is_file() {
        bail!("{flag}: no such file (give a video file, or a directory of PNG frames)");
    }
    let missing = |tool: &str, e: std::io::Error| {
        anyhow!("{flag}: reading a video file needs {tool} on PATH ({e}); install ffmpeg, or give a directory of PNG frames")
    };
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=width,height,r_frame_rate",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .map_err(|e| missing("ffprobe", e))?;
    let text = String::from_utf8_lossy(&probe.stdout);
    let fields: Vec<&str> = text.trim().split(',').map(str::trim).collect();
    let dims: Vec<u32> = fields.iter().take(2).filter_map(|v| v.parse().ok()).collect();
    let fps = fields.get(2).and_then(|r| {
        let (n, d) = r.split_once('/')?;
        let (n, d): (f64, f64) = (n.parse().ok()?, d.parse().ok()?);
        (n > 0.0 && d > 0.0).then(|| n / d)
    });
    let [width, height] = dims[..] else {
        bail!(
            "{flag}: not a video ffmpeg can read: {}",
            String::from_utf8_lossy(&probe.stderr).trim()
        );
    };
    if !(1..=MAX_VIDEO_SIDE).contains(&width) || !(1..=MAX_VIDEO_SIDE).contains(&height) {
        bail!("{flag}: the video is {width}x{height}; sides must be in 1..={MAX_VIDEO_SIDE}");
    }
    // Scaled only when asked to: a video-to-video input is decoded exactly as ffmpeg gives it.
    let scale = match max_width {
        Some(m) if width > m => {
            let h = ((u64::from(height) * u64::from(m) + u64::from(width) / 2) / u64::from(width)).max(1) as u32;
            Some((m, h))
        }
        _ => None,
    };
    let mut ffmpeg = Command::new("ffmpeg");
    ffmpeg
        .args(["-v", "error", "-nostdin", "-i"])
        .arg(path)
        .args(["-map", "0:v:0", "-fps_mode", "passthrough"]);
    if let Some((w, h)) = scale {
        ffmpeg.args(["-vf", &format!("scale={w}:{h}:flags=area")]);
    }
    let (width, height) = scale.unwrap_or((width, height));
    let out = ffmpeg
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .map_err(|e| missing("ffmpeg", e))?;
    if !out.status.success() {
        bail!(
            "{flag}: ffmpeg could not decode it: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let fb = width as usize * height as usize * 3;
    if out.stdout.is_empty() || out.stdout.len() % fb != 0 {
        bail!(
            "{flag}: ffmpeg gave {} bytes, not whole {width}x{height} RGB frames",
            out.stdout.len()
        );
    }
    let frames = (out.stdout.len() / fb) as u32;
    Ok(DecodedVideo {
        header: VideoHeader { width, height, frames },
        rgb: out.stdout,
        fps,
    })
}

/// A reference image read from disk.
pub struct LocalImage {
    pub path: PathBuf,
    pub bytes: Arc<Vec<u8>>,
    pub digest: InputDigest,
    pub width: u32,
    pub height: u32,
}

impl LocalImage {
    /// Reads and decodes `path` (the error names `flag` and the file).
    pub fn read(path: &Path, flag: &str) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("{flag} {}: cannot read it", path.display()))?;
        let img =
            longshot_media::decode_rgb8(&bytes).map_err(|e| anyhow!("{flag} {}: the file {e}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            digest: InputDigest::of(&bytes),
            bytes: Arc::new(bytes),
            width: img.width,
            height: img.height,
        })
    }
}

/// Checks that every image has the clip's size.
fn check_sizes(images: &[LocalImage], width: u32, height: u32) -> Result<()> {
    for (flag, img) in ["--image", "--last-image"].iter().zip(images) {
        if (img.width, img.height) != (width, height) {
            anyhow::bail!(
                "{flag} {}: the image is {}x{}, but the clip is {width}x{height}: give the image's size as --width \
                 and --height (multiples of 16), or resize the image to the clip's",
                img.path.display(),
                img.width,
                img.height
            );
        }
    }
    Ok(())
}

/// Uploads `images` to the coordinator behind `client`.
async fn upload(client: &dyn JobApi, images: &[LocalImage]) -> Result<()> {
    for img in images {
        upload_bytes(client, &img.bytes, &img.digest, &img.path).await?;
        tracing::info!(path = %img.path.display(), digest = %img.digest, "uploaded a reference image");
    }
    Ok(())
}

async fn upload_bytes(client: &dyn JobApi, bytes: &Arc<Vec<u8>>, digest: &InputDigest, path: &Path) -> Result<()> {
    // Chunks are copied as the stream is sent, not all at once.
    let owned = bytes.clone();
    let n = owned.len().div_ceil(UPLOAD_CHUNK_BYTES);
    let chunks = futures::stream::iter(0..n).map(move |i| {
        let end = ((i + 1) * UPLOAD_CHUNK_BYTES).min(owned.len());
        Ok(owned[i * UPLOAD_CHUNK_BYTES..end].to_vec())
    });
    client
        .upload_input(Box::pin(chunks), Some(digest.clone()))
        .await
        .map_err(|e| anyhow!("uploading {}: {e}", path.display()))?;
    Ok(())
}
