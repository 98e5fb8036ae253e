//! A job's uploaded inputs: reference images for image-to-video, a video for video-to-video.
//!
//! A client uploads each input's bytes once (gRPC `JobService.UploadInput`); the coordinator keeps
//! them under the SHA-256 of their bytes and a job names them by that digest, never by a path
//! anyone opens on the client's behalf. The coordinator decodes and checks them when the job is
//! submitted; workers receive the decoded pixels with their assignment ([`ReferenceImages`]) and
//! the image encoder's output computed once per job ([`ImageEmbeddings`]).
//!
//! A video is uploaded already decoded, as one canonical frames file ([`VideoHeader`] then the
//! frames' 8-bit RGB): the client decodes MP4/MOV/PNG, so neither the coordinator nor a worker
//! runs a video decoder on a client's bytes, and the digest names the exact pixels the job
//! renders from. Each worker receives only the frames its windows encode ([`VideoSpan`]).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The largest input the coordinator accepts by default (`--max-input-bytes`): a video-to-video
/// input is uploaded decoded, ~1.2 MB a frame at 832×480, so 2 GiB is ~100 s of 480p at 16 fps.
pub const DEFAULT_MAX_INPUT_BYTES: u64 = 2 << 30;

/// Upload chunks are at most this large (a gRPC message stays far below any limit).
pub const UPLOAD_CHUNK_BYTES: usize = 1 << 20;

/// The SHA-256 of an input's bytes, 64 lowercase hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InputDigest(String);

impl InputDigest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// The digest a streaming hash ends in.
    pub fn from_hasher(h: Sha256) -> Self {
        Self(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 digits, for messages.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl TryFrom<String> for InputDigest {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(Self(s))
        } else {
            Err(format!(
                "{s:?} is not a SHA-256 digest (64 lowercase hex digits, as UploadInput returns)"
            ))
        }
    }
}

impl From<InputDigest> for String {
    fn from(d: InputDigest) -> String {
        d.0
    }
}

impl std::fmt::Display for InputDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an upload stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputInfo {
    pub digest: InputDigest,
    pub size_bytes: u64,
}

/// The reference images of an image-to-video job, decoded and checked by the coordinator: 8-bit
/// RGB, row-major `[height, width, 3]`, at the job's resolution. Never persisted (the job record
/// keeps the digests).
#[derive(Clone, PartialEq)]
pub struct ReferenceImages {
    pub width: u32,
    pub height: u32,
    /// The clip's first frame.
    pub first: Vec<u8>,
    /// The clip's last frame (first-and-last-frame models).
    pub last: Option<Vec<u8>>,
}

impl std::fmt::Debug for ReferenceImages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ReferenceImages({}x{}, {})",
            self.width,
            self.height,
            if self.last.is_some() { "first and last" } else { "first" }
        )
    }
}

impl ReferenceImages {
    /// How many images: 1 or 2.
    pub fn count(&self) -> u32 {
        1 + u32::from(self.last.is_some())
    }

    /// Checks that every image holds `width × height × 3` bytes; the message names the image.
    pub fn validate(&self) -> Result<(), String> {
        if self.width == 0 || self.height == 0 {
            return Err(format!("reference images are {}x{} (empty)", self.width, self.height));
        }
        let n = self.width as usize * self.height as usize * 3;
        for (name, img) in [("first image", Some(&self.first)), ("last image", self.last.as_ref())] {
            if let Some(img) = img {
                if img.len() != n {
                    return Err(format!(
                        "{name} holds {} bytes, not {}x{}x3 = {n}",
                        img.len(),
                        self.width,
                        self.height
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The image encoder's output for a job's reference images, `[rows, dim]` f32 (Wan2.1 I2V: CLIP's
/// penultimate hidden states, `[257, 1280]` per image, first image first).
#[derive(Clone, PartialEq)]
pub struct ImageEmbeddings {
    pub rows: usize,
    pub dim: usize,
    pub data: Vec<f32>,
}

impl std::fmt::Debug for ImageEmbeddings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ImageEmbeddings([{}, {}])", self.rows, self.dim)
    }
}

impl ImageEmbeddings {
    /// Checks that the tensor holds `rows × dim` finite values.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.rows.checked_mul(self.dim).filter(|&n| n > 0);
        if n != Some(self.data.len()) {
            return Err(format!(
                "image embedding holds {} values, not [{}, {}] (both positive)",
                self.data.len(),
                self.rows,
                self.dim
            ));
        }
        if let Some(i) = self.data.iter().position(|v| !v.is_finite()) {
            return Err(format!(
                "image embedding value {i} is {} (must be finite)",
                self.data[i]
            ));
        }
        Ok(())
    }
}

/// The header of a canonical frames file: [`VIDEO_MAGIC`], then width, height and frame count
/// as little-endian u32; the frames follow, `[frames, height, width, 3]` 8-bit RGB, row-major.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VideoHeader {
    pub width: u32,
    pub height: u32,
    pub frames: u32,
}

/// The first bytes of a canonical frames file (format version 1).
pub const VIDEO_MAGIC: &[u8; 8] = b"LSVIDEO1";

/// Bytes before the first frame.
pub const VIDEO_HEADER_BYTES: usize = 20;

/// The longest side a video frame may have (as for images).
pub const MAX_VIDEO_SIDE: u32 = 4096;

impl VideoHeader {
    pub fn encode(&self) -> [u8; VIDEO_HEADER_BYTES] {
        let mut h = [0u8; VIDEO_HEADER_BYTES];
        h[..8].copy_from_slice(VIDEO_MAGIC);
        for (i, v) in [self.width, self.height, self.frames].into_iter().enumerate() {
            h[8 + 4 * i..12 + 4 * i].copy_from_slice(&v.to_le_bytes());
        }
        h
    }

    /// Reads and checks the header at the start of `bytes`, and that a file of `total_bytes`
    /// holds exactly its frames; the message says what is wrong.
    pub fn parse(bytes: &[u8], total_bytes: u64) -> Result<Self, String> {
        if bytes.len() < VIDEO_HEADER_BYTES || &bytes[..8] != VIDEO_MAGIC {
            return Err("not a Longshot frames file (the CLI uploads a decoded video as one)".into());
        }
        let u = |i: usize| u32::from_le_bytes(bytes[8 + 4 * i..12 + 4 * i].try_into().expect("4 bytes"));
        let h = Self {
            width: u(0),
            height: u(1),
            frames: u(2),
        };
        if h.frames == 0 || !(1..=MAX_VIDEO_SIDE).contains(&h.width) || !(1..=MAX_VIDEO_SIDE).contains(&h.height) {
            return Err(format!(
                "{} frames of {}x{}: a video has at least 1 frame of sides in 1..={MAX_VIDEO_SIDE}",
                h.frames, h.width, h.height
            ));
        }
        if total_bytes != h.file_bytes() {
            return Err(format!(
                "{total_bytes} bytes, but {} frames of {}x{} RGB take {}",
                h.frames,
                h.width,
                h.height,
                h.file_bytes()
            ));
        }
        Ok(h)
    }

    pub fn frame_bytes(&self) -> usize {
        self.width as usize * self.height as usize * 3
    }

    pub fn file_bytes(&self) -> u64 {
        VIDEO_HEADER_BYTES as u64 + self.frames as u64 * self.frame_bytes() as u64
    }

    /// Where frame `f` starts in the file.
    pub fn frame_offset(&self, f: usize) -> u64 {
        VIDEO_HEADER_BYTES as u64 + f as u64 * self.frame_bytes() as u64
    }
}

/// Consecutive frames of a job's input video, `[frames, height, width, 3]` 8-bit RGB from global
/// frame `first_frame` on: what one worker encodes its windows from.
#[derive(Clone, PartialEq)]
pub struct VideoSpan {
    pub first_frame: usize,
    pub width: u32,
    pub height: u32,
    /// Frames of the whole input video; frames past it (the window grid's padding) are grey.
    pub video_frames: usize,
    pub rgb: Vec<u8>,
}

impl std::fmt::Debug for VideoSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.frames();
        write!(
            f,
            "VideoSpan(frames {}..{} of {}, {}x{})",
            self.first_frame,
            self.first_frame + n,
            self.video_frames,
            self.width,
            self.height
        )
    }
}

impl VideoSpan {
    pub fn frame_bytes(&self) -> usize {
        self.width as usize * self.height as usize * 3
    }

    pub fn frames(&self) -> usize {
        self.rgb.len() / self.frame_bytes().max(1)
    }

    /// Global frame `f`, if the span holds it.
    pub fn frame(&self, f: usize) -> Option<&[u8]> {
        let i = f.checked_sub(self.first_frame).filter(|&i| i < self.frames())?;
        Some(&self.rgb[i * self.frame_bytes()..][..self.frame_bytes()])
    }

    /// Checks that the span holds whole frames, inside the video; the message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let fb = self.frame_bytes();
        if fb == 0 || self.width > MAX_VIDEO_SIDE || self.height > MAX_VIDEO_SIDE {
            return Err(format!(
                "video frames are {}x{}: sides must be in 1..={MAX_VIDEO_SIDE}",
                self.width, self.height
            ));
        }
        if !self.rgb.len().is_multiple_of(fb) {
            return Err(format!(
                "the video span holds {} bytes, not a whole number of {}x{}x3 frames",
                self.rgb.len(),
                self.width,
                self.height
            ));
        }
        if self.first_frame + self.frames() > self.video_frames {
            return Err(format!(
                "the video span ends at frame {}, past the video's {} frames",
                self.first_frame + self.frames(),
                self.video_frames
            ));
        }
        Ok(())
    }
}

/// The input frames a worker needs to encode latent frames `latents` of a clip whose encoder
/// needs `warmup` latent frames in front (`ModelInfo::video_warmup`), with temporal compression
/// `c`, from a video of `video_frames` frames: from the first frame of the warm-up's first latent
/// to the last frame of `latents`, clipped to the video (later frames are the grid's padding).
pub fn video_frames_for(
    latents: std::ops::Range<usize>,
    warmup: usize,
    c: usize,
    video_frames: usize,
) -> std::ops::Range<usize> {
    let first = crate::denoiser::causal_frames(latents.start.saturating_sub(warmup), c).start;
    let end = crate::denoiser::causal_frames(latents.end.max(1) - 1, c).end;
    first.min(video_frames)..end.min(video_frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frames_file_header_round_trips_and_is_checked() {
        let h = VideoHeader {
            width: 4,
            height: 2,
            frames: 3,
        };
        let bytes = h.encode();
        assert_eq!(VideoHeader::parse(&bytes, h.file_bytes()), Ok(h));
        assert_eq!(h.file_bytes(), 20 + 3 * 24);
        assert_eq!(h.frame_offset(2), 20 + 48);
        let e = VideoHeader::parse(&bytes, h.file_bytes() - 1).unwrap_err();
        assert!(e.contains("91 bytes, but 3 frames of 4x2 RGB take 92"), "{e}");
        assert!(VideoHeader::parse(b"\x89PNG\r\n\x1a\n", 8)
            .unwrap_err()
            .contains("not a Longshot frames file"));
        let empty = VideoHeader { frames: 0, ..h };
        assert!(VideoHeader::parse(&empty.encode(), 20)
            .unwrap_err()
            .contains("at least 1 frame"));
        let huge = VideoHeader { width: 5000, ..h };
        assert!(VideoHeader::parse(&huge.encode(), huge.file_bytes())
            .unwrap_err()
            .contains("1..=4096"));
    }

    #[test]
    fn a_span_holds_whole_frames_inside_the_video() {
        let mut s = VideoSpan {
            first_frame: 5,
            width: 1,
            height: 1,
            video_frames: 8,
            rgb: (0..9).collect(),
        };
        assert_eq!((s.validate(), s.frames()), (Ok(()), 3));
        assert_eq!(s.frame(6), Some(&[3u8, 4, 5][..]));
        assert_eq!((s.frame(4), s.frame(8)), (None, None));
        s.video_frames = 7;
        assert!(s.validate().unwrap_err().contains("past the video's 7 frames"));
        s.rgb.pop();
        assert!(s.validate().unwrap_err().contains("not a whole number"));
    }

    #[test]
    fn a_window_needs_its_frames_and_the_warm_up_before_them() {
        // Latents 10..15 with 3 latents of warm-up at c = 4: latent 7's first frame (25) to latent
        // 14's last (56, exclusive end 57).
        assert_eq!(video_frames_for(10..15, 3, 4, 100), 25..57);
        assert_eq!(video_frames_for(0..5, 28, 4, 100), 0..17);
        // Past the video: clipped (the grid's padding is grey).
        assert_eq!(video_frames_for(10..15, 3, 4, 40), 25..40);
    }

    #[test]
    fn a_digest_is_the_sha256_in_lowercase_hex_and_nothing_else_parses() {
        let d = InputDigest::of(b"abc");
        assert_eq!(
            d.as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(InputDigest::try_from(d.to_string()), Ok(d.clone()));
        for bad in [
            "",
            "abc",
            &d.as_str().to_uppercase(),
            &format!("{d}0"),
            &d.as_str().replace('a', "g"),
        ] {
            let e = InputDigest::try_from(bad.to_string()).unwrap_err();
            assert!(e.contains("64 lowercase hex digits"), "{e}");
        }
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<InputDigest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<InputDigest>("\"nope\"").is_err());
    }

    #[test]
    fn reference_images_must_hold_their_pixels() {
        let mut r = ReferenceImages {
            width: 2,
            height: 1,
            first: vec![0; 6],
            last: None,
        };
        assert_eq!((r.validate(), r.count()), (Ok(()), 1));
        r.last = Some(vec![0; 5]);
        assert_eq!(r.validate().unwrap_err(), "last image holds 5 bytes, not 2x1x3 = 6");
        r.last = Some(vec![0; 6]);
        assert_eq!((r.validate(), r.count()), (Ok(()), 2));
    }

    #[test]
    fn image_embeddings_must_be_finite_and_shaped() {
        let mut e = ImageEmbeddings {
            rows: 2,
            dim: 2,
            data: vec![0.0; 4],
        };
        assert_eq!(e.validate(), Ok(()));
        e.data[3] = f32::NAN;
        assert!(e.validate().unwrap_err().contains("value 3 is NaN"));
        e.data.pop();
        assert!(e.validate().unwrap_err().contains("holds 3 values, not [2, 2]"));
    }
}
