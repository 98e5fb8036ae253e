//! The NCCL overlap exchange for a co-denoising loop whose velocities live on the host (the
//! worker's loop: `longshot_core::codenoise`, one window forward at a time).
//!
//! [`HostOverlapExchange::start`] copies this rank's overlap velocities into device buffers and
//! queues the sends to, and receives from, ranks − 1 and + 1 in one NCCL group, all on the
//! communication stream, and returns: the compute stream (the model's) goes on with the interior
//! windows while the transfer runs. [`HostOverlapExchange::is_received`] polls without blocking
//! (the caller bounds the wait and watches for cancellation), [`HostOverlapExchange::take`]
//! copies a received overlap back. Nothing here orders the compute stream after the exchange:
//! the host reads the result, and the device buffers belong to this struct alone.
//!
//! NOT RUN ACROSS RANKS (see `nccl_exchange`): this has never run with two GPUs.
//!
//! Limits of the blocking communicator used here (cudarc's `Comm::from_rank`): `join` and the
//! first group ([`HostOverlapExchange::connect_neighbours`]) wait for the other ranks and cannot
//! be interrupted, so the worker runs them on a helper thread and abandons it when its bounded
//! wait ends (the thread stays blocked in NCCL until NCCL itself gives up). A non-blocking
//! communicator (`ncclCommInitRankConfig` with `blocking = 0`, polled and aborted) would remove
//! that; cudarc 0.19 has no safe form of it.

use super::backend::CudaBackend;
use super::error::{shape_error, CudaError};
use super::nccl_exchange::{NcclExchange, NcclUniqueId};
use cudarc::driver::{CudaEvent, CudaSlice};

/// Which neighbour: index 0 is rank − 1, index 1 is rank + 1.
const LEFT: usize = 0;
const RIGHT: usize = 1;

/// One rank's overlap exchange with host-side inputs and outputs.
pub struct HostOverlapExchange {
    // Declared first so it drops first: dropping the communicator aborts it
    // (`ncclCommAbort`), which ends any transfer still running on the buffers below before
    // they are freed.
    nccl: NcclExchange,
    send: [Option<CudaSlice<f32>>; 2],
    recv: [Option<CudaSlice<f32>>; 2],
    /// Recorded on the communication stream after the last group; `None` before the first.
    done: Option<CudaEvent>,
    /// Per side: a started exchange whose received overlap has not been taken yet.
    pending: [bool; 2],
}

// SAFETY: NCCL communicators and CUDA streams, events and buffers may be used from any thread
// as long as no two threads use one at the same time (NCCL: "not thread-safe", i.e. no
// concurrent calls on one communicator). Every method here takes `&self`/`&mut self` of this
// struct, which owns them all and is not `Sync`, so moving it between threads (the worker joins
// the communicator on a helper thread and runs the loop on the shard thread) never makes two
// threads use them at once. cudarc's `Comm` is `!Send` only because it holds a raw pointer.
unsafe impl Send for HostOverlapExchange {}

impl HostOverlapExchange {
    /// Joins communicator `id` as `rank` of `ranks` on `backend`'s device. Blocks until every
    /// rank has joined (`ncclCommInitRank`).
    pub fn join(backend: &CudaBackend, id: &NcclUniqueId, rank: usize, ranks: usize) -> Result<Self, CudaError> {
        let nccl = NcclExchange::new(backend, id, rank, ranks)?;
        Ok(Self {
            nccl,
            send: [None, None],
            recv: [None, None],
            done: None,
            pending: [false; 2],
        })
    }

    /// Connects to both neighbours with a one-value exchange and waits for it. NCCL sets up a
    /// peer connection inside the first group that uses it, and on a blocking communicator that
    /// waits, uninterruptibly, for the neighbour to take part: done right after joining, the wait
    /// falls under the caller's bounded join instead of a denoising step.
    pub fn connect_neighbours(&mut self) -> Result<(), CudaError> {
        let (rank, ranks) = (self.rank(), self.ranks());
        let one = [0.0f32];
        let (left, right) = (rank > 0, rank + 1 < ranks);
        self.start(left.then_some(&one[..]), right.then_some(&one[..]))?;
        if left {
            self.take(true)?;
        }
        if right {
            self.take(false)?;
        }
        Ok(())
    }

    pub fn rank(&self) -> usize {
        self.nccl.rank()
    }

    pub fn ranks(&self) -> usize {
        self.nccl.nranks()
    }

    /// Starts exchanging: `left` goes to rank − 1 (exactly when rank > 0), `right` to rank + 1
    /// (exactly when rank + 1 < ranks), and as many values come back from each. Returns once
    /// the work is queued on the communication stream. Every received overlap of the previous
    /// exchange must have been taken.
    pub fn start(&mut self, left: Option<&[f32]>, right: Option<&[f32]>) -> Result<(), CudaError> {
        const OP: &str = "nccl overlap exchange";
        let (rank, ranks) = (self.rank(), self.ranks());
        for (i, (given, has)) in [(left.is_some(), rank > 0), (right.is_some(), rank + 1 < ranks)]
            .into_iter()
            .enumerate()
        {
            let name = ["left", "right"][i];
            if given != has {
                return Err(shape_error(
                    OP,
                    format!(
                        "rank {rank} of {ranks}: the {name} overlap must be {}",
                        if has { "given" } else { "absent" }
                    ),
                ));
            }
            if self.pending[i] {
                return Err(shape_error(
                    OP,
                    format!("the {name} overlap of the previous exchange was not taken"),
                ));
            }
        }
        let stream = self.nccl.comm_stream().clone();
        for (i, host) in [left, right].into_iter().enumerate() {
            let Some(host) = host else { continue };
            if host.is_empty() {
                return Err(shape_error(OP, "an overlap of no values"));
            }
            // Reuse the buffers while the overlap's length stays (it does for a whole job).
            if self.send[i].as_ref().map(|b| b.len()) != Some(host.len()) {
                self.send[i] = Some(stream.alloc_zeros::<f32>(host.len())?);
                self.recv[i] = Some(stream.alloc_zeros::<f32>(host.len())?);
            }
            let buf = self.send[i].as_mut().expect("allocated above");
            stream.memcpy_htod(host, buf)?;
        }
        let peers = [rank.wrapping_sub(1), rank + 1];
        let [send_left, send_right] = &self.send;
        let [recv_left, recv_right] = &mut self.recv;
        let mut sends = Vec::with_capacity(2);
        let mut recvs = Vec::with_capacity(2);
        for (i, (s, r)) in [(send_left, recv_left), (send_right, recv_right)]
            .into_iter()
            .enumerate()
        {
            if [left.is_some(), right.is_some()][i] {
                let (s, r) = (s.as_ref().expect("allocated"), r.as_mut().expect("allocated"));
                sends.push((peers[i], s));
                recvs.push((peers[i], r));
            }
        }
        self.nccl.group(&sends, &mut recvs)?;
        self.done = Some(stream.record_event(None)?);
        self.pending = [left.is_some(), right.is_some()];
        Ok(())
    }

    /// Whether the last exchange has completed, without waiting. A CUDA error is an error here;
    /// a failure on NCCL's side (a lost peer, a network error) is reported only through
    /// `ncclCommGetAsyncError`, which cudarc's `Comm` does not expose, so it shows as an
    /// exchange that never completes: callers bound the wait.
    pub fn is_received(&self) -> Result<bool, CudaError> {
        match &self.done {
            Some(e) => Ok(e.try_is_complete()?),
            None => Ok(true),
        }
    }

    /// The overlap received from rank − 1 (`left`) or rank + 1, waiting for the exchange if it
    /// has not completed (poll [`Self::is_received`] first to bound the wait).
    pub fn take(&mut self, left: bool) -> Result<Vec<f32>, CudaError> {
        let i = if left { LEFT } else { RIGHT };
        if !self.pending[i] {
            return Err(shape_error(
                "nccl overlap exchange",
                format!("no {} overlap is being received", if left { "left" } else { "right" }),
            ));
        }
        if let Some(e) = &self.done {
            e.synchronize()?;
        }
        let buf = self.recv[i].as_ref().expect("allocated when started");
        let out = self.nccl.comm_stream().clone_dtoh(buf)?;
        self.pending[i] = false;
        Ok(out)
    }
}
