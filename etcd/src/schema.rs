//! The etcd contract between coordinators and workers: where Longshot's keys live and what a
//! worker's registration holds. Writers and readers on both sides go through this module only, so
//! the two cannot drift apart.
//!
//! - `/longshot/v1/workers/{id}`: a worker's record (below), put by the worker under its lease.
//! - `/longshot/v1/jobs/{id}`: a coordinator's job record (its encoding is the coordinator's own).
//! - `/longshot/v1/coordinator-leader/{lease}`: the coordinators' election (etcd's election API:
//!   the oldest key leads; its value is the leader's advertised address).
//!
//! A worker record is the worker's `WorkerInfo` as a JSON object with one more field,
//! `"record_version": 1`. A reader refuses a version it does not know instead of guessing at it,
//! and reads a record without the field as version 1 (how workers wrote it before the field
//! existed); readers that predate the field ignore it.

use longshot_core::api::WorkerInfo;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Every key Longshot writes starts with this.
pub const ROOT: &str = "/longshot/";

/// One key per registered worker: `{WORKERS_PREFIX}{id}`.
pub const WORKERS_PREFIX: &str = "/longshot/v1/workers/";

/// One key per job record: `{JOBS_PREFIX}{id}`.
pub const JOBS_PREFIX: &str = "/longshot/v1/jobs/";

/// The election among coordinators; candidates' keys are `{LEADER_ELECTION}/{lease id in hex}`.
pub const LEADER_ELECTION: &str = "/longshot/v1/coordinator-leader";

/// The version of the worker record this build writes, and the only one it reads.
pub const WORKER_RECORD_VERSION: u64 = 1;

/// The key of worker `id`.
pub fn worker_key(id: &str) -> String {
    format!("{WORKERS_PREFIX}{id}")
}

/// The worker id a key names, or `None` for a key outside [`WORKERS_PREFIX`].
pub fn worker_id(key: &str) -> Option<&str> {
    key.strip_prefix(WORKERS_PREFIX)
}

/// The key of job `id`'s record.
pub fn job_key(id: &str) -> String {
    format!("{JOBS_PREFIX}{id}")
}

/// The job id a key names, or `None` for a key outside [`JOBS_PREFIX`].
pub fn job_id(key: &str) -> Option<&str> {
    key.strip_prefix(JOBS_PREFIX)
}

/// Why a value is not a worker record this build can use.
#[derive(Debug, Error)]
pub enum RecordError {
    #[error(
        "worker record version {found} is unknown to this build, which reads version {WORKER_RECORD_VERSION} \
         (is a newer Longshot sharing this etcd?)"
    )]
    UnknownVersion { found: u64 },
    #[error("not a worker record: {0}")]
    Malformed(#[source] serde_json::Error),
    #[error("cannot encode the worker record: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("{key} is not a worker key (outside {WORKERS_PREFIX})")]
    NotAWorkerKey { key: String },
    #[error("{key} holds worker {found:?}")]
    WrongId { key: String, found: String },
}

#[derive(Serialize)]
struct RecordRef<'a> {
    record_version: u64,
    #[serde(flatten)]
    worker: &'a WorkerInfo,
}

#[derive(Deserialize)]
struct Version {
    #[serde(default = "first_version")]
    record_version: u64,
}

fn first_version() -> u64 {
    1
}

/// The value a worker puts under its key.
pub fn encode_worker(worker: &WorkerInfo) -> Result<Vec<u8>, RecordError> {
    serde_json::to_vec(&RecordRef {
        record_version: WORKER_RECORD_VERSION,
        worker,
    })
    .map_err(RecordError::Encode)
}

/// The worker a value holds; its version is checked before anything else is read.
pub fn decode_worker(value: &[u8]) -> Result<WorkerInfo, RecordError> {
    let version: Version = serde_json::from_slice(value).map_err(RecordError::Malformed)?;
    if version.record_version != WORKER_RECORD_VERSION {
        return Err(RecordError::UnknownVersion {
            found: version.record_version,
        });
    }
    serde_json::from_slice(value).map_err(RecordError::Malformed)
}

/// The worker stored under `key`, checked to be the worker that key names: a peer must not be
/// able to pass itself off as another worker.
pub fn decode_worker_at(key: &str, value: &[u8]) -> Result<WorkerInfo, RecordError> {
    let id = worker_id(key).ok_or_else(|| RecordError::NotAWorkerKey { key: key.to_string() })?;
    let worker = decode_worker(value)?;
    if worker.id != id {
        return Err(RecordError::WrongId {
            key: key.to_string(),
            found: worker.id,
        });
    }
    Ok(worker)
}

#[cfg(test)]
mod tests {
    use super::*;
    use longshot_core::api::WorkerState;
    use longshot_tests::fixtures::worker_info;

    fn worker(id: &str) -> WorkerInfo {
        let nccl_gpu = Some("GPU-0".into());
        WorkerInfo {
            device_kind: "cuda".into(),
            state: WorkerState::Busy,
            nccl_gpu,
            ..worker_info(id)
        }
    }

    #[test]
    fn keys_live_under_the_root() {
        for prefix in [WORKERS_PREFIX, JOBS_PREFIX] {
            assert!(prefix.starts_with(ROOT) && prefix.ends_with('/'), "{prefix}");
        }
        assert_eq!(worker_key("w1"), "/longshot/v1/workers/w1");
        assert_eq!(worker_id(&worker_key("w1")), Some("w1"));
        assert_eq!(worker_id("/longshot/v1/jobs/w1"), None);
        assert_eq!(job_key("job-0001"), "/longshot/v1/jobs/job-0001");
        assert_eq!(job_id(&job_key("job-0001")), Some("job-0001"));
        assert_eq!(job_id("/longshot/v1/workers/job-0001"), None);
    }

    #[test]
    fn a_worker_record_round_trips_with_its_version() {
        let w = worker("w1");
        let value = encode_worker(&w).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&value).unwrap();
        assert_eq!(json["record_version"], WORKER_RECORD_VERSION);
        assert_eq!(json["version"], "0.1.0", "the worker's own version field is untouched");
        assert_eq!(decode_worker(&value).unwrap(), w);
        assert_eq!(decode_worker_at(&worker_key("w1"), &value).unwrap(), w);
        // A reader that predates the version field still reads the record.
        assert_eq!(serde_json::from_slice::<WorkerInfo>(&value).unwrap(), w);
    }

    #[test]
    fn a_record_without_a_version_is_version_1() {
        let w = worker("w1");
        assert_eq!(decode_worker(&serde_json::to_vec(&w).unwrap()).unwrap(), w);
    }

    #[test]
    fn an_unknown_version_is_refused_by_name() {
        let mut json = serde_json::to_value(worker("w1")).unwrap();
        json["record_version"] = 2.into();
        let e = decode_worker(&serde_json::to_vec(&json).unwrap()).unwrap_err();
        assert!(matches!(e, RecordError::UnknownVersion { found: 2 }), "{e:?}");
        assert!(e
            .to_string()
            .starts_with("worker record version 2 is unknown to this build, which reads version 1"));
        // Whatever else a newer record holds, its version is what the reader reports.
        let e = decode_worker(br#"{"record_version": 7, "shape": "new"}"#).unwrap_err();
        assert!(matches!(e, RecordError::UnknownVersion { found: 7 }), "{e:?}");
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in [
            &b"{not json"[..],
            b"[]",
            b"\"w1\"",
            b"{}",
            br#"{"record_version": "1"}"#,
            br#"{"id": "w1"}"#,
        ] {
            let e = decode_worker(bad).unwrap_err();
            assert!(
                matches!(e, RecordError::Malformed(_)),
                "{}: {e:?}",
                String::from_utf8_lossy(bad)
            );
            assert!(e.to_string().starts_with("not a worker record: "), "{e}");
        }
    }

    #[test]
    fn the_key_must_name_the_worker() {
        let value = encode_worker(&worker("w1")).unwrap();
        let e = decode_worker_at(&worker_key("w2"), &value).unwrap_err();
        assert_eq!(e.to_string(), "/longshot/v1/workers/w2 holds worker \"w1\"");
        let e = decode_worker_at("/elsewhere/w1", &value).unwrap_err();
        assert!(matches!(e, RecordError::NotAWorkerKey { .. }), "{e:?}");
    }
}
