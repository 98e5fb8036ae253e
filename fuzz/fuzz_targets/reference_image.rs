//! An uploaded input as the coordinator reads it: as a reference image (`--image`) any bytes must
//! decode to an RGB image within the size limit or give an error, never a panic or an allocation
//! the header alone claims; as an input video (`--video`) its frames-file header must parse only
//! when the bytes hold exactly the frames it names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use longshot_core::inputs::VideoHeader;
use longshot_media::{decode_rgb8, MAX_IMAGE_SIDE};

fuzz_target!(|data: &[u8]| {
    if let Ok(img) = decode_rgb8(data) {
        assert!(img.width <= MAX_IMAGE_SIDE && img.height <= MAX_IMAGE_SIDE);
        assert_eq!(img.data.len(), img.width as usize * img.height as usize * 3);
    }
    if let Ok(h) = VideoHeader::parse(data, data.len() as u64) {
        assert_eq!(h.file_bytes(), data.len() as u64);
    }
});
