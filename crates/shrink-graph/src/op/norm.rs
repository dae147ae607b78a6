//! Normalisations with one parameter per channel: `BatchNormalization`
//! (`(x - mean) / sqrt(var + epsilon) · scale + bias`, inputs 1..5 are
//! scale, bias, mean, var) and `InstanceNormalization` (scale, bias).

use super::{InferCx, Inferred, Rules, input};
use crate::error::GraphError;
use crate::graph::{NodeId, Op, ValueRef};
use crate::groups::{Rewrite, Role, Walk};

/// `BatchNormalization`.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNorm {
    pub epsilon: f32,
    pub momentum: f32,
    /// `training_mode = 1`: batch statistics, running-statistics outputs.
    pub training_mode: bool,
    /// The op writes more than its normalised output (running mean/var).
    pub stats_outputs: bool,
}

impl BatchNorm {
    pub const OP_TYPES: &[&str] = &["BatchNormalization"];

    pub(crate) fn parse(op: &Op) -> Result<BatchNorm, GraphError> {
        Ok(BatchNorm {
            epsilon: op.attr_float("epsilon").unwrap_or(1e-5),
            momentum: op.attr_float("momentum").unwrap_or(0.9),
            training_mode: op.attr_int("training_mode").unwrap_or(0) != 0,
            stats_outputs: op.outputs.iter().skip(1).any(|o| !o.is_empty()),
        })
    }

    /// The inference form: one output, running statistics.
    pub fn is_inference(&self) -> bool {
        !self.training_mode && !self.stats_outputs
    }
}

impl Rules for BatchNorm {
    fn infer(&self, cx: &InferCx) -> Inferred {
        Inferred::shape(cx.shape(0))
    }

    fn channels(&self, w: &mut Walk, id: NodeId, op: &Op) {
        per_channel(w, id, op, 5)
    }
}

/// `InstanceNormalization`.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceNorm {
    pub epsilon: f32,
}

impl InstanceNorm {
    pub const OP_TYPES: &[&str] = &["InstanceNormalization"];

    pub(crate) fn parse(op: &Op) -> Result<InstanceNorm, GraphError> {
        Ok(InstanceNorm { epsilon: op.attr_float("epsilon").unwrap_or(1e-5) })
    }
}

impl Rules for InstanceNorm {
    fn infer(&self, cx: &InferCx) -> Inferred {
        Inferred::shape(cx.shape(0))
    }

    fn channels(&self, w: &mut Walk, id: NodeId, op: &Op) {
        per_channel(w, id, op, 3)
    }
}

/// Inputs `1..n` hold one constant per channel of input 0: they are sliced
/// with it, and the channels pass through.
fn per_channel(w: &mut Walk, id: NodeId, op: &Op, n: usize) {
    let ins = w.g.op_inputs(id);
    let x = input(&ins, 0);
    let (Some(l), Some(x)) = (x.and_then(|x| w.lay.get(&x).cloned()), x) else {
        return w.unknown(id, "normalization of an untracked value");
    };
    let ok = l.axis == 1
        && l.inner == 1
        && (1..n).all(|s| input(&ins, s).and_then(|v| w.const_dims(v)) == Some(vec![l.classes.len() as i64]));
    if !ok || op.outputs.len() > 1 {
        return w.unknown(
            id,
            &format!("{} `{}` has non-constant or training-mode parameters", op.op_type, op.label()),
        );
    }
    for s in 1..n {
        w.rewrites.push(Rewrite::Slice { op: id, slot: s, axis: 0, layout_of: x });
    }
    w.member(id, Role::PerChannel, x);
    w.lay.insert(ValueRef(id, 0), l);
}
