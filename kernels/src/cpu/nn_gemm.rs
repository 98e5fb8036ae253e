//! A bounds-checked, safe wrapper around `matrixmultiply::sgemm`, the one GEMM every CPU
//! reference op in `nn_*` goes through.
//!
//! Why `matrixmultiply`: it is pure Rust (no BLAS to install or link), takes arbitrary row and
//! column strides (so PyTorch's `[out, in]` weights, attention heads inside a `[tokens, heads·dim]`
//! row and transposed operands need no copies), selects AVX2/FMA/AVX-512 kernels at run time, and
//! is already in the dependency graph through `nalgebra`. It is single-threaded here on purpose:
//! callers split work into fixed-size row or column blocks on rayon, which keeps results
//! independent of the thread count (see [`crate::cpu::nn_linear`]). The `gemm` crate is faster on
//! large matrices, but pulls a larger dependency tree and has its own threading; for a CPU
//! reference the simpler, strided, deterministic kernel wins.
//!
//! Summation order: each output element is `α·Σ_k a·b` accumulated by matrixmultiply's
//! micro-kernel in increasing `k` within each cache block of `k` (256 for f32), the blocks added in
//! increasing order. This is not the order of cuBLAS or oneDNN; comparisons with those are by
//! tolerance, not bits. For a fixed shape the result does not depend on where an element sits
//! in the matrix, which is what makes row- or column-blocked parallel GEMMs bit-identical to one
//! big call (tested in `nn_linear`).

/// A read-only strided matrix view: element `(r, c)` is `data[r·row_stride + c·col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

/// A mutable strided matrix view; the strides must not make two elements alias.
#[derive(Debug)]
pub struct MatMut<'a> {
    pub data: &'a mut [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A dense row-major `rows × cols` matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose of a dense row-major `cols × rows` matrix (e.g. a PyTorch Linear weight
    /// `[out, in]` read as the `in × out` right-hand side of `x·Wᵀ`).
    pub fn transposed(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: 1,
            col_stride: rows,
        }
    }

    fn check(&self, what: &str) {
        assert!(
            fits(self.data.len(), self.rows, self.cols, self.row_stride, self.col_stride),
            "gemm: {what} view {}x{} (strides {}, {}) overruns its {} values",
            self.rows,
            self.cols,
            self.row_stride,
            self.col_stride,
            self.data.len()
        );
    }
}

impl<'a> MatMut<'a> {
    /// A dense row-major `rows × cols` matrix.
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }
}

/// Whether every index `r·rs + c·cs` (r < rows, c < cols) is below `len`.
fn fits(len: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    let last = (rows - 1)
        .checked_mul(rs)
        .and_then(|a| (cols - 1).checked_mul(cs).and_then(|b| a.checked_add(b)));
    matches!(last, Some(i) if i < len && i <= isize::MAX as usize)
}

/// `C ← α·A·B + β·C` in f32. With `β = 0` the previous contents of `C` are ignored (NaNs
/// included). Panics if the shapes disagree, a view overruns its slice, or `C` has a zero stride
/// with more than one row or column (aliasing outputs).
pub fn gemm(alpha: f32, a: MatRef<'_>, b: MatRef<'_>, beta: f32, c: MatMut<'_>) {
    assert_eq!(a.cols, b.rows, "gemm: inner dimensions differ");
    assert_eq!((a.rows, b.cols), (c.rows, c.cols), "gemm: output shape differs");
    a.check("A");
    b.check("B");
    assert!(
        fits(c.data.len(), c.rows, c.cols, c.row_stride, c.col_stride),
        "gemm: C view overruns its slice"
    );
    assert!(
        (c.rows <= 1 || c.row_stride > 0) && (c.cols <= 1 || c.col_stride > 0),
        "gemm: C strides alias"
    );
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // No products: C ← β·C (β = 0 clears, as BLAS does).
        for r in 0..m {
            for col in 0..n {
                let v = &mut c.data[r * c.row_stride + col * c.col_stride];
                *v = if beta == 0.0 { 0.0 } else { beta * *v };
            }
        }
        return;
    }
    // SAFETY: every element matrixmultiply reads is `ptr + r·rs + c·cs` with r < rows and
    // c < cols; `fits` checked above that all such offsets lie inside the borrowed slices (and
    // fit in isize). `C` is borrowed mutably for the duration, its strides are non-zero where
    // there is more than one element along an axis, and `A`/`B` are shared borrows that cannot
    // alias the exclusive borrow of `C`.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.data.as_ptr(),
            a.row_stride as isize,
            a.col_stride as isize,
            b.data.as_ptr(),
            b.row_stride as isize,
            b.col_stride as isize,
            beta,
            c.data.as_mut_ptr(),
            c.row_stride as isize,
            c.col_stride as isize,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: f32) -> Vec<f32> {
        (0..len).map(|i| ((i as f32 + 1.0) * 0.7548777 * seed).sin()).collect()
    }

    #[test]
    fn matches_naive_product_with_strides_and_beta() {
        let (m, k, n) = (7, 13, 5);
        let a = values(m * k, 1.3);
        let w = values(n * k, 2.1); // [n, k] as a Linear weight
        let mut c = values(m * n, 0.4);
        let c0 = c.clone();
        gemm(
            0.5,
            MatRef::row_major(&a, m, k),
            MatRef::transposed(&w, k, n),
            2.0,
            MatMut::row_major(&mut c, m, n),
        );
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k).map(|p| a[i * k + p] as f64 * w[j * k + p] as f64).sum();
                let want = 0.5 * dot + 2.0 * c0[i * n + j] as f64;
                assert!((c[i * n + j] as f64 - want).abs() < 1e-5, "({i},{j})");
            }
        }
    }

    #[test]
    fn beta_zero_ignores_nan_and_empty_k_clears() {
        let a = values(6, 1.0);
        let b = values(6, 2.0);
        let mut c = vec![f32::NAN; 4];
        gemm(
            1.0,
            MatRef::row_major(&a, 2, 3),
            MatRef::row_major(&b, 3, 2),
            0.0,
            MatMut::row_major(&mut c, 2, 2),
        );
        assert!(c.iter().all(|v| v.is_finite()));
        let mut c = vec![f32::NAN; 4];
        gemm(
            1.0,
            MatRef::row_major(&[], 2, 0),
            MatRef::row_major(&[], 0, 2),
            0.0,
            MatMut::row_major(&mut c, 2, 2),
        );
        assert_eq!(c, vec![0.0; 4]);
    }

    #[test]
    #[should_panic(expected = "overruns")]
    fn overrunning_view_panics_instead_of_reading_out_of_bounds() {
        let a = vec![0.0; 5];
        let b = vec![0.0; 6];
        let mut c = vec![0.0; 4];
        gemm(
            1.0,
            MatRef::row_major(&a, 2, 3),
            MatRef::row_major(&b, 3, 2),
            0.0,
            MatMut::row_major(&mut c, 2, 2),
        );
    }
}
