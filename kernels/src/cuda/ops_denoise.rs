//! Launch wrappers for the co-denoising loop's ops: Philox noise (`core::noise`), CFG combine,
//! the overlap blend, the schedulers' linear combinations and the UniPC update
//! (`kernels/cuda/noise_philox.cu`, `denoise_update.cu`). Each checks lengths and returns a
//! [`CudaError`] instead of launching out of bounds.

use super::backend::{as_u32, pointwise_config, CudaBackend};
use super::error::{check_len, shape_error, CudaError};
use super::sources::{DENOISE_UPDATE, NOISE_PHILOX};
use cudarc::driver::{CudaSlice, PushKernelArg};

/// Which optional terms a UniPC update has (`core::scheduler::unipc`): the order-2 history term
/// `r0·((m1 − m0)/rk)` and/or the corrector term `r1·(mt − m0)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UniPcCoefficients {
    pub cx: f32,
    pub cm: f32,
    pub cr: f32,
    /// `(rk, r0)` of the history term.
    pub hist: Option<(f32, f32)>,
    /// `r1` of the corrector term.
    pub cur: Option<f32>,
}

impl CudaBackend {
    /// Fills `out` (`[frames, channels, height, width]`) with the Philox Gaussians of
    /// `core::noise::NoiseStream::new(seed, step)` for global frames `first_frame..`.
    #[allow(clippy::too_many_arguments)]
    pub fn philox_gaussian(
        &self,
        out: &mut CudaSlice<f32>,
        seed: u64,
        step: u32,
        first_frame: usize,
        shape: [usize; 4],
    ) -> Result<(), CudaError> {
        const OP: &str = "philox_gaussian";
        let [frames, channels, height, width] = shape;
        check_len(OP, "out", out.len(), frames * channels * height * width)?;
        if step >= 1 << 16 || channels > 1 << 16 {
            return Err(shape_error(
                OP,
                format!("step {step} and channels {channels} must be below 65536"),
            ));
        }
        as_u32(OP, "last frame", first_frame + frames)?;
        let f = self.function(&NOISE_PHILOX, "philox_gaussian_f32")?;
        let (lo, hi) = (seed as u32, (seed >> 32) as u32);
        let (ff, fr, ch, h, w) = (
            first_frame as u32,
            frames as u32,
            as_u32(OP, "channels", channels)?,
            as_u32(OP, "height", height)?,
            as_u32(OP, "width", width)?,
        );
        let cfg = pointwise_config(frames * channels * height * width.div_ceil(4));
        let mut b = self.stream().launch_builder(&f);
        b.arg(out)
            .arg(&lo)
            .arg(&hi)
            .arg(&step)
            .arg(&ff)
            .arg(&fr)
            .arg(&ch)
            .arg(&h)
            .arg(&w);
        // SAFETY: the arguments match `philox_gaussian_f32` in noise_philox.cu in type and order,
        // and `out` holds frames·channels·height·width floats, every index the kernel writes.
        unsafe { b.launch(cfg) }?;
        Ok(())
    }

    /// Raw Philox4x32-10 blocks (for the known-answer test): `out[4i..4i+4] = philox(ctr[i], key)`.
    pub fn philox4x32_10(
        &self,
        ctr: &CudaSlice<u32>,
        key: [u32; 2],
        out: &mut CudaSlice<u32>,
    ) -> Result<(), CudaError> {
        const OP: &str = "philox4x32_10";
        if !ctr.len().is_multiple_of(4) {
            return Err(shape_error(
                OP,
                format!("counter buffer has {} words, not a multiple of 4", ctr.len()),
            ));
        }
        check_len(OP, "out", out.len(), ctr.len())?;
        let n = (ctr.len() / 4) as u64;
        let f = self.function(&NOISE_PHILOX, "philox4x32_10_u32")?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(ctr).arg(&key[0]).arg(&key[1]).arg(out).arg(&n);
        // SAFETY: matches `philox4x32_10_u32`; ctr holds n uint4 (cudaMalloc alignment ≥ 256 B,
        // so the uint4 loads are aligned) and out 4n words.
        unsafe { b.launch(pointwise_config(n as usize)) }?;
        Ok(())
    }

    /// `cond = uncond + g·(cond − uncond)`, bit-identical to `cpu::cfg_combine`.
    pub fn cfg_combine(
        &self,
        cond: &mut CudaSlice<f32>,
        uncond: &CudaSlice<f32>,
        guidance: f32,
    ) -> Result<(), CudaError> {
        check_len("cfg_combine", "uncond", uncond.len(), cond.len())?;
        let n = cond.len() as u64;
        let f = self.function(&DENOISE_UPDATE, "cfg_combine_f32")?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(cond).arg(uncond).arg(&guidance).arg(&n);
        // SAFETY: matches `cfg_combine_f32`; both buffers hold n floats.
        unsafe { b.launch(pointwise_config(n as usize)) }?;
        Ok(())
    }

    /// The overlap blend written into both copies, bit-identical to `cpu::blend_overlap`.
    pub fn blend_overlap(
        &self,
        left: &mut CudaSlice<f32>,
        right: &mut CudaSlice<f32>,
        overlap: usize,
        frame_len: usize,
    ) -> Result<(), CudaError> {
        const OP: &str = "blend_overlap";
        check_len(OP, "left", left.len(), overlap * frame_len)?;
        check_len(OP, "right", right.len(), overlap * frame_len)?;
        let (o, fl) = (as_u32(OP, "overlap", overlap)?, frame_len as u64);
        let f = self.function(&DENOISE_UPDATE, "blend_overlap_f32")?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(left).arg(right).arg(&o).arg(&fl);
        // SAFETY: matches `blend_overlap_f32`; both buffers hold overlap·frame_len floats.
        unsafe { b.launch(pointwise_config(overlap * frame_len)) }?;
        Ok(())
    }

    /// `out = Σ c_k·s_k` (1 to 4 terms), bit-identical to `cpu::lincomb`.
    pub fn lincomb(&self, out: &mut CudaSlice<f32>, terms: &[(f32, &CudaSlice<f32>)]) -> Result<(), CudaError> {
        const OP: &str = "lincomb";
        if terms.is_empty() || terms.len() > 4 {
            return Err(shape_error(
                OP,
                format!("{} terms given, 1 to 4 are allowed", terms.len()),
            ));
        }
        for (k, (_, s)) in terms.iter().enumerate() {
            check_len(OP, &format!("term {k}"), s.len(), out.len())?;
        }
        // Unused slots repeat term 0; the kernel never reads them.
        let slot = |k: usize| terms.get(k).copied().unwrap_or((0.0, terms[0].1));
        let (t0, t1, t2, t3) = (slot(0), slot(1), slot(2), slot(3));
        let (count, n) = (terms.len() as u32, out.len() as u64);
        let f = self.function(&DENOISE_UPDATE, "lincomb_f32")?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(out).arg(&count);
        b.arg(t0.1)
            .arg(&t0.0)
            .arg(t1.1)
            .arg(&t1.0)
            .arg(t2.1)
            .arg(&t2.0)
            .arg(t3.1)
            .arg(&t3.0);
        b.arg(&n);
        // SAFETY: matches `lincomb_f32`; every source holds n floats (checked), as does out.
        unsafe { b.launch(pointwise_config(n as usize)) }?;
        Ok(())
    }

    /// UniPC's update with history and/or corrector terms, bit-identical to the CPU scheduler.
    /// (Without either term the update is a `lincomb` of `(cx, x), (−cm, m0)`.)
    pub fn unipc_update(
        &self,
        out: &mut CudaSlice<f32>,
        x: &CudaSlice<f32>,
        m0: &CudaSlice<f32>,
        m1: Option<&CudaSlice<f32>>,
        mt: Option<&CudaSlice<f32>>,
        c: UniPcCoefficients,
    ) -> Result<(), CudaError> {
        const OP: &str = "unipc_update";
        let (rk, r0) = c.hist.unwrap_or((1.0, 0.0));
        let r1 = c.cur.unwrap_or(0.0);
        let mode = u32::from(c.hist.is_some()) | (u32::from(c.cur.is_some()) << 1);
        if mode == 0 {
            return self.lincomb(out, &[(c.cx, x), (-c.cm, m0)]);
        }
        let m1 = match (c.hist, m1) {
            (Some(_), None) => return Err(shape_error(OP, "order 2 needs m_{i-1}")),
            (_, m1) => m1.unwrap_or(m0),
        };
        let mt = match (c.cur, mt) {
            (Some(_), None) => return Err(shape_error(OP, "the corrector needs m_i")),
            (_, mt) => mt.unwrap_or(m0),
        };
        for (what, s) in [("x", x), ("m0", m0), ("m1", m1), ("mt", mt)] {
            check_len(OP, what, s.len(), out.len())?;
        }
        let n = out.len() as u64;
        let f = self.function(&DENOISE_UPDATE, "unipc_update_f32")?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(out).arg(x).arg(m0).arg(m1).arg(mt);
        b.arg(&c.cx)
            .arg(&c.cm)
            .arg(&c.cr)
            .arg(&rk)
            .arg(&r0)
            .arg(&r1)
            .arg(&mode)
            .arg(&n);
        // SAFETY: matches `unipc_update_f32`; all five buffers hold n floats (checked).
        unsafe { b.launch(pointwise_config(n as usize)) }?;
        Ok(())
    }
}
