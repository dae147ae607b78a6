//! `Pad`: constant, reflect, edge or wrap padding of each axis by the
//! `pads` attribute (before opset 11) or input 1, optionally on the axes of
//! input 3 only (opset 18).
//!
//! Channels: padding only the axes after the channel axis keeps them;
//! padding the channel axis blocks.

use super::{InferCx, Inferred, Rules, norm_axis};
use crate::error::GraphError;
use crate::graph::{NodeId, Op, ValueRef};
use crate::groups::Walk;
use crate::shape::{Dim, Shape};

/// `Pad`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pad {
    /// `constant`, `reflect`, `edge` or `wrap`.
    pub mode: String,
    /// The `pads` attribute (opset < 11): begins of every axis, then ends.
    pub pads: Option<Vec<i64>>,
}

impl Pad {
    pub const OP_TYPES: &[&str] = &["Pad"];

    pub(crate) fn parse(op: &Op) -> Result<Pad, GraphError> {
        let mode = op.attr_str("mode").unwrap_or("constant").to_string();
        if !["constant", "reflect", "edge", "wrap"].contains(&mode.as_str()) {
            return Err(super::bad(op, format!("unknown mode `{mode}`")));
        }
        Ok(Pad { mode, pads: op.attr_ints("pads").map(<[i64]>::to_vec) })
    }

    /// `(begin, end)` padding of each of `rank` axes, when known: from the
    /// attribute, or input 1 with input 3's axes.
    fn per_axis(&self, rank: usize, pads: Option<Vec<i64>>, axes: Option<Vec<i64>>) -> Option<Vec<(i64, i64)>> {
        let pads = self.pads.clone().or(pads)?;
        let axes: Vec<usize> = match axes {
            Some(a) => a.iter().map(|&a| norm_axis(a, rank)).collect::<Option<_>>()?,
            None => (0..rank).collect(),
        };
        if pads.len() != 2 * axes.len() {
            return None;
        }
        let mut out = vec![(0, 0); rank];
        for (k, &a) in axes.iter().enumerate() {
            out[a] = (pads[k], pads[k + axes.len()]);
        }
        Some(out)
    }
}

impl Rules for Pad {
    fn infer(&self, cx: &InferCx) -> Inferred {
        let out = (|| {
            let x = cx.shape(0)?;
            let axes = if cx.n_inputs > 3 { Some(cx.konst(3)?) } else { None };
            let per = self.per_axis(x.len(), cx.konst(1), axes)?;
            x.iter()
                .zip(per)
                .map(|(d, (b, e))| match (d, b + e) {
                    (d, 0) => Some(d.clone()),
                    (Dim::Known(n), p) => Some(Dim::Known(u64::try_from(i128::from(*n) + i128::from(p)).ok()?)),
                    _ => Some(Dim::Unknown),
                })
                .collect::<Option<Shape>>()
        })();
        Inferred::shape(out)
    }

    fn channels(&self, w: &mut Walk, id: NodeId, op: &Op) {
        let x = w.g.input(id, 0);
        let Some(l) = x.and_then(|x| w.lay.get(&x).cloned()) else { return w.unknown(id, "") };
        let axes = w.g.input(id, 3).map(|v| w.const_ints(Some(v)));
        let per = match axes {
            Some(None) => None, // axes computed at run time
            Some(a) => self.per_axis(l.rank, w.const_ints(w.g.input(id, 1)), a),
            None => self.per_axis(l.rank, w.const_ints(w.g.input(id, 1)), None),
        };
        let keeps = per.is_some_and(|p| p.get(l.axis) == Some(&(0, 0)));
        if !keeps || l.inner != 1 {
            return w.unknown(id, &format!("pad `{}` pads the channel axis or its pads are not constant", op.label()));
        }
        w.lay.insert(ValueRef(id, 0), l);
    }
}
