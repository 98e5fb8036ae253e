//! A shard's trace spans below `shard`: sampled `step` spans and, inside a sampled step, an
//! `exchange` span for each wait on a neighbour. One span per window-step would be far too many
//! for a long job, so only every Nth step is traced (`--trace-steps`, 0: none).

use crate::net_exchange::ShardExchange;
use longshot_core::exchange::{Exchange, ExchangeError, OverlapMessage, Side};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tracing::span::EnteredSpan;

/// The default of `--trace-steps`: every 10th step (the first included).
pub const DEFAULT_TRACE_STEPS: usize = 10;

/// Whether step `step` gets a span when every `every`th is traced.
pub fn step_sampled(step: usize, every: usize) -> bool {
    every > 0 && step.is_multiple_of(every)
}

/// The current sampled step's span, entered on the shard thread. The loop reports a step as done
/// per window, so a step's span runs from the previous step's last window to its own last
/// window (the previous step's overlap hash check falls into it). Not `Send`: it lives on the
/// shard thread.
pub struct StepSpans {
    every: usize,
    steps: usize,
    last_window: usize,
    current: Option<EnteredSpan>,
    sampled: Arc<AtomicBool>,
}

impl StepSpans {
    /// Opens the span of step `first` (the loop's first: 0, a resumed checkpoint's step, or
    /// video-to-video's first step) when it is sampled; `last_window`: the shard's last window.
    pub fn start(every: usize, steps: usize, last_window: usize, first: usize) -> Self {
        let mut spans = StepSpans {
            every,
            steps,
            last_window,
            current: None,
            sampled: Arc::new(AtomicBool::new(false)),
        };
        spans.open(first);
        spans
    }

    /// Set while a sampled step runs, for [`TracedExchange`].
    pub fn sampled_flag(&self) -> Arc<AtomicBool> {
        self.sampled.clone()
    }

    /// `window` finished `step`: after the last window, the step's span closes and the next
    /// step's opens if it is sampled.
    pub fn window_done(&mut self, window: usize, step: usize) {
        if window == self.last_window {
            self.close();
            self.open(step + 1);
        }
    }

    /// Closes the open step span (the loop ended, or stopped early).
    pub fn close(&mut self) {
        self.sampled.store(false, Ordering::Relaxed);
        self.current = None;
    }

    fn open(&mut self, step: usize) {
        if step < self.steps && step_sampled(step, self.every) {
            self.current = Some(tracing::info_span!("step", step, steps = self.steps).entered());
            self.sampled.store(true, Ordering::Relaxed);
        }
    }
}

/// An exchange whose receives, during sampled steps, are `exchange` spans (the wait on a
/// neighbour is what a trace should show); sends only queue a message and are not traced.
pub struct TracedExchange {
    inner: Box<dyn ShardExchange>,
    sampled: Arc<AtomicBool>,
}

impl TracedExchange {
    pub fn new(inner: Box<dyn ShardExchange>, sampled: Arc<AtomicBool>) -> Self {
        TracedExchange { inner, sampled }
    }
}

impl Exchange for TracedExchange {
    fn send(&mut self, side: Side, msg: OverlapMessage) -> Result<(), ExchangeError> {
        self.inner.send(side, msg)
    }

    fn recv(&mut self, side: Side, step: u32) -> Result<OverlapMessage, ExchangeError> {
        if !self.sampled.load(Ordering::Relaxed) {
            return self.inner.recv(side, step);
        }
        let _span = tracing::info_span!("exchange", side = %side, step).entered();
        self.inner.recv(side, step)
    }
}

impl ShardExchange for TracedExchange {
    fn bytes_sent(&self) -> u64 {
        self.inner.bytes_sent()
    }

    fn transport(&self) -> &'static str {
        self.inner.transport()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_nth_step_is_sampled_and_zero_means_none() {
        let sampled = |every| (0..25).filter(|&s| step_sampled(s, every)).collect::<Vec<_>>();
        assert_eq!(sampled(10), vec![0, 10, 20]);
        assert_eq!(sampled(1).len(), 25);
        assert!(sampled(0).is_empty());
    }

    #[test]
    fn the_flag_follows_the_sampled_steps() {
        // Windows 3..5 (last 4), 4 steps, every 2nd traced.
        let mut spans = StepSpans::start(2, 4, 4, 0);
        let flag = spans.sampled_flag();
        let mut seen = Vec::new();
        for step in 0..4 {
            seen.push(flag.load(Ordering::Relaxed));
            spans.window_done(3, step);
            spans.window_done(4, step);
        }
        assert_eq!(seen, vec![true, false, true, false]);
        assert!(!flag.load(Ordering::Relaxed), "no step span after the last step");
        // A loop that starts at step 2 (a resume, video-to-video) opens step 2's span first.
        let mut spans = StepSpans::start(2, 4, 4, 2);
        let flag = spans.sampled_flag();
        assert!(flag.load(Ordering::Relaxed));
        spans.window_done(4, 2);
        assert!(!flag.load(Ordering::Relaxed), "step 3 is not sampled");
    }
}
