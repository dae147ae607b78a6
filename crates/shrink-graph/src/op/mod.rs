//! The typed op layer: what the project knows about each ONNX op, in one
//! place. [`parse`] reads a node's stored attributes into an [`OpKind`] (a
//! view derived on demand, never stored, so a round trip stays byte-exact),
//! and each op family owns, in its own file:
//!
//! - attribute parsing with the ONNX defaults and checked arithmetic (a
//!   crafted `kernel_shape`, `pads` or `dilations` is an error naming the
//!   node, never an overflow);
//! - shape inference and small-constant propagation ([`crate::infer_shapes`]);
//! - multiply-accumulates ([`crate::summarize`]);
//! - the channel-coupling rule ([`crate::groups`]);
//! - which input is the weight and which of its axes holds the output
//!   channels ([`OpKind::weight_slots`], [`OpKind::weight_out_axis`]).
//!
//! Shape inference, MACs, channel groups, weight selection, the int8 export,
//! low-rank factorisation, BatchNorm folding and the trainer all read this
//! module; none of them matches on `op_type` strings for that knowledge
//! (a tidy test checks it).
//!
//! Adding an op family: one file here defining its structs (each with
//! `OP_TYPES`, `parse` and an [`Rules`] impl) and one line in the
//! `families!` list below. An op type no family claims parses to `None`:
//! shapes stay unknown, channel analysis blocks it, the trainer refuses it.

use crate::error::GraphError;
use crate::graph::{NodeId, Op, ValueRef};
use crate::groups::Walk;
use crate::shape::{Dim, Shape};

/// The rules one op family teaches the rest of the project. Every method
/// has a default meaning "nothing known".
pub(crate) trait Rules {
    /// Shape of output 0 and, for small integer tensors, its value.
    fn infer(&self, _cx: &InferCx) -> Inferred {
        Inferred::default()
    }

    /// Shape of output `slot` > 0.
    fn infer_extra(&self, _slot: usize, _cx: &InferCx) -> Option<Shape> {
        None
    }

    /// Multiply-accumulates of one run, when every shape it needs is known.
    fn macs(&self, _cx: &MacCx) -> Option<u64> {
        None
    }

    /// What the op does with the channels of its inputs (see [`crate::groups`]).
    fn channels(&self, w: &mut Walk, id: NodeId, op: &Op) {
        w.unknown(id, &format!("op `{}` ({}) is not understood by the channel analysis", op.label(), op.op_type));
    }
}

/// What shape inference knows about an op's inputs.
pub(crate) struct InferCx<'a> {
    pub n_inputs: usize,
    pub n_outputs: usize,
    pub shape_of: &'a dyn Fn(usize) -> Option<Shape>,
    pub const_of: &'a dyn Fn(usize) -> Option<Vec<i64>>,
}

impl InferCx<'_> {
    pub fn shape(&self, i: usize) -> Option<Shape> {
        (self.shape_of)(i)
    }

    pub fn konst(&self, i: usize) -> Option<Vec<i64>> {
        (self.const_of)(i)
    }

    /// Every input's shape, or `None` when one is unknown.
    pub fn all_shapes(&self) -> Option<Vec<Shape>> {
        (0..self.n_inputs).map(|i| self.shape(i)).collect()
    }
}

/// The result of [`Rules::infer`] for output 0.
#[derive(Debug, Default, Clone)]
pub(crate) struct Inferred {
    pub shape: Option<Shape>,
    pub konst: Option<Vec<i64>>,
}

impl Inferred {
    pub fn shape(shape: Option<Shape>) -> Inferred {
        Inferred { shape, konst: None }
    }
}

/// What MAC counting knows: the known dims of the inputs and of output 0.
pub(crate) struct MacCx<'a> {
    pub input: &'a dyn Fn(usize) -> Option<Vec<u64>>,
    pub output: Option<Vec<u64>>,
}

/// Product of dims, `None` on overflow.
pub(crate) fn product(dims: &[u64]) -> Option<u64> {
    dims.iter().try_fold(1u64, |a, &b| a.checked_mul(b))
}

/// An attribute error naming the node.
pub(crate) fn bad(op: &Op, reason: impl Into<String>) -> GraphError {
    GraphError::Attribute { node: op.label(), op: op.op_type.clone(), reason: reason.into() }
}

/// Normalises a possibly negative `axis` for `rank`, `None` when out of range.
pub fn norm_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis.checked_add(r)? } else { axis };
    (0..r).contains(&a).then_some(a as usize)
}

/// Writes the [`OpKind`] enum, [`parse`] and [`OP_TYPES`] from the list of
/// families: `file => [Struct, ...]`. Each struct has `OP_TYPES: &[&str]`,
/// `fn parse(&Op) -> Result<Self, GraphError>` and implements [`Rules`].
macro_rules! families {
    ($($file:ident => [$($ty:ident),+ $(,)?]),+ $(,)?) => {
        $(pub mod $file; pub use $file::{$($ty),+};)+

        /// The typed view of one op: one variant per op struct.
        #[derive(Debug, Clone, PartialEq)]
        pub enum OpKind {
            $($($ty($ty),)+)+
        }

        /// Every op type the layer parses.
        pub const OP_TYPES: &[&[&str]] = &[$($($ty::OP_TYPES,)+)+];

        /// The typed view of `op`: `Ok(None)` for an op type no family
        /// knows (or another domain), an error naming the node for
        /// attributes a family cannot honour.
        pub fn parse(op: &Op) -> Result<Option<OpKind>, GraphError> {
            if !op.is_onnx() {
                return Ok(None);
            }
            let t = op.op_type.as_str();
            $($(if $ty::OP_TYPES.contains(&t) {
                return $ty::parse(op).map(|k| Some(OpKind::$ty(k)));
            })+)+
            Ok(None)
        }

        impl OpKind {
            pub(crate) fn rules(&self) -> &dyn Rules {
                match self {
                    $($(OpKind::$ty(k) => k,)+)+
                }
            }
        }
    };
}

families! {
    conv => [Conv, ConvTranspose, Pool, GlobalPool],
    linear => [Gemm, MatMul],
    norm => [BatchNorm, InstanceNorm],
    elementwise => [Activation, Binary, Passthrough, SameShape],
    shape_ops => [Flatten, Reshape, Transpose, Squeeze, Concat, Split, Slice, ShapeOf, Gather, Constant],
    reduce => [Reduce, Softmax],
    pad => [Pad],
}

pub use conv::{AutoPad, PoolKind, Window};
pub use elementwise::{Act, BinFn};
pub use reduce::ReduceFn;
pub use shape_ops::{SliceAttrs, SliceAxis};

/// The typed view of `op`, or `None` when it is unknown or its attributes
/// cannot be honoured (for analyses that treat both alike).
pub fn kind(op: &Op) -> Option<OpKind> {
    parse(op).ok().flatten()
}

/// Whether `op` is an ONNX op of any op type the layer parses.
pub fn is_known_type(op_type: &str) -> bool {
    OP_TYPES.iter().any(|ts| ts.contains(&op_type))
}

/// Whether `op_type` names a layer op (see [`OpKind::is_layer`]): what a
/// user may write where a pipeline key takes a layer's op type.
pub fn is_layer_type(op_type: &str) -> bool {
    [Conv::OP_TYPES, ConvTranspose::OP_TYPES, Gemm::OP_TYPES, MatMul::OP_TYPES].iter().any(|t| t.contains(&op_type))
}

impl OpKind {
    /// Ops whose cost is multiply-accumulates with a weight: Conv,
    /// ConvTranspose, Gemm, MatMul (the rows of the layer table).
    pub fn is_layer(&self) -> bool {
        matches!(self, OpKind::Conv(_) | OpKind::ConvTranspose(_) | OpKind::Gemm(_) | OpKind::MatMul(_))
    }

    /// The input slots that may hold the layer's weight, in the order to
    /// try: `[1]` for Conv, ConvTranspose and Gemm; `[1, 0]` for MatMul
    /// (either operand can be the constant). Empty for other ops.
    pub fn weight_slots(&self) -> &'static [usize] {
        match self {
            OpKind::Conv(_) | OpKind::ConvTranspose(_) | OpKind::Gemm(_) => &[1],
            OpKind::MatMul(_) => &[1, 0],
            _ => &[],
        }
    }

    /// The axis of the weight at input `slot` (of rank `rank`) that indexes
    /// the op's output channels: Conv `[M, C/g, ...]` axis 0; ConvTranspose
    /// `[C, M/g, ...]` axis 1; Gemm's B axis 0 with `transB = 1`, else 1,
    /// its A axis 1 with `transA = 1`, else 0; MatMul's right operand
    /// `[.., K, N]` its last axis, its left operand axis 0.
    pub fn weight_out_axis(&self, slot: usize, rank: usize) -> usize {
        match self {
            OpKind::Gemm(g) if slot == 1 => usize::from(!g.trans_b),
            OpKind::Gemm(g) => usize::from(g.trans_a),
            OpKind::MatMul(_) if slot == 1 => rank.saturating_sub(1),
            OpKind::ConvTranspose(_) => 1.min(rank.saturating_sub(1)),
            _ => 0,
        }
    }

    /// The axis of the weight at input 1 that indexes the op's input
    /// channels or features: Conv axis 1, ConvTranspose axis 0, Gemm
    /// axis 1 with `transB = 1` else 0, MatMul `rank - 2`.
    pub fn weight_in_axis(&self, rank: usize) -> Option<usize> {
        match self {
            OpKind::Conv(_) => Some(1),
            OpKind::ConvTranspose(_) => Some(0),
            OpKind::Gemm(g) => Some(usize::from(g.trans_b)),
            OpKind::MatMul(_) => Some(rank.saturating_sub(2)),
            _ => None,
        }
    }
}

/// Whether `op` is an ONNX `Constant` (a weight to analysis, see [`crate::Graph::weight`]).
pub fn is_constant(op: &Op) -> bool {
    op.is_onnx() && Constant::OP_TYPES.contains(&op.op_type.as_str())
}

/// Reads `name` as a list of positive integers (`kernel_shape`, `strides`,
/// `dilations`): `None` when absent, an error naming the node when an
/// entry is below `min`.
pub(crate) fn ints_at_least(op: &Op, name: &str, min: i64) -> Result<Option<Vec<u64>>, GraphError> {
    match op.attr_ints(name) {
        None => Ok(None),
        Some(v) if v.iter().all(|&x| x >= min) => Ok(Some(v.iter().map(|&x| x as u64).collect())),
        Some(v) => Err(bad(op, format!("{name} {v:?}: every entry must be at least {min}"))),
    }
}

/// `Dim::Known` of a checked `u64`, else unknown.
pub(crate) fn known(v: Option<u64>) -> Dim {
    v.map_or(Dim::Unknown, Dim::Known)
}

/// Every value the op reads, for the channel rules.
pub(crate) fn input(ins: &[Option<ValueRef>], slot: usize) -> Option<ValueRef> {
    ins.get(slot).copied().flatten()
}
