//! `VideoMeta` and the frame-size checks every writer shares.

use crate::MediaError;

/// Size and rate of a clip. Frames are 8-bit RGB, row-major `[height, width, 3]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VideoMeta {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

impl VideoMeta {
    /// Bytes in one RGB frame (`width * height * 3`), checked for zero sizes and overflow.
    pub fn frame_len(&self) -> Result<usize, MediaError> {
        if self.width == 0 || self.height == 0 {
            return Err(self.invalid("width and height must be at least 1"));
        }
        if self.fps == 0 {
            return Err(self.invalid("fps must be at least 1"));
        }
        (self.width as usize)
            .checked_mul(self.height as usize)
            .and_then(|n| n.checked_mul(3))
            .ok_or_else(|| self.invalid("frame size overflows usize"))
    }

    /// Duration in seconds of `frames` frames at this rate.
    pub fn duration_secs(&self, frames: u64) -> f64 {
        if self.fps == 0 {
            return 0.0;
        }
        frames as f64 / f64::from(self.fps)
    }

    /// Chroma-subsampled formats (H.264 4:2:0, ProRes 4:2:2) need even sizes.
    pub(crate) fn require_even(&self) -> Result<(), MediaError> {
        if (self.width | self.height) & 1 != 0 {
            return Err(self.invalid("width and height must be even for chroma-subsampled video"));
        }
        Ok(())
    }

    pub(crate) fn invalid(&self, reason: impl Into<String>) -> MediaError {
        MediaError::InvalidMeta {
            width: self.width,
            height: self.height,
            fps: self.fps,
            reason: reason.into(),
        }
    }

    /// Checks one incoming frame's length; `index` is its position in the stream.
    pub(crate) fn check_frame(&self, index: u64, rgb: &[u8]) -> Result<(), MediaError> {
        let expected = self.frame_len()?;
        if rgb.len() != expected {
            return Err(MediaError::FrameLength {
                index,
                width: self.width,
                height: self.height,
                expected,
                actual: rgb.len(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_len_is_width_height_three() {
        let meta = VideoMeta {
            width: 832,
            height: 480,
            fps: 16,
        };
        assert_eq!(meta.frame_len().unwrap(), 832 * 480 * 3);
    }

    #[test]
    fn zero_sizes_and_rates_are_rejected() {
        for meta in [
            VideoMeta {
                width: 0,
                height: 48,
                fps: 16,
            },
            VideoMeta {
                width: 64,
                height: 0,
                fps: 16,
            },
            VideoMeta {
                width: 64,
                height: 48,
                fps: 0,
            },
        ] {
            assert!(matches!(meta.frame_len(), Err(MediaError::InvalidMeta { .. })));
        }
    }

    #[test]
    fn wrong_frame_length_names_expected_and_actual() {
        let meta = VideoMeta {
            width: 4,
            height: 2,
            fps: 1,
        };
        let err = meta.check_frame(7, &[0; 5]).unwrap_err().to_string();
        assert_eq!(err, "frame 7 has 5 bytes but a 4x2 rgb frame needs 24");
    }

    #[test]
    fn odd_sizes_are_rejected_for_subsampled_video() {
        let err = VideoMeta {
            width: 63,
            height: 48,
            fps: 16,
        }
        .require_even()
        .unwrap_err();
        assert!(err.to_string().contains("must be even"), "{err}");
    }
}
