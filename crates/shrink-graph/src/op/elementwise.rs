//! Element-wise ops: activations and other one-input functions, numpy
//! broadcasting binary ops, the pass-through ops (`Identity`, `Dropout`,
//! `Cast`) and same-shape ops that mix channels (`LayerNormalization`,
//! `LRN`, `Hardmax`, `QuantizeLinear`, `DequantizeLinear`).
//!
//! Channels: an activation or pass-through op keeps each channel where it
//! is (extra operands such as `Clip`'s bounds or `PRelu`'s slope must be
//! scalars or per-channel constants); `Add`, `Sub`, `Mul`, `Div`, `Max` and
//! `Min` couple the channels of their operands position by position
//! (residual additions, squeeze-and-excitation gates).

use super::{InferCx, Inferred, Rules};
use crate::error::GraphError;
use crate::graph::{NodeId, Op, ValueRef};
use crate::groups::Walk;
use crate::shape::broadcast;

/// A one-input element-wise function.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Act {
    Relu,
    LeakyRelu { alpha: f32 },
    PRelu,
    Sigmoid,
    HardSigmoid { alpha: f32, beta: f32 },
    HardSwish,
    Tanh,
    Elu { alpha: f32 },
    Selu,
    Celu,
    Gelu,
    Softplus,
    Softsign,
    Mish,
    ThresholdedRelu,
    /// Bounds from the attributes (opset < 11); later opsets read inputs 1 and 2.
    Clip { min: Option<f32>, max: Option<f32> },
    Neg,
    Abs,
    Exp,
    Log,
    Sqrt,
    Reciprocal,
    Erf,
    Floor,
    Ceil,
    Round,
    Sign,
    Not,
    Sin,
    Cos,
}

/// An activation or other element-wise function of one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Activation {
    pub f: Act,
}

impl Activation {
    pub const OP_TYPES: &[&str] = &[
        "Relu",
        "LeakyRelu",
        "PRelu",
        "Sigmoid",
        "HardSigmoid",
        "HardSwish",
        "Tanh",
        "Elu",
        "Selu",
        "Celu",
        "Gelu",
        "Softplus",
        "Softsign",
        "Mish",
        "ThresholdedRelu",
        "Clip",
        "Neg",
        "Abs",
        "Exp",
        "Log",
        "Sqrt",
        "Reciprocal",
        "Erf",
        "Floor",
        "Ceil",
        "Round",
        "Sign",
        "Not",
        "Sin",
        "Cos",
    ];

    pub(crate) fn parse(op: &Op) -> Result<Activation, GraphError> {
        let alpha = |d: f32| op.attr_float("alpha").unwrap_or(d);
        let f = match op.op_type.as_str() {
            "Relu" => Act::Relu,
            "LeakyRelu" => Act::LeakyRelu { alpha: alpha(0.01) },
            "PRelu" => Act::PRelu,
            "Sigmoid" => Act::Sigmoid,
            "HardSigmoid" => Act::HardSigmoid { alpha: alpha(0.2), beta: op.attr_float("beta").unwrap_or(0.5) },
            "HardSwish" => Act::HardSwish,
            "Tanh" => Act::Tanh,
            "Elu" => Act::Elu { alpha: alpha(1.0) },
            "Selu" => Act::Selu,
            "Celu" => Act::Celu,
            "Gelu" => Act::Gelu,
            "Softplus" => Act::Softplus,
            "Softsign" => Act::Softsign,
            "Mish" => Act::Mish,
            "ThresholdedRelu" => Act::ThresholdedRelu,
            "Clip" => Act::Clip { min: op.attr_float("min"), max: op.attr_float("max") },
            "Neg" => Act::Neg,
            "Abs" => Act::Abs,
            "Exp" => Act::Exp,
            "Log" => Act::Log,
            "Sqrt" => Act::Sqrt,
            "Reciprocal" => Act::Reciprocal,
            "Erf" => Act::Erf,
            "Floor" => Act::Floor,
            "Ceil" => Act::Ceil,
            "Round" => Act::Round,
            "Sign" => Act::Sign,
            "Not" => Act::Not,
            "Sin" => Act::Sin,
            _ => Act::Cos,
        };
        Ok(Activation { f })
    }
}

impl Rules for Activation {
    fn infer(&self, cx: &InferCx) -> Inferred {
        Inferred::shape(cx.shape(0))
    }

    fn channels(&self, w: &mut Walk, id: NodeId, op: &Op) {
        keep_channels(w, id, op)
    }
}

/// `Identity`, `Dropout` (an identity at inference) and `Cast`.
#[derive(Debug, Clone, PartialEq)]
pub enum Passthrough {
    Identity,
    /// `mask`: the op writes its mask output.
    Dropout { mask: bool },
    /// `to`: the ONNX data type code, when given.
    Cast { to: Option<i64> },
}

impl Passthrough {
    pub const OP_TYPES: &[&str] = &["Identity", "Dropout", "Cast"];

    pub(crate) fn parse(op: &Op) -> Result<Passthrough, GraphError> {
        Ok(match op.op_type.as_str() {
            "Identity" => Passthrough::Identity,
            "Dropout" => Passthrough::Dropout { mask: op.outputs.get(1).is_some_and(|o| !o.is_empty()) },
            _ => Passthrough::Cast { to: op.attr_int("to") },
        })
    }
}

impl Rules for Passthrough {
    fn infer(&self, cx: &InferCx) -> Inferred {
        let konst = if matches!(self, Passthrough::Dropout { .. }) { None } else { cx.konst(0) };
        Inferred { shape: cx.shape(0), konst }
    }

    fn infer_extra(&self, slot: usize, cx: &InferCx) -> Option<crate::Shape> {
        match (self, slot) {
            (Passthrough::Dropout { .. }, 1) => cx.shape(0), // the mask
            _ => None,
        }
    }

    fn channels(&self, w: &mut Walk, id: NodeId, op: &Op) {
        keep_channels(w, id, op)
    }
}

/// Same-shape ops that mix values across channels or need per-tensor
/// parameters the channel analysis does not follow.
#[derive(Debug, Clone, PartialEq)]
pub struct SameShape;

impl SameShape {
    pub const OP_TYPES: &[&str] =
        &["Hardmax", "LayerNormalization", "LRN", "QuantizeLinear", "DequantizeLinear"];

    pub(crate) fn parse(_op: &Op) -> Result<SameShape, GraphError> {
        Ok(SameShape)
    }
}

impl Rules for SameShape {
    fn infer(&self, cx: &InferCx) -> Inferred {
        Inferred::shape(cx.shape(0))
    }
}

/// A broadcasting binary (or n-ary) op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinFn {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Max,
    Min,
    Sum,
    Mean,
    Where,
    Equal,
    Greater,
    Less,
    GreaterOrEqual,
    LessOrEqual,
    And,
    Or,
    Xor,
    Mod,
}

/// Numpy-broadcasting element-wise ops of two or more inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Binary {
    pub f: BinFn,
}

impl Binary {
    pub const OP_TYPES: &[&str] = &[
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Pow",
        "Max",
        "Min",
        "Sum",
        "Mean",
        "Where",
        "Equal",
        "Greater",
        "Less",
        "GreaterOrEqual",
        "LessOrEqual",
        "And",
        "Or",
        "Xor",
        "Mod",
    ];

    pub(crate) fn parse(op: &Op) -> Result<Binary, GraphError> {
        use BinFn::*;
        let f = match op.op_type.as_str() {
            "Add" => Add,
            "Sub" => Sub,
            "Mul" => Mul,
            "Div" => Div,
            "Pow" => Pow,
            "Max" => Max,
            "Min" => Min,
            "Sum" => Sum,
            "Mean" => Mean,
            "Where" => Where,
            "Equal" => Equal,
            "Greater" => Greater,
            "Less" => Less,
            "GreaterOrEqual" => GreaterOrEqual,
            "LessOrEqual" => LessOrEqual,
            "And" => And,
            "Or" => Or,
            "Xor" => Xor,
            _ => Mod,
        };
        Ok(Binary { f })
    }

    /// Whether the op combines its operands position by position, so their
    /// channels must be pruned together.
    fn couples(&self) -> bool {
        matches!(self.f, BinFn::Add | BinFn::Sub | BinFn::Mul | BinFn::Div | BinFn::Max | BinFn::Min)
    }
}

impl Rules for Binary {
    fn infer(&self, cx: &InferCx) -> Inferred {
        Inferred::shape(cx.all_shapes().and_then(|s| broadcast(&s)))
    }

    fn channels(&self, w: &mut Walk, id: NodeId, op: &Op) {
        if !self.couples() {
            return w.unknown(id, &format!("op `{}` ({}) is not understood by the channel analysis", op.label(), op.op_type));
        }
        w.couple(id, op);
    }
}

/// Channels pass through; every extra operand must be a scalar or a
/// per-channel constant.
fn keep_channels(w: &mut Walk, id: NodeId, op: &Op) {
    let ins = w.g.op_inputs(id);
    let x = ins.first().copied().flatten();
    let Some(l) = x.and_then(|x| w.lay.get(&x).cloned()) else { return w.unknown(id, "") };
    for (s, v) in ins.iter().enumerate().skip(1) {
        let Some(v) = *v else { continue };
        if !w.const_operand(id, s, v, &l, x) {
            return w.unknown(id, &format!("{} `{}` has an unsupported operand", op.op_type, op.label()));
        }
    }
    w.lay.insert(ValueRef(id, 0), l);
}
