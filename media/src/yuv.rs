//! RGB24 → YUV 4:2:0 (I420) conversion, BT.709 matrix, limited ("tv") range.
//!
//! BT.709 because the clips are 480p–720p renders of sRGB-like content, and the matrix is
//! tagged in the H.264 VUI so players do not have to guess it from the resolution. Integer
//! fixed point keeps the output identical on every machine.

/// Fixed-point scale: coefficients are multiplied by 2^16.
const SHIFT: u32 = 16;

const fn fix(x: f64) -> i32 {
    (x * (1u32 << SHIFT) as f64 + 0.5) as i32
}

// Kr = 0.2126, Kb = 0.0722; luma scaled to 219/255, chroma to 224/255 (limited range).
const KR: f64 = 0.2126;
const KB: f64 = 0.0722;
const KG: f64 = 1.0 - KR - KB;
const Y_SCALE: f64 = 219.0 / 255.0;
const C_SCALE: f64 = 224.0 / 255.0;

const Y_R: i32 = fix(KR * Y_SCALE);
const Y_G: i32 = fix(KG * Y_SCALE);
const Y_B: i32 = fix(KB * Y_SCALE);
const CB_R: i32 = -fix(KR / (2.0 * (1.0 - KB)) * C_SCALE);
const CB_G: i32 = -fix(KG / (2.0 * (1.0 - KB)) * C_SCALE);
const CB_B: i32 = fix(0.5 * C_SCALE);
const CR_R: i32 = fix(0.5 * C_SCALE);
const CR_G: i32 = -fix(KG / (2.0 * (1.0 - KR)) * C_SCALE);
const CR_B: i32 = -fix(KB / (2.0 * (1.0 - KR)) * C_SCALE);

/// One I420 picture: full-resolution Y, quarter-resolution U and V, tightly packed.
#[derive(Clone, Debug)]
pub(crate) struct Yuv420Frame {
    pub(crate) width: usize,
    pub(crate) height: usize,
    pub(crate) y: Vec<u8>,
    pub(crate) u: Vec<u8>,
    pub(crate) v: Vec<u8>,
}

impl Yuv420Frame {
    /// A buffer for `width x height`; both must be even (checked by the caller's `VideoMeta`).
    pub(crate) fn new(width: usize, height: usize) -> Self {
        let chroma = (width / 2) * (height / 2);
        Yuv420Frame {
            width,
            height,
            y: vec![0; width * height],
            u: vec![0; chroma],
            v: vec![0; chroma],
        }
    }

    /// Fills the buffer from a packed RGB24 frame of exactly `width * height * 3` bytes.
    ///
    /// Chroma is computed from the 2x2 RGB average, which equals averaging the four pixels'
    /// chroma because the transform is linear.
    pub(crate) fn fill_from_rgb(&mut self, rgb: &[u8]) {
        let (w, h) = (self.width, self.height);
        debug_assert_eq!(rgb.len(), w * h * 3);
        for (y_row, rgb_row) in self.y.chunks_exact_mut(w).zip(rgb.chunks_exact(w * 3)) {
            for (out, px) in y_row.iter_mut().zip(rgb_row.chunks_exact(3)) {
                let (r, g, b) = (i32::from(px[0]), i32::from(px[1]), i32::from(px[2]));
                let luma = (16 << SHIFT) + Y_R * r + Y_G * g + Y_B * b + (1 << (SHIFT - 1));
                *out = clamp_u8(luma >> SHIFT);
            }
        }
        let half_w = w / 2;
        for cy in 0..h / 2 {
            let top = &rgb[(2 * cy) * w * 3..(2 * cy + 1) * w * 3];
            let bottom = &rgb[(2 * cy + 1) * w * 3..(2 * cy + 2) * w * 3];
            for cx in 0..half_w {
                let (mut r, mut g, mut b) = (0i32, 0i32, 0i32);
                for row in [top, bottom] {
                    for px in row[cx * 6..cx * 6 + 6].chunks_exact(3) {
                        r += i32::from(px[0]);
                        g += i32::from(px[1]);
                        b += i32::from(px[2]);
                    }
                }
                // Sums of four pixels: divide by 4 inside the final shift.
                let round = 1 << (SHIFT + 1);
                let cb = (128 << (SHIFT + 2)) + CB_R * r + CB_G * g + CB_B * b + round;
                let cr = (128 << (SHIFT + 2)) + CR_R * r + CR_G * g + CR_B * b + round;
                self.u[cy * half_w + cx] = clamp_u8(cb >> (SHIFT + 2));
                self.v[cy * half_w + cx] = clamp_u8(cr >> (SHIFT + 2));
            }
        }
    }
}

fn clamp_u8(x: i32) -> u8 {
    x.clamp(0, 255) as u8
}

/// Lets OpenH264 read the planes directly, with no copy.
impl openh264::formats::YUVSource for Yuv420Frame {
    fn dimensions(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    fn strides(&self) -> (usize, usize, usize) {
        (self.width, self.width / 2, self.width / 2)
    }

    fn y(&self) -> &[u8] {
        &self.y
    }

    fn u(&self) -> &[u8] {
        &self.u
    }

    fn v(&self) -> &[u8] {
        &self.v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(rgb: [u8; 3]) -> (u8, u8, u8) {
        let mut frame = Yuv420Frame::new(2, 2);
        let pixels: Vec<u8> = rgb.iter().copied().cycle().take(12).collect();
        frame.fill_from_rgb(&pixels);
        (frame.y[0], frame.u[0], frame.v[0])
    }

    #[test]
    fn black_white_and_grey_map_to_limited_range() {
        assert_eq!(convert([0, 0, 0]), (16, 128, 128));
        assert_eq!(convert([255, 255, 255]), (235, 128, 128));
        assert_eq!(convert([128, 128, 128]), (126, 128, 128));
    }

    #[test]
    fn primaries_match_bt709_reference_values() {
        // Reference 8-bit limited-range values for BT.709 (ITU-R BT.709 / ffmpeg's swscale).
        assert_eq!(convert([255, 0, 0]), (63, 102, 240));
        assert_eq!(convert([0, 255, 0]), (173, 42, 26));
        assert_eq!(convert([0, 0, 255]), (32, 240, 118));
    }

    #[test]
    fn chroma_is_the_average_of_each_2x2_block() {
        let mut frame = Yuv420Frame::new(2, 2);
        // Two red and two blue pixels average to (127.5, 0, 127.5).
        let rgb = [255, 0, 0, 0, 0, 255, 0, 0, 255, 255, 0, 0];
        frame.fill_from_rgb(&rgb);
        let (_, u_red, v_red) = convert([255, 0, 0]);
        let (_, u_blue, v_blue) = convert([0, 0, 255]);
        let mid = |a: u8, b: u8| (u16::from(a) + u16::from(b)).div_ceil(2) as u8;
        assert!(frame.u[0].abs_diff(mid(u_red, u_blue)) <= 1);
        assert!(frame.v[0].abs_diff(mid(v_red, v_blue)) <= 1);
        assert_eq!(frame.y[0], 63);
        assert_eq!(frame.y[1], 32);
    }
}
