//! NCCL for the overlap velocities (docs/long-clips.md §3), on workers built with `cuda`.
//!
//! - [`NcclSupport::detect`]: whether this worker can join NCCL communicators (a CUDA device and
//!   a loadable libnccl); advertised as `WorkerInfo::nccl_gpu`, the GPU's UUID, so the
//!   coordinator never puts two ranks on one GPU.
//! - [`NcclSupport::create_id`]: rank 0's `ncclUniqueId` (`WorkerService.CreateNcclId`).
//! - [`NcclSupport::exchange`]: the shard's exchange when its assignment names a communicator:
//!   velocities over NCCL (`longshot_core::grouped_exchange`), latent hashes and decode halos over
//!   the TCP exchange, which stays connected.
//!
//! Known cost: every `CreateNcclId` starts NCCL's bootstrap root thread in this process, which
//! waits for the gang's ranks; a plan that never joins (a refused or cancelled plan) leaves it
//! waiting. After the id is handed out, an NCCL failure fails the shard (and the job); only a
//! failure to create the id falls back to TCP.
//!
//! NOT RUN ACROSS RANKS: this project has had one GPU at most, and NCCL refuses two ranks on one
//! device, so the NCCL path of a multi-worker render has never run. The coordinator uses it only
//! with `--overlap-transport nccl`.

use crate::device::Device;
use crate::net_exchange::{NetExchange, ShardExchange};
use longshot_core::api::NcclGroup;
use std::time::Duration;

/// This worker's ability to join NCCL communicators.
#[derive(Clone, Default)]
pub struct NcclSupport {
    #[cfg(feature = "cuda")]
    backend: Option<std::sync::Arc<longshot_kernels::cuda::CudaBackend>>,
    gpu: Option<String>,
}

impl std::fmt::Debug for NcclSupport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NcclSupport({:?})", self.gpu)
    }
}

impl NcclSupport {
    /// None: overlaps over TCP only.
    pub fn none() -> Self {
        Self::default()
    }

    /// NCCL on `device` when it is a GPU and libnccl loads; one log line either way on a GPU.
    pub fn detect(device: &Device) -> Self {
        match device {
            Device::Cpu => Self::none(),
            #[cfg(feature = "cuda")]
            Device::Cuda(backend) => match longshot_kernels::cuda::nccl_version() {
                Ok((major, minor, patch)) => {
                    let gpu = backend.info().uuid.clone();
                    tracing::info!("NCCL {major}.{minor}.{patch}: overlaps can go over NCCL on {gpu}");
                    Self {
                        backend: Some(backend.clone()),
                        gpu: Some(gpu),
                    }
                }
                Err(e) => {
                    tracing::info!("overlaps go over TCP only: {e}");
                    Self::none()
                }
            },
        }
    }

    /// The GPU's UUID when this worker can join NCCL communicators.
    pub fn gpu(&self) -> Option<&str> {
        self.gpu.as_deref()
    }

    fn unavailable() -> String {
        "this worker cannot join NCCL communicators (no GPU, no libnccl, or a build without CUDA)".into()
    }

    /// A fresh `ncclUniqueId` (this process hosts the communicator's bootstrap root). Blocking
    /// (it opens a socket): call it off the async runtime.
    pub fn create_id(&self) -> Result<Vec<u8>, String> {
        #[cfg(feature = "cuda")]
        if self.backend.is_some() {
            let id = longshot_kernels::cuda::NcclUniqueId::new().map_err(|e| e.to_string())?;
            return Ok(id.to_bytes().to_vec());
        }
        Err(Self::unavailable())
    }

    /// The shard's exchange: joins `group`'s communicator (waiting at most `timeout` for every
    /// rank, watching `tcp.cancel`), velocities over it and the rest over `tcp`. Blocking: call
    /// it on the shard thread.
    pub fn exchange(
        &self,
        group: &NcclGroup,
        tcp: NetExchange,
        timeout: Duration,
    ) -> Result<Box<dyn ShardExchange>, String> {
        #[cfg(feature = "cuda")]
        if let Some(backend) = &self.backend {
            return gpu::exchange(backend.clone(), group, tcp, timeout);
        }
        let _ = (group, tcp, timeout);
        Err(Self::unavailable())
    }
}

#[cfg(feature = "cuda")]
mod gpu {
    use crate::net_exchange::{NetExchange, ShardExchange};
    use longshot_core::api::NcclGroup;
    use longshot_core::exchange::{ExchangeError, Side};
    use longshot_core::grouped_exchange::{GroupedExchange, GroupedTransport};
    use longshot_kernels::cuda::{CudaBackend, HostOverlapExchange, NcclUniqueId};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc::{channel, RecvTimeoutError};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    pub(super) fn exchange(
        backend: Arc<CudaBackend>,
        group: &NcclGroup,
        tcp: NetExchange,
        timeout: Duration,
    ) -> Result<Box<dyn ShardExchange>, String> {
        let id = NcclUniqueId::from_bytes(&group.unique_id).map_err(|e| e.to_string())?;
        let (rank, ranks) = (group.rank, group.ranks);
        let (has_left, has_right) = (tcp.left.is_some(), tcp.right.is_some());
        // ncclCommInitRank and the first group (connection set-up) block until the other ranks
        // take part and cannot be interrupted, so they run on a helper thread; a rank that never
        // comes costs this shard the timeout and leaves that thread blocked in NCCL (a
        // communicator it makes later is dropped, which aborts it).
        let (tx, rx) = channel();
        std::thread::Builder::new()
            .name(format!("nccl-join-{rank}"))
            .spawn(move || {
                // The first exchange sets up the peer connections (a wait on the neighbours too).
                let joined = HostOverlapExchange::join(&backend, &id, rank, ranks)
                    .and_then(|mut ex| ex.connect_neighbours().map(|()| ex));
                let _ = tx.send(joined);
            })
            .map_err(|e| format!("cannot start the NCCL join thread: {e}"))?;
        let deadline = Instant::now() + timeout;
        let joined = loop {
            if tcp.cancel.load(Ordering::Relaxed) {
                return Err("cancelled while joining the NCCL communicator".into());
            }
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(r) => {
                    break r.map_err(|e| format!("joining the NCCL communicator as rank {rank} of {ranks}: {e}"))?
                }
                Err(RecvTimeoutError::Timeout) if Instant::now() >= deadline => {
                    return Err(format!(
                        "not every rank joined the NCCL communicator within {timeout:?} (rank {rank} of {ranks})"
                    ));
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err("the NCCL join thread ended without an answer".into())
                }
            }
        };
        tracing::info!(job = %tcp.job_id, "joined the NCCL communicator as rank {rank} of {ranks}");
        let peers = match (has_left, has_right) {
            (true, true) => format!("ranks {} and {} (left and right)", rank - 1, rank + 1),
            (true, false) => format!("rank {} (left)", rank - 1),
            _ => format!("rank {} (right)", rank + 1),
        };
        let transport = NcclTransport {
            ex: joined,
            timeout,
            cancel: tcp.cancel.clone(),
            peers,
        };
        Ok(Box::new(GroupedExchange::new(transport, tcp, has_left, has_right)))
    }

    /// [`GroupedTransport`] over one rank's [`HostOverlapExchange`].
    struct NcclTransport {
        ex: HostOverlapExchange,
        timeout: Duration,
        cancel: Arc<AtomicBool>,
        /// The neighbours, for a timeout's message (one event covers both).
        peers: String,
    }

    impl GroupedTransport for NcclTransport {
        fn start(&mut self, sends: &[(Side, &[f32])]) -> Result<(), ExchangeError> {
            let pick = |side| sends.iter().find(|(s, _)| *s == side).map(|(_, v)| *v);
            self.ex
                .start(pick(Side::Left), pick(Side::Right))
                .map_err(|e| ExchangeError::Protocol {
                    side: sends.first().map_or(Side::Left, |s| s.0),
                    reason: format!("NCCL: {e}"),
                })
        }

        fn finish(&mut self, side: Side, step: u32) -> Result<Vec<f32>, ExchangeError> {
            let deadline = Instant::now() + self.timeout;
            let failed = |e: longshot_kernels::cuda::CudaError| ExchangeError::Disconnected {
                side,
                reason: format!("NCCL transfer failed: {e}"),
            };
            // Polled, not waited on: a neighbour that never sends must end in a timeout (the
            // communicator is then aborted when the exchange drops), and a cancel must be seen.
            while !self.ex.is_received().map_err(failed)? {
                if self.cancel.load(Ordering::Relaxed) {
                    return Err(ExchangeError::Cancelled);
                }
                if Instant::now() >= deadline {
                    return Err(ExchangeError::GroupTimeout {
                        peers: self.peers.clone(),
                        step,
                        timeout: self.timeout,
                    });
                }
                std::thread::sleep(Duration::from_micros(50));
            }
            self.ex.take(side == Side::Left).map_err(failed)
        }
    }

    impl ShardExchange for GroupedExchange<NcclTransport, NetExchange> {
        fn bytes_sent(&self) -> u64 {
            self.velocity_bytes + self.inner().bytes_sent
        }
        fn transport(&self) -> &'static str {
            "nccl"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a GPU (the CPU device, or a build without CUDA) nothing is advertised and both
    /// entry points refuse clearly.
    #[test]
    fn a_cpu_worker_advertises_no_nccl_and_refuses_to_make_ids() {
        let n = NcclSupport::detect(&Device::Cpu);
        assert_eq!(n.gpu(), None);
        assert!(n.create_id().unwrap_err().contains("cannot join NCCL communicators"));
    }
}
