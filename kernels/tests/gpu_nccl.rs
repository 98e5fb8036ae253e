//! The NCCL overlap exchange on the device (`cuda::nccl_exchange`). Only one GPU is available to
//! this project, so this is a SINGLE-RANK communicator: it sends to and receives from itself
//! through the same grouped send/recv path the neighbour exchange uses, and checks the bytes.
//! Multi-rank NCCL (rank ± 1 neighbours in separate processes) has not been run here.
//!
//! Needs a GPU and libnccl (reachable as libnccl.so; scripts/gpu/pack.sh's run.sh links it from
//! pip's nvidia-nccl package): without them every test FAILS with the reason. Not run by CI.

use longshot_kernels::cuda::nccl_exchange::{nccl_version, NCCL_UNIQUE_ID_BYTES};
use longshot_kernels::cuda::parity::{down, gpu, poisoned, up, Rng};
use longshot_kernels::cuda::{NcclExchange, NcclUniqueId};

fn single_rank() -> NcclExchange {
    let (major, minor, patch) = nccl_version().unwrap_or_else(|e| panic!("{e}"));
    eprintln!("NCCL {major}.{minor}.{patch}");
    let id = NcclUniqueId::new().expect("ncclGetUniqueId");
    // The id travels as bytes (later in the ShardAssignment): use the round-tripped copy.
    let bytes = id.to_bytes();
    assert_eq!(bytes.len(), NCCL_UNIQUE_ID_BYTES);
    let id = NcclUniqueId::from_bytes(&bytes).unwrap();
    NcclExchange::new(gpu(), &id, 0, 1).expect("single-rank communicator")
}

fn same_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let bad = got.iter().zip(want).position(|(g, w)| g.to_bits() != w.to_bits());
    assert!(bad.is_none(), "{what}: element {bad:?} differs");
    eprintln!("nccl {what}: {} values bit-identical", got.len());
}

#[test]
fn single_rank_self_send_recv_moves_the_bytes() {
    let ex = single_rank();
    assert_eq!((ex.rank(), ex.nranks()), (0, 1));
    let mut rng = Rng::new("nccl_self");
    // One Wan2.1-1.3B overlap at 480×832 with O = 5: 5·16·60·104 values (1.9 MiB), plus a
    // second, odd-sized buffer in the same group.
    let (a, b) = (rng.vec(5 * 16 * 60 * 104, 3.0), rng.vec(1001, 3.0));
    let (da, db) = (up(&a), up(&b));
    let (mut ra, mut rb) = (poisoned(a.len()), poisoned(b.len()));
    {
        let mut recvs = [(0, &mut ra), (0, &mut rb)];
        let inflight = ex
            .send_recv(&[(0, &da), (0, &db)], &mut recvs)
            .expect("grouped self send/recv");
        // Queued on the compute stream after the exchange started: it may overlap the exchange.
        let mut interior = up(&a);
        gpu().silu(&mut interior).expect("interior work on the compute stream");
        inflight.compute_wait().expect("compute waits for the exchange");
    }
    same_bits("self recv (overlap-sized)", &down(&ra), &a);
    same_bits("self recv (1001 values)", &down(&rb), &b);
}

#[test]
fn single_rank_has_no_neighbours_and_says_so() {
    let ex = single_rank();
    // Rank 0 of 1 has neither neighbour: passing none is a (no-op) exchange.
    ex.exchange_overlaps(None, None, None, None)
        .expect("an exchange with no neighbours")
        .compute_wait()
        .unwrap();
    // Passing a buffer for a neighbour that does not exist is a shape error, not a hang.
    let d = up(&[1.0, 2.0]);
    let mut r = poisoned(2);
    let e = ex
        .exchange_overlaps(Some(&d), None, Some(&mut r), None)
        .err()
        .expect("rank 0 has no left neighbour");
    assert!(e.to_string().contains("left overlap"), "{e}");
    // A peer outside the communicator is refused before NCCL sees it.
    let e = ex.send_recv(&[(1, &d)], &mut []).err().expect("peer 1 of 1");
    assert!(e.to_string().contains("peer 1"), "{e}");
}

/// The worker's host-side form (`HostOverlapExchange`) on a single rank: no neighbours, so the
/// group is empty; what it checks is that a missing neighbour's overlap or a take without an
/// exchange is an error, not a hang, and that polling works. Its transfers need two GPUs.
#[test]
fn host_overlap_exchange_single_rank_checks_its_arguments() {
    use longshot_kernels::cuda::HostOverlapExchange;
    nccl_version().unwrap_or_else(|e| panic!("{e}"));
    let id = NcclUniqueId::new().expect("ncclGetUniqueId");
    let mut ex = HostOverlapExchange::join(gpu(), &id, 0, 1).expect("single-rank communicator");
    assert_eq!((ex.rank(), ex.ranks()), (0, 1));
    assert!(ex.is_received().unwrap(), "nothing started yet");
    ex.start(None, None).expect("an exchange with no neighbours");
    while !ex.is_received().unwrap() {}
    let e = ex.start(Some(&[1.0]), None).unwrap_err();
    assert!(e.to_string().contains("left overlap must be absent"), "{e}");
    let e = ex.start(None, Some(&[1.0])).unwrap_err();
    assert!(e.to_string().contains("right overlap must be absent"), "{e}");
    let e = ex.take(true).unwrap_err();
    assert!(e.to_string().contains("no left overlap is being received"), "{e}");
}
