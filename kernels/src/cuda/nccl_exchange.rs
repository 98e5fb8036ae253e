//! The overlap exchange over NCCL (docs/long-clips.md §3): after a window's forward passes
//! and the CFG combine, each rank sends its overlap velocities to its neighbours rank − 1 and
//! rank + 1 and receives theirs, in one `ncclGroupStart`/`ncclGroupEnd`, on a dedicated
//! communication stream, while the compute stream updates the interior frames. The compute stream
//! waits on the returned [`InFlight`] exchange only before it blends the overlap frames.
//!
//! - [`NcclUniqueId`]: the 128-byte `ncclUniqueId` as plain bytes, made by one rank (the
//!   coordinator asks the gang's rank 0, `WorkerService.CreateNcclId`) and carried to the others in
//!   the `ShardAssignment`;
//!   [`NcclUniqueId::from_bytes`] checks the length.
//! - [`NcclExchange`]: the communicator of one rank on its own non-blocking stream.
//!
//! libnccl is opened at run time, like the rest of the backend: a missing library is
//! [`CudaError::NoNccl`], never cudarc's panic ([`nccl_version`] checks presence first). cudarc
//! looks for the unversioned `libnccl.so` (and `libnccl.so.13`, …), which pip's
//! nvidia-nccl packages do not ship (they have `libnccl.so.2`): the device harness links it.
//!
//! NOT RUN ACROSS RANKS: only one GPU is available to this project, so the only run is the
//! single-rank communicator of `kernels/tests/gpu_nccl.rs` (self send/recv through the same
//! grouped path). Multi-rank NCCL (two processes, two GPUs, rank ± 1 neighbours) has not been
//! run here. The TCP/gRPC exchange stays the fallback whenever a peer has no GPU or no NCCL.

use super::backend::CudaBackend;
use super::error::{nccl_error, shape_error, CudaError};
use cudarc::driver::{CudaEvent, CudaSlice, CudaStream};
use cudarc::nccl::{result as nccl, sys as nccl_sys, Comm, Id};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

/// Length of an `ncclUniqueId` in bytes.
pub const NCCL_UNIQUE_ID_BYTES: usize = 128;

/// NCCL's version as `(major, minor, patch)`, or [`CudaError::NoNccl`] when libnccl cannot be
/// loaded. Every NCCL entry point of this module asks here first.
pub fn nccl_version() -> Result<(u32, u32, u32), CudaError> {
    // SAFETY: `is_culib_present` only tries `dlopen` on cudarc's candidate names and drops the
    // handles; it calls no NCCL function.
    if !unsafe { nccl_sys::is_culib_present() } {
        return Err(CudaError::NoNccl);
    }
    let v = nccl::get_nccl_version().map_err(|e| nccl_error("ncclGetVersion", e))?;
    let v = u32::try_from(v).unwrap_or(0);
    // NCCL_VERSION(X, Y, Z) is X·10000 + Y·100 + Z since 2.9 (X·1000 + Y·100 + Z before).
    Ok(if v >= 10000 {
        (v / 10000, (v % 10000) / 100, v % 100)
    } else {
        (v / 1000, (v % 1000) / 100, v % 100)
    })
}

/// The rendezvous id of one communicator: 128 opaque bytes (NCCL puts the creating host's
/// address in it), equal on every rank.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NcclUniqueId([u8; NCCL_UNIQUE_ID_BYTES]);

impl NcclUniqueId {
    /// A fresh id (`ncclGetUniqueId`); made once, by one rank or the coordinator's GPU host.
    pub fn new() -> Result<Self, CudaError> {
        nccl_version()?;
        let id = Id::new().map_err(|e| nccl_error("ncclGetUniqueId", e))?;
        Ok(Self(id.internal().map(|c| c as u8)))
    }

    pub fn to_bytes(&self) -> [u8; NCCL_UNIQUE_ID_BYTES] {
        self.0
    }

    /// The id carried as bytes; anything but exactly 128 bytes is an error.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CudaError> {
        let arr: [u8; NCCL_UNIQUE_ID_BYTES] = bytes.try_into().map_err(|_| {
            CudaError::NcclId(format!(
                "{} bytes given, an ncclUniqueId has exactly {NCCL_UNIQUE_ID_BYTES}",
                bytes.len()
            ))
        })?;
        Ok(Self(arr))
    }

    fn to_nccl(self) -> Id {
        Id::uninit(self.0.map(|b| b as core::ffi::c_char))
    }
}

impl fmt::Debug for NcclUniqueId {
    /// The first 8 bytes only: enough to tell ids apart in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NcclUniqueId(")?;
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// One rank's communicator, on a dedicated non-blocking communication stream of the backend's
/// device. The backend's stream is the compute stream.
pub struct NcclExchange {
    comm: Comm,
    compute: Arc<CudaStream>,
    comm_stream: Arc<CudaStream>,
    rank: usize,
    nranks: usize,
}

impl fmt::Debug for NcclExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NcclExchange")
            .field("rank", &self.rank)
            .field("nranks", &self.nranks)
            .finish()
    }
}

impl NcclExchange {
    /// Joins communicator `id` as `rank` of `nranks` on `backend`'s device. Blocks until all
    /// `nranks` ranks have joined (`ncclCommInitRank`): the caller bounds that wait (the worker
    /// runs it on a helper thread and waits for that at most the exchange timeout).
    pub fn new(backend: &CudaBackend, id: &NcclUniqueId, rank: usize, nranks: usize) -> Result<Self, CudaError> {
        if nranks == 0 || rank >= nranks || i32::try_from(nranks).is_err() {
            return Err(shape_error(
                "nccl communicator",
                format!("rank {rank} of {nranks}: need 0 ≤ rank < nranks ≤ 2^31"),
            ));
        }
        nccl_version()?;
        let ctx = backend.context();
        // NCCL uses the calling thread's current device.
        ctx.bind_to_thread()?;
        let comm_stream = ctx.new_stream()?;
        let comm = Comm::from_rank(comm_stream.clone(), rank, nranks, id.to_nccl())
            .map_err(|e| nccl_error("ncclCommInitRank", e))?;
        Ok(Self {
            comm,
            compute: backend.stream().clone(),
            comm_stream,
            rank,
            nranks,
        })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn nranks(&self) -> usize {
        self.nranks
    }

    /// The communication stream (NCCL's work runs here).
    pub fn comm_stream(&self) -> &Arc<CudaStream> {
        &self.comm_stream
    }

    /// Sends this rank's overlaps to its neighbours and receives theirs, in one NCCL group on the
    /// communication stream, and returns at once with the [`InFlight`] exchange (its event
    /// completes with the group).
    ///
    /// `send_left`/`recv_left` are the overlap with rank − 1 and must be given exactly when
    /// rank > 0; `send_right`/`recv_right` the overlap with rank + 1, exactly when
    /// rank + 1 < nranks. On each side the send and receive buffers have the same length (both
    /// copies of an overlap have the same shape), which must also match the neighbour's.
    ///
    /// The exchange starts after the work already queued on the compute stream (the sends read
    /// what it produced). Queue the interior update on the compute stream next (the buffers stay
    /// borrowed, so it cannot touch them), then [`InFlight::compute_wait`] before the blend reads
    /// the received overlaps.
    pub fn exchange_overlaps<'a>(
        &'a self,
        send_left: Option<&'a CudaSlice<f32>>,
        send_right: Option<&'a CudaSlice<f32>>,
        recv_left: Option<&'a mut CudaSlice<f32>>,
        recv_right: Option<&'a mut CudaSlice<f32>>,
    ) -> Result<InFlight<'a>, CudaError> {
        const OP: &str = "exchange_overlaps";
        let has_left = self.rank > 0;
        let has_right = self.rank + 1 < self.nranks;
        let side = |name: &str, has: bool, send: bool, recv: bool| {
            if send != has || recv != has {
                Err(shape_error(
                    OP,
                    format!(
                        "rank {} of {}: the {name} overlap's send and receive buffers must be {} (send given: {send}, receive given: {recv})",
                        self.rank,
                        self.nranks,
                        if has { "given" } else { "absent" }
                    ),
                ))
            } else {
                Ok(())
            }
        };
        side("left", has_left, send_left.is_some(), recv_left.is_some())?;
        side("right", has_right, send_right.is_some(), recv_right.is_some())?;
        let mut sends = Vec::with_capacity(2);
        let mut recvs = Vec::with_capacity(2);
        if let (Some(s), Some(r)) = (send_left, recv_left) {
            sends.push((self.rank - 1, s));
            recvs.push((self.rank - 1, r));
        }
        if let (Some(s), Some(r)) = (send_right, recv_right) {
            sends.push((self.rank + 1, s));
            recvs.push((self.rank + 1, r));
        }
        for ((peer, s), (_, r)) in sends.iter().zip(&recvs) {
            if s.len() != r.len() {
                return Err(shape_error(
                    OP,
                    format!("overlap with rank {peer}: send {} values, receive {}", s.len(), r.len()),
                ));
            }
        }
        self.send_recv(&sends, &mut recvs)
    }

    /// The general form: every `(peer, buffer)` send and receive in one NCCL group on the
    /// communication stream, after the compute stream's queued work. A peer may be this rank
    /// itself (the single-rank device test). Each receive must match a send of the same length
    /// from its peer, in the same order.
    pub fn send_recv<'a>(
        &'a self,
        sends: &[(usize, &'a CudaSlice<f32>)],
        recvs: &mut [(usize, &'a mut CudaSlice<f32>)],
    ) -> Result<InFlight<'a>, CudaError> {
        const OP: &str = "nccl send_recv";
        for &peer in sends.iter().map(|(p, _)| p).chain(recvs.iter().map(|(p, _)| p)) {
            if peer >= self.nranks {
                return Err(shape_error(
                    OP,
                    format!("peer {peer} is not a rank of this {}-rank communicator", self.nranks),
                ));
            }
        }
        // The sends read what the compute stream wrote; the receives overwrite buffers it may
        // still read. Both wait for everything queued there so far.
        self.comm_stream.join(&self.compute)?;
        self.group(sends, recvs)?;
        Ok(InFlight {
            event: Some(self.comm_stream.record_event(None)?),
            compute: self.compute.clone(),
            _buffers: PhantomData,
        })
    }

    /// Queues every send and receive in one NCCL group on the communication stream (after what
    /// is already queued there). The caller keeps the buffers alive and untouched until the
    /// group's work has completed on that stream.
    pub(crate) fn group(
        &self,
        sends: &[(usize, &CudaSlice<f32>)],
        recvs: &mut [(usize, &mut CudaSlice<f32>)],
    ) -> Result<(), CudaError> {
        self.comm.context().bind_to_thread()?;
        nccl::group_start().map_err(|e| nccl_error("ncclGroupStart", e))?;
        let mut queued = Ok(());
        for (peer, buf) in sends {
            queued = self
                .comm
                .send(*buf, *peer as i32)
                .map_err(|e| nccl_error("ncclSend", e));
            if queued.is_err() {
                break;
            }
        }
        if queued.is_ok() {
            for (peer, buf) in recvs.iter_mut() {
                queued = self
                    .comm
                    .recv(*buf, *peer as i32)
                    .map(|_| ())
                    .map_err(|e| nccl_error("ncclRecv", e));
                if queued.is_err() {
                    break;
                }
            }
        }
        // The group is closed even when queueing failed, so NCCL is not left inside a group.
        let ended = nccl::group_end().map_err(|e| nccl_error("ncclGroupEnd", e));
        queued?;
        ended?;
        Ok(())
    }
}

/// An exchange queued on the communication stream. It keeps the exchanged buffers borrowed until
/// the compute stream is ordered after it ([`InFlight::compute_wait`], or the drop, which does the
/// same), so no buffer can be reused, written or freed while NCCL may still be using it. (cudarc's
/// per-buffer events are recorded when each send/receive is queued, which inside a group is before
/// NCCL's work lands on the stream: the ordering rests on this event, not on them.)
#[must_use = "the compute stream must wait for the exchange before it reads the received overlaps"]
pub struct InFlight<'a> {
    event: Option<CudaEvent>,
    compute: Arc<CudaStream>,
    _buffers: PhantomData<&'a mut ()>,
}

impl InFlight<'_> {
    /// The event that completes with the exchange (e.g. to time it).
    pub fn event(&self) -> &CudaEvent {
        self.event.as_ref().expect("present until consumed")
    }

    /// Makes the compute stream wait for the exchange, on the device: the host does not block,
    /// and the work queued on the compute stream before this call (the interior update) still
    /// overlaps the exchange.
    pub fn compute_wait(mut self) -> Result<(), CudaError> {
        let event = self.event.take().expect("present until consumed");
        Ok(self.compute.wait(&event)?)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(event) = self.event.take() {
            // An error leaves only the host-side wait, which cannot fail silently in a way that
            // lets the buffers go early: if that fails too the context is lost anyway.
            if self.compute.wait(&event).is_err() {
                let _ = event.synchronize();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_id_round_trips_through_bytes_and_checks_the_length() {
        let mut bytes = [0u8; NCCL_UNIQUE_ID_BYTES];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (i * 37 + 11) as u8;
        }
        let id = NcclUniqueId::from_bytes(&bytes).unwrap();
        assert_eq!(id.to_bytes(), bytes);
        assert_eq!(
            NcclUniqueId::from_bytes(&id.to_nccl().internal().map(|c| c as u8)).unwrap(),
            id
        );
        for len in [0, 127, 129] {
            let e = NcclUniqueId::from_bytes(&vec![0; len]).unwrap_err();
            assert!(e.to_string().contains(&format!("{len} bytes given")), "{e}");
        }
        assert!(format!("{id:?}").starts_with("NcclUniqueId(0b30"));
    }

    /// Without libnccl this is `NoNccl`, never a panic; with it, a plausible 2.x version.
    #[test]
    fn nccl_presence_is_checked_without_panicking() {
        match nccl_version() {
            Ok((major, _, _)) => assert_eq!(major, 2),
            Err(e) => assert!(matches!(e, CudaError::NoNccl), "{e}"),
        }
    }
}
