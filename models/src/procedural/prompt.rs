//! Reading a prompt: normalised words, a stable hash, and the small word tables that steer the prior.
//!
//! Everything here is a pure function of the prompt string: words are matched with `match`
//! statements (no `HashMap`, whose iteration order and hasher are per-process), and the hash is
//! FNV-1a, which is the same in every build and on every machine.

/// Lower-cased alphanumeric words; case, punctuation and spacing do not matter.
pub fn words(prompt: &str) -> Vec<String> {
    prompt
        .split(|ch: char| !ch.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// 64-bit FNV-1a over the normalised words joined by single spaces.
pub fn prompt_hash(words: &[String]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for (i, w) in words.iter().enumerate() {
        let sep: &[u8] = if i == 0 { b"" } else { b" " };
        for &b in sep.iter().chain(w.as_bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
    }
    h
}

/// A stream of pseudo-random numbers seeded by the prompt hash (SplitMix64: integer ops only).
pub struct ParamStream(u64);

impl ParamStream {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`, from the top 53 bits.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        lo + (hi - lo) * u
    }

    /// A standard normal value (Box–Muller); test data only, the model itself draws no noise.
    #[cfg(test)]
    pub fn gaussian(&mut self) -> f64 {
        use super::detmath;
        let u1 = self.uniform(0.0, 1.0).max(1e-300);
        let u2 = self.uniform(0.0, std::f64::consts::TAU);
        (-2.0 * detmath::ln(u1)).sqrt() * detmath::sin_cos(u2).1
    }
}

/// Latents of i.i.d. standard normal values (test data).
#[cfg(test)]
pub fn gaussian_latents(shape: longshot_core::tensor::LatentShape, seed: u64) -> longshot_core::tensor::Latents {
    let mut s = ParamStream::new(seed);
    let data = (0..shape.len()).map(|_| s.gaussian() as f32).collect();
    longshot_core::tensor::Latents::from_vec(shape, data).expect("length matches the shape")
}

/// The colour a word evokes, as sRGB-ish values in (0, 1); `None` for words without one.
pub fn colour_of(word: &str) -> Option<[f64; 3]> {
    Some(match word {
        "red" | "crimson" | "scarlet" => [0.80, 0.15, 0.12],
        "orange" | "amber" => [0.90, 0.50, 0.10],
        "yellow" => [0.90, 0.85, 0.20],
        "gold" | "golden" => [0.85, 0.70, 0.25],
        "green" => [0.20, 0.65, 0.25],
        "blue" | "azure" => [0.15, 0.30, 0.80],
        "purple" | "violet" => [0.50, 0.20, 0.65],
        "pink" => [0.95, 0.60, 0.75],
        "brown" => [0.45, 0.30, 0.15],
        "white" => [0.92, 0.92, 0.92],
        "black" | "dark" => [0.06, 0.06, 0.08],
        "grey" | "gray" => [0.50, 0.50, 0.50],
        "sunset" | "sunrise" | "dusk" => [0.95, 0.45, 0.20],
        "fire" | "flames" | "lava" => [0.95, 0.40, 0.05],
        "ocean" | "sea" | "water" | "lake" => [0.10, 0.35, 0.65],
        "sky" => [0.45, 0.65, 0.90],
        "forest" | "jungle" | "leaves" => [0.15, 0.45, 0.20],
        "grass" | "meadow" => [0.35, 0.65, 0.25],
        "snow" | "ice" => [0.95, 0.95, 0.97],
        "night" => [0.05, 0.07, 0.20],
        "desert" | "sand" | "beach" => [0.85, 0.72, 0.50],
        _ => return None,
    })
}

/// +1 for words that suggest slow, smooth motion, −1 for fast or chaotic motion, 0 otherwise.
pub fn motion_of(word: &str) -> i32 {
    match word {
        "slow" | "slowly" | "calm" | "still" | "gentle" | "serene" | "quiet" | "peaceful" | "static" | "drifting"
        | "tranquil" => 1,
        "fast" | "quick" | "quickly" | "storm" | "stormy" | "chaos" | "chaotic" | "rapid" | "racing" | "explosion"
        | "frantic" | "turbulent" => -1,
        _ => 0,
    }
}

/// Words of a scene with a horizon: its pattern runs in horizontal bands and drifts sideways.
pub fn is_horizon_word(word: &str) -> bool {
    matches!(
        word,
        "sea"
            | "ocean"
            | "horizon"
            | "sunset"
            | "sunrise"
            | "dusk"
            | "dawn"
            | "beach"
            | "coast"
            | "shore"
            | "desert"
            | "dunes"
            | "lake"
            | "landscape"
            | "plain"
            | "plains"
            | "prairie"
            | "field"
            | "fields"
            | "meadow"
            | "bay"
            | "skyline"
    )
}

/// Drift direction `(dy, dx)` (y grows downwards) named by a word, if any.
pub fn direction_of(word: &str) -> Option<(f64, f64)> {
    match word {
        "left" | "westward" => Some((0.0, -1.0)),
        "right" | "eastward" => Some((0.0, 1.0)),
        "up" | "rising" | "upward" => Some((-1.0, 0.0)),
        "down" | "falling" | "downward" => Some((1.0, 0.0)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_ignores_case_and_punctuation_but_not_words() {
        let h = |p: &str| prompt_hash(&words(p));
        assert_eq!(h("A red  sunset."), h("a red sunset"));
        assert_ne!(h("a red sunset"), h("a red sunsets"));
        assert_ne!(h("ab c"), h("a bc"));
        // FNV-1a of the empty string is the offset basis; pinned so a change of hash is noticed.
        assert_eq!(h(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(h("a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn stream_is_reproducible_and_in_range() {
        let (mut a, mut b) = (ParamStream::new(7), ParamStream::new(7));
        for _ in 0..1000 {
            let (x, y) = (a.uniform(2.0, 3.0), b.uniform(2.0, 3.0));
            assert_eq!(x.to_bits(), y.to_bits());
            assert!((2.0..3.0).contains(&x));
        }
    }
}
