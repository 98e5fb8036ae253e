//! Optional per-phase wall-clock timing of one forward. When enabled the stream is synchronised
//! at every phase boundary (which costs a little time itself), and the block stack runs eagerly,
//! not as a CUDA graph; so use it to see where the time goes, and time the unprofiled forward
//! for the headline number.

use super::error::GpuWanError;
use super::linear::Gpu;
use std::time::Instant;

/// Seconds spent per phase of one forward (filled by `forward_device_timed`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ForwardTimings {
    /// Every block's Linears (bf16 cuBLASLt GEMMs, bias and GELU in their epilogues).
    pub block_linears: f64,
    /// Self-attention kernels (the attention itself; RoPE and q/k RMSNorm are in `pointwise`).
    pub self_attention: f64,
    /// Cross-attention over the text tokens.
    pub cross_attention: f64,
    /// Norms (→ bf16), the modulation add, q/k RMSNorm + RoPE (→ bf16), residuals.
    pub pointwise: f64,
    /// Time embedding, patch embedding, the text K/V copy, head, unpatchify, RoPE tables.
    pub edges: f64,
}

impl ForwardTimings {
    pub fn total(&self) -> f64 {
        self.block_linears + self.self_attention + self.cross_attention + self.pointwise + self.edges
    }
}

#[derive(Clone, Copy)]
pub enum Phase {
    Linears,
    SelfAttention,
    CrossAttention,
    Pointwise,
    Edges,
}

/// Charges the time since the previous lap to a phase, when timing is on.
pub struct Laps<'a> {
    out: Option<&'a mut ForwardTimings>,
    last: Instant,
}

impl<'a> Laps<'a> {
    pub fn new(gpu: &Gpu, out: Option<&'a mut ForwardTimings>) -> Result<Self, GpuWanError> {
        if out.is_some() {
            gpu.backend.synchronize()?;
        }
        Ok(Self {
            out,
            last: Instant::now(),
        })
    }

    pub fn lap(&mut self, gpu: &Gpu, phase: Phase) -> Result<(), GpuWanError> {
        let Some(t) = self.out.as_deref_mut() else {
            return Ok(());
        };
        gpu.backend.synchronize()?;
        let now = Instant::now();
        let dt = (now - self.last).as_secs_f64();
        self.last = now;
        *match phase {
            Phase::Linears => &mut t.block_linears,
            Phase::SelfAttention => &mut t.self_attention,
            Phase::CrossAttention => &mut t.cross_attention,
            Phase::Pointwise => &mut t.pointwise,
            Phase::Edges => &mut t.edges,
        } += dt;
        Ok(())
    }
}
