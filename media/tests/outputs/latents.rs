//! Latents safetensors: exact round trip, written whole or in pieces (`LatentsWriter`), and
//! errors that name the file and the tensor.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use longshot_media::{read_latent_frames, read_latents, write_latents, Latents, LatentsWriter, MediaError};
use safetensors::tensor::{Dtype, TensorView};

fn sample_latents() -> Latents {
    let shape = vec![2, 3, 4, 5];
    let mut data: Vec<f32> = (0..120).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
    // Values a lossy path would mangle: signed zero, infinities, NaN payload, subnormals.
    data[..6].copy_from_slice(&[
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::from_bits(0x7fc0_1234),
        f32::MIN_POSITIVE / 8.0,
        f32::MAX,
    ]);
    let metadata = BTreeMap::from([
        ("model".to_string(), "wan2.1-t2v-1.3b".to_string()),
        ("seed".to_string(), "42".to_string()),
        (
            "prompt".to_string(),
            "a lighthouse at dusk, \"long shot\" — 60 s".to_string(),
        ),
    ]);
    Latents {
        name: "latents".into(),
        shape,
        data,
        metadata,
    }
}

#[test]
fn latents_round_trip_bit_exactly_with_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clip.latents.safetensors");
    let latents = sample_latents();
    let bytes = write_latents(&path, &latents).unwrap();
    assert_eq!(bytes, std::fs::metadata(&path).unwrap().len());

    let back = read_latents(&path, "latents", Some(&[2, 3, 4, 5])).unwrap();
    assert_eq!(back.name, latents.name);
    assert_eq!(back.shape, latents.shape);
    assert_eq!(back.metadata, latents.metadata);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&back.data), bits(&latents.data));
    assert!(read_latents(&path, "latents", None).is_ok());
}

#[test]
fn wrong_shape_or_name_errors_name_the_file_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.safetensors");
    write_latents(&path, &sample_latents()).unwrap();

    let err = read_latents(&path, "latents", Some(&[2, 3, 20]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&path.display().to_string()) && err.contains("\"latents\""),
        "{err}"
    );
    assert!(err.contains("shape is [2, 3, 4, 5], expected [2, 3, 20]"), "{err}");

    let err = read_latents(&path, "noise", None).unwrap_err().to_string();
    assert!(err.contains("\"noise\"") && err.contains("[\"latents\"]"), "{err}");
}

#[test]
fn non_f32_tensors_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("i32.safetensors");
    let raw = [0u8; 16];
    let view = TensorView::new(Dtype::I32, vec![4], &raw).unwrap();
    safetensors::serialize_to_file([("latents", view)], &None::<HashMap<String, String>>, &path).unwrap();
    let err = read_latents(&path, "latents", None).unwrap_err();
    assert!(matches!(err, MediaError::Latents { .. }), "{err}");
    assert!(err.to_string().contains("dtype is I32, expected F32"), "{err}");
}

#[test]
fn corrupt_truncated_and_missing_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"definitely not a safetensors file").unwrap();
    let truncated = dir.path().join("truncated.safetensors");
    write_latents(&truncated, &sample_latents()).unwrap();
    let full = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &full[..full.len() - 7]).unwrap();

    for path in [&garbage, &truncated] {
        let err = read_latents(path, "latents", None).unwrap_err();
        assert!(matches!(err, MediaError::Safetensors { .. }), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
    }
    let missing = dir.path().join("missing.safetensors");
    let err = read_latents(&missing, "latents", None).unwrap_err().to_string();
    assert!(err.starts_with(&format!("cannot read {}", missing.display())), "{err}");
}

#[test]
fn writing_inconsistent_latents_fails_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.safetensors");
    let mut latents = sample_latents();
    latents.shape = vec![7, 7];
    let err = write_latents(&path, &latents).unwrap_err().to_string();
    assert!(err.contains("shape [7, 7] needs 49 values but 120 were given"), "{err}");
    assert!(!Path::new(&path).exists());
}

#[test]
fn frames_written_in_any_order_give_the_same_file_as_a_whole_write() {
    let dir = tempfile::tempdir().unwrap();
    let latents = sample_latents();
    let whole = dir.path().join("whole.safetensors");
    write_latents(&whole, &latents).unwrap();
    // The safetensors crate reads it: header, metadata, offsets.
    let bytes = std::fs::read(&whole).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("latents").unwrap().shape(), [2, 3, 4, 5]);
    assert_eq!(bytes.len() % 4, 0);

    let pieces = dir.path().join("pieces.safetensors");
    let mut w = LatentsWriter::create(&pieces, "latents", &latents.shape, &latents.metadata).unwrap();
    let frame = 3 * 4 * 5;
    w.write_frames(1, &latents.data[frame..]).unwrap();
    assert!(!pieces.exists(), "nothing at the destination before finish");
    w.write_frames(0, &latents.data[..frame]).unwrap();
    w.finish().unwrap();
    assert_eq!(std::fs::read(&pieces).unwrap(), bytes, "same bytes, whatever the order");
    let again = dir.path().join("again.safetensors");
    write_latents(&again, &latents).unwrap();
    assert_eq!(std::fs::read(&again).unwrap(), bytes, "equal inputs give equal bytes");
}

#[test]
fn a_piecewise_write_refuses_overlaps_gaps_and_strays_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.safetensors");
    let latents = sample_latents();
    let frame = 3 * 4 * 5;
    let mut w = LatentsWriter::create(&path, "latents", &latents.shape, &latents.metadata).unwrap();
    w.write_frames(0, &latents.data[..frame]).unwrap();
    let err = w.write_frames(0, &latents.data[..frame]).unwrap_err().to_string();
    assert!(err.contains("frame 0 was already written"), "{err}");
    let err = w.write_frames(2, &latents.data[..frame]).unwrap_err().to_string();
    assert!(err.contains("outside 0..2"), "{err}");
    let err = w.write_frames(1, &latents.data[..7]).unwrap_err().to_string();
    assert!(err.contains("not whole frames of 60"), "{err}");
    let err = w.finish().unwrap_err().to_string();
    assert!(
        err.contains("frame 1 was never written") && err.contains("p.safetensors"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "no file, no .partial: {left:?}");
}

#[test]
fn a_range_of_frames_reads_back_bit_exactly_and_bad_requests_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.safetensors");
    let latents = sample_latents();
    write_latents(&path, &latents).unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let shape = [2, 3, 4, 5];
    for (range, values) in [(0..2, 0..120), (1..2, 60..120), (0..1, 0..60), (1..1, 60..60)] {
        let got = read_latent_frames(&path, "latents", &shape, range.clone()).unwrap();
        assert_eq!(bits(&got), bits(&latents.data[values]), "{range:?}");
    }
    let err = |name: &str, shape: &[usize], range: std::ops::Range<usize>| {
        read_latent_frames(&path, name, shape, range).unwrap_err().to_string()
    };
    let e = err("latents", &[2, 3, 4, 6], 0..1);
    assert!(e.contains("shape is Some([2, 3, 4, 5]), expected [2, 3, 4, 6]"), "{e}");
    assert!(err("other", &shape, 0..1).contains("no such tensor"));
    assert!(err("latents", &shape, 1..3).contains("frames 1..3 are outside the tensor's 2"));
    std::fs::write(&path, b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!").unwrap();
    assert!(err("latents", &shape, 0..1).contains("the header is not JSON"));
    let missing = read_latent_frames(&dir.path().join("gone.safetensors"), "latents", &shape, 0..1).unwrap_err();
    assert!(missing.to_string().contains("gone.safetensors"), "{missing}");
}
