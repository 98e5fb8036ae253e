//! A stable 64-bit hash of f32 data (FNV-1a over the little-endian bits).
//!
//! Stable across processes, builds and machines, unlike `std`'s `DefaultHasher`, because two workers
//! compare these values to prove their overlap copies are bit-identical.

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

pub fn hash_f32(data: &[f32]) -> u64 {
    let mut h = Fnv1a::new();
    for v in data {
        h.write(&v.to_bits().to_le_bytes());
    }
    h.finish()
}

/// Incremental FNV-1a over bytes (model weight fingerprints use it too).
#[derive(Clone, Copy, Debug)]
pub struct Fnv1a(u64);

impl Fnv1a {
    pub fn new() -> Self {
        Self(OFFSET)
    }

    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(PRIME);
        }
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

impl Default for Fnv1a {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinguishes_bit_patterns() {
        assert_eq!(hash_f32(&[]), OFFSET);
        assert_ne!(hash_f32(&[0.0]), hash_f32(&[-0.0]));
        assert_ne!(hash_f32(&[1.0, 2.0]), hash_f32(&[2.0, 1.0]));
        assert_eq!(hash_f32(&[1.5, -3.25]), hash_f32(&[1.5, -3.25]));
    }
}
