//! Exact-bit encodings of f32 data on the wire.
//!
//! Tensors travel as little-endian f32 in `bytes` fields (overlap velocity, latents, embeddings)
//! and scalars that decide output bits travel as `fixed32` bit patterns (sigmas, timesteps,
//! guidance), never as decimal text or re-derived values, so every worker sees the same bits.

use bytes::{BufMut, Bytes, BytesMut};

/// A payload that does not have the length its message says it has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("f32 payload of {len} bytes is not a multiple of 4 bytes")]
    NotF32Aligned { len: usize },
    #[error("f32 payload has {got} values, expected {expected}")]
    WrongLength { expected: usize, got: usize },
}

/// Encodes `values` as little-endian f32 bytes.
pub fn encode_f32_le(values: &[f32]) -> Bytes {
    let mut buf = BytesMut::with_capacity(values.len() * 4);
    for &v in values {
        buf.put_f32_le(v);
    }
    buf.freeze()
}

/// Decodes little-endian f32 bytes into `out`, which must have exactly the payload's length, so
/// a truncated or oversized overlap from a peer is an error and never a silent partial blend.
pub fn decode_f32_le_into(bytes: &[u8], out: &mut [f32]) -> Result<(), WireError> {
    let chunks = bytes.chunks_exact(4);
    if !chunks.remainder().is_empty() {
        return Err(WireError::NotF32Aligned { len: bytes.len() });
    }
    if chunks.len() != out.len() {
        return Err(WireError::WrongLength {
            expected: out.len(),
            got: chunks.len(),
        });
    }
    for (dst, chunk) in out.iter_mut().zip(chunks) {
        *dst = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    Ok(())
}

/// Decodes little-endian f32 bytes into a new vector.
pub fn decode_f32_le(bytes: &[u8]) -> Result<Vec<f32>, WireError> {
    // A misaligned length is reported by decode_f32_le_into before any value is read.
    let mut out = vec![0.0; bytes.len() / 4];
    decode_f32_le_into(bytes, &mut out)?;
    Ok(out)
}

/// f32 values as the bit patterns sent in `fixed32` fields.
pub fn to_bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// `fixed32` bit patterns back to f32 values, bit for bit (NaN payloads included).
pub fn from_bits(bits: &[u32]) -> Vec<f32> {
    bits.iter().map(|&b| f32::from_bits(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn awkward_values() -> Vec<f32> {
        vec![
            0.0,
            -0.0,
            1.0,
            -1.5,
            f32::MIN_POSITIVE,
            f32::MAX,
            f32::INFINITY,
            f32::from_bits(0x7fc0_1234),
            1e-45,
        ]
    }

    #[test]
    fn f32_le_round_trip_keeps_every_bit() {
        let values = awkward_values();
        let bytes = encode_f32_le(&values);
        assert_eq!(bytes.len(), values.len() * 4);
        assert_eq!(&bytes[8..12], &1.0f32.to_le_bytes());
        let back = decode_f32_le(&bytes).expect("aligned payload decodes");
        assert_eq!(to_bits(&back), to_bits(&values));
    }

    #[test]
    fn bits_round_trip_keeps_every_bit() {
        let values = awkward_values();
        assert_eq!(to_bits(&from_bits(&to_bits(&values))), to_bits(&values));
    }

    #[test]
    fn bad_lengths_are_errors() {
        assert_eq!(decode_f32_le(&[0; 7]), Err(WireError::NotF32Aligned { len: 7 }));
        let mut out = [0.0f32; 3];
        assert_eq!(
            decode_f32_le_into(&[0; 8], &mut out),
            Err(WireError::WrongLength { expected: 3, got: 2 })
        );
        assert_eq!(
            WireError::WrongLength { expected: 3, got: 2 }.to_string(),
            "f32 payload has 2 values, expected 3"
        );
    }
}
