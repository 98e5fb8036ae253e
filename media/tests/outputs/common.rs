//! Shared helpers: the one place that decides whether a missing ffmpeg/ffprobe fails or skips,
//! a synthetic clip, ffprobe JSON, decoding back to RGB, and PSNR.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use longshot_media::VideoMeta;
use serde_json::Value;

/// Setting this to `1` turns a missing ffmpeg/ffprobe from a failure into a loud skip.
pub const ALLOW_NO_FFMPEG: &str = "LONGSHOT_ALLOW_NO_FFMPEG";

/// True if `tool` runs. If not: panics, unless `LONGSHOT_ALLOW_NO_FFMPEG=1`, in which case it
/// prints `SKIPPED: <tool> not found` straight to stderr (past the test harness's capture) and
/// returns false so the caller can return early.
pub fn require_tool(tool: &str) -> bool {
    let runs = Command::new(tool)
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    if runs {
        return true;
    }
    if std::env::var(ALLOW_NO_FFMPEG).as_deref() == Ok("1") {
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED: {tool} not found on PATH ({ALLOW_NO_FFMPEG}=1); this test checked nothing ***\n"
        );
        return false;
    }
    panic!(
        "{tool} not found on PATH: install ffmpeg (Debian: apt-get install ffmpeg), \
         or set {ALLOW_NO_FFMPEG}=1 to skip tools-based checks"
    );
}

/// Frame `t` of a test clip: eight colour bars scrolling 2 px per frame over a vertical
/// brightness ramp, so both motion and gradients reach the encoder.
pub fn moving_bars(meta: VideoMeta, t: u32) -> Vec<u8> {
    const BARS: [[u8; 3]; 8] = [
        [235, 235, 235],
        [235, 235, 16],
        [16, 235, 235],
        [16, 235, 16],
        [235, 16, 235],
        [235, 16, 16],
        [16, 16, 235],
        [40, 40, 40],
    ];
    let (w, h) = (meta.width, meta.height);
    let bar_width = (w / 8).max(1);
    let mut rgb = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        let ramp = 0.55 + 0.45 * f64::from(y) / f64::from(h.max(2) - 1);
        for x in 0..w {
            let bar = BARS[(((x + 2 * t) / bar_width) % 8) as usize];
            rgb.extend(bar.iter().map(|&c| (f64::from(c) * ramp).round() as u8));
        }
    }
    rgb
}

/// Writes `frames` frames of `moving_bars` through `writer` and finishes it.
pub fn write_bars(
    mut writer: Box<dyn longshot_media::FrameWriter>,
    meta: VideoMeta,
    frames: u32,
) -> longshot_media::OutputSummary {
    for t in 0..frames {
        writer.write_frame(&moving_bars(meta, t)).expect("write frame");
    }
    writer.finish().expect("finish writer")
}

/// ffprobe's view of the first video stream (with `-count_frames`) and of the container.
pub fn ffprobe(path: &Path) -> (Value, Value) {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream:format=duration,format_name", "-of", "json"])
        .arg(path)
        .output()
        .expect("run ffprobe");
    assert!(
        output.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: Value = serde_json::from_slice(&output.stdout).expect("ffprobe json");
    println!(
        "ffprobe {}:\n{}",
        path.display(),
        serde_json::to_string_pretty(&json).unwrap_or_default()
    );
    (json["streams"][0].clone(), json["format"].clone())
}

/// ffprobe's per-frame key_frame flags, in display order.
pub fn key_frames(path: &Path) -> Vec<bool> {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args(["-show_entries", "frame=key_frame", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("run ffprobe");
    assert!(
        output.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| l.trim().trim_end_matches(',') == "1")
        .collect()
}

/// Decodes `path` with ffmpeg back to RGB24 frames. `-xerror` makes any bitstream error fatal,
/// and ffmpeg picks the RGB matrix from the stream's colour tags.
pub fn decode_rgb(path: &Path, meta: VideoMeta) -> Vec<Vec<u8>> {
    let output = Command::new("ffmpeg")
        .args(["-v", "error", "-xerror", "-i"])
        .arg(path)
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .expect("run ffmpeg");
    assert!(
        output.status.success(),
        "ffmpeg decode failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let frame_len = (meta.width * meta.height * 3) as usize;
    assert_eq!(output.stdout.len() % frame_len, 0, "decoded size is not whole frames");
    output.stdout.chunks_exact(frame_len).map(<[u8]>::to_vec).collect()
}

/// Peak signal-to-noise ratio in dB between two 8-bit images.
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mse = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    if mse == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

/// Per-frame PSNR of decoded frames against the clip `moving_bars` produced; returns (min, mean).
pub fn psnr_vs_bars(decoded: &[Vec<u8>], meta: VideoMeta) -> (f64, f64) {
    let scores: Vec<f64> = decoded
        .iter()
        .enumerate()
        .map(|(t, frame)| psnr(frame, &moving_bars(meta, t as u32)))
        .collect();
    let min = scores.iter().copied().fold(f64::INFINITY, f64::min);
    (min, scores.iter().sum::<f64>() / scores.len() as f64)
}

/// A stream field that ffprobe prints as a string, e.g. `nb_frames`.
pub fn field<'a>(stream: &'a Value, name: &str) -> &'a str {
    stream[name]
        .as_str()
        .unwrap_or_else(|| panic!("ffprobe gave no {name}: {stream}"))
}

/// A field ffprobe prints as a decimal string, e.g. `duration`.
pub fn number(value: &Value, name: &str) -> f64 {
    field(value, name)
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a number: {value}"))
}
