//! `method = "depthwise-separable"`: a standard k×k conv C → N becomes a
//! depthwise k×k conv (C → C, `group = C`, the original geometry, no bias)
//! followed by a pointwise 1×1 conv C → N (the original node, with a bias).
//!
//! `W[n,c,·] ≈ P[n,c]·D[c,·]`. Initialisation `lstsq` (default): each input
//! channel's N × (kh·kw) slice gets its best rank-1 fit (SVD), giving `D` and
//! a first `P`; then, when training data is there, `P` and the bias are
//! refitted by least squares (ridge 1e-6 relative) so that the pointwise
//! conv of the depthwise outputs matches the original conv's outputs on
//! `calibration` training samples (taps from the trainer's forward pass;
//! the depthwise conv runs on the host). `random`: uniform `D` (±√(3/(kh·kw)))
//! and `P` (±√(3/C)), the original bias. Fine-tuning is expected afterwards.

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt;
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, Par};
use shrink_data::Dataset;
use shrink_graph::builder::attr_int;
use shrink_graph::{Graph, Model, NodeId, ValueRef};
use shrink_train::{Executor, HostTensor};

use crate::rewrite::{ConvGeom, add_first, conv_attrs, conv_geom, replace_weight};
use crate::svd::svd;

/// A conv to replace.
#[derive(Debug, Clone)]
pub struct DwCandidate {
    pub op: NodeId,
    pub name: String,
    pub weight_name: String,
    pub n: usize,
    pub c: usize,
    pub kh: usize,
    pub kw: usize,
    pub geom: ConvGeom,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// The factors: `D` [C, kh·kw], `P` [N, C], bias [N].
#[derive(Debug, Clone)]
pub struct DwFactors {
    pub d: Vec<f32>,
    pub p: Vec<f32>,
    pub bias: Vec<f32>,
    /// How `P` and the bias were obtained, for the report.
    pub how: String,
}

/// `op` as a depthwise-separable candidate, or why not.
pub fn candidate(graph: &Graph, op: NodeId) -> Result<DwCandidate, String> {
    let o = graph.op(op).ok_or("not an op")?;
    let geom = conv_geom(o)?;
    let wv = graph.input(op, 1).ok_or("no weight input")?;
    let t = graph.weight(wv).ok_or("its weight is not a constant")?;
    let dims: Vec<usize> = t.dims().iter().map(|&d| d as usize).collect();
    if dims.len() != 4 {
        return Err(format!("weight dims {dims:?}: only 2-D convolutions are replaced"));
    }
    if geom.group != 1 {
        return Err(format!("grouped conv (group = {})", geom.group));
    }
    let (n, c, kh, kw) = (dims[0], dims[1], dims[2], dims[3]);
    if c < 2 {
        return Err(format!("{c} input channel: a depthwise conv saves nothing"));
    }
    if kh * kw < 2 {
        return Err("a 1×1 conv is already pointwise".into());
    }
    let weight = t.to_f32().map_err(|e| format!("weight `{}`: {e}", t.name()))?;
    let weight_name = t.name().to_string();
    let bias = match graph.input(op, 2) {
        None => vec![0.0; n],
        Some(b) => graph.weight(b).ok_or("its bias is not a constant")?.to_f32().map_err(|e| format!("bias: {e}"))?,
    };
    if bias.len() != n {
        return Err(format!("bias has {} values for {n} output channels", bias.len()));
    }
    Ok(DwCandidate { op, name: o.label(), weight_name, n, c, kh, kw, geom, weight, bias })
}

/// Params of the replacement: depthwise C·kh·kw, pointwise N·C, bias N.
pub fn params_after(c: &DwCandidate) -> usize {
    c.c * c.kh * c.kw + c.n * c.c + c.n
}

/// Per-input-channel rank-1 fits: `D` and `P`.
pub fn rank1_init(c: &DwCandidate) -> Result<(Vec<f32>, Vec<f32>), String> {
    let t = c.kh * c.kw;
    let mut d = vec![0.0f32; c.c * t];
    let mut p = vec![0.0f32; c.n * c.c];
    for ci in 0..c.c {
        let mut m = vec![0.0f32; c.n * t];
        for n in 0..c.n {
            m[n * t..(n + 1) * t].copy_from_slice(&c.weight[(n * c.c + ci) * t..(n * c.c + ci + 1) * t]);
        }
        let s = svd(c.n, t, &m)?;
        let root = s.s[0].sqrt();
        for k in 0..t {
            d[ci * t + k] = (root * s.vt[(0, k)]) as f32;
        }
        for n in 0..c.n {
            p[n * c.c + ci] = (root * s.u[(n, 0)]) as f32;
        }
    }
    Ok((d, p))
}

/// Uniform random factors from a seeded xorshift.
pub fn random_init(c: &DwCandidate, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    };
    let a = (3.0 / (c.kh * c.kw) as f32).sqrt();
    let b = (3.0 / c.c as f32).sqrt();
    let d = (0..c.c * c.kh * c.kw).map(|_| a * next()).collect();
    let p = (0..c.n * c.c).map(|_| b * next()).collect();
    (d, p)
}

/// ‖W − P·D‖ / ‖W‖ over the whole kernel.
pub fn rel_error(c: &DwCandidate, d: &[f32], p: &[f32]) -> f64 {
    let t = c.kh * c.kw;
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for n in 0..c.n {
        for ci in 0..c.c {
            for k in 0..t {
                let w = c.weight[(n * c.c + ci) * t + k] as f64;
                let e = w - p[n * c.c + ci] as f64 * d[ci * t + k] as f64;
                num += e * e;
                den += w * w;
            }
        }
    }
    if den == 0.0 { 0.0 } else { (num / den).sqrt() }
}

/// The host depthwise conv of `x` [B, C, H, W] with `d` [C, kh·kw], giving
/// [B, C, oh, ow] laid out as rows (b, oy, ox) × columns c (plus a column of ones).
fn depthwise_rows(c: &DwCandidate, x: &HostTensor, d: &[f32], oh: usize, ow: usize) -> Mat<f64> {
    let (b, h, w) = (x.dims[0], x.dims[2] as i64, x.dims[3] as i64);
    let [sh, sw] = c.geom.strides;
    let [dh, dw] = c.geom.dilations;
    let (pt, pl) = (c.geom.pads[0], c.geom.pads[1]);
    let t = c.kh * c.kw;
    let cols = c.c + 1;
    let mut m = Mat::<f64>::zeros(b * oh * ow, cols);
    for bi in 0..b {
        for ci in 0..c.c {
            let plane = &x.data[(bi * c.c + ci) * (h * w) as usize..(bi * c.c + ci + 1) * (h * w) as usize];
            let filt = &d[ci * t..(ci + 1) * t];
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = 0.0f32;
                    for ky in 0..c.kh {
                        let iy = oy as i64 * sh - pt + ky as i64 * dh;
                        if iy < 0 || iy >= h {
                            continue;
                        }
                        for kx in 0..c.kw {
                            let ix = ox as i64 * sw - pl + kx as i64 * dw;
                            if ix < 0 || ix >= w {
                                continue;
                            }
                            acc += filt[ky * c.kw + kx] * plane[(iy * w + ix) as usize];
                        }
                    }
                    m[((bi * oh + oy) * ow + ox, ci)] = acc as f64;
                }
            }
        }
    }
    for r in 0..m.nrows() {
        m[(r, c.c)] = 1.0;
    }
    m
}

/// Fits `P` and the bias to the original conv's outputs on `samples`
/// training samples, given `D`. Returns `None` (with the reason) when it
/// cannot (auto_pad, tap shapes the host conv does not handle).
pub fn fit_pointwise(
    model: &Model,
    c: &DwCandidate,
    d: &[f32],
    data: &dyn Dataset,
    samples: usize,
) -> Result<(Vec<f32>, Vec<f32>), String> {
    if c.geom.auto_pad {
        return Err("auto_pad is set".into());
    }
    let g = &model.graph;
    let x_name = g.input(c.op, 0).map(|v| g.value_name(v).to_string()).ok_or("no data input")?;
    let y_name = g.value_name(ValueRef(c.op, 0)).to_string();
    let exec = Executor::new(model).map_err(|e| e.to_string())?;
    let n = samples.min(data.len());
    let cols = c.c + 1;
    let mut gram = Mat::<f64>::zeros(cols, cols);
    let mut rhs = Mat::<f64>::zeros(cols, c.n);
    for start in (0..n).step_by(64) {
        let idx: Vec<usize> = (start..(start + 64).min(n)).collect();
        let b = data.batch(&idx).map_err(|e| e.to_string())?;
        let input = HostTensor::new(b.inputs, b.shape);
        let (_, taps) =
            exec.forward_with_taps(std::slice::from_ref(&input), &[&x_name, &y_name]).map_err(|e| e.to_string())?;
        let (x, y) = (&taps[0], &taps[1]);
        if x.dims.len() != 4 || y.dims.len() != 4 || x.dims[1] != c.c || y.dims[1] != c.n {
            return Err(format!("taps of shapes {:?} and {:?} do not fit the conv", x.dims, y.dims));
        }
        let (oh, ow) = (y.dims[2], y.dims[3]);
        let z = depthwise_rows(c, x, d, oh, ow);
        let mut yt = Mat::<f64>::zeros(z.nrows(), c.n);
        let plane = oh * ow;
        for bi in 0..y.dims[0] {
            for ni in 0..c.n {
                for pos in 0..plane {
                    yt[(bi * plane + pos, ni)] = y.data[(bi * c.n + ni) * plane + pos] as f64;
                }
            }
        }
        matmul(gram.as_mut(), Accum::Add, z.transpose(), z.as_ref(), 1.0, Par::Seq);
        matmul(rhs.as_mut(), Accum::Add, z.transpose(), yt.as_ref(), 1.0, Par::Seq);
    }
    let trace: f64 = (0..cols).map(|i| gram[(i, i)]).sum();
    let ridge = 1e-6 * (trace / cols as f64).max(1e-12);
    for i in 0..cols {
        gram[(i, i)] += ridge;
    }
    // gram = L·Lᵀ (Cholesky, lower triangle), then rhs ← gram⁻¹·rhs
    let scratch = llt::factor::cholesky_in_place_scratch::<f64>(cols, Par::Seq, Default::default())
        .or(llt::solve::solve_in_place_scratch::<f64>(cols, c.n, Par::Seq));
    let mut mem = MemBuffer::try_new(scratch).map_err(|_| "no memory for the normal equations")?;
    let stack = MemStack::new(&mut mem);
    llt::factor::cholesky_in_place(gram.as_mut(), Default::default(), Par::Seq, stack, Default::default())
        .map_err(|_| "the normal equations are singular")?;
    llt::solve::solve_in_place(gram.as_ref(), rhs.as_mut(), Par::Seq, stack);
    let sol = rhs;
    let mut p = vec![0.0f32; c.n * c.c];
    let mut bias = vec![0.0f32; c.n];
    for ni in 0..c.n {
        for ci in 0..c.c {
            p[ni * c.c + ci] = sol[(ci, ni)] as f32;
        }
        bias[ni] = sol[(c.c, ni)] as f32;
    }
    Ok((p, bias))
}

/// Replaces the conv by depthwise `D` then pointwise `P` with `bias`.
pub fn apply(graph: &mut Graph, c: &DwCandidate, f: &DwFactors) -> Result<(), String> {
    let x = graph.input(c.op, 0).ok_or("no data input")?;
    let attrs = graph.op(c.op).map(|o| o.attributes.clone()).unwrap_or_default();
    let mut dw_attrs: Vec<_> = attrs.iter().filter(|a| a.name != "group").cloned().collect();
    dw_attrs.push(attr_int("group", c.c as i64));
    let dims = [c.c as i64, 1, c.kh as i64, c.kw as i64];
    let h = add_first(graph, c.op, "Conv", &c.name, dw_attrs, x, &format!("{}.depthwise", c.weight_name), &dims, &f.d);
    graph.set_input(c.op, 0, Some(h));
    replace_weight(graph, c.op, 1, &format!("{}.pointwise", c.weight_name), &[c.n as i64, c.c as i64, 1, 1], &f.p);
    let bias_base = format!("{}.pointwise_bias", c.weight_name);
    replace_weight(graph, c.op, 2, &bias_base, &[c.n as i64], &f.bias);
    if let Some(o) = graph.op_mut(c.op) {
        o.attributes = conv_attrs(&attrs, [1, 1], [1, 1], [0; 4], [1, 1]);
    }
    Ok(())
}
