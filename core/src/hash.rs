//! A stable 64-bit hash of f32 data (FNV-1a over the little-endian bits).
//!
//! Stable across processes, builds and machines, unlike `std`'s `DefaultHasher`, because two workers
//! compare these values to prove their overlap copies are bit-identical.

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

pub fn hash_f32(data: &[f32]) -> u64 {
    let mut h = OFFSET;
    for v in data {
        for b in v.to_bits().to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
    }
    h
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
