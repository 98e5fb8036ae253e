//! ProRes `.mov` output through ffmpeg, checked with ffprobe; ffmpeg failures must surface.

use longshot_core::output::OutputKind;
use longshot_media::{ffmpeg_available, open_writer, MediaError, VideoMeta};

use crate::common::{decode_rgb, ffprobe, field, moving_bars, number, psnr_vs_bars, require_tool, write_bars};

const META: VideoMeta = VideoMeta {
    width: 64,
    height: 48,
    fps: 16,
};

#[test]
fn prores_probes_as_422_hq_10_bit_and_decodes_back_closely() {
    if !require_tool("ffmpeg") || !require_tool("ffprobe") {
        return;
    }
    assert!(ffmpeg_available());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bars.mov");
    let summary = write_bars(open_writer(OutputKind::Prores, &path, META).unwrap(), META, 33);
    assert_eq!(summary.frames, 33);
    assert_eq!(summary.format, OutputKind::Prores);

    let (stream, format) = ffprobe(&path);
    assert_eq!(field(&stream, "codec_name"), "prores");
    assert_eq!(field(&stream, "profile"), "HQ");
    assert_eq!(field(&stream, "pix_fmt"), "yuv422p10le");
    assert_eq!(
        (stream["width"].clone(), stream["height"].clone()),
        (64.into(), 48.into())
    );
    assert_eq!(field(&stream, "nb_frames"), "33");
    assert_eq!(field(&stream, "nb_read_frames"), "33");
    assert_eq!(field(&stream, "r_frame_rate"), "16/1");
    assert!((number(&format, "duration") - 33.0 / 16.0).abs() < 1e-3);
    assert_eq!(field(&stream, "color_space"), "bt709");
    assert!(field(&format, "format_name").contains("mov"));

    let decoded = decode_rgb(&path, META);
    assert_eq!(decoded.len(), 33);
    let (min, mean) = psnr_vs_bars(&decoded, META);
    println!("prores rgb psnr: min {min:.2} dB, mean {mean:.2} dB");
    assert!(min > 40.0, "worst frame psnr {min:.2} dB (mean {mean:.2})");
}

#[test]
fn ffmpeg_failure_surfaces_as_an_error_with_its_stderr_and_never_hangs() {
    if !require_tool("ffmpeg") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blocked.mov");
    // ffmpeg writes `<name>.partial` first; a directory there makes it fail to open its output.
    std::fs::create_dir(dir.path().join("blocked.mov.partial")).unwrap();
    let mut writer = open_writer(OutputKind::Prores, &path, META).unwrap();
    let mut failure = None;
    // Enough frames to overflow the pipe buffer, so a write (not only finish) sees the death.
    for t in 0..200 {
        if let Err(e) = writer.write_frame(&moving_bars(META, t)) {
            failure = Some(e);
            break;
        }
    }
    let err = match failure {
        Some(e) => e,
        None => writer.finish().unwrap_err(),
    };
    let MediaError::FfmpegFailed { stderr_tail, .. } = &err else {
        panic!("expected FfmpegFailed, got {err}");
    };
    assert!(
        stderr_tail.contains("blocked.mov.partial"),
        "stderr tail: {stderr_tail}"
    );
    assert!(!path.exists());
}

#[test]
fn prores_rejects_wrong_frame_lengths() {
    if !require_tool("ffmpeg") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut writer = open_writer(OutputKind::Prores, &dir.path().join("x.mov"), META).unwrap();
    let err = writer.write_frame(&[1, 2, 3]).unwrap_err();
    assert!(
        matches!(
            err,
            MediaError::FrameLength {
                expected: 9216,
                actual: 3,
                ..
            }
        ),
        "{err}"
    );
}
