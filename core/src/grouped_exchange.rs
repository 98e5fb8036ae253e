//! An [`Exchange`] that carries each step's overlap velocities over a grouped transport and
//! everything else over an inner exchange.
//!
//! The grouped transport is NCCL between GPUs (docs/long-clips.md §3): the sends to both
//! neighbours and the receives from them go out as one group, started as soon as the partition's
//! edge windows have their velocities, so the transfer overlaps the interior windows' forward
//! passes. Latent hashes and decode halos (small, rare, variable in size) stay on the inner
//! exchange (TCP/gRPC).
//!
//! Why this works without telling the transport what to expect: the co-denoising loop
//! ([`crate::codenoise::denoise_partition`]) sends a step's velocities to every neighbour before it
//! receives anything, and both copies of an overlap have the same shape, so the group can start on
//! the last send and post receives of the same lengths. A received velocity takes the step and
//! boundary of the message this side sent, and has the length this side sent: the transport
//! delivers matched sends and receives in order. So the loop's own step, boundary and length
//! checks of a velocity cannot fail on this path; what catches a transfer that went wrong is the
//! periodic latent-hash check over the inner exchange (every `hash_every` steps, and always after
//! the last step).

use crate::exchange::{ChannelLinks, Exchange, ExchangeError, OverlapMessage, Payload, Side};
use std::time::Duration;

/// Moves one step's overlap velocities between a partition and all its neighbours at once.
pub trait GroupedTransport: Send {
    /// Starts sending `sends` (one entry per neighbour side) and receiving from the same sides as
    /// many values as were sent there. Returns without waiting for the transfer.
    fn start(&mut self, sends: &[(Side, &[f32])]) -> Result<(), ExchangeError>;

    /// Waits (bounded by the transport's timeout) for what `side` sent in the exchange started
    /// last. `step` is for the error message.
    fn finish(&mut self, side: Side, step: u32) -> Result<Vec<f32>, ExchangeError>;
}

/// A sent velocity: step and boundary, kept to label the neighbour's velocity for the same overlap.
#[derive(Clone, Copy, Debug)]
struct Sent {
    side: Side,
    step: u32,
    boundary: u32,
}

/// Velocities over `transport`, every other payload over `inner`.
pub struct GroupedExchange<T, E> {
    transport: T,
    inner: E,
    /// The sides this partition has a neighbour on (a group needs a velocity for each).
    sides: Vec<Side>,
    /// This step's velocities not yet handed to the transport.
    queued: Vec<(Sent, Vec<f32>)>,
    /// Started, and not yet received from the neighbour.
    in_flight: Vec<Sent>,
    /// Velocity bytes handed to the transport.
    pub velocity_bytes: u64,
}

impl<T: GroupedTransport, E: Exchange> GroupedExchange<T, E> {
    /// `has_left`/`has_right`: whether the partition has a neighbour on that side (the transport
    /// must be connected to exactly those).
    pub fn new(transport: T, inner: E, has_left: bool, has_right: bool) -> Self {
        let sides = [(has_left, Side::Left), (has_right, Side::Right)]
            .into_iter()
            .filter(|s| s.0)
            .map(|s| s.1)
            .collect();
        Self {
            transport,
            inner,
            sides,
            queued: Vec::new(),
            in_flight: Vec::new(),
            velocity_bytes: 0,
        }
    }

    pub fn inner(&self) -> &E {
        &self.inner
    }

    fn protocol(side: Side, reason: impl Into<String>) -> ExchangeError {
        ExchangeError::Protocol {
            side,
            reason: reason.into(),
        }
    }
}

impl<T: GroupedTransport, E: Exchange> Exchange for GroupedExchange<T, E> {
    fn send(&mut self, side: Side, msg: OverlapMessage) -> Result<(), ExchangeError> {
        let Payload::Velocity(values) = msg.payload else {
            return self.inner.send(side, msg);
        };
        if !self.sides.contains(&side) {
            return Err(Self::protocol(side, "no neighbour on this side"));
        }
        if self.queued.iter().any(|(s, _)| s.side == side) || self.in_flight.iter().any(|s| s.side == side) {
            return Err(Self::protocol(
                side,
                format!(
                    "a second velocity (step {}) before the last one was exchanged",
                    msg.step
                ),
            ));
        }
        self.queued.push((
            Sent {
                side,
                step: msg.step,
                boundary: msg.boundary,
            },
            values,
        ));
        if self.queued.len() < self.sides.len() {
            return Ok(());
        }
        let sends: Vec<(Side, &[f32])> = self.queued.iter().map(|(s, v)| (s.side, v.as_slice())).collect();
        self.transport.start(&sends)?;
        self.velocity_bytes += self.queued.iter().map(|(_, v)| 4 * v.len() as u64).sum::<u64>();
        self.in_flight.extend(self.queued.drain(..).map(|(s, _)| s));
        Ok(())
    }

    fn recv(&mut self, side: Side, step: u32) -> Result<OverlapMessage, ExchangeError> {
        if let Some(i) = self.in_flight.iter().position(|s| s.side == side) {
            let sent = self.in_flight.remove(i);
            let values = self.transport.finish(side, step)?;
            return Ok(OverlapMessage {
                step: sent.step,
                boundary: sent.boundary,
                payload: Payload::Velocity(values),
            });
        }
        if self.queued.iter().any(|(s, _)| s.side == side) {
            // Waiting here would deadlock: the group starts only once every side has its velocity.
            return Err(Self::protocol(
                side,
                format!("receive at step {step} before a velocity was sent to every neighbour"),
            ));
        }
        self.inner.recv(side, step)
    }
}

/// The in-process grouped transport: partitions on threads of one process, one channel per
/// direction (as NCCL's matched send/receive pairs). For local renders and tests.
pub struct ChannelGroup(ChannelLinks<Vec<f32>>);

impl ChannelGroup {
    /// The transports of `partitions` partitions in a row; element `i` talks to `i−1` and `i+1`.
    pub fn chain(partitions: usize, timeout: Duration) -> Vec<ChannelGroup> {
        ChannelLinks::chain(partitions, timeout)
            .into_iter()
            .map(ChannelGroup)
            .collect()
    }
}

impl GroupedTransport for ChannelGroup {
    fn start(&mut self, sends: &[(Side, &[f32])]) -> Result<(), ExchangeError> {
        sends.iter().try_for_each(|(side, v)| self.0.send(*side, v.to_vec()))
    }

    fn finish(&mut self, side: Side, step: u32) -> Result<Vec<f32>, ExchangeError> {
        self.0.recv(side, step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::ChannelExchange;

    fn velocity(step: u32, boundary: u32, v: &[f32]) -> OverlapMessage {
        OverlapMessage {
            step,
            boundary,
            payload: Payload::Velocity(v.to_vec()),
        }
    }

    #[test]
    fn velocities_go_over_the_group_and_hashes_over_the_inner_exchange() {
        let t = Duration::from_secs(10);
        let mut ex: Vec<_> = ChannelGroup::chain(3, t)
            .into_iter()
            .zip(ChannelExchange::chain(3, t))
            .enumerate()
            .map(|(i, (g, e))| GroupedExchange::new(g, e, i > 0, i < 2))
            .collect();
        // Middle partition: the group starts only once both sides have their velocity.
        ex[1].send(Side::Left, velocity(4, 0, &[1.0, 2.0])).unwrap();
        assert_eq!(ex[1].velocity_bytes, 0);
        let early = ex[1].recv(Side::Left, 4).unwrap_err();
        assert!(
            early
                .to_string()
                .contains("before a velocity was sent to every neighbour"),
            "{early}"
        );
        ex[1].send(Side::Right, velocity(4, 1, &[3.0])).unwrap();
        assert_eq!(ex[1].velocity_bytes, 12);
        let dup = ex[1].send(Side::Right, velocity(4, 1, &[3.0])).unwrap_err();
        assert!(dup.to_string().contains("before the last one was exchanged"), "{dup}");
        ex[0].send(Side::Right, velocity(4, 0, &[5.0, 6.0])).unwrap();
        ex[2].send(Side::Left, velocity(4, 1, &[7.0])).unwrap();
        // Labelled with the receiver's own step and boundary for that overlap.
        assert_eq!(ex[1].recv(Side::Left, 4).unwrap(), velocity(4, 0, &[5.0, 6.0]));
        assert_eq!(ex[1].recv(Side::Right, 4).unwrap(), velocity(4, 1, &[7.0]));
        assert_eq!(ex[0].recv(Side::Right, 4).unwrap(), velocity(4, 0, &[1.0, 2.0]));
        assert_eq!(ex[2].recv(Side::Left, 4).unwrap(), velocity(4, 1, &[3.0]));
        // Anything else goes over the inner exchange, the group carries nothing more.
        let hash = OverlapMessage {
            step: 4,
            boundary: 0,
            payload: Payload::LatentHash(9),
        };
        ex[0].send(Side::Right, hash.clone()).unwrap();
        assert_eq!(ex[1].recv(Side::Left, 4).unwrap(), hash);
        assert_eq!(ex[0].velocity_bytes, 8);
        let none = ex[0].send(Side::Left, velocity(5, 0, &[1.0])).unwrap_err();
        assert!(none.to_string().contains("no neighbour on this side"), "{none}");
    }
}
