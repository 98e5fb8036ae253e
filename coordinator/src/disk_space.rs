//! A job's outputs against the space on the data dir's filesystem: an estimate of the bytes they
//! take (checked before any file is opened), the space available there, and recognising a full
//! disk in whatever error a write returned, so a job fails naming the cause, not a symptom.

use crate::assembly::AssemblyPlan;
use longshot_core::job::OutputKind;
use longshot_media::VideoMeta;
use std::path::Path;

/// Bytes the outputs of `plan` take on disk (see [`estimate`]).
pub fn estimated_bytes(plan: &AssemblyPlan) -> u64 {
    let whole = estimate(
        &plan.outputs,
        &plan.meta,
        plan.total_frames,
        plan.latent_shape,
        plan.workers,
    );
    // Per-shot files: every frame of every video output once more.
    let videos: Vec<OutputKind> = plan.outputs.iter().copied().filter(|k| k.is_video()).collect();
    let shots = match plan.shot_files.is_empty() {
        true => 0,
        false => estimate(&videos, &plan.meta, plan.total_frames, plan.latent_shape, 1),
    };
    whole.saturating_add(shots)
}

/// Bytes `outputs` of `frames` frames take on disk, estimated from the spec: exact for latents
/// and an upper bound for PNG (uncompressed RGB); MP4 twice its target bitrate, ProRes 422 HQ ~1
/// byte per pixel; plus, with a video output and `workers > 1`, the spill of out-of-order frames,
/// at most a clip's worth of raw RGB. Saturating: never a wrapped small number.
pub fn estimate(
    outputs: &[OutputKind],
    meta: &VideoMeta,
    frames: u32,
    latent_shape: [usize; 4],
    workers: usize,
) -> u64 {
    let frames = u64::from(frames);
    let pixels = u64::from(meta.width) * u64::from(meta.height);
    let raw = frames.saturating_mul(pixels).saturating_mul(3);
    let mut total = 0u64;
    for kind in outputs {
        total = total.saturating_add(match kind {
            OutputKind::Latents => latent_shape
                .iter()
                .fold(4u64, |acc, &d| acc.saturating_mul(d as u64))
                .saturating_add(64 * 1024),
            OutputKind::Png => raw,
            OutputKind::Mp4 => {
                let bps = u64::from(longshot_media::default_bitrate_bps(meta));
                (2 * bps).saturating_mul(frames) / u64::from(meta.fps.max(1)) / 8 + 64 * 1024
            }
            OutputKind::Prores => frames.saturating_mul(pixels),
        });
    }
    // Workers other than the first deliver frames ahead of their turn, which wait on disk.
    if outputs.iter().any(|k| k.is_video()) && workers > 1 {
        total = total.saturating_add(raw.saturating_mul(workers as u64 - 1) / workers as u64);
    }
    total
}

/// Bytes available to an unprivileged writer on the filesystem holding `dir`.
pub fn available_bytes(dir: &Path) -> std::io::Result<u64> {
    // A directory not made yet (a fresh data dir) will live on its nearest existing ancestor's
    // filesystem.
    let existing = dir.ancestors().find(|p| p.exists()).unwrap_or(dir);
    let s = rustix::fs::statvfs(existing)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

/// Whether an error (or one of its causes) is ENOSPC. Some writers keep only the message of
/// the i/o error underneath (the MP4 muxer, safetensors), so the text counts too.
pub fn is_disk_full(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::StorageFull || io.raw_os_error() == Some(28) {
                return true;
            }
        }
        let text = err.to_string();
        if text.contains("No space left on device") || text.contains("os error 28") {
            return true;
        }
        cur = err.source();
    }
    false
}

pub use longshot_core::admission::human_bytes as human;

#[cfg(test)]
mod tests {
    use super::*;
    use longshot_media::{MediaError, VideoMeta};

    #[test]
    fn estimates_follow_the_formats() {
        let mut plan = AssemblyPlan {
            dir: "/x".into(),
            outputs: vec![OutputKind::Latents],
            meta: VideoMeta {
                width: 96,
                height: 64,
                fps: 16,
            },
            total_frames: 209,
            latent_shape: [53, 16, 8, 12],
            latent_metadata: Vec::new(),
            workers: 3,
            shot_files: Vec::new(),
        };
        assert_eq!(estimated_bytes(&plan), 53 * 16 * 8 * 12 * 4 + 65536);
        plan.outputs = vec![OutputKind::Png];
        let raw = 209 * 96 * 64 * 3;
        assert_eq!(estimated_bytes(&plan), raw + raw * 2 / 3);
        plan.workers = 1;
        assert_eq!(estimated_bytes(&plan), raw);
        // A data dir not made yet reads its parent's filesystem.
        let dir = tempfile::tempdir().unwrap();
        let fresh = available_bytes(&dir.path().join("data/jobs")).unwrap();
        assert!(fresh > 0 && available_bytes(dir.path()).is_ok());
        // Per-shot files hold every frame once more.
        plan.shot_files = vec![0..100, 100..209];
        assert_eq!(estimated_bytes(&plan), 2 * raw);
    }

    #[test]
    fn a_full_disk_is_recognised_through_wrappers_and_messages() {
        let enospc = std::io::Error::from_raw_os_error(28);
        assert!(is_disk_full(&enospc));
        let wrapped = MediaError::Io {
            action: "writing frame 3".into(),
            source: std::io::Error::from_raw_os_error(28),
        };
        assert!(is_disk_full(&wrapped));
        let text_only = MediaError::Mux {
            path: "/x/clip.mp4".into(),
            message: "No space left on device (os error 28)".into(),
        };
        assert!(is_disk_full(&text_only));
        assert!(!is_disk_full(&std::io::Error::from_raw_os_error(13)));
    }
}
