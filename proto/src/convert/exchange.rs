//! `ExchangeService` frames ↔ [`OverlapEnvelope`]: velocity and halo payloads travel as
//! little-endian f32 bytes (exact bits, see [`crate::wire`]), the latent hash as `fixed64`.

use super::{invalid, required};
use crate::pb::{self, overlap_frame};
use crate::wire;
use longshot_core::api::{ApiError, OverlapEnvelope};
use longshot_core::exchange::{OverlapMessage, Payload};

impl From<OverlapEnvelope> for pb::OverlapFrame {
    fn from(e: OverlapEnvelope) -> Self {
        let payload = match e.message.payload {
            Payload::Velocity(v) => overlap_frame::Payload::Velocity(wire::encode_f32_le(&v)),
            Payload::LatentHash(h) => overlap_frame::Payload::LatentHash(h),
            Payload::Halo(v) => overlap_frame::Payload::Halo(wire::encode_f32_le(&v)),
        };
        pb::OverlapFrame {
            job_id: e.job_id,
            plan_id: e.plan_id,
            step: e.message.step,
            boundary: e.message.boundary,
            payload: Some(payload),
        }
    }
}

/// Only the byte length is checked here (a multiple of 4); whether the payload has the overlap's
/// size is the receiving loop's business, which knows the shape.
impl TryFrom<pb::OverlapFrame> for OverlapEnvelope {
    type Error = ApiError;

    fn try_from(f: pb::OverlapFrame) -> Result<Self, ApiError> {
        let payload = match required(f.payload, "payload")? {
            overlap_frame::Payload::Velocity(b) => {
                Payload::Velocity(wire::decode_f32_le(&b).map_err(|e| invalid("velocity", e.to_string()))?)
            }
            overlap_frame::Payload::LatentHash(h) => Payload::LatentHash(h),
            overlap_frame::Payload::Halo(b) => {
                Payload::Halo(wire::decode_f32_le(&b).map_err(|e| invalid("halo", e.to_string()))?)
            }
        };
        Ok(OverlapEnvelope {
            job_id: f.job_id,
            plan_id: f.plan_id,
            message: OverlapMessage {
                step: f.step,
                boundary: f.boundary,
                payload,
            },
        })
    }
}
