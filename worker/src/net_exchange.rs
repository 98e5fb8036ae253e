//! The overlap exchange over the network, as seen from the loop's thread.
//!
//! The co-denoising loop runs on a plain thread and calls the blocking [`Exchange`] trait; the
//! network lives on the async runtime. Each side is a pair of channels: outbound messages go into
//! an unbounded tokio channel (sending never blocks the loop), inbound ones arrive on a std channel
//! that the loop waits on with a timeout, in short slices so that cancellation takes effect within
//! one step. A dropped connection closes the inbound channel, which the loop sees at once as
//! "disconnected" rather than waiting out the timeout.

use longshot_core::api::OverlapEnvelope;
use longshot_core::exchange::{Exchange, ExchangeError, OverlapMessage, Payload, Side};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// One neighbour link.
pub struct Link {
    pub outbound: UnboundedSender<OverlapEnvelope>,
    pub inbound: Receiver<OverlapMessage>,
}

pub struct NetExchange {
    pub job_id: String,
    pub plan_id: u64,
    pub left: Option<Link>,
    pub right: Option<Link>,
    pub timeout: Duration,
    pub cancel: Arc<AtomicBool>,
    /// Payload bytes handed to the network (velocities, halos; 8 per hash), for the shard report.
    pub bytes_sent: u64,
}

impl NetExchange {
    fn link(&self, side: Side) -> Result<&Link, ExchangeError> {
        match side {
            Side::Left => self.left.as_ref(),
            Side::Right => self.right.as_ref(),
        }
        .ok_or_else(|| ExchangeError::Protocol {
            side,
            reason: "no neighbour on this side".into(),
        })
    }
}

/// The exchange a shard runs with: the TCP one, or NCCL for velocities around it
/// ([`crate::nccl`]).
pub trait ShardExchange: Exchange {
    /// Overlap payload bytes sent, for the shard's log line.
    fn bytes_sent(&self) -> u64;
    /// `tcp` or `nccl`: what carries the velocities.
    fn transport(&self) -> &'static str;
}

impl ShardExchange for NetExchange {
    fn bytes_sent(&self) -> u64 {
        self.bytes_sent
    }
    fn transport(&self) -> &'static str {
        "tcp"
    }
}

impl Exchange for NetExchange {
    fn send(&mut self, side: Side, message: OverlapMessage) -> Result<(), ExchangeError> {
        self.bytes_sent += match &message.payload {
            Payload::Velocity(v) | Payload::Halo(v) => 4 * v.len() as u64,
            Payload::LatentHash(_) => 8,
        };
        let env = OverlapEnvelope {
            job_id: self.job_id.clone(),
            plan_id: self.plan_id,
            message,
        };
        self.link(side)?
            .outbound
            .send(env)
            .map_err(|_| ExchangeError::Disconnected {
                side,
                reason: "connection to the neighbour is closed".into(),
            })
    }

    fn recv(&mut self, side: Side, step: u32) -> Result<OverlapMessage, ExchangeError> {
        let deadline = Instant::now() + self.timeout;
        let slice = Duration::from_millis(100);
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(ExchangeError::Cancelled);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ExchangeError::Timeout {
                    side,
                    step,
                    timeout: self.timeout,
                });
            }
            match self.link(side)?.inbound.recv_timeout(slice.min(deadline - now)) {
                Ok(m) => return Ok(m),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(ExchangeError::Disconnected {
                        side,
                        reason: "the connection dropped (neighbour process gone?)".into(),
                    })
                }
            }
        }
    }
}
