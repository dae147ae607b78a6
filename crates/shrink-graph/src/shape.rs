//! Shape inference: the driver. Each op's rule lives with its family in
//! [`crate::op`]. A dimension that cannot be derived stays [`Dim::Unknown`]:
//! shapes are never guessed.
//!
//! Sources, in order: graph inputs and weights (their declared shapes), the op
//! rules, and `graph.value_info` / `graph.output` declarations for values
//! the rules do not cover. Small integer constants are propagated too
//! (`Shape` → `Gather` → `Unsqueeze` → `Concat` → `Reshape`, as PyTorch's
//! exporter writes `flatten`).

use std::collections::HashMap;
use std::fmt;

use crate::graph::{Graph, NodeKind, ValueRef};
use crate::onnx::{TypeProto, tensor_shape_proto, type_proto};
use crate::op::{InferCx, Inferred};

/// One dimension.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Dim {
    Known(u64),
    /// A named symbolic dimension (`batch`, `N`).
    Sym(String),
    Unknown,
}

impl Dim {
    pub fn known(&self) -> Option<u64> {
        match self {
            Dim::Known(n) => Some(*n),
            _ => None,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Known(n) => write!(f, "{n}"),
            Dim::Sym(s) => write!(f, "{s}"),
            Dim::Unknown => write!(f, "?"),
        }
    }
}

/// A tensor shape (rank known).
pub type Shape = Vec<Dim>;

/// Shapes of every value whose rank could be derived.
#[derive(Debug, Default, Clone)]
pub struct Shapes {
    pub shapes: HashMap<ValueRef, Shape>,
    /// Values of small int64 tensors known at analysis time.
    consts: HashMap<ValueRef, Vec<i64>>,
}

impl Shapes {
    pub fn get(&self, v: ValueRef) -> Option<&Shape> {
        self.shapes.get(&v)
    }
}

/// The shape a `TypeProto` declares, if it is a tensor with a shape.
pub fn declared_shape(tp: Option<&TypeProto>) -> Option<Shape> {
    let Some(type_proto::Value::TensorType(t)) = tp.and_then(|t| t.value.as_ref()) else { return None };
    let shape = t.shape.as_ref()?;
    Some(
        shape
            .dim
            .iter()
            .map(|d| match &d.value {
                Some(tensor_shape_proto::dimension::Value::DimValue(v)) if *v >= 0 => Dim::Known(*v as u64),
                Some(tensor_shape_proto::dimension::Value::DimParam(p)) if !p.is_empty() => Dim::Sym(p.clone()),
                _ => Dim::Unknown,
            })
            .collect(),
    )
}

/// Infers shapes, with `overrides` replacing the declared shape of named graph inputs.
pub fn infer_shapes(graph: &Graph, overrides: &HashMap<String, Shape>) -> Shapes {
    let mut s = Shapes::default();
    let declared: HashMap<&str, &TypeProto> = graph
        .value_info
        .iter()
        .chain(graph.outputs().iter().filter_map(|&o| match graph.node(o) {
            NodeKind::Output(vi) => Some(vi),
            _ => None,
        }))
        .filter_map(|vi| vi.r#type.as_ref().map(|t| (vi.name.as_str(), t)))
        .collect();
    for id in graph.node_ids() {
        let v = ValueRef(id, 0);
        match graph.node(id) {
            NodeKind::Input(vi) => {
                let shape = overrides.get(&vi.name).cloned().or_else(|| declared_shape(vi.r#type.as_ref()));
                if let Some(shape) = shape {
                    s.shapes.insert(v, shape);
                }
            }
            NodeKind::Weight(w) => {
                s.shapes.insert(v, w.tensor.dims().iter().map(|&d| Dim::Known(d.max(0) as u64)).collect());
                if w.tensor.numel().is_ok_and(|n| n <= 64)
                    && let Ok(vals) = w.tensor.to_i64()
                {
                    s.consts.insert(v, vals);
                }
            }
            _ => {}
        }
    }
    for id in graph.ops() {
        let op = graph.op(id).unwrap();
        let ins: Vec<Option<ValueRef>> = graph.op_inputs(id);
        let shape_of = |i: usize| ins.get(i).copied().flatten().and_then(|v| s.shapes.get(&v)).cloned();
        let const_of = |i: usize| ins.get(i).copied().flatten().and_then(|v| s.consts.get(&v)).cloned();
        let cx =
            InferCx { n_inputs: op.n_inputs, n_outputs: op.outputs.len(), shape_of: &shape_of, const_of: &const_of };
        let kind = crate::op::kind(op);
        let rules = kind.as_ref().map(|k| k.rules());
        let Inferred { shape: out, konst } = rules.map(|r| r.infer(&cx)).unwrap_or_default();
        let found: Vec<(usize, Shape)> = op
            .outputs
            .iter()
            .enumerate()
            .filter_map(|(slot, name)| {
                let inferred = if slot == 0 { out.clone() } else { rules.and_then(|r| r.infer_extra(slot, &cx)) };
                let shape = inferred.or_else(|| declared.get(name.as_str()).and_then(|t| declared_shape(Some(t))));
                shape.map(|sh| (slot, sh))
            })
            .collect();
        if let Some(k) = konst {
            s.consts.insert(ValueRef(id, 0), k);
        }
        for (slot, shape) in found {
            s.shapes.insert(ValueRef(id, slot), shape);
        }
    }
    s
}

pub(crate) fn dim_product(dims: &[Dim]) -> Dim {
    if let [single] = dims {
        return single.clone(); // keeps a symbolic batch dimension
    }
    dims.iter().try_fold(1u64, |acc, d| d.known().and_then(|v| acc.checked_mul(v))).map_or(Dim::Unknown, Dim::Known)
}

/// Numpy broadcasting. Unknown when it cannot be decided.
pub(crate) fn broadcast(shapes: &[Shape]) -> Option<Shape> {
    let rank = shapes.iter().map(Vec::len).max()?;
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let mut d = Dim::Known(1);
        for s in shapes {
            let off = rank - s.len();
            if i < off {
                continue;
            }
            let x = &s[i - off];
            d = match (&d, x) {
                (Dim::Known(1), x) => x.clone(),
                (_, Dim::Known(1)) => d,
                (a, b) if a == b => d,
                (Dim::Known(_), Dim::Known(_)) => return None, // incompatible
                (Dim::Known(_), _) => d,                       // the other side must broadcast to it
                (_, Dim::Known(_)) => x.clone(),
                _ => Dim::Unknown,
            };
        }
        out.push(d);
    }
    Some(out)
}
