//! Per-client submit rate limits: a client address may submit `per_minute` jobs a minute, in
//! bursts of up to `burst` (GCRA, governor's keyed limiter). One address flooding the queue cannot
//! starve the others; what it may do is told in the refusal.

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Jobs one client address may submit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubmitRate {
    pub per_minute: NonZeroU32,
    pub burst: NonZeroU32,
}

/// The limiter of a coordinator's SubmitJob.
pub(crate) struct SubmitLimiter {
    rate: SubmitRate,
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    checks: AtomicU32,
}

impl SubmitLimiter {
    pub(crate) fn new(rate: SubmitRate) -> Self {
        let quota = Quota::per_minute(rate.per_minute).allow_burst(rate.burst);
        Self {
            rate,
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            checks: AtomicU32::new(0),
        }
    }

    /// `Ok` if `client` may submit now, else how long until it may.
    pub(crate) fn check(&self, client: IpAddr) -> Result<(), Duration> {
        // Forget idle clients now and then, so the table does not grow with every address seen.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 1024 == 1023 {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&client)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// The refusal's text.
    pub(crate) fn refusal(&self, client: IpAddr, wait: Duration) -> String {
        format!(
            "too many jobs submitted from {client}: at most {} a minute in bursts of {} (coordinator \
             --max-submits-per-minute, --submit-burst); retry in {:.1} s",
            self.rate.per_minute,
            self.rate.burst,
            wait.as_secs_f64()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_client_waits_and_others_do_not() {
        let limiter = SubmitLimiter::new(SubmitRate {
            per_minute: NonZeroU32::new(6).unwrap(),
            burst: NonZeroU32::new(3).unwrap(),
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(limiter.check(a).is_ok());
        }
        let wait = limiter.check(a).expect_err("the fourth in a burst of 3");
        // One job every 10 s at 6 a minute.
        assert!(
            wait > Duration::from_secs(9) && wait <= Duration::from_secs(10),
            "{wait:?}"
        );
        assert!(limiter.refusal(a, wait).contains("at most 6 a minute in bursts of 3"));
        assert!(limiter.check(b).is_ok(), "another client is not limited by the first");
    }
}
