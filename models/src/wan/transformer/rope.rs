//! Wan's 3D rotary position embedding tables (`WanRotaryPosEmbed`, spec §1.3 step 1).
//!
//! Each head's `head_dim` lanes are split into a time, a height and a width part (`t, h, w` with
//! `h = w = 2·(head_dim/6)`). For an axis of width `d`, frequency `i < d/2` is
//! `inv_i = 1 / 10000^(2i/d)` and position `p` gets angle `p·inv_i`, all in **f64**; `cos` and
//! `sin` are taken in f64, rounded to f32, and each repeated twice (interleaved pairs). Token
//! `(fi, hi, wi)` uses `concat(T[fi], H[hi], W[wi])`.

use crate::wan::error::WanError;

const THETA: f64 = 10000.0;

/// Per-axis cos/sin tables for positions `0..max_seq_len`.
#[derive(Clone, Debug)]
pub struct RopeTables {
    max_seq_len: usize,
    head_dim: usize,
    /// Widths of the t, h, w parts.
    split: [usize; 3],
    /// Per axis: `[max_seq_len, width]` row-major.
    cos: [Vec<f32>; 3],
    sin: [Vec<f32>; 3],
}

/// `(cos, sin)` of one axis, `[max_pos, d]`, repeat-interleaved.
fn axis_tables(d: usize, max_pos: usize) -> (Vec<f32>, Vec<f32>) {
    let inv: Vec<f64> = (0..d / 2)
        .map(|i| 1.0 / THETA.powf((2 * i) as f64 / d as f64))
        .collect();
    let mut cos = Vec::with_capacity(max_pos * d);
    let mut sin = Vec::with_capacity(max_pos * d);
    for p in 0..max_pos {
        for &f in &inv {
            let a = p as f64 * f;
            let (c, s) = (a.cos() as f32, a.sin() as f32);
            cos.extend([c, c]);
            sin.extend([s, s]);
        }
    }
    (cos, sin)
}

impl RopeTables {
    /// Tables for a model with `head_dim` lanes per head split `(t, h, w)`.
    pub fn new(head_dim: usize, split: (usize, usize, usize), max_seq_len: usize) -> Self {
        let split = [split.0, split.1, split.2];
        debug_assert_eq!(split.iter().sum::<usize>(), head_dim);
        let [(ct, st), (ch, sh), (cw, sw)] = split.map(|d| axis_tables(d, max_seq_len));
        Self {
            max_seq_len,
            head_dim,
            split,
            cos: [ct, ch, cw],
            sin: [st, sh, sw],
        }
    }

    /// Per-token `(cos, sin)`, each `[f·h·w, head_dim]`, tokens in row-major `(f, h, w)` order.
    /// Fails if a grid axis is longer than the tables (`rope_max_seq_len`).
    pub fn for_grid(&self, f: usize, h: usize, w: usize) -> Result<(Vec<f32>, Vec<f32>), WanError> {
        if f.max(h).max(w) > self.max_seq_len {
            return Err(WanError::Input(format!(
                "token grid {f}x{h}x{w} exceeds rope_max_seq_len {} on some axis",
                self.max_seq_len
            )));
        }
        let s = f * h * w;
        let mut cos = Vec::with_capacity(s * self.head_dim);
        let mut sin = Vec::with_capacity(s * self.head_dim);
        for fi in 0..f {
            for hi in 0..h {
                for wi in 0..w {
                    for (axis, pos) in [fi, hi, wi].into_iter().enumerate() {
                        let d = self.split[axis];
                        cos.extend_from_slice(&self.cos[axis][pos * d..(pos + 1) * d]);
                        sin.extend_from_slice(&self.sin[axis][pos * d..(pos + 1) * d]);
                    }
                }
            }
        }
        Ok((cos, sin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_follow_the_spec_layout() {
        // head_dim 12: t/h/w = 4/4/4; axis width 4 has frequencies 1 and 1/100.
        let r = RopeTables::new(12, (4, 4, 4), 8);
        let (cos, sin) = r.for_grid(2, 3, 5).expect("grid");
        assert_eq!(cos.len(), 30 * 12);
        // Token (1, 2, 4) = index (1·3 + 2)·5 + 4 = 29.
        let row = &cos[29 * 12..30 * 12];
        let srow = &sin[29 * 12..30 * 12];
        for (k, (pos, f)) in [
            (1.0f64, 1.0f64),
            (1.0, 0.01),
            (2.0, 1.0),
            (2.0, 0.01),
            (4.0, 1.0),
            (4.0, 0.01),
        ]
        .iter()
        .enumerate()
        {
            assert_eq!(row[2 * k], (pos * f).cos() as f32);
            assert_eq!(row[2 * k + 1], row[2 * k]);
            assert_eq!(srow[2 * k + 1], (pos * f).sin() as f32);
        }
        assert!(r.for_grid(9, 1, 1).is_err());
    }
}
