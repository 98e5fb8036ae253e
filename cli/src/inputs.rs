//! A job's reference images on the client: read and checked before anything is sent, then
//! uploaded to the coordinator by content (`JobService.UploadInput`), once per job.

use anyhow::{anyhow, Context, Result};
use longshot_core::api::JobApi;
use longshot_core::inputs::{InputDigest, UPLOAD_CHUNK_BYTES};
use std::path::{Path, PathBuf};

/// A reference image read from disk.
pub struct LocalImage {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
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
            bytes,
            width: img.width,
            height: img.height,
        })
    }
}

/// Checks that every image has the clip's size (the coordinator checks again; this fails before
/// anything is sent).
pub fn check_sizes(images: &[LocalImage], width: u32, height: u32) -> Result<()> {
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
pub async fn upload(client: &dyn JobApi, images: &[LocalImage]) -> Result<()> {
    for img in images {
        let chunks: Vec<_> = img.bytes.chunks(UPLOAD_CHUNK_BYTES).map(|c| Ok(c.to_vec())).collect();
        let info = client
            .upload_input(Box::pin(futures::stream::iter(chunks)), Some(img.digest.clone()))
            .await
            .map_err(|e| anyhow!("uploading {}: {e}", img.path.display()))?;
        tracing::info!(path = %img.path.display(), digest = %info.digest, bytes = info.size_bytes, "uploaded a reference image");
    }
    Ok(())
}
