//! PNG sequences must round-trip bit-exactly through an independent decode.

use longshot_core::output::OutputKind;
use longshot_media::{open_writer, png_frame_name, VideoMeta};

use crate::common::{moving_bars, write_bars};

const META: VideoMeta = VideoMeta {
    width: 64,
    height: 48,
    fps: 16,
};

fn decode_png(path: &std::path::Path) -> (u32, u32, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

#[test]
fn png_sequence_round_trips_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("frames");
    let summary = write_bars(open_writer(OutputKind::Png, &out, META).unwrap(), META, 5);
    assert_eq!(summary.frames, 5);
    assert_eq!(summary.path, out);

    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, (0..5).map(png_frame_name).collect::<Vec<_>>());
    assert_eq!(names[0], "frame_000000.png");

    let mut total = 0;
    for t in 0..5u32 {
        let path = out.join(png_frame_name(u64::from(t)));
        total += std::fs::metadata(&path).unwrap().len();
        let (w, h, rgb) = decode_png(&path);
        assert_eq!((w, h), (64, 48));
        assert!(
            rgb == moving_bars(META, t),
            "frame {t} differs after the png round trip"
        );
    }
    assert_eq!(summary.bytes, total);
}

#[test]
fn png_writer_refuses_a_directory_with_an_old_sequence() {
    let dir = tempfile::tempdir().unwrap();
    write_bars(open_writer(OutputKind::Png, dir.path(), META).unwrap(), META, 2);
    let err = open_writer(OutputKind::Png, dir.path(), META).err().unwrap();
    assert!(err.to_string().contains("already holds frame_000000.png"), "{err}");
}

#[test]
fn png_writer_rejects_wrong_frame_lengths() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = open_writer(OutputKind::Png, dir.path(), META).unwrap();
    let err = writer.write_frame(&vec![0; 9215]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "frame 0 has 9215 bytes but a 64x48 rgb frame needs 9216"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
