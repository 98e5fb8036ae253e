//! Whether a gang exchanges its overlap velocities over NCCL (docs/long-clips.md §3) or TCP.
//!
//! NCCL only when the operator asked for it (`coordinator --overlap-transport nccl`: the
//! multi-rank path has not been run on two GPUs yet, see ARCHITECTURE.md), the job couples its
//! windows with a non-empty overlap, the gang has two or more workers, every one of them can join
//! an NCCL communicator (`WorkerInfo::nccl_gpu`), and no two of them share a GPU (NCCL refuses two
//! ranks on one device). Otherwise TCP, which every worker speaks: the fallback is never an error.

use longshot_core::api::WorkerInfo;
use std::str::FromStr;

/// How gangs exchange overlap velocities.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OverlapTransport {
    /// Always the TCP/gRPC exchange.
    #[default]
    Tcp,
    /// NCCL where the whole gang can, TCP otherwise.
    Nccl,
}

impl FromStr for OverlapTransport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tcp" => Ok(Self::Tcp),
            "nccl" => Ok(Self::Nccl),
            other => Err(format!("overlap transport {other:?} is not one of tcp, nccl")),
        }
    }
}

/// `Ok(())` when the gang (in rank order) uses NCCL; otherwise why not, for the job's log.
pub fn nccl_decision(transport: OverlapTransport, coupled: bool, workers: &[WorkerInfo]) -> Result<(), String> {
    if transport == OverlapTransport::Tcp {
        return Err("the coordinator's overlap transport is tcp".into());
    }
    if !coupled {
        return Err("the job exchanges no overlaps (independent windows or no overlap)".into());
    }
    if workers.len() < 2 {
        return Err("a single worker has no neighbours".into());
    }
    let mut gpus = Vec::with_capacity(workers.len());
    for w in workers {
        let Some(gpu) = &w.nccl_gpu else {
            return Err(format!("worker {} cannot join NCCL (no GPU or no libnccl)", w.id));
        };
        if let Some(other) = gpus.iter().position(|g| g == &gpu) {
            return Err(format!("workers {} and {} share GPU {gpu}", workers[other].id, w.id));
        }
        gpus.push(gpu);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use longshot_tests::fixtures::worker_info;

    fn worker(id: &str, gpu: Option<&str>) -> WorkerInfo {
        let (address, nccl_gpu) = (format!("{id}:1"), gpu.map(Into::into));
        let (device_kind, device_name) = ("cuda".into(), "NVIDIA H100".into());
        WorkerInfo {
            address,
            device_kind,
            device_name,
            nccl_gpu,
            ..worker_info(id)
        }
    }

    #[test]
    fn nccl_only_for_whole_gangs_on_distinct_gpus_when_asked() {
        let gang = [
            worker("a", Some("GPU-1")),
            worker("b", Some("GPU-2")),
            worker("c", Some("GPU-3")),
        ];
        assert_eq!(nccl_decision(OverlapTransport::Nccl, true, &gang), Ok(()));
        let why = |t, coupled, w: &[WorkerInfo]| nccl_decision(t, coupled, w).unwrap_err();
        assert!(why(OverlapTransport::Tcp, true, &gang).contains("transport is tcp"));
        assert!(why(OverlapTransport::Nccl, false, &gang).contains("exchanges no overlaps"));
        assert!(why(OverlapTransport::Nccl, true, &gang[..1]).contains("single worker"));
        let cpu = [worker("a", Some("GPU-1")), worker("b", None)];
        assert_eq!(
            why(OverlapTransport::Nccl, true, &cpu),
            "worker b cannot join NCCL (no GPU or no libnccl)"
        );
        let shared = [
            worker("a", Some("GPU-1")),
            worker("b", Some("GPU-2")),
            worker("c", Some("GPU-1")),
        ];
        assert_eq!(
            why(OverlapTransport::Nccl, true, &shared),
            "workers a and c share GPU GPU-1"
        );
    }

    #[test]
    fn the_transport_parses_with_a_clear_error() {
        assert_eq!("tcp".parse(), Ok(OverlapTransport::Tcp));
        assert_eq!("nccl".parse(), Ok(OverlapTransport::Nccl));
        assert_eq!(
            "gloo".parse::<OverlapTransport>().unwrap_err(),
            "overlap transport \"gloo\" is not one of tcp, nccl"
        );
        assert_eq!(OverlapTransport::default(), OverlapTransport::Tcp);
    }
}
