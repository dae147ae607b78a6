//! The linear algebra: a truncated SVD in f64 (faer, sequential), the rank a
//! policy picks, the two factors with Σ folded in, and the reconstruction error.
//!
//! A layer's weight is viewed as a matrix `M` (rows × cols) such that the
//! layer computes `y = M·x` over its "columns" side; `M ≈ F₂·F₁` with `F₁`
//! (k × cols) the first layer and `F₂` (rows × k) the second. Keeping rank
//! `k` costs `k·(rows + cols)` weights instead of `rows·cols`.
//!
//! Why faer: its thin f64 SVD on one thread is several times faster than
//! nalgebra 0.34's at every shape `cargo xtask bench svd` measures, the gap
//! growing with size (the figures are in BENCHMARKS.md, section svd), and real
//! layers (a VGG FC layer is 4096×25088) are large. Every decomposition is
//! called with `Par::Seq`: one thread, so the result does not depend on a pool.
//! Singular vectors are only defined up to sign; [`svd`] fixes it (the
//! largest-magnitude entry of each left vector is positive) so that the
//! factorised weights do not depend on the library's convention.

use faer::diag::Diag;
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::svd::{self as fsvd, ComputeSvdVectors};
use faer::{Mat, Par};

use crate::params::{Policy, Sigma};

/// A thin SVD, singular values in descending order, each pair of singular
/// vectors signed so that the largest-magnitude entry of `u`'s column is positive.
#[derive(Debug, Clone)]
pub struct Svd {
    pub rows: usize,
    pub cols: usize,
    /// rows × q, column j the j-th left singular vector.
    pub u: Mat<f64>,
    /// q values, descending.
    pub s: Vec<f64>,
    /// q × cols, row j the j-th right singular vector.
    pub vt: Mat<f64>,
}

/// The SVD of the `rows × cols` row-major matrix `data`. Errs on non-finite
/// entries or when the iteration does not converge.
pub fn svd(rows: usize, cols: usize, data: &[f32]) -> Result<Svd, String> {
    if rows == 0 || cols == 0 || data.len() != rows * cols {
        return Err(format!("a {rows}×{cols} matrix cannot hold {} values", data.len()));
    }
    if data.iter().any(|v| !v.is_finite()) {
        return Err("the weight holds a non-finite value".into());
    }
    let m = Mat::<f64>::from_fn(rows, cols, |r, c| data[r * cols + c] as f64);
    let q = rows.min(cols);
    let (mut u, mut v, mut sd) = (Mat::<f64>::zeros(rows, q), Mat::<f64>::zeros(cols, q), Diag::<f64>::zeros(q));
    let thin = ComputeSvdVectors::Thin;
    let mut mem = MemBuffer::try_new(fsvd::svd_scratch::<f64>(rows, cols, thin, thin, Par::Seq, Default::default()))
        .map_err(|_| format!("no memory for the SVD of a {rows}×{cols} matrix"))?;
    fsvd::svd(
        m.as_ref(),
        sd.as_mut(),
        Some(u.as_mut()),
        Some(v.as_mut()),
        Par::Seq,
        MemStack::new(&mut mem),
        Default::default(),
    )
    .map_err(|_| "the SVD did not converge")?;
    let sv: Vec<f64> = sd.column_vector().iter().copied().collect();
    // faer returns them in nonincreasing order; sort anyway (stable on ties) so the contract does not rest on that
    let mut order: Vec<usize> = (0..q).collect();
    order.sort_by(|&a, &b| sv[b].total_cmp(&sv[a]).then(a.cmp(&b)));
    // the sign of each pair: the largest-|.| entry of u_j (the first of equals) positive
    let sign: Vec<f64> = (0..q)
        .map(|j| {
            let mut best = 0.0f64;
            for r in 0..rows {
                if u[(r, j)].abs() > best.abs() {
                    best = u[(r, j)];
                }
            }
            if best < 0.0 { -1.0 } else { 1.0 }
        })
        .collect();
    let s = order.iter().map(|&i| sv[i]).collect();
    let u = Mat::from_fn(rows, q, |r, j| sign[order[j]] * u[(r, order[j])]);
    let vt = Mat::from_fn(q, cols, |j, c| sign[order[j]] * v[(c, order[j])]);
    Ok(Svd { rows, cols, u, s, vt })
}

/// The rank `policy` picks for singular values `s` of a `rows × cols`
/// matrix (at least 1, at most `s.len()`).
pub fn choose_rank(policy: Policy, s: &[f64], rows: usize, cols: usize) -> usize {
    let q = s.len().max(1);
    let k = match policy {
        Policy::Rank(r) => r,
        Policy::Energy(e) => {
            let total: f64 = s.iter().map(|x| x * x).sum();
            if total <= 0.0 {
                1
            } else {
                let mut acc = 0.0;
                let mut k = q;
                for (i, x) in s.iter().enumerate() {
                    acc += x * x;
                    // a relative slack so that energy = 1 is reached despite rounding
                    if acc >= e * total * (1.0 - 1e-12) {
                        k = i + 1;
                        break;
                    }
                }
                k
            }
        }
        Policy::ParamsRatio(p) => ((p * (rows * cols) as f64) / (rows + cols) as f64).floor() as usize,
    };
    k.clamp(1, q)
}

/// Whether rank `k` stores fewer weights than the dense `rows × cols` matrix.
pub fn pays(k: usize, rows: usize, cols: usize) -> bool {
    k * (rows + cols) < rows * cols
}

/// ‖M − M_k‖_F / ‖M‖_F from the singular values (0 for a zero matrix).
pub fn rel_error(s: &[f64], k: usize) -> f64 {
    let total: f64 = s.iter().map(|x| x * x).sum();
    if total <= 0.0 {
        return 0.0;
    }
    let rest: f64 = s.iter().skip(k).map(|x| x * x).sum();
    (rest / total).sqrt()
}

/// The factors of rank `k`: `F₁` (k × cols, row-major) and `F₂` (rows × k,
/// row-major), `M_k = F₂·F₁`, Σ folded in as `sigma` says.
pub fn factors(d: &Svd, k: usize, sigma: Sigma) -> (Vec<f32>, Vec<f32>) {
    let k = k.min(d.s.len());
    let (a, b): (Vec<f64>, Vec<f64>) = d.s[..k]
        .iter()
        .map(|&s| match sigma {
            Sigma::First => (s, 1.0),
            Sigma::Second => (1.0, s),
            Sigma::Sqrt => (s.sqrt(), s.sqrt()),
        })
        .unzip();
    let mut f1 = Vec::with_capacity(k * d.cols);
    for (j, aj) in a.iter().enumerate() {
        for c in 0..d.cols {
            f1.push((aj * d.vt[(j, c)]) as f32);
        }
    }
    let mut f2 = Vec::with_capacity(d.rows * k);
    for r in 0..d.rows {
        for (j, bj) in b.iter().enumerate() {
            f2.push((d.u[(r, j)] * bj) as f32);
        }
    }
    (f1, f2)
}

/// Transposes a row-major `rows × cols` matrix.
pub fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}
