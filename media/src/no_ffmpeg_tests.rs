//! Proof that MP4 output needs no ffmpeg and that ProRes says so clearly when it is missing.
//!
//! Changing PATH inside the test process would race with other tests, so each check re-runs
//! this test binary on one ignored "child" test with PATH set to an empty directory.

use longshot_core::output::OutputKind;
use std::path::Path;
use std::process::Command;

use crate::{ffmpeg_available, open_writer, MediaError, VideoMeta};

/// Runs `test_name` from this binary with an empty PATH; returns its stdout and stderr.
fn run_child_without_ffmpeg(test_name: &str) -> String {
    let empty_dir = tempfile::tempdir().expect("temp dir");
    let exe = std::env::current_exe().expect("current test binary");
    let output = Command::new(exe)
        .args([test_name, "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env("PATH", empty_dir.path())
        .output()
        .expect("re-run test binary");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "child test {test_name} failed:\n{text}");
    assert!(text.contains("1 passed"), "child test {test_name} did not run:\n{text}");
    assert!(
        text.contains("ffmpeg_available=false"),
        "child still saw ffmpeg:\n{text}"
    );
    text
}

#[test]
fn mp4_writer_works_with_ffmpeg_absent_from_path() {
    run_child_without_ffmpeg("no_ffmpeg_tests::child_encodes_mp4");
}

#[test]
fn prores_reports_missing_ffmpeg_clearly() {
    run_child_without_ffmpeg("no_ffmpeg_tests::child_prores_reports_missing_ffmpeg");
}

#[test]
#[ignore = "run by mp4_writer_works_with_ffmpeg_absent_from_path with PATH emptied"]
fn child_encodes_mp4() {
    println!("ffmpeg_available={}", ffmpeg_available());
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("clip.mp4");
    let meta = VideoMeta {
        width: 64,
        height: 48,
        fps: 16,
    };
    let mut writer = open_writer(OutputKind::Mp4, &path, meta).expect("open mp4 writer");
    for t in 0..20u8 {
        let frame: Vec<u8> = (0..64 * 48 * 3).map(|i| (i as u8).wrapping_add(t * 8)).collect();
        writer.write_frame(&frame).expect("write frame");
    }
    let summary = writer.finish().expect("finish");
    assert_eq!(summary.frames, 20);
    assert!((summary.duration_secs - 1.25).abs() < 1e-9);
    check_with_mp4_reader(&path, 20, meta);
}

/// Reads the file back with the `mp4` crate's own parser (no ffprobe in this process).
fn check_with_mp4_reader(path: &Path, frames: u32, meta: VideoMeta) {
    let file = std::fs::File::open(path).expect("open clip");
    let size = file.metadata().expect("stat clip").len();
    let mut reader = mp4::Mp4Reader::read_header(std::io::BufReader::new(file), size).expect("parse mp4");
    let track = reader.tracks().get(&1).expect("video track 1");
    assert_eq!(track.media_type().expect("media type"), mp4::MediaType::H264);
    assert_eq!(track.sample_count(), frames);
    assert_eq!((track.width(), track.height()), (meta.width as u16, meta.height as u16));
    assert!((track.frame_rate() - f64::from(meta.fps)).abs() < 1e-6);
    let first = reader.read_sample(1, 1).expect("read sample").expect("sample 1");
    assert!(first.is_sync, "the first sample must be a keyframe");
    assert!(!path.with_extension("mp4.partial").exists());
}

#[test]
#[ignore = "run by prores_reports_missing_ffmpeg_clearly with PATH emptied"]
fn child_prores_reports_missing_ffmpeg() {
    println!("ffmpeg_available={}", ffmpeg_available());
    if ffmpeg_available() {
        return; // Run by hand with ffmpeg present: the parent test rejects this output.
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let meta = VideoMeta {
        width: 64,
        height: 48,
        fps: 16,
    };
    let result = open_writer(OutputKind::Prores, &dir.path().join("clip.mov"), meta);
    let err = result.err().expect("prores must fail without ffmpeg");
    assert!(matches!(err, MediaError::FfmpegNotFound));
    assert_eq!(
        err.to_string(),
        "ffmpeg not found on PATH: ProRes output needs ffmpeg; MP4 and PNG do not"
    );
}
