//! Test support for the GPU parity tests (`kernels/tests/gpu_*.rs` and longshot-tests'
//! `gpu_parity_*.rs`, all needing a device): the shared device, fresh random inputs every run
//! (the seed is printed; `LONGSHOT_PARITY_SEED` replays one), NaN-poisoned outputs and the
//! comparisons. Tolerances (issue 6): f32 ≤ 1e-5 relative (`|gpu − cpu| ≤ 1e-5·max(1, |cpu|)`),
//! bf16 ≤ 1e-2; ops documented as bit-identical are compared bit for bit.
//!
//! These helpers panic (they are assertions): never call them outside tests.

use super::backend::CudaBackend;
use cudarc::driver::CudaSlice;
use std::sync::OnceLock;

pub const F32_TOL: f32 = 1e-5;
pub const BF16_TOL: f32 = 1e-2;

/// Device 0, opened once per test binary. Without a usable GPU and NVRTC this PANICS with the
/// probe's reason: the GPU tests fail loudly, they never skip.
pub fn gpu() -> &'static CudaBackend {
    static GPU: OnceLock<CudaBackend> = OnceLock::new();
    GPU.get_or_init(|| match CudaBackend::open(0) {
        Ok(b) => {
            eprintln!("GPU tests on {} ({})", b.info().name, b.info().arch());
            b
        }
        Err(e) => panic!("GPU tests need a CUDA device and NVRTC, and found none: {e}"),
    })
}

pub fn up(v: &[f32]) -> CudaSlice<f32> {
    gpu().upload(v).expect("upload")
}

/// An output buffer filled with NaN, so an element the kernel forgets to write fails the check.
pub fn poisoned(len: usize) -> CudaSlice<f32> {
    gpu().filled(len, f32::NAN).expect("alloc")
}

pub fn down(d: &CudaSlice<f32>) -> Vec<f32> {
    gpu().download(d).expect("download")
}

/// xorshift64* seeded per test from the clock (or `LONGSHOT_PARITY_SEED`), printed for replay.
pub struct Rng(u64);

impl Rng {
    pub fn new(test: &str) -> Self {
        let seed = std::env::var("LONGSHOT_PARITY_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("{test}: LONGSHOT_PARITY_SEED={seed}");
        Self(seed | 1)
    }

    /// A fixed stream (benchmarks, and tests whose inputs must not change between runs).
    pub fn seeded(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [−scale, scale).
    pub fn vec(&mut self, len: usize, scale: f32) -> Vec<f32> {
        (0..len)
            .map(|_| ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale)
            .collect()
    }
}

/// Every element within `tol` relative (`|g − w| ≤ tol·max(1, |w|)`), none NaN unless expected.
pub fn assert_close(op: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{op}: length");
    let mut worst = (0.0f32, 0usize);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            !g.is_nan() || w.is_nan(),
            "{op}: element {i} is NaN (poison left unwritten?), want {w}"
        );
        let err = (g - w).abs() / w.abs().max(1.0);
        if err > worst.0 {
            worst = (err, i);
        }
    }
    let i = worst.1;
    assert!(
        worst.0 <= tol,
        "{op}: element {i}: gpu {} vs cpu {} (relative error {:e} > {tol:e})",
        got[i],
        want[i],
        worst.0
    );
    eprintln!("{op}: {} values, max relative error {:e}", got.len(), worst.0);
}

/// Bit-identical, element for element.
pub fn assert_bits(op: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{op}: length");
    if let Some(i) = got.iter().zip(want).position(|(g, w)| g.to_bits() != w.to_bits()) {
        panic!(
            "{op}: element {i}: gpu {} ({:#010x}) vs cpu {} ({:#010x}), expected bit-identical",
            got[i],
            got[i].to_bits(),
            want[i],
            want[i].to_bits()
        );
    }
    eprintln!("{op}: {} values bit-identical", got.len());
}
