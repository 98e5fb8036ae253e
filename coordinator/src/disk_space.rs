//! A job's outputs against the space on the data dir's filesystem: an estimate of the bytes they
//! take (checked before any file is opened), the space available there, and recognising a full
//! disk in whatever error a write returned, so a job fails naming the cause, not a symptom.

use crate::assembly::AssemblyPlan;
use longshot_core::job::OutputKind;
use std::path::Path;

/// Bytes the outputs of `plan` take on disk, estimated from the spec: exact for latents and an
/// upper bound for PNG (uncompressed RGB); MP4 twice its target bitrate, ProRes 422 HQ ~1 byte
/// per pixel; plus the spill of out-of-order frames, at most a clip's worth of raw RGB.
pub fn estimated_bytes(plan: &AssemblyPlan) -> u64 {
    let frames = u64::from(plan.total_frames);
    let pixels = u64::from(plan.meta.width) * u64::from(plan.meta.height);
    let raw = frames * pixels * 3;
    let mut total = 0;
    for kind in &plan.outputs {
        total += match kind {
            OutputKind::Latents => plan.latent_shape.iter().map(|&d| d as u64).product::<u64>() * 4 + 64 * 1024,
            OutputKind::Png => raw,
            OutputKind::Mp4 => {
                let bps = u64::from(longshot_media::default_bitrate_bps(&plan.meta));
                2 * bps * frames / u64::from(plan.meta.fps.max(1)) / 8 + 64 * 1024
            }
            OutputKind::Prores => frames * pixels,
        };
    }
    // Workers other than the first deliver frames ahead of their turn, which wait on disk.
    if plan.outputs.iter().any(|k| k.is_video()) && plan.workers > 1 {
        total += raw * (plan.workers as u64 - 1) / plan.workers as u64;
    }
    total
}

/// Bytes available to an unprivileged writer on the filesystem holding `dir`.
pub fn available_bytes(dir: &Path) -> std::io::Result<u64> {
    let s = rustix::fs::statvfs(dir)?;
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

/// `bytes` for people: "13.9 MB".
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..1_000 => format!("{bytes} B"),
        1_000..1_000_000 => format!("{:.1} kB", b / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", b / 1e6),
        _ => format!("{:.1} GB", b / 1e9),
    }
}

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
        };
        assert_eq!(estimated_bytes(&plan), 53 * 16 * 8 * 12 * 4 + 65536);
        plan.outputs = vec![OutputKind::Png];
        let raw = 209 * 96 * 64 * 3;
        assert_eq!(estimated_bytes(&plan), raw + raw * 2 / 3);
        plan.workers = 1;
        assert_eq!(estimated_bytes(&plan), raw);
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
        assert_eq!(human(13_900_000), "13.9 MB");
        assert_eq!(human(999), "999 B");
    }
}
