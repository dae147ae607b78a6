//! `method = "svd"`, `form = "tucker2"`: a k×k Conv C → N becomes a 1×1
//! conv C → R₁, a k×k conv R₁ → R₂ with the original geometry, and a 1×1
//! conv R₂ → N (Kim et al. 2016, Tucker-2 by HOSVD):
//!
//! `W[n,c,i,j] ≈ Σ U[n,r₂]·G[r₂,r₁,i,j]·A[r₁,c]`, with `Aᵀ` the leading R₁
//! left singular vectors of the C × (N·kh·kw) input-channel unfolding, `U`
//! the leading R₂ left singular vectors of the N × (C·kh·kw) output-channel
//! unfolding, and the core `G = Uᵀ ×ₙ W ×_c A` (W projected on both). The
//! outer factors are orthonormal, so `sigma` does not apply; at full ranks
//! (each the rank of its unfolding) the three convs compute the original.
//!
//! The first conv is `{name}.lowrank`, the core `{name}.lowrank_core`; the
//! original node, with its bias, becomes the last 1×1 conv.

use shrink_graph::Graph;

use crate::factor::{Candidate, Layout};
use crate::params::Policy;
use crate::rewrite::{add_first, add_named, conv_attrs, replace_weight};
use crate::svd::{choose_rank, svd};

/// The two unfoldings' spectra and leading singular vectors.
#[derive(Debug, Clone)]
pub struct Tucker {
    pub n: usize,
    pub c: usize,
    pub kh: usize,
    pub kw: usize,
    /// The weight, N × C × kh × kw, in f64.
    w: Vec<f64>,
    /// Singular values of the input-channel unfolding (C × N·kh·kw), descending.
    pub s_in: Vec<f64>,
    /// Singular values of the output-channel unfolding (N × C·kh·kw), descending.
    pub s_out: Vec<f64>,
    /// C × q_in, column r the r-th input-side singular vector.
    u_in: faer::Mat<f64>,
    /// N × q_out.
    u_out: faer::Mat<f64>,
}

/// The three factors of a Tucker-2 split, row-major, f32.
#[derive(Debug, Clone)]
pub struct Factors {
    pub r1: usize,
    pub r2: usize,
    /// R₁ × C: the first 1×1 conv.
    pub a: Vec<f32>,
    /// R₂ × R₁ × kh × kw: the core conv.
    pub g: Vec<f32>,
    /// N × R₂: the last 1×1 conv.
    pub u: Vec<f32>,
    /// ‖W − Ŵ‖/‖W‖.
    pub rel_error: f64,
}

/// Decomposes a candidate of layout [`Layout::ConvTucker2`].
pub fn decompose(c: &Candidate) -> Result<Tucker, String> {
    let Layout::ConvTucker2 { n, c: ci, kh, kw } = c.layout else {
        return Err("not a Tucker-2 candidate".into());
    };
    let k2 = kh * kw;
    // input-channel unfolding: M[c, (n,t)] = W[n,c,t]
    let mut m_in = vec![0.0f32; ci * n * k2];
    for ni in 0..n {
        for cc in 0..ci {
            for t in 0..k2 {
                m_in[cc * n * k2 + ni * k2 + t] = c.matrix[(ni * ci + cc) * k2 + t];
            }
        }
    }
    let d_in = svd(ci, n * k2, &m_in).map_err(|e| format!("input-channel unfolding: {e}"))?;
    let d_out = svd(n, ci * k2, &c.matrix).map_err(|e| format!("output-channel unfolding: {e}"))?;
    Ok(Tucker {
        n,
        c: ci,
        kh,
        kw,
        w: c.matrix.iter().map(|&v| v as f64).collect(),
        s_in: d_in.s,
        s_out: d_out.s,
        u_in: d_in.u,
        u_out: d_out.u,
    })
}

/// Weights of the three convs at ranks `r1`, `r2`.
pub fn params(n: usize, c: usize, k2: usize, r1: usize, r2: usize) -> usize {
    c * r1 + r1 * r2 * k2 + r2 * n
}

impl Tucker {
    /// The full ranks: each unfolding's rank bound.
    pub fn full(&self) -> (usize, usize) {
        (self.s_in.len(), self.s_out.len())
    }

    /// The ranks `policy` picks (each at least 1, at most its full rank).
    pub fn ranks(&self, policy: Policy) -> (usize, usize) {
        let (q1, q2) = self.full();
        let k2 = self.kh * self.kw;
        match policy {
            Policy::Rank(r) => (r.clamp(1, q1), r.clamp(1, q2)),
            Policy::Energy(_) => (
                choose_rank(policy, &self.s_in, self.c, self.n * k2),
                choose_rank(policy, &self.s_out, self.n, self.c * k2),
            ),
            Policy::ParamsRatio(p) => {
                let budget = p * (self.n * self.c * k2) as f64;
                let mut best = (1, 1);
                for r in 1..=q1.max(q2) {
                    let (r1, r2) = (r.min(q1), r.min(q2));
                    if params(self.n, self.c, k2, r1, r2) as f64 <= budget {
                        best = (r1, r2);
                    }
                }
                best
            }
        }
    }

    /// The factors at ranks `r1`, `r2` (clamped to the full ranks).
    pub fn factors(&self, r1: usize, r2: usize) -> Factors {
        let (q1, q2) = self.full();
        let (r1, r2) = (r1.clamp(1, q1), r2.clamp(1, q2));
        let (n, ci, k2) = (self.n, self.c, self.kh * self.kw);
        // T[n, r1, t] = Σ_c W[n,c,t]·A[r1,c], A[r1,c] = u_in[c, r1]
        let mut t = vec![0.0f64; n * r1 * k2];
        for ni in 0..n {
            for r in 0..r1 {
                for cc in 0..ci {
                    let a = self.u_in[(cc, r)];
                    let w = &self.w[(ni * ci + cc) * k2..(ni * ci + cc + 1) * k2];
                    let dst = &mut t[(ni * r1 + r) * k2..(ni * r1 + r + 1) * k2];
                    for (d, &x) in dst.iter_mut().zip(w) {
                        *d += a * x;
                    }
                }
            }
        }
        // G[r2, r1, t] = Σ_n U[n,r2]·T[n,r1,t]
        let mut g = vec![0.0f64; r2 * r1 * k2];
        for q in 0..r2 {
            for ni in 0..n {
                let u = self.u_out[(ni, q)];
                let src = &t[ni * r1 * k2..(ni + 1) * r1 * k2];
                for (d, &x) in g[q * r1 * k2..(q + 1) * r1 * k2].iter_mut().zip(src) {
                    *d += u * x;
                }
            }
        }
        // the projection is orthogonal: ‖W − Ŵ‖² = ‖W‖² − ‖G‖²
        let total: f64 = self.w.iter().map(|x| x * x).sum();
        let kept: f64 = g.iter().map(|x| x * x).sum();
        let rel_error = if total > 0.0 { ((total - kept).max(0.0) / total).sqrt() } else { 0.0 };
        let mut a = Vec::with_capacity(r1 * ci);
        for r in 0..r1 {
            for cc in 0..ci {
                a.push(self.u_in[(cc, r)] as f32);
            }
        }
        let mut u = Vec::with_capacity(n * r2);
        for ni in 0..n {
            for q in 0..r2 {
                u.push(self.u_out[(ni, q)] as f32);
            }
        }
        Factors { r1, r2, a, g: g.into_iter().map(|v| v as f32).collect(), u, rel_error }
    }
}

/// Replaces the candidate conv by its three Tucker-2 convs.
pub fn apply(graph: &mut Graph, c: &Candidate, f: &Factors) -> Result<(), String> {
    let Layout::ConvTucker2 { n, c: ci, kh, kw } = c.layout else {
        return Err("not a Tucker-2 candidate".into());
    };
    let x = graph.input(c.op, 0).ok_or("no data input")?;
    let attrs = graph.op(c.op).map(|o| o.attributes.clone()).unwrap_or_default();
    let pointwise = conv_attrs(&attrs, [1, 1], [1, 1], [0; 4], [1, 1]);
    let (r1, r2) = (f.r1 as i64, f.r2 as i64);
    let w0 = format!("{}.lowrank0", c.weight_name);
    let wc = format!("{}.lowrank_core", c.weight_name);
    let w1 = format!("{}.lowrank1", c.weight_name);
    let h1 = add_first(graph, c.op, "Conv", &c.name, pointwise.clone(), x, &w0, &[r1, ci as i64, 1, 1], &f.a);
    let core_attrs: Vec<_> = attrs.iter().filter(|a| a.name != "group").cloned().collect();
    let op_name = format!("{}.lowrank_core", c.name);
    let h2 = add_named(graph, c.op, "Conv", &op_name, core_attrs, h1, &wc, &[r2, r1, kh as i64, kw as i64], &f.g);
    graph.set_input(c.op, 0, Some(h2));
    replace_weight(graph, c.op, 1, &w1, &[n as i64, r2, 1, 1], &f.u);
    if let Some(o) = graph.op_mut(c.op) {
        o.attributes = pointwise;
    }
    Ok(())
}
