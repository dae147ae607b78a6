//! What `shrink info` prints and every stage report builds on: inputs and
//! outputs, opsets, an op histogram, and a per-layer table of weights,
//! parameters, bytes and MACs.
//!
//! Definitions:
//! - a *weight* is an initializer or the `value` tensor of a `Constant` op;
//! - a *parameter* is an element of a weight whose type is not int32/int64
//!   (those hold shapes, axes and indices); every weight counts in the bytes;
//! - a *layer* is an op that reads a parameter or does MACs;
//! - *MACs* are multiply-accumulates of Conv, ConvTranspose, Gemm and MatMul,
//!   computed from inferred shapes with every symbolic or unknown leading
//!   (batch) dimension of the graph inputs set to 1: MACs per sample. A layer
//!   whose shapes cannot be derived has `macs: None`, not a guess.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::graph::{Model, NodeKind, ValueRef};
use crate::shape::{Dim, Shape, declared_shape, infer_shapes};
use crate::tensor::{DataType, Tensor};

/// A graph input or output.
#[derive(Debug, Clone, Serialize)]
pub struct ValueSummary {
    pub name: String,
    pub dtype: String,
    /// Dimensions as text: a number, a symbol, or `?`.
    pub shape: Option<Vec<String>>,
}

/// One layer: an op with parameters or MACs.
#[derive(Debug, Clone, Serialize)]
pub struct LayerInfo {
    pub name: String,
    pub op: String,
    pub weight_shapes: Vec<Vec<i64>>,
    pub params: u64,
    pub bytes: u64,
    pub macs: Option<u64>,
    /// A multiply-accumulate layer (Conv, ConvTranspose, Gemm, MatMul): its
    /// MACs are expected to be known.
    #[serde(skip)]
    pub is_layer: bool,
}

/// The whole model at a glance.
#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    pub ir_version: i64,
    pub producer: String,
    pub opsets: Vec<(String, i64)>,
    pub inputs: Vec<ValueSummary>,
    pub outputs: Vec<ValueSummary>,
    /// Op type → count, most frequent first.
    pub op_histogram: Vec<(String, usize)>,
    pub layers: Vec<LayerInfo>,
    pub nodes: usize,
    /// Parameters of all weights, each weight counted once.
    pub params: u64,
    /// Non-zero parameters.
    pub nonzero_params: u64,
    /// Bytes of all weights at their stored types.
    pub weight_bytes: u64,
    /// Sum of the layers' MACs that are known.
    pub macs: u64,
    /// Layers whose MACs could not be derived (so `macs` is a lower bound when > 0).
    pub macs_unknown: usize,
}

fn is_param(t: &Tensor) -> bool {
    !matches!(t.dtype(), DataType::Int64 | DataType::Int32 | DataType::String)
}

fn shape_text(s: &Shape) -> Vec<String> {
    s.iter().map(ToString::to_string).collect()
}

/// Summarises a model (see the module docs for the definitions).
pub fn summarize(model: &Model) -> ModelSummary {
    let g = &model.graph;
    // Per-sample shapes: symbolic/unknown leading dims of real inputs become 1.
    let mut overrides = HashMap::new();
    for id in g.real_inputs() {
        if let NodeKind::Input(vi) = g.node(id)
            && let Some(mut s) = declared_shape(vi.r#type.as_ref())
        {
            if let Some(d0) = s.first_mut()
                && d0.known().is_none()
            {
                *d0 = Dim::Known(1);
            }
            overrides.insert(vi.name.clone(), s);
        }
    }
    let shapes = infer_shapes(g, &overrides);
    let declared = infer_shapes(g, &HashMap::new());

    let value_summary = |v: ValueRef, tp: Option<&crate::onnx::TypeProto>| {
        let dtype = match tp.and_then(|t| t.value.as_ref()) {
            Some(crate::onnx::type_proto::Value::TensorType(t)) => DataType::try_from(t.elem_type)
                .map(|d| d.as_str_name().to_lowercase())
                .unwrap_or_else(|_| format!("type {}", t.elem_type)),
            Some(_) => "non-tensor".into(),
            None => "?".into(),
        };
        ValueSummary { name: g.value_name(v).to_string(), dtype, shape: declared.get(v).map(shape_text) }
    };
    let inputs = g
        .real_inputs()
        .map(|id| match g.node(id) {
            NodeKind::Input(vi) => value_summary(ValueRef(id, 0), vi.r#type.as_ref()),
            _ => unreachable!(),
        })
        .collect();
    let outputs = g
        .outputs()
        .iter()
        .filter_map(|&id| {
            let v = g.input(id, 0)?;
            match g.node(id) {
                NodeKind::Output(vi) => Some(value_summary(v, vi.r#type.as_ref())),
                _ => None,
            }
        })
        .collect();

    let mut hist: BTreeMap<String, usize> = BTreeMap::new();
    let mut layers = Vec::new();
    let (mut params, mut nonzero, mut bytes) = (0u64, 0u64, 0u64);
    let mut counted: HashSet<ValueRef> = HashSet::new();
    let mut count_weight = |v: ValueRef, t: &Tensor| {
        if counted.insert(v) {
            bytes += t.nbytes();
            if is_param(t) {
                let n = t.numel().unwrap_or(0);
                params += n;
                nonzero += t.to_f32().map(|x| x.iter().filter(|&&x| x != 0.0).count() as u64).unwrap_or(n);
            }
        }
    };
    for (id, t) in g.weights() {
        count_weight(ValueRef(id, 0), t);
    }
    for id in g.ops() {
        let op = g.op(id).unwrap();
        let key = if op.is_onnx() { op.op_type.clone() } else { format!("{}:{}", op.domain, op.op_type) };
        *hist.entry(key).or_default() += 1;
        if crate::op::is_constant(op) {
            if let Some(t) = g.weight(ValueRef(id, 0)) {
                count_weight(ValueRef(id, 0), t);
            }
            continue;
        }
        let mut info = LayerInfo {
            name: op.label(),
            op: op.op_type.clone(),
            weight_shapes: Vec::new(),
            params: 0,
            bytes: 0,
            macs: None,
            is_layer: false,
        };
        for v in g.op_inputs(id).into_iter().flatten() {
            if let Some(t) = g.weight(v)
                && is_param(t)
            {
                info.weight_shapes.push(t.dims().to_vec());
                info.params += t.numel().unwrap_or(0);
                info.bytes += t.nbytes();
            }
        }
        let kind = crate::op::kind(op);
        let known = |s: &Shape| s.iter().map(Dim::known).collect::<Option<Vec<u64>>>();
        let input = |i: usize| g.input(id, i).and_then(|v| shapes.get(v)).and_then(known);
        let cx = crate::op::MacCx { input: &input, output: shapes.get(ValueRef(id, 0)).and_then(known) };
        info.macs = kind.as_ref().and_then(|k| k.rules().macs(&cx));
        let does_macs = kind.as_ref().is_some_and(crate::op::OpKind::is_layer);
        info.is_layer = does_macs;
        if info.params > 0 || does_macs {
            layers.push(info);
        }
    }
    let mut op_histogram: Vec<(String, usize)> = hist.into_iter().collect();
    op_histogram.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let macs_unknown = layers.iter().filter(|l| l.macs.is_none() && l.is_layer).count();
    ModelSummary {
        ir_version: model.meta.ir_version,
        producer: format!("{} {}", model.meta.producer_name, model.meta.producer_version).trim().to_string(),
        opsets: model
            .meta
            .opset_import
            .iter()
            .map(|o| (if o.domain.is_empty() { "ai.onnx".to_string() } else { o.domain.clone() }, o.version))
            .collect(),
        inputs,
        outputs,
        op_histogram,
        macs: layers.iter().filter_map(|l| l.macs).sum(),
        macs_unknown,
        layers,
        nodes: g.ops().len(),
        params,
        nonzero_params: nonzero,
        weight_bytes: bytes,
    }
}
