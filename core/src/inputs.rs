//! A job's uploaded inputs: reference images for image-to-video.
//!
//! A client uploads each input's bytes once (gRPC `JobService.UploadInput`); the coordinator keeps
//! them under the SHA-256 of their bytes and a job names them by that digest, never by a path
//! anyone opens on the client's behalf. The coordinator decodes and checks them when the job is
//! submitted; workers receive the decoded pixels with their assignment ([`ReferenceImages`]) and
//! the image encoder's output computed once per job ([`ImageEmbeddings`]).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The largest input the coordinator accepts by default (`--max-input-bytes`).
pub const DEFAULT_MAX_INPUT_BYTES: u64 = 64 << 20;

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

#[cfg(test)]
mod tests {
    use super::*;

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
