//! Reference images for image-to-video: PNG or JPEG bytes decoded to 8-bit RGB.
//!
//! Decoding is bounded: an image larger than [`MAX_IMAGE_SIDE`] on a side is refused from its
//! header, before any pixel is decoded, so a small file cannot claim gigabytes.

use image::{ImageFormat, ImageReader, Limits};
use std::io::Cursor;

/// The largest side a reference image may have (as a job's width and height).
pub const MAX_IMAGE_SIDE: u32 = longshot_core::job::MAX_SIDE;

/// A decoded image: 8-bit RGB, row-major `[height, width, 3]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

/// Why bytes are not a usable reference image. Messages say what is allowed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageInputError {
    #[error("is not a PNG or JPEG image")]
    UnknownFormat,
    #[error("is a {0:?} image; reference images must be PNG or JPEG")]
    Unsupported(ImageFormat),
    #[error("is {width}x{height}; reference images may be at most {MAX_IMAGE_SIDE} pixels on a side")]
    TooLarge { width: u32, height: u32 },
    #[error("cannot be decoded: {0}")]
    Corrupt(String),
}

/// Decodes PNG or JPEG `bytes` (any bit depth, colour type or alpha; alpha is dropped, 16-bit
/// samples are rounded to 8 bits) to RGB.
pub fn decode_rgb8(bytes: &[u8]) -> Result<RgbImage, ImageInputError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageInputError::Corrupt(e.to_string()))?;
    match reader.format() {
        Some(ImageFormat::Png | ImageFormat::Jpeg) => {}
        Some(other) => return Err(ImageInputError::Unsupported(other)),
        None => return Err(ImageInputError::UnknownFormat),
    }
    let (width, height) = reader
        .into_dimensions()
        .map_err(|e| ImageInputError::Corrupt(e.to_string()))?;
    if width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE {
        return Err(ImageInputError::TooLarge { width, height });
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageInputError::Corrupt(e.to_string()))?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| ImageInputError::Corrupt(e.to_string()))?;
    let rgb = img.into_rgb8();
    Ok(RgbImage {
        width: rgb.width(),
        height: rgb.height(),
        data: rgb.into_raw(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32, color: png::ColorType, depth: png::BitDepth, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut e = png::Encoder::new(&mut out, width, height);
        e.set_color(color);
        e.set_depth(depth);
        e.write_header().unwrap().write_image_data(data).unwrap();
        out
    }

    #[test]
    fn png_in_every_colour_type_decodes_to_rgb8() {
        let rgb = png(2, 1, png::ColorType::Rgb, png::BitDepth::Eight, &[1, 2, 3, 4, 5, 6]);
        assert_eq!(
            decode_rgb8(&rgb).unwrap(),
            RgbImage {
                width: 2,
                height: 1,
                data: vec![1, 2, 3, 4, 5, 6]
            }
        );
        let rgba = png(1, 1, png::ColorType::Rgba, png::BitDepth::Eight, &[9, 8, 7, 0]);
        assert_eq!(decode_rgb8(&rgba).unwrap().data, vec![9, 8, 7]);
        let grey = png(1, 1, png::ColorType::Grayscale, png::BitDepth::Eight, &[200]);
        assert_eq!(decode_rgb8(&grey).unwrap().data, vec![200, 200, 200]);
        let deep = png(
            1,
            1,
            png::ColorType::Rgb,
            png::BitDepth::Sixteen,
            &[0xff, 0xff, 0, 0, 0x80, 0x80],
        );
        assert_eq!(decode_rgb8(&deep).unwrap().data, vec![255, 0, 128]);
    }

    #[test]
    fn jpeg_decodes() {
        let mut out = Vec::new();
        let img = image::RgbImage::from_pixel(16, 8, image::Rgb([200, 100, 50]));
        img.write_to(&mut Cursor::new(&mut out), ImageFormat::Jpeg).unwrap();
        let d = decode_rgb8(&out).unwrap();
        assert_eq!((d.width, d.height, d.data.len()), (16, 8, 16 * 8 * 3));
        // Lossy, but a flat colour comes back within a few levels.
        for px in d.data.chunks(3) {
            for (got, want) in px.iter().zip([200u8, 100, 50]) {
                assert!(got.abs_diff(want) <= 3, "{px:?}");
            }
        }
    }

    #[test]
    fn bad_bytes_are_refused_with_what_is_allowed() {
        assert_eq!(decode_rgb8(b"hello").unwrap_err(), ImageInputError::UnknownFormat);
        let mut gif = b"GIF89a".to_vec();
        gif.extend([0u8; 20]);
        assert!(decode_rgb8(&gif)
            .unwrap_err()
            .to_string()
            .contains("must be PNG or JPEG"));
        let mut cut = png(4, 4, png::ColorType::Rgb, png::BitDepth::Eight, &[7; 48]);
        cut.truncate(cut.len() - 20);
        assert!(matches!(decode_rgb8(&cut), Err(ImageInputError::Corrupt(_))));
        // A header that claims 5000x1 is refused before decoding.
        let wide = png(5000, 1, png::ColorType::Grayscale, png::BitDepth::Eight, &[0; 5000]);
        assert_eq!(
            decode_rgb8(&wide).unwrap_err(),
            ImageInputError::TooLarge { width: 5000, height: 1 }
        );
    }
}
