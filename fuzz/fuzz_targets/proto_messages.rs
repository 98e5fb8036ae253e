//! Every protobuf message a Longshot process accepts from the network, decoded and converted to
//! its domain type (and a job spec validated): any bytes must give a value or an error, never a
//! panic, a hang or an unbounded allocation. The first byte picks the message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use longshot_core::api::{EncodeTextRequest, OverlapEnvelope, ShardAssignment, ShardEvent, WorkerInfo};
use longshot_core::checkpoint::WindowState;
use longshot_core::denoiser::Conditioning;
use longshot_core::job::JobSpec;
use longshot_proto::pb;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 8 {
        0 => {
            if let Ok(m) = pb::SubmitJobRequest::decode(bytes) {
                if let Some(spec) = m.spec {
                    if let Ok(spec) = JobSpec::try_from(spec) {
                        let _ = spec.validate();
                    }
                }
            }
        }
        1 => {
            if let Ok(m) = pb::ShardAssignment::decode(bytes) {
                let _ = ShardAssignment::try_from(m);
            }
        }
        2 => {
            if let Ok(m) = pb::ShardEvent::decode(bytes) {
                let _ = ShardEvent::try_from(m);
            }
        }
        3 => {
            if let Ok(m) = pb::OverlapFrame::decode(bytes) {
                let _ = OverlapEnvelope::try_from(m);
            }
        }
        4 => {
            if let Ok(m) = pb::WindowCheckpoint::decode(bytes) {
                let _ = WindowState::try_from(m);
            }
        }
        5 => {
            if let Ok(m) = pb::WorkerInfo::decode(bytes) {
                let _ = WorkerInfo::try_from(m);
            }
        }
        6 => {
            if let Ok(m) = pb::EncodeTextRequest::decode(bytes) {
                let _ = EncodeTextRequest::try_from(m);
            }
        }
        _ => {
            if let Ok(m) = pb::Conditioning::decode(bytes) {
                let _ = Conditioning::try_from(m);
            }
        }
    }
});
