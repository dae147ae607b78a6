//! `method = "svd"` and `method = "spatial"`: a layer's weight matrix is
//! replaced by its truncated SVD, `M ≈ F₂·F₁`, as two layers.
//!
//! - Gemm (`transA = 0`) and MatMul (`X·W`): `M` is the out × in weight;
//!   the first layer (same op type, no bias) maps in → k, the original
//!   node, keeping its bias, `alpha`, `beta`, maps k → out.
//! - Conv, channel decomposition: `M` is the N × (C·kh·kw) reshaped weight;
//!   the first conv is kh×kw C → k with the original geometry, the original
//!   node becomes a 1×1 conv k → N with the bias.
//! - Conv, input-side channel decomposition (`form = "input"`): `M` is the
//!   (N·kh·kw) × C weight, `M[(n,i,j),c] = W[n,c,i,j]`; the first conv is a
//!   1×1 C → k (stride 1, no pads, no bias: zero padding commutes with it),
//!   the original node keeps its geometry and bias and reads k channels.
//! - Conv, Tucker-2 (`form = "tucker2"`): two ranks, see [`crate::tucker`];
//!   `M` is the N × (C·kh·kw) weight as for the channel decomposition.
//! - Conv, spatial separation (Jaderberg et al. 2014, scheme 2): `M` is
//!   (N·kw) × (C·kh), `M[(n,x),(c,y)] = W[n,c,y,x]`; the first conv is a
//!   vertical kh×1 C → k (vertical strides, pads, dilations), the original
//!   node a horizontal 1×kw k → N (horizontal ones).
//!
//! Grouped convs, `auto_pad`, non-2-D convs and Gemm with `transA = 1` are
//! left alone with the reason in the report.

use shrink_graph::builder::attr_int;
use shrink_graph::op::OpKind;
use shrink_graph::{Graph, NodeId, ValueRef};

use crate::params::{Form, Method, Sigma};
use crate::rewrite::{ConvGeom, add_first, conv_attrs, conv_geom, replace_weight};
use crate::svd::{Svd, factors, transpose};

/// How a layer's weight is laid out, and so how its factors are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Gemm; `trans_b`: the weight is stored out × in.
    Gemm { trans_b: bool },
    /// MatMul with the weight second: stored in × out.
    MatMul,
    /// Conv N × C × kh × kw, channel decomposition.
    ConvChannel { n: usize, c: usize, kh: usize, kw: usize, geom: ConvGeom },
    /// Conv N × C × kh × kw, input-side channel decomposition.
    ConvInput { n: usize, c: usize, kh: usize, kw: usize },
    /// Conv N × C × kh × kw, Tucker-2 (written by [`crate::tucker`]).
    ConvTucker2 { n: usize, c: usize, kh: usize, kw: usize },
    /// Conv N × C × kh × kw, spatial separation.
    ConvSpatial { n: usize, c: usize, kh: usize, kw: usize, geom: ConvGeom },
}

/// A layer that can be factorised: its weight as the matrix `M` (row-major).
#[derive(Debug, Clone)]
pub struct Candidate {
    pub op: NodeId,
    pub name: String,
    pub weight: ValueRef,
    pub weight_name: String,
    pub layout: Layout,
    pub rows: usize,
    pub cols: usize,
    pub matrix: Vec<f32>,
}

/// The weight of `op` as a factorisable matrix, or why it is not one;
/// `form` says how a Conv is split under `method = "svd"`.
pub fn candidate(graph: &Graph, op: NodeId, method: Method, form: Form) -> Result<Candidate, String> {
    let o = graph.op(op).ok_or("not an op")?;
    let name = o.label();
    let wv = graph.input(op, 1).ok_or("no weight input")?;
    let t = graph.weight(wv).ok_or("its weight is not a constant")?;
    let dims: Vec<usize> = t.dims().iter().map(|&d| d as usize).collect();
    let data = t.to_f32().map_err(|e| format!("weight `{}`: {e}", t.name()))?;
    let weight_name = t.name().to_string();
    let kind = shrink_graph::op::parse(o).map_err(|e| e.to_string())?;
    let (layout, rows, cols, matrix) = match (kind, method) {
        (Some(OpKind::Gemm(gm)), Method::Svd) => {
            if gm.trans_a {
                return Err("Gemm with transA = 1".into());
            }
            if dims.len() != 2 {
                return Err(format!("weight dims {dims:?} are not 2-D"));
            }
            let trans_b = gm.trans_b;
            if trans_b {
                (Layout::Gemm { trans_b }, dims[0], dims[1], data)
            } else {
                (Layout::Gemm { trans_b }, dims[1], dims[0], transpose(&data, dims[0], dims[1]))
            }
        }
        (Some(OpKind::MatMul(_)), Method::Svd) => {
            if dims.len() != 2 {
                return Err(format!("weight dims {dims:?} are not 2-D"));
            }
            if graph.input(op, 0).is_some_and(|x| graph.weight(x).is_some()) {
                return Err("both MatMul inputs are constants".into());
            }
            (Layout::MatMul, dims[1], dims[0], transpose(&data, dims[0], dims[1]))
        }
        (Some(OpKind::Conv(_)), Method::Svd | Method::Spatial) => {
            if dims.len() != 4 {
                return Err(format!("weight dims {dims:?}: only 2-D convolutions are factorised"));
            }
            let geom = conv_geom(o)?;
            if geom.group != 1 {
                return Err(format!("grouped conv (group = {})", geom.group));
            }
            let (n, c, kh, kw) = (dims[0], dims[1], dims[2], dims[3]);
            if method == Method::Svd && form == Form::Output {
                (Layout::ConvChannel { n, c, kh, kw, geom }, n, c * kh * kw, data)
            } else if method == Method::Svd && form == Form::Tucker2 {
                (Layout::ConvTucker2 { n, c, kh, kw }, n, c * kh * kw, data)
            } else if method == Method::Svd {
                // M[(n,i,j),c] = W[n,c,i,j]
                let k2 = kh * kw;
                let mut m = vec![0.0; n * k2 * c];
                for ni in 0..n {
                    for ci in 0..c {
                        for t in 0..k2 {
                            m[(ni * k2 + t) * c + ci] = data[(ni * c + ci) * k2 + t];
                        }
                    }
                }
                (Layout::ConvInput { n, c, kh, kw }, n * k2, c, m)
            } else {
                if geom.auto_pad {
                    return Err("auto_pad is set: spatial separation needs explicit pads".into());
                }
                if kh < 2 || kw < 2 {
                    return Err(format!("a {kh}×{kw} kernel has nothing to separate"));
                }
                // M[(n,x),(c,y)] = W[n,c,y,x]
                let mut m = vec![0.0; n * kw * c * kh];
                for ni in 0..n {
                    for ci in 0..c {
                        for y in 0..kh {
                            for x in 0..kw {
                                m[(ni * kw + x) * (c * kh) + ci * kh + y] = data[((ni * c + ci) * kh + y) * kw + x];
                            }
                        }
                    }
                }
                (Layout::ConvSpatial { n, c, kh, kw, geom }, n * kw, c * kh, m)
            }
        }
        _ => return Err(format!("op type {} is not factorised by this method", o.op_type)),
    };
    Ok(Candidate { op, name, weight: wv, weight_name, layout, rows, cols, matrix })
}

/// Replaces the candidate layer by its rank-`k` factorisation.
pub fn apply(graph: &mut Graph, c: &Candidate, d: &Svd, k: usize, sigma: Sigma) -> Result<(), String> {
    let (f1, f2) = factors(d, k, sigma);
    let (rows, cols) = (c.rows, c.cols);
    let x = graph.input(c.op, 0).ok_or("no data input")?;
    let attrs = graph.op(c.op).map(|o| o.attributes.clone()).unwrap_or_default();
    let (k64, r64, c64) = (k as i64, rows as i64, cols as i64);
    let w0 = format!("{}.lowrank0", c.weight_name);
    let w1 = format!("{}.lowrank1", c.weight_name);
    match c.layout {
        Layout::Gemm { trans_b } => {
            let first_attrs = vec![attr_int("transB", trans_b as i64)];
            let h = if trans_b {
                add_first(graph, c.op, "Gemm", &c.name, first_attrs, x, &w0, &[k64, c64], &f1)
            } else {
                add_first(graph, c.op, "Gemm", &c.name, first_attrs, x, &w0, &[c64, k64], &transpose(&f1, k, cols))
            };
            graph.set_input(c.op, 0, Some(h));
            if trans_b {
                replace_weight(graph, c.op, 1, &w1, &[r64, k64], &f2);
            } else {
                replace_weight(graph, c.op, 1, &w1, &[k64, r64], &transpose(&f2, rows, k));
            }
        }
        Layout::MatMul => {
            let h = add_first(graph, c.op, "MatMul", &c.name, vec![], x, &w0, &[c64, k64], &transpose(&f1, k, cols));
            graph.set_input(c.op, 0, Some(h));
            replace_weight(graph, c.op, 1, &w1, &[k64, r64], &transpose(&f2, rows, k));
        }
        Layout::ConvChannel { n, c: ci, kh, kw, .. } => {
            let first_attrs: Vec<_> = attrs.iter().filter(|a| a.name != "group").cloned().collect();
            let dims = [k64, ci as i64, kh as i64, kw as i64];
            let h = add_first(graph, c.op, "Conv", &c.name, first_attrs, x, &w0, &dims, &f1);
            graph.set_input(c.op, 0, Some(h));
            replace_weight(graph, c.op, 1, &w1, &[n as i64, k64, 1, 1], &f2);
            set_attrs(graph, c.op, conv_attrs(&attrs, [1, 1], [1, 1], [0; 4], [1, 1]));
        }
        Layout::ConvInput { n, c: ci, kh, kw } => {
            let pw_attrs = conv_attrs(&attrs, [1, 1], [1, 1], [0; 4], [1, 1]);
            let h = add_first(graph, c.op, "Conv", &c.name, pw_attrs, x, &w0, &[k64, ci as i64, 1, 1], &f1);
            graph.set_input(c.op, 0, Some(h));
            // F₂[(n·kh·kw + t), r] becomes the k×k weight [N, k, kh, kw]
            let k2 = kh * kw;
            let mut b = vec![0.0; n * k * k2];
            for ni in 0..n {
                for r in 0..k {
                    for t in 0..k2 {
                        b[(ni * k + r) * k2 + t] = f2[(ni * k2 + t) * k + r];
                    }
                }
            }
            replace_weight(graph, c.op, 1, &w1, &[n as i64, k64, kh as i64, kw as i64], &b);
        }
        Layout::ConvTucker2 { .. } => return Err("a Tucker-2 layer has two ranks: use tucker::apply".into()),
        Layout::ConvSpatial { n, c: ci, kh, kw, geom } => {
            let [pt, pl, pb, pr] = geom.pads;
            let [sh, sw] = geom.strides;
            let [dh, dw] = geom.dilations;
            let v_attrs = conv_attrs(&attrs, [kh as i64, 1], [sh, 1], [pt, 0, pb, 0], [dh, 1]);
            // F₁[r, c·kh + y] is the vertical weight [k, C, kh, 1]
            let h = add_first(graph, c.op, "Conv", &c.name, v_attrs, x, &w0, &[k64, ci as i64, kh as i64, 1], &f1);
            graph.set_input(c.op, 0, Some(h));
            // F₂[(n·kw + x), r] becomes the horizontal weight [N, k, 1, kw]
            let mut hw = vec![0.0; n * k * kw];
            for ni in 0..n {
                for r in 0..k {
                    for xx in 0..kw {
                        hw[(ni * k + r) * kw + xx] = f2[(ni * kw + xx) * k + r];
                    }
                }
            }
            replace_weight(graph, c.op, 1, &w1, &[n as i64, k64, 1, kw as i64], &hw);
            set_attrs(graph, c.op, conv_attrs(&attrs, [1, kw as i64], [1, sw], [0, pl, 0, pr], [1, dw]));
        }
    }
    Ok(())
}

fn set_attrs(graph: &mut Graph, op: NodeId, attrs: Vec<shrink_graph::onnx::AttributeProto>) {
    if let Some(o) = graph.op_mut(op) {
        o.attributes = attrs;
    }
}
