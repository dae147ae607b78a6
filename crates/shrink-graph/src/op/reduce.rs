//! Reductions (`ReduceMean`, `ReduceSum`, `ReduceMax`, ...) and the
//! normalising reductions `Softmax` / `LogSoftmax`.
//!
//! Channels: a reduction over the axes after the channel axis (a global
//! pool written as `ReduceMean`) keeps them; softmax blocks.

use super::{InferCx, Inferred, Rules, norm_axis};
use crate::error::GraphError;
use crate::graph::{NodeId, Op, ValueRef};
use crate::groups::{Layout, Walk};
use crate::shape::Dim;

/// Which reduction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceFn {
    Mean,
    Sum,
    Max,
    Min,
    Prod,
    L1,
    L2,
    LogSum,
    LogSumExp,
    SumSquare,
}

/// A `Reduce*` op; `axes` from the attribute (before opset 18; 13 for
/// `ReduceSum`) or input 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Reduce {
    pub f: ReduceFn,
    pub axes: Option<Vec<i64>>,
    pub keepdims: bool,
    /// With no axes: the identity instead of reducing everything.
    pub noop_with_empty_axes: bool,
}

impl Reduce {
    pub const OP_TYPES: &[&str] = &[
        "ReduceMean",
        "ReduceSum",
        "ReduceMax",
        "ReduceMin",
        "ReduceProd",
        "ReduceL1",
        "ReduceL2",
        "ReduceLogSum",
        "ReduceLogSumExp",
        "ReduceSumSquare",
    ];

    pub(crate) fn parse(op: &Op) -> Result<Reduce, GraphError> {
        use ReduceFn::*;
        const FNS: [ReduceFn; 10] = [Mean, Sum, Max, Min, Prod, L1, L2, LogSum, LogSumExp, SumSquare];
        let i = Self::OP_TYPES.iter().position(|t| *t == op.op_type).unwrap_or(0);
        Ok(Reduce {
            f: FNS[i],
            axes: op.attr_ints("axes").map(<[i64]>::to_vec),
            keepdims: op.attr_int("keepdims").unwrap_or(1) != 0,
            noop_with_empty_axes: op.attr_int("noop_with_empty_axes").unwrap_or(0) != 0,
        })
    }
}

impl Rules for Reduce {
    fn infer(&self, cx: &InferCx) -> Inferred {
        let Some(x) = cx.shape(0) else { return Inferred::default() };
        let axes = match self.axes.clone().or_else(|| cx.konst(1)) {
            Some(a) if !a.is_empty() => a,
            // input 1 is there but its value is not known
            None if cx.n_inputs > 1 && cx.shape(1).is_some() => return Inferred::default(),
            _ if self.noop_with_empty_axes => return Inferred::shape(Some(x)),
            _ => (0..x.len() as i64).collect(),
        };
        let Some(axes) = axes.iter().map(|&a| norm_axis(a, x.len())).collect::<Option<Vec<usize>>>() else {
            return Inferred::default();
        };
        let shape = x
            .iter()
            .enumerate()
            .filter_map(|(i, d)| match (axes.contains(&i), self.keepdims) {
                (false, _) => Some(d.clone()),
                (true, true) => Some(Dim::Known(1)),
                (true, false) => None,
            })
            .collect();
        Inferred::shape(Some(shape))
    }

    fn channels(&self, w: &mut Walk, id: NodeId, op: &Op) {
        let x = w.g.input(id, 0);
        let Some(l) = x.and_then(|x| w.lay.get(&x).cloned()) else { return w.unknown(id, "") };
        let axes = self.axes.clone().or_else(|| w.const_ints(w.g.input(id, 1)));
        let ok = op.outputs.len() == 1
            && l.inner == 1
            && axes.as_ref().is_some_and(|a| {
                !a.is_empty() && a.iter().all(|&x| (if x < 0 { x + l.rank as i64 } else { x }) > l.axis as i64)
            });
        if !ok {
            return w.unknown(id, &format!("{} `{}` reduces the channel axis", op.op_type, op.label()));
        }
        let rank = if self.keepdims { l.rank } else { l.rank - axes.map_or(0, |a| a.len()) };
        w.lay.insert(ValueRef(id, 0), Layout { rank, ..l });
    }
}

/// `Softmax` and `LogSoftmax`.
#[derive(Debug, Clone, PartialEq)]
pub struct Softmax {
    /// As stored; see [`Softmax::axis`] for the default.
    pub axis: Option<i64>,
    pub log: bool,
}

impl Softmax {
    pub const OP_TYPES: &[&str] = &["Softmax", "LogSoftmax"];

    pub(crate) fn parse(op: &Op) -> Result<Softmax, GraphError> {
        Ok(Softmax { axis: op.attr_int("axis"), log: op.op_type == "LogSoftmax" })
    }

    /// The axis: 1 before opset 13 (where the input is coerced to 2-D at
    /// that axis), -1 from opset 13 on.
    pub fn axis(&self, opset: i64) -> i64 {
        self.axis.unwrap_or(if opset < 13 { 1 } else { -1 })
    }

    /// Opsets before 13 flatten the input to 2-D at the axis first.
    pub fn is_legacy(opset: i64) -> bool {
        opset < 13
    }
}

impl Rules for Softmax {
    fn infer(&self, cx: &InferCx) -> Inferred {
        Inferred::shape(cx.shape(0))
    }
}
