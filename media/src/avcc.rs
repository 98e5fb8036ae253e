//! Annex B → AVCC: turns one OpenH264 access unit into an MP4 `avc1` sample.
//!
//! OpenH264 emits start-code-prefixed NAL units and repeats SPS/PPS before every IDR; MP4
//! wants 4-byte length prefixes and the parameter sets once, in the `avcC` box.

use openh264::encoder::EncodedBitStream;

/// Length-prefixed NAL units of one frame, and whether it holds an IDR slice (a sync sample).
pub(crate) fn bitstream_to_avcc(bitstream: &EncodedBitStream<'_>, params: &mut ParameterSets) -> (Vec<u8>, bool) {
    let mut avcc = Vec::new();
    let mut is_sync = false;
    for layer in (0..bitstream.num_layers()).filter_map(|i| bitstream.layer(i)) {
        for nal in (0..layer.nal_count()).filter_map(|i| layer.nal_unit(i)) {
            let nal = strip_start_code(nal);
            let Some(&header) = nal.first() else { continue };
            if params.absorb(header & 0x1f, nal) {
                continue;
            }
            is_sync |= header & 0x1f == NAL_IDR;
            // 4-byte lengths, matching avcC's lengthSizeMinusOne = 3 as the mp4 crate writes it.
            avcc.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            avcc.extend_from_slice(nal);
        }
    }
    (avcc, is_sync)
}

const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;

/// SPS and PPS go into the `avcC` box, not the samples.
#[derive(Default)]
pub(crate) struct ParameterSets {
    pub(crate) sps: Option<Vec<u8>>,
    pub(crate) pps: Option<Vec<u8>>,
}

impl ParameterSets {
    /// Returns true if `nal` is a parameter set already held (or now stored) out of band.
    /// A parameter set that differs from the stored one stays in-band, which decoders accept.
    fn absorb(&mut self, nal_type: u8, nal: &[u8]) -> bool {
        let slot = match nal_type {
            NAL_SPS => &mut self.sps,
            NAL_PPS => &mut self.pps,
            _ => return false,
        };
        match slot {
            Some(stored) => stored.as_slice() == nal,
            None => {
                *slot = Some(nal.to_vec());
                true
            }
        }
    }
}

/// OpenH264 emits Annex B NAL units (`00 00 00 01` or `00 00 01` prefixed).
fn strip_start_code(nal: &[u8]) -> &[u8] {
    nal.strip_prefix(&[0, 0, 0, 1])
        .or_else(|| nal.strip_prefix(&[0, 0, 1]))
        .unwrap_or(nal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_codes_of_both_lengths_are_stripped() {
        assert_eq!(strip_start_code(&[0, 0, 0, 1, 0x67, 1]), &[0x67, 1]);
        assert_eq!(strip_start_code(&[0, 0, 1, 0x68]), &[0x68]);
        assert_eq!(strip_start_code(&[0x65, 9]), &[0x65, 9]);
    }

    #[test]
    fn repeated_parameter_sets_are_absorbed_and_changed_ones_kept() {
        let mut params = ParameterSets::default();
        assert!(params.absorb(NAL_SPS, &[0x67, 1, 2, 3]));
        assert!(params.absorb(NAL_SPS, &[0x67, 1, 2, 3]));
        assert!(!params.absorb(NAL_SPS, &[0x67, 9, 9, 9]));
        assert!(!params.absorb(NAL_IDR, &[0x65]));
    }
}
