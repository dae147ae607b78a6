//! Shape inference for the ops common in classifiers. A dimension that cannot
//! be derived stays [`Dim::Unknown`]: shapes are never guessed.
//!
//! Sources, in order: graph inputs and weights (their declared shapes), the op
//! rules below, and `graph.value_info` / `graph.output` declarations for values
//! the rules do not cover. Small integer constants are propagated too
//! (`Shape` → `Gather` → `Unsqueeze` → `Concat` → `Reshape`, as PyTorch's
//! exporter writes `flatten`).

use std::collections::HashMap;
use std::fmt;

use crate::graph::{Graph, NodeKind, Op, ValueRef};
use crate::onnx::{TypeProto, tensor_shape_proto, type_proto};

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
        let (out, konst) = if op.is_onnx() { rule(op, &shape_of, &const_of) } else { (None, None) };
        let found: Vec<(usize, Shape)> = op
            .outputs
            .iter()
            .enumerate()
            .filter_map(|(slot, name)| {
                let inferred = if slot == 0 { out.clone() } else { secondary(op, slot, &shape_of) };
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

type ShapeOf<'a> = dyn Fn(usize) -> Option<Shape> + 'a;
type ConstOf<'a> = dyn Fn(usize) -> Option<Vec<i64>> + 'a;

fn secondary(op: &Op, slot: usize, shape_of: &ShapeOf) -> Option<Shape> {
    match (op.op_type.as_str(), slot) {
        ("Dropout", 1) => shape_of(0), // the mask
        _ => None,
    }
}

const UNARY: &[&str] = &[
    "Relu",
    "LeakyRelu",
    "PRelu",
    "Sigmoid",
    "Tanh",
    "HardSigmoid",
    "HardSwish",
    "Clip",
    "Elu",
    "Selu",
    "Celu",
    "Softplus",
    "Softsign",
    "Gelu",
    "Erf",
    "Exp",
    "Log",
    "Neg",
    "Abs",
    "Sqrt",
    "Reciprocal",
    "Floor",
    "Ceil",
    "Round",
    "Sign",
    "Not",
    "Identity",
    "Cast",
    "Dropout",
    "BatchNormalization",
    "InstanceNormalization",
    "LayerNormalization",
    "LRN",
    "Softmax",
    "LogSoftmax",
    "Hardmax",
    "Mish",
    "ThresholdedRelu",
    "Sin",
    "Cos",
    "QuantizeLinear",
    "DequantizeLinear",
];

const BROADCAST: &[&str] = &[
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

fn rule(op: &Op, shape_of: &ShapeOf, const_of: &ConstOf) -> (Option<Shape>, Option<Vec<i64>>) {
    let t = op.op_type.as_str();
    if UNARY.contains(&t) {
        let k = if t == "Cast" || t == "Identity" { const_of(0) } else { None };
        return (shape_of(0), k);
    }
    if BROADCAST.contains(&t) {
        let mut shapes = Vec::new();
        for i in 0..op.n_inputs {
            match shape_of(i) {
                Some(s) => shapes.push(s),
                None => return (None, None),
            }
        }
        return (broadcast(&shapes), None);
    }
    match t {
        "Conv" | "MaxPool" | "AveragePool" | "LpPool" => (pool_like(op, shape_of), None),
        "ConvTranspose" => (conv_transpose(op, shape_of), None),
        "GlobalAveragePool" | "GlobalMaxPool" | "GlobalLpPool" => {
            let x = shape_of(0);
            (
                x.map(|x| x.iter().enumerate().map(|(i, d)| if i < 2 { d.clone() } else { Dim::Known(1) }).collect()),
                None,
            )
        }
        "Gemm" => {
            let (a, b) = match (shape_of(0), shape_of(1)) {
                (Some(a), Some(b)) if a.len() == 2 && b.len() == 2 => (a, b),
                _ => return (None, None),
            };
            let m = if op.attr_int("transA") == Some(1) { a[1].clone() } else { a[0].clone() };
            let n = if op.attr_int("transB") == Some(1) { b[0].clone() } else { b[1].clone() };
            (Some(vec![m, n]), None)
        }
        "MatMul" => (shape_of(0).zip(shape_of(1)).and_then(|(a, b)| matmul(&a, &b)), None),
        "Flatten" => {
            let Some(x) = shape_of(0) else { return (None, None) };
            let r = x.len() as i64;
            let mut axis = op.attr_int("axis").unwrap_or(1);
            if axis < 0 {
                axis += r;
            }
            if !(0..=r).contains(&axis) {
                return (None, None);
            }
            let (a, b) = x.split_at(axis as usize);
            (Some(vec![product(a), product(b)]), None)
        }
        "Reshape" => {
            let (Some(target), x) = (const_of(1), shape_of(0)) else { return (None, None) };
            (reshape(x.as_deref(), &target, op.attr_int("allowzero") == Some(1)), None)
        }
        "Transpose" => {
            let Some(x) = shape_of(0) else { return (None, None) };
            let perm: Vec<i64> = match op.attr_ints("perm") {
                Some(p) => p.to_vec(),
                None => (0..x.len() as i64).rev().collect(),
            };
            if perm.len() != x.len() || perm.iter().any(|&p| p < 0 || p as usize >= x.len()) {
                return (None, None);
            }
            (Some(perm.iter().map(|&p| x[p as usize].clone()).collect()), None)
        }
        "Squeeze" | "Unsqueeze" => {
            let axes = op.attr_ints("axes").map(<[i64]>::to_vec).or_else(|| const_of(1));
            let x = shape_of(0);
            let out = x.as_ref().and_then(|x| squeeze(x, axes.as_deref(), t == "Unsqueeze"));
            let k = if t == "Unsqueeze" && axes.as_deref() == Some(&[0]) { const_of(0) } else { None };
            (out, k)
        }
        "Concat" => {
            let mut shapes = Vec::new();
            let mut consts = Vec::new();
            for i in 0..op.n_inputs {
                match shape_of(i) {
                    Some(s) => shapes.push(s),
                    None => return (None, None),
                }
                consts.push(const_of(i));
            }
            let k = consts.into_iter().collect::<Option<Vec<Vec<i64>>>>().map(|v| v.concat());
            (concat(&shapes, op.attr_int("axis").unwrap_or(0)), k)
        }
        "Constant" => {
            let tensor = op.attr("value").and_then(|a| a.t.as_ref()).map(crate::Tensor::from_proto_ref);
            match tensor {
                Some(t) => {
                    let shape = t.dims().iter().map(|&d| Dim::Known(d.max(0) as u64)).collect();
                    let k = if t.numel().is_ok_and(|n| n <= 64) { t.to_i64().ok() } else { None };
                    (Some(shape), k)
                }
                None => match op.attr("value_ints") {
                    Some(a) => (Some(vec![Dim::Known(a.ints.len() as u64)]), Some(a.ints.clone())),
                    None => op.attr("value_int").map_or((None, None), |a| (Some(vec![]), Some(vec![a.i]))),
                },
            }
        }
        "Shape" => {
            let Some(x) = shape_of(0) else { return (None, None) };
            let r = x.len() as i64;
            let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let start = clamp(op.attr_int("start").unwrap_or(0));
            let end = clamp(op.attr_int("end").unwrap_or(r));
            let dims = if start < end { &x[start..end] } else { &x[0..0] };
            let k = dims.iter().map(|d| d.known().map(|v| v as i64)).collect::<Option<Vec<i64>>>();
            (Some(vec![Dim::Known(dims.len() as u64)]), k)
        }
        "Gather" => {
            let (Some(data), Some(idx)) = (shape_of(0), shape_of(1)) else { return (None, None) };
            let r = data.len() as i64;
            let mut axis = op.attr_int("axis").unwrap_or(0);
            if axis < 0 {
                axis += r;
            }
            if !(0..r).contains(&axis) {
                return (None, None);
            }
            let a = axis as usize;
            let out: Shape = data[..a].iter().chain(idx.iter()).chain(data[a + 1..].iter()).cloned().collect();
            let k = match (const_of(0), const_of(1)) {
                (Some(d), Some(i)) if a == 0 && data.len() == 1 => i
                    .iter()
                    .map(|&j| {
                        let j = if j < 0 { j + d.len() as i64 } else { j };
                        d.get(usize::try_from(j).ok()?).copied()
                    })
                    .collect(),
                _ => None,
            };
            (Some(out), k)
        }
        _ => (None, None),
    }
}

fn product(dims: &[Dim]) -> Dim {
    if let [single] = dims {
        return single.clone(); // keeps a symbolic batch dimension
    }
    dims.iter().try_fold(1u64, |acc, d| d.known().and_then(|v| acc.checked_mul(v))).map_or(Dim::Unknown, Dim::Known)
}

/// Numpy broadcasting. Unknown when it cannot be decided.
fn broadcast(shapes: &[Shape]) -> Option<Shape> {
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

fn reshape(x: Option<&[Dim]>, target: &[i64], allowzero: bool) -> Option<Shape> {
    let mut out: Shape = Vec::with_capacity(target.len());
    let mut infer_at = None;
    for (i, &t) in target.iter().enumerate() {
        out.push(match t {
            0 if !allowzero => x.and_then(|x| x.get(i)).cloned().unwrap_or(Dim::Unknown),
            -1 => {
                if infer_at.replace(i).is_some() {
                    return None;
                }
                Dim::Unknown
            }
            t if t >= 0 => Dim::Known(t as u64),
            _ => return None,
        });
    }
    if let (Some(i), Some(x)) = (infer_at, x) {
        let total = product(x).known();
        let rest: Vec<Dim> = out.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, d)| d.clone()).collect();
        if let (Some(total), Dim::Known(rest)) = (total, product(&rest))
            && rest > 0
            && total % rest == 0
        {
            out[i] = Dim::Known(total / rest);
        }
    }
    Some(out)
}

fn squeeze(x: &Shape, axes: Option<&[i64]>, unsqueeze: bool) -> Option<Shape> {
    if unsqueeze {
        let axes = axes?;
        let r = (x.len() + axes.len()) as i64;
        let mut norm: Vec<usize> = Vec::new();
        for &a in axes {
            let a = if a < 0 { a + r } else { a };
            if !(0..r).contains(&a) {
                return None;
            }
            norm.push(a as usize);
        }
        let mut rest = x.iter();
        return (0..r as usize)
            .map(|i| if norm.contains(&i) { Some(Dim::Known(1)) } else { rest.next().cloned() })
            .collect();
    }
    match axes {
        Some(axes) => {
            let r = x.len() as i64;
            let norm: Vec<usize> = axes.iter().map(|&a| if a < 0 { a + r } else { a } as usize).collect();
            Some(x.iter().enumerate().filter(|(i, _)| !norm.contains(i)).map(|(_, d)| d.clone()).collect())
        }
        None if x.iter().all(|d| d.known().is_some()) => {
            Some(x.iter().filter(|d| **d != Dim::Known(1)).cloned().collect())
        }
        None => None,
    }
}

fn concat(shapes: &[Shape], axis: i64) -> Option<Shape> {
    let first = shapes.first()?;
    let r = first.len() as i64;
    let axis = if axis < 0 { axis + r } else { axis };
    if !(0..r).contains(&axis) || shapes.iter().any(|s| s.len() != first.len()) {
        return None;
    }
    let a = axis as usize;
    let mut out = first.clone();
    out[a] = product_sum(shapes.iter().map(|s| &s[a]));
    Some(out)
}

fn product_sum<'a>(dims: impl Iterator<Item = &'a Dim>) -> Dim {
    let mut total = 0u64;
    for d in dims {
        match d.known() {
            Some(v) => total += v,
            None => return Dim::Unknown,
        }
    }
    Dim::Known(total)
}

/// Conv and pooling output: `[N, C_out, spatial...]`.
fn pool_like(op: &Op, shape_of: &ShapeOf) -> Option<Shape> {
    let x = shape_of(0)?;
    if x.len() < 3 {
        return None;
    }
    let nsp = x.len() - 2;
    let (c_out, kernel): (Dim, Vec<i64>) = if op.op_type == "Conv" {
        let w = shape_of(1)?;
        if w.len() != x.len() {
            return None;
        }
        let k = match op.attr_ints("kernel_shape") {
            Some(k) => k.to_vec(),
            None => w[2..].iter().map(|d| d.known().map(|v| v as i64)).collect::<Option<_>>()?,
        };
        (w[0].clone(), k)
    } else {
        (x[1].clone(), op.attr_ints("kernel_shape")?.to_vec())
    };
    if kernel.len() != nsp {
        return None;
    }
    let strides = op.attr_ints("strides").map(<[i64]>::to_vec).unwrap_or(vec![1; nsp]);
    let dil = op.attr_ints("dilations").map(<[i64]>::to_vec).unwrap_or(vec![1; nsp]);
    let pads = op.attr_ints("pads").map(<[i64]>::to_vec).unwrap_or(vec![0; 2 * nsp]);
    let auto_pad = op.attr_str("auto_pad").unwrap_or("NOTSET");
    let ceil = op.attr_int("ceil_mode") == Some(1);
    if strides.len() != nsp || dil.len() != nsp || pads.len() != 2 * nsp {
        return None;
    }
    let mut out = vec![x[0].clone(), c_out];
    for i in 0..nsp {
        let d = match x[2 + i].known() {
            None => Dim::Unknown,
            Some(n) => {
                let n = n as i64;
                let s = strides[i].max(1);
                let ek = dil[i] * (kernel[i] - 1) + 1;
                let v = match auto_pad {
                    "SAME_UPPER" | "SAME_LOWER" => (n + s - 1) / s,
                    "VALID" => (n - ek) / s + 1,
                    _ => {
                        let num = n + pads[i] + pads[i + nsp] - ek;
                        if ceil {
                            let mut o = (num + s - 1).div_euclid(s) + 1;
                            // the last window must start inside the (left-padded) input
                            if (o - 1) * s >= n + pads[i] {
                                o -= 1;
                            }
                            o
                        } else {
                            num.div_euclid(s) + 1
                        }
                    }
                };
                if v < 0 { return None } else { Dim::Known(v as u64) }
            }
        };
        out.push(d);
    }
    Some(out)
}

fn conv_transpose(op: &Op, shape_of: &ShapeOf) -> Option<Shape> {
    let x = shape_of(0)?;
    let w = shape_of(1)?;
    if x.len() < 3 || w.len() != x.len() {
        return None;
    }
    let nsp = x.len() - 2;
    let group = op.attr_int("group").unwrap_or(1).max(1) as u64;
    let c_out = w[1].known().map_or(Dim::Unknown, |m| Dim::Known(m * group));
    if let Some(os) = op.attr_ints("output_shape") {
        let sp = &os[os.len().saturating_sub(nsp)..];
        let mut out = vec![x[0].clone(), c_out];
        out.extend(sp.iter().map(|&v| Dim::Known(v.max(0) as u64)));
        return Some(out);
    }
    let kernel: Vec<i64> = match op.attr_ints("kernel_shape") {
        Some(k) => k.to_vec(),
        None => w[2..].iter().map(|d| d.known().map(|v| v as i64)).collect::<Option<_>>()?,
    };
    let strides = op.attr_ints("strides").map(<[i64]>::to_vec).unwrap_or(vec![1; nsp]);
    let dil = op.attr_ints("dilations").map(<[i64]>::to_vec).unwrap_or(vec![1; nsp]);
    let pads = op.attr_ints("pads").map(<[i64]>::to_vec).unwrap_or(vec![0; 2 * nsp]);
    let opad = op.attr_ints("output_padding").map(<[i64]>::to_vec).unwrap_or(vec![0; nsp]);
    if kernel.len() != nsp || strides.len() != nsp || dil.len() != nsp || pads.len() != 2 * nsp || opad.len() != nsp {
        return None;
    }
    let auto_pad = op.attr_str("auto_pad").unwrap_or("NOTSET");
    let mut out = vec![x[0].clone(), c_out];
    for i in 0..nsp {
        out.push(match x[2 + i].known() {
            None => Dim::Unknown,
            Some(n) => {
                let n = n as i64;
                let v = match auto_pad {
                    "SAME_UPPER" | "SAME_LOWER" => n * strides[i],
                    _ => strides[i] * (n - 1) + opad[i] + dil[i] * (kernel[i] - 1) + 1 - pads[i] - pads[i + nsp],
                };
                if v < 0 { return None } else { Dim::Known(v as u64) }
            }
        });
    }
    Some(out)
}
