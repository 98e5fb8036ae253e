//! The overlap exchange between neighbouring partitions (workers), and its in-process
//! implementation.
//!
//! A partition runs a contiguous range of windows; only its edge windows talk to neighbours. Per
//! step each side sends the post-CFG velocity of its overlap frames, then receives the neighbour's.
//! Every few steps the two sides also swap a hash of their copies of the overlap latents, so that a
//! divergence is caught loudly instead of producing a silently different clip.
//! Network (TCP) and NCCL implementations live with the worker.

use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;
use thiserror::Error;

/// Which neighbour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    Left,
    Right,
}

impl Side {
    pub fn opposite(self) -> Side {
        match self {
            Side::Left => Side::Right,
            Side::Right => Side::Left,
        }
    }
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Left => "left",
            Side::Right => "right",
        })
    }
}

/// What a message carries.
#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    /// Post-CFG velocity of the overlap frames, frame-major, `overlap·frame_len` values.
    Velocity(Vec<f32>),
    /// Hash of the sender's copy of the overlap latents after the step (see [`crate::hash`]).
    LatentHash(u64),
    /// Final latents of the frames just before the receiver's first owned frame, taken from their
    /// owner: the warm-up of a causal decoder.
    Halo(Vec<f32>),
}

/// One overlap message. `boundary` is the index of the lower window of the pair it belongs to.
#[derive(Clone, Debug, PartialEq)]
pub struct OverlapMessage {
    pub step: u32,
    pub boundary: u32,
    pub payload: Payload,
}

#[derive(Debug, Error)]
pub enum ExchangeError {
    #[error("no overlap from the {side} neighbour within {timeout:?} (step {step}); the neighbour is lost or stalled")]
    Timeout { side: Side, step: u32, timeout: Duration },
    #[error("the {side} neighbour disconnected: {reason}")]
    Disconnected { side: Side, reason: String },
    #[error("protocol error with the {side} neighbour: {reason}")]
    Protocol { side: Side, reason: String },
    /// A grouped exchange with both neighbours at once (NCCL) did not complete: which of them
    /// stalled cannot be told apart.
    #[error("the overlap exchange with {peers} did not complete within {timeout:?} (step {step}); a neighbour is lost or stalled")]
    GroupTimeout {
        peers: String,
        step: u32,
        timeout: Duration,
    },
    #[error("cancelled")]
    Cancelled,
}

/// Transport for overlap messages between one partition and its two neighbours.
pub trait Exchange: Send {
    /// Queues `msg` for the neighbour on `side`. Must not wait for the neighbour to receive it.
    fn send(&mut self, side: Side, msg: OverlapMessage) -> Result<(), ExchangeError>;

    /// Waits (bounded by the exchange timeout) for the next message from the neighbour on `side`.
    fn recv(&mut self, side: Side, step: u32) -> Result<OverlapMessage, ExchangeError>;
}

/// Channels between the partitions of a row, on threads of one process: what the in-process
/// exchange ([`ChannelExchange`]) and grouped transport
/// ([`crate::grouped_exchange::ChannelGroup`]) carry their values over.
pub struct ChannelLinks<T> {
    left: Option<(Sender<T>, Receiver<T>)>,
    right: Option<(Sender<T>, Receiver<T>)>,
    timeout: Duration,
}

impl<T> ChannelLinks<T> {
    /// The links of `partitions` partitions in a row; element `i` talks to `i−1` and `i+1`.
    pub fn chain(partitions: usize, timeout: Duration) -> Vec<ChannelLinks<T>> {
        let mut out: Vec<ChannelLinks<T>> = (0..partitions)
            .map(|_| ChannelLinks {
                left: None,
                right: None,
                timeout,
            })
            .collect();
        for i in 1..partitions {
            let (to_right, from_left) = channel();
            let (to_left, from_right) = channel();
            out[i - 1].right = Some((to_right, from_right));
            out[i].left = Some((to_left, from_left));
        }
        out
    }

    fn link(&self, side: Side) -> Result<&(Sender<T>, Receiver<T>), ExchangeError> {
        let link = match side {
            Side::Left => &self.left,
            Side::Right => &self.right,
        };
        link.as_ref().ok_or_else(|| ExchangeError::Protocol {
            side,
            reason: "no neighbour on this side".into(),
        })
    }

    pub fn send(&self, side: Side, value: T) -> Result<(), ExchangeError> {
        self.link(side)?.0.send(value).map_err(|_| ExchangeError::Disconnected {
            side,
            reason: "channel closed".into(),
        })
    }

    /// The next value from `side`, waiting at most the links' timeout (`step` names the wait).
    pub fn recv(&self, side: Side, step: u32) -> Result<T, ExchangeError> {
        let timeout = self.timeout;
        self.link(side)?.1.recv_timeout(timeout).map_err(|e| match e {
            RecvTimeoutError::Timeout => ExchangeError::Timeout { side, step, timeout },
            RecvTimeoutError::Disconnected => ExchangeError::Disconnected {
                side,
                reason: "channel closed".into(),
            },
        })
    }
}

/// In-process exchange over channels: partitions on threads of one process.
pub struct ChannelExchange(ChannelLinks<OverlapMessage>);

impl ChannelExchange {
    /// Builds the exchanges for `partitions` partitions in a row; element `i` talks to `i−1` and `i+1`.
    pub fn chain(partitions: usize, timeout: Duration) -> Vec<ChannelExchange> {
        ChannelLinks::chain(partitions, timeout)
            .into_iter()
            .map(ChannelExchange)
            .collect()
    }
}

impl Exchange for ChannelExchange {
    fn send(&mut self, side: Side, msg: OverlapMessage) -> Result<(), ExchangeError> {
        self.0.send(side, msg)
    }

    fn recv(&mut self, side: Side, step: u32) -> Result<OverlapMessage, ExchangeError> {
        self.0.recv(side, step)
    }
}
