//! Transcendental functions built from `+ − × ÷` only, so they give the same bits on every machine.
//!
//! `f64::exp`, `sin`, `ln` call the platform libm, whose result can differ in the last bit between
//! libm versions and even between CPUs (glibc picks FMA variants at load time). The prior mean and
//! the decoder must be bit-identical on every worker (docs/long-clips.md §4), so they use these
//! instead.
//! IEEE 754 makes the basic operations, `sqrt` and `round` exact functions of their inputs.
//! Accuracy is a few ulp over the ranges used here, which is plenty for a reference model.

// fdlibm's split constants, as bits: the high parts have trailing zero bits so that `k·HI` is
// exact for the integers `k` used in the range reductions.
const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
const PIO2_HI: f64 = f64::from_bits(0x3ff9_21fb_5440_0000);
const PIO2_LO: f64 = f64::from_bits(0x3dd0_b461_1a62_6331);

/// `eˣ`, with `x` clamped to ±700 (far beyond any argument used here).
pub fn exp(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let x = x.clamp(-700.0, 700.0);
    // x = k·ln2 + r with |r| ≤ ln2/2; ln2 split in two so that k·LN2_HI is exact.
    let k = (x * std::f64::consts::LOG2_E).round();
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let mut p = 1.0;
    for i in (1..=14).rev() {
        p = 1.0 + r * p / f64::from(i);
    }
    // 2^k built from its bits: |k| ≤ 1010 keeps the exponent field in range.
    p * f64::from_bits(((k as i64 + 1023) as u64) << 52)
}

/// Natural logarithm of a positive, finite `x` (NaN otherwise).
pub fn ln(x: f64) -> f64 {
    if !(x > 0.0 && x.is_finite()) {
        return f64::NAN;
    }
    // Scale subnormals into the normal range first, so the exponent field is meaningful.
    let (x, extra) = if x < f64::MIN_POSITIVE {
        (x * 2f64.powi(60), -60.0)
    } else {
        (x, 0.0)
    };
    let bits = x.to_bits();
    let e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52)); // in [1, 2)
                                                                           // ln m = 2·atanh(s), s = (m−1)/(m+1) ∈ [0, 1/3): an odd series that converges fast.
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut sum = 0.0;
    for k in (0..20).rev() {
        sum = 1.0 / f64::from(2 * k + 1) + s2 * sum;
    }
    let e = e as f64 + extra;
    (e * LN2_HI + 2.0 * s * sum) + e * LN2_LO
}

/// `(sin x, cos x)` for moderate `|x|` (the reduction is accurate up to about 10⁶).
pub fn sin_cos(x: f64) -> (f64, f64) {
    let n = (x * std::f64::consts::FRAC_2_PI).round();
    let r = (x - n * PIO2_HI) - n * PIO2_LO; // |r| ≤ π/4
    let r2 = r * r;
    let (mut s, mut c) = (1.0, 1.0);
    for k in (1..=10).rev() {
        let k = f64::from(k);
        s = 1.0 - r2 * s / ((2.0 * k) * (2.0 * k + 1.0));
        c = 1.0 - r2 * c / ((2.0 * k - 1.0) * (2.0 * k));
    }
    let s = r * s;
    match (n as i64).rem_euclid(4) {
        0 => (s, c),
        1 => (c, -s),
        2 => (-s, -c),
        _ => (-c, s),
    }
}

/// The logistic function `1 / (1 + e⁻ᶻ)`.
pub fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + exp(-z))
}

/// Inverse of [`sigmoid`] for `p` in (0, 1).
pub fn logit(p: f64) -> f64 {
    ln(p / (1.0 - p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(1e-300)
    }

    #[test]
    fn agrees_with_std_to_a_few_ulp() {
        for i in -2000..=2000 {
            let x = f64::from(i) * 0.0173;
            assert!(close(exp(x), x.exp(), 1e-14), "exp({x})");
            let (s, c) = sin_cos(x * 37.0);
            assert!(
                (s - (x * 37.0).sin()).abs() < 1e-14 && (c - (x * 37.0).cos()).abs() < 1e-14,
                "sin_cos({x})"
            );
            let p = exp(x / 3.0);
            assert!((ln(p) - p.ln()).abs() < 1e-14 * p.ln().abs().max(1.0), "ln({p})");
        }
        assert!(close(ln(1e-310), 1e-310f64.ln(), 1e-14));
        assert!(ln(0.0).is_nan() && ln(-1.0).is_nan());
        assert!((logit(sigmoid(1.7)) - 1.7).abs() < 1e-14);
    }
}
