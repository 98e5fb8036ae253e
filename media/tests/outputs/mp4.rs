//! MP4 (H.264) output checked with ffprobe and decoded back with ffmpeg.

use longshot_core::output::OutputKind;
use longshot_media::{open_writer, open_writer_with, MediaError, Mp4Options, VideoMeta, WriterOptions};

use crate::common::{
    decode_rgb, ffprobe, field, key_frames, moving_bars, number, psnr_vs_bars, require_tool, write_bars,
};

const META: VideoMeta = VideoMeta {
    width: 64,
    height: 48,
    fps: 16,
};
const FRAMES: u32 = 33;

#[test]
fn mp4_probes_as_h264_yuv420p_with_exact_frame_count_rate_and_duration() {
    if !require_tool("ffprobe") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bars.mp4");
    let summary = write_bars(open_writer(OutputKind::Mp4, &path, META).unwrap(), META, FRAMES);
    assert_eq!(summary.frames, 33);
    assert_eq!(summary.path, path);
    assert!((summary.duration_secs - 33.0 / 16.0).abs() < 1e-9);
    assert_eq!(summary.bytes, std::fs::metadata(&path).unwrap().len());

    let (stream, format) = ffprobe(&path);
    assert_eq!(field(&stream, "codec_name"), "h264");
    assert_eq!(field(&stream, "pix_fmt"), "yuv420p");
    assert_eq!(stream["width"], 64);
    assert_eq!(stream["height"], 48);
    assert_eq!(field(&stream, "nb_frames"), "33");
    assert_eq!(field(&stream, "nb_read_frames"), "33");
    assert_eq!(field(&stream, "r_frame_rate"), "16/1");
    assert_eq!(field(&stream, "avg_frame_rate"), "16/1");
    assert!((number(&stream, "duration") - 33.0 / 16.0).abs() < 1e-3);
    assert!((number(&format, "duration") - 33.0 / 16.0).abs() < 1e-3);
    // The conversion matrix is tagged in the SPS so players need not guess it.
    assert_eq!(field(&stream, "color_space"), "bt709");
    assert_eq!(field(&stream, "color_primaries"), "bt709");
    assert_eq!(field(&stream, "color_transfer"), "bt709");
    assert_eq!(field(&stream, "color_range"), "tv");
}

#[test]
fn mp4_decodes_back_to_the_input_within_lossy_tolerance() {
    if !require_tool("ffmpeg") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bars.mp4");
    write_bars(open_writer(OutputKind::Mp4, &path, META).unwrap(), META, FRAMES);
    let decoded = decode_rgb(&path, META);
    assert_eq!(decoded.len(), 33);
    let (min, mean) = psnr_vs_bars(&decoded, META);
    println!("mp4 rgb psnr: min {min:.2} dB, mean {mean:.2} dB");
    assert!(min > 30.0, "worst frame psnr {min:.2} dB (mean {mean:.2})");
}

#[test]
fn keyframe_interval_option_places_idr_frames_for_seeking() {
    if !require_tool("ffprobe") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gop.mp4");
    let options = WriterOptions {
        mp4: Mp4Options {
            keyframe_interval_secs: Some(1),
            ..Mp4Options::default()
        },
    };
    write_bars(
        open_writer_with(OutputKind::Mp4, &path, META, options).unwrap(),
        META,
        40,
    );
    let keys: Vec<usize> = key_frames(&path)
        .iter()
        .enumerate()
        .filter_map(|(i, &k)| k.then_some(i))
        .collect();
    assert_eq!(keys, vec![0, 16, 32]);
}

#[test]
fn bitrate_option_controls_the_file_size() {
    // Grain makes the clip expensive enough for the rate control to matter (plain bars fit
    // any bitrate at top quality).
    let meta = VideoMeta {
        width: 160,
        height: 96,
        fps: 16,
    };
    let frames: Vec<Vec<u8>> = (0..32).map(|t| with_grain(moving_bars(meta, t), t)).collect();
    let dir = tempfile::tempdir().unwrap();
    let size_at = |bps: u32| {
        let path = dir.path().join(format!("rate_{bps}.mp4"));
        let options = WriterOptions {
            mp4: Mp4Options {
                bitrate_bps: Some(bps),
                ..Mp4Options::default()
            },
        };
        let mut writer = open_writer_with(OutputKind::Mp4, &path, meta, options).unwrap();
        frames.iter().for_each(|f| writer.write_frame(f).unwrap());
        // 32 frames at 16 fps = 2 s.
        writer.finish().unwrap().bytes as f64 * 8.0 / 2.0
    };
    let (low, high) = (size_at(200_000), size_at(1_600_000));
    println!("asked 200 kbit/s, got {low:.0}; asked 1600 kbit/s, got {high:.0}");
    assert!(
        low < 200_000.0 * 1.5 && high > 1_600_000.0 * 0.5,
        "{low} / {high} bit/s"
    );
}

/// Adds deterministic per-pixel noise (an LCG, so the test needs no rand crate).
fn with_grain(mut rgb: Vec<u8>, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    for px in rgb.iter_mut() {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        *px = px.saturating_add((state >> 27) as u8);
    }
    rgb
}

#[test]
fn mp4_rejects_odd_sizes_and_wrong_frame_lengths_without_leaving_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.mp4");
    let odd = VideoMeta {
        width: 63,
        height: 48,
        fps: 16,
    };
    let err = open_writer(OutputKind::Mp4, &path, odd).err().unwrap();
    assert!(matches!(err, MediaError::InvalidMeta { .. }), "{err}");
    assert!(err.to_string().contains("must be even"), "{err}");

    let mut writer = open_writer(OutputKind::Mp4, &path, META).unwrap();
    let err = writer.write_frame(&[0u8; 10]).unwrap_err();
    assert_eq!(err.to_string(), "frame 0 has 10 bytes but a 64x48 rgb frame needs 9216");
    // The writer is still usable after a rejected frame.
    writer.write_frame(&moving_bars(META, 0)).unwrap();
    drop(writer);
    assert!(
        !path.exists(),
        "an abandoned writer must not leave a file at the target"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "partial file left behind"
    );

    let err = open_writer(OutputKind::Mp4, &path, META).unwrap().finish().unwrap_err();
    assert!(matches!(err, MediaError::NoFrames { .. }), "{err}");
    assert!(!path.exists());
}

#[test]
fn mp4_into_a_missing_directory_fails_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/dir/clip.mp4");
    let err = open_writer(OutputKind::Mp4, &path, META).err().unwrap();
    assert!(err.to_string().contains("does not exist"), "{err}");
}
