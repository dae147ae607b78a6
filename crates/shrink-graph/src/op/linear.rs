//! Matrix products: `Gemm` (`alpha · A' · B' + beta · C`, `'` the optional
//! transposes) and `MatMul` (numpy semantics, batched).

use super::{InferCx, Inferred, MacCx, Rules, input, product};
use crate::error::GraphError;
use crate::graph::{NodeId, Op, ValueRef};
use crate::groups::{Rewrite, Role, Walk};
use crate::shape::{Dim, Shape, broadcast};

/// `Gemm`.
#[derive(Debug, Clone, PartialEq)]
pub struct Gemm {
    pub alpha: f32,
    pub beta: f32,
    pub trans_a: bool,
    pub trans_b: bool,
}

impl Gemm {
    pub const OP_TYPES: &[&str] = &["Gemm"];

    pub(crate) fn parse(op: &Op) -> Result<Gemm, GraphError> {
        Ok(Gemm {
            alpha: op.attr_float("alpha").unwrap_or(1.0),
            beta: op.attr_float("beta").unwrap_or(1.0),
            trans_a: op.attr_int("transA").unwrap_or(0) != 0,
            trans_b: op.attr_int("transB").unwrap_or(0) != 0,
        })
    }
}

impl Rules for Gemm {
    fn infer(&self, cx: &InferCx) -> Inferred {
        let (a, b) = match (cx.shape(0), cx.shape(1)) {
            (Some(a), Some(b)) if a.len() == 2 && b.len() == 2 => (a, b),
            _ => return Inferred::default(),
        };
        let m = if self.trans_a { a[1].clone() } else { a[0].clone() };
        let n = if self.trans_b { b[0].clone() } else { b[1].clone() };
        Inferred::shape(Some(vec![m, n]))
    }

    /// Output elements × the reduced dimension.
    fn macs(&self, cx: &MacCx) -> Option<u64> {
        let a = (cx.input)(0)?;
        let k = if self.trans_a { *a.first()? } else { *a.get(1)? };
        product(cx.output.as_ref()?)?.checked_mul(k)
    }

    fn channels(&self, w: &mut Walk, id: NodeId, op: &Op) {
        linear_channels(w, id, op, Some(self));
    }
}

/// `MatMul`.
#[derive(Debug, Clone, PartialEq)]
pub struct MatMul;

impl MatMul {
    pub const OP_TYPES: &[&str] = &["MatMul"];

    pub(crate) fn parse(_op: &Op) -> Result<MatMul, GraphError> {
        Ok(MatMul)
    }
}

impl Rules for MatMul {
    fn infer(&self, cx: &InferCx) -> Inferred {
        Inferred::shape(cx.shape(0).zip(cx.shape(1)).and_then(|(a, b)| matmul(&a, &b)))
    }

    /// Output elements × the reduced dimension (the left operand's last).
    fn macs(&self, cx: &MacCx) -> Option<u64> {
        product(cx.output.as_ref()?)?.checked_mul(*(cx.input)(0)?.last()?)
    }

    fn channels(&self, w: &mut Walk, id: NodeId, op: &Op) {
        linear_channels(w, id, op, None);
    }
}

fn matmul(a: &Shape, b: &Shape) -> Option<Shape> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let a2: Shape = if a.len() == 1 { vec![Dim::Known(1), a[0].clone()] } else { a.clone() };
    let b2: Shape = if b.len() == 1 { vec![b[0].clone(), Dim::Known(1)] } else { b.clone() };
    let batch = broadcast(&[a2[..a2.len() - 2].to_vec(), b2[..b2.len() - 2].to_vec()])?;
    let mut out = batch;
    if a.len() > 1 {
        out.push(a2[a2.len() - 2].clone());
    }
    if b.len() > 1 {
        out.push(b2[b2.len() - 1].clone());
    }
    Some(out)
}

/// A `Gemm` or `MatMul` with a constant 2-D weight produces its output
/// features and consumes its input features (the last axis of its input).
fn linear_channels(w: &mut Walk, id: NodeId, op: &Op, gemm: Option<&Gemm>) {
    let ins = w.g.op_inputs(id);
    let x = input(&ins, 0);
    let xl = x.and_then(|x| w.lay.get(&x).cloned());
    let out = ValueRef(id, 0);
    let t = &op.op_type;
    let Some(wd) = input(&ins, 1).and_then(|v| w.const_dims(v)) else {
        return w.unknown(id, &format!("{t} `{}` has no constant weight", op.label()));
    };
    let (trans_a, trans_b) = gemm.map_or((false, false), |g| (g.trans_a, g.trans_b));
    let xrank = xl.as_ref().map(|l| l.rank).or_else(|| x.and_then(|x| w.rank_of(x)));
    if wd.len() != 2 || trans_a || xrank.is_none() || (gemm.is_some() && xrank != Some(2)) {
        return w.unknown(id, &format!("{t} `{}`: unsupported layout", op.label()));
    }
    let xrank = xrank.unwrap_or(2);
    let (in_axis, out_axis) = if trans_b { (1, 0) } else { (0, 1) };
    if let (Some(l), Some(x)) = (&xl, x) {
        if l.axis == xrank - 1 && (l.classes.len() * l.inner) as i64 == wd[in_axis] {
            w.rewrites.push(Rewrite::Slice { op: id, slot: 1, axis: in_axis, layout_of: x });
            w.member(id, Role::Consumer, x);
        } else {
            w.block_value(x, &format!("{t} `{}` reads another axis", op.label()));
        }
    }
    let cout = wd[out_axis] as usize;
    w.producer(id, out, cout, xrank - 1, xrank);
    w.rewrites.push(Rewrite::Slice { op: id, slot: 1, axis: out_axis, layout_of: out });
    if gemm.is_some()
        && let Some(c) = input(&ins, 2)
    {
        match w.const_dims(c) {
            Some(cd) if cd.last().copied().unwrap_or(1) == 1 => {}
            Some(cd) if cd.last().copied() == Some(cout as i64) && cd.len() <= 2 => {
                let axis = cd.len() - 1;
                w.rewrites.push(Rewrite::Slice { op: id, slot: 2, axis, layout_of: out });
            }
            _ => w.block_value(out, &format!("gemm `{}` has an unsupported bias", op.label())),
        }
    }
}
