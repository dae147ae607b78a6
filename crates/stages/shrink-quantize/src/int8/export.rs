//! The graph rewrites of each export form. Every rewrite keeps the model's
//! interface: a replaced op's output name moves to the last new node, so
//! consumers, graph outputs and `value_info` stay valid.

use std::collections::HashMap;

use shrink_graph::builder::attr_int;
use shrink_graph::op::{self, OpKind};
use shrink_graph::rewrite::fresh_name;
use shrink_graph::{DataType, Graph, GraphError, NodeId, Op, Tensor, ValueRef};

use crate::common::QParams;
use crate::int8::calib::ActQ;
use crate::int8::params::{ActType, Form};

/// Op types a quantised tensor may flow through unchanged in the qlinear
/// form (they commute with `DequantizeLinear`: monotonic or pure layout).
pub fn transparent(op: &Op) -> bool {
    matches!(
        op::kind(op),
        Some(OpKind::Pool(op::Pool { kind: op::PoolKind::Max, .. }) | OpKind::Flatten(_) | OpKind::Reshape(_))
    )
}

/// One layer chosen for quantisation, with everything its rewrite needs.
#[derive(Debug, Clone)]
pub struct Layer {
    pub op: NodeId,
    pub label: String,
    /// The op's typed view (Conv, Gemm or MatMul).
    pub kind: OpKind,
    pub weight: NodeId,
    pub weight_name: String,
    pub dims: Vec<usize>,
    /// The weight's output-channel axis.
    pub axis: usize,
    /// The activation input (slot 0).
    pub x: ValueRef,
    /// The op's output.
    pub y: ValueRef,
    /// A `Relu` that is the only reader of `y`, fused in the qlinear form
    /// (set only for Conv with uint8 activations).
    pub relu: Option<NodeId>,
    pub wq: QParams,
    pub codes: Vec<i32>,
    /// The (possibly corrected) float bias, one per output channel.
    pub bias: Option<Vec<f32>>,
    /// The input quantiser (qdq, qlinear).
    pub xq: Option<ActQ>,
    /// The output quantiser (qlinear): of the Relu output when fused.
    pub yq: Option<ActQ>,
}

fn weight(g: &mut Graph, name: &str, dtype: DataType, dims: &[usize], raw: Vec<u8>) -> ValueRef {
    let name = fresh_name(g, name);
    let dims: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
    ValueRef(g.add_weight(Tensor::from_raw(&name, dtype, &dims, raw)), 0)
}

fn f32s(g: &mut Graph, name: &str, dims: &[usize], v: &[f32]) -> ValueRef {
    weight(g, name, DataType::Float, dims, v.iter().flat_map(|x| x.to_le_bytes()).collect())
}

fn int8s(g: &mut Graph, name: &str, dims: &[usize], v: &[i32]) -> ValueRef {
    weight(g, name, DataType::Int8, dims, v.iter().map(|&x| x.clamp(-128, 127) as i8 as u8).collect())
}

fn op1(
    g: &mut Graph,
    op_type: &str,
    name: &str,
    inputs: &[Option<ValueRef>],
    attrs: Vec<shrink_graph::onnx::AttributeProto>,
) -> ValueRef {
    // node names are optional in ONNX and cost bytes; the output name identifies the node
    let out = fresh_name(g, name);
    let mut op = Op::new(op_type, "", inputs.len(), vec![out]);
    op.attributes = attrs;
    ValueRef(g.add_op(op, inputs), 0)
}

/// A scalar activation scale and zero point as initializers.
fn act_params(g: &mut Graph, base: &str, q: &ActQ) -> (ValueRef, ValueRef) {
    let s = f32s(g, &format!("{base}.s"), &[], &[q.scale]);
    (s, act_zp(g, base, q))
}

/// A scalar activation zero point (uint8 or int8) as an initializer.
fn act_zp(g: &mut Graph, base: &str, q: &ActQ) -> ValueRef {
    match q.ty {
        ActType::Uint8 => weight(g, &format!("{base}.z"), DataType::Uint8, &[], vec![q.zero_point.clamp(0, 255) as u8]),
        ActType::Int8 => int8s(g, &format!("{base}.z"), &[], &[q.zero_point]),
    }
}

/// Moves every use of `old`'s output 0 to `new`, removes `old` (and `also`),
/// and gives `new` the old name.
fn take_over(g: &mut Graph, old: ValueRef, new: ValueRef, also: &[NodeId]) {
    let name = g.value_name(old).to_string();
    g.replace_uses(old, new);
    g.remove_node(old.0);
    for &n in also {
        g.remove_node(n);
    }
    if let Some(op) = g.op_mut(new.0) {
        op.outputs[new.1] = name;
    }
}

/// Where a value captured before the rewrite lives now: an op removed by
/// [`take_over`] hands its uses to a new value, and `StableGraph` may give
/// the removed node's index to a later node, so old refs must be mapped.
fn resolve(moved: &HashMap<ValueRef, ValueRef>, mut v: ValueRef) -> ValueRef {
    while let Some(&n) = moved.get(&v) {
        v = n;
    }
    v
}

/// Short prefix for the names of a layer's new nodes (names cost bytes in
/// every reference; the weight's own name goes to the value the layer reads).
fn base(_l: &Layer, i: usize) -> String {
    format!("q{i}")
}

/// The weight's codes as int8 + per-channel `DequantizeLinear` (zero point
/// omitted: ONNX's default is 0), wired into the layer in place of the f32
/// initializer, whose name the dequantised value takes over.
fn weight_dq(g: &mut Graph, l: &Layer, i: usize) {
    let b = base(l, i);
    let c = l.wq.scale.len();
    let wq = int8s(g, &format!("{b}.w"), &l.dims, &l.codes);
    let ws = f32s(g, &format!("{b}.ws"), &[c], &l.wq.scale);
    let tmp = fresh_name(g, &format!("{b}.wdq"));
    let mut op = Op::new("DequantizeLinear", "", 2, vec![tmp]);
    op.attributes = vec![attr_int("axis", l.axis as i64)];
    let dq = g.add_op(op, &[Some(wq), Some(ws)]);
    g.set_input(l.op, 1, Some(ValueRef(dq, 0)));
    if g.consumers(ValueRef(l.weight, 0)).is_empty() {
        g.remove_node(l.weight);
        if let Some(op) = g.op_mut(dq) {
            op.outputs[0] = l.weight_name.clone();
        }
    }
}

/// Writes the layer's (possibly corrected) bias into its initializer, or a new one when shared.
fn set_bias(g: &mut Graph, l: &Layer, i: usize) -> Result<(), GraphError> {
    let Some(bias) = &l.bias else { return Ok(()) };
    if let Some(v) = g.input(l.op, 2)
        && g.consumers(v).len() == 1
        && let shrink_graph::NodeKind::Weight(w) = g.node_mut(v.0)
        && w.tensor.dtype() == DataType::Float
    {
        return w.tensor.set_f32(bias);
    }
    let bv = f32s(g, &format!("{}.b", base(l, i)), &[bias.len()], bias);
    g.set_input(l.op, 2, Some(bv));
    Ok(())
}

/// Rewrites the graph into `form` (not `Auto`).
pub fn export(g: &mut Graph, layers: &[Layer], form: Form) -> Result<(), GraphError> {
    match form {
        Form::WeightOnly | Form::Qdq => {
            let mut qdq: HashMap<ValueRef, ValueRef> = HashMap::new();
            for (i, l) in layers.iter().enumerate() {
                weight_dq(g, l, i);
                set_bias(g, l, i)?;
                if form == Form::Qdq
                    && let Some(q) = &l.xq
                {
                    let dq = match qdq.get(&l.x) {
                        Some(&v) => v,
                        None => {
                            let b = format!("a{i}");
                            let s = f32s(g, &format!("{b}.s"), &[], &[q.scale]);
                            // uint8 with zero point 0 (a ReLU output) is ONNX's default: no initializer
                            let zp = match q.ty {
                                ActType::Uint8 if q.zero_point == 0 => None,
                                _ => Some(act_zp(g, &b, q)),
                            };
                            // an absent optional input must be absent, not empty: tract counts the slots
                            let n = if zp.is_some() { 3 } else { 2 };
                            let qv =
                                op1(g, "QuantizeLinear", &format!("{b}.q"), &[Some(l.x), Some(s), zp][..n], vec![]);
                            let dq =
                                op1(g, "DequantizeLinear", &format!("{b}.d"), &[Some(qv), Some(s), zp][..n], vec![]);
                            qdq.insert(l.x, dq);
                            dq
                        }
                    };
                    g.set_input(l.op, 0, Some(dq));
                }
            }
        }
        Form::Qlinear => qlinear(g, layers)?,
        Form::Dynamic => dynamic(g, layers)?,
        Form::Auto => unreachable!("auto is resolved before export"),
    }
    g.remove_dead();
    Ok(())
}

fn transposed(l: &Layer) -> Vec<i32> {
    // [N, K] -> [K, N]
    let (n, k) = (l.dims[0], l.dims[1]);
    let mut out = vec![0; n * k];
    for r in 0..n {
        for c in 0..k {
            out[c * n + r] = l.codes[r * k + c];
        }
    }
    out
}

/// The weight codes as `[K, N]` and N (Gemm with transB = 1 is transposed).
fn kn_codes(l: &Layer) -> (Vec<i32>, Vec<usize>) {
    if matches!(&l.kind, OpKind::Gemm(gm) if gm.trans_b) {
        (transposed(l), vec![l.dims[1], l.dims[0]])
    } else {
        (l.codes.clone(), l.dims.clone())
    }
}

/// Conv attributes QLinearConv/ConvInteger share.
fn conv_attrs(g: &Graph, op: NodeId) -> Vec<shrink_graph::onnx::AttributeProto> {
    g.op(op)
        .map(|o| {
            o.attributes
                .iter()
                .filter(|a| {
                    ["auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"].contains(&a.name.as_str())
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

fn qlinear(g: &mut Graph, layers: &[Layer]) -> Result<(), GraphError> {
    // quantised input per float value: (code value, scale, zero point)
    let mut quantised: HashMap<ValueRef, (ValueRef, ValueRef, ValueRef)> = HashMap::new();
    let mut dqs: Vec<(NodeId, ActQ)> = Vec::new();
    let mut qs: Vec<(NodeId, ActQ)> = Vec::new();
    let mut moved: HashMap<ValueRef, ValueRef> = HashMap::new();
    for (i, l) in layers.iter().enumerate() {
        let (Some(xq), Some(yq)) = (l.xq, l.yq) else { continue };
        let x = resolve(&moved, l.x);
        let b = base(l, i);
        let (xv, xs, xz) = match quantised.get(&l.x) {
            Some(&v) => v,
            None => {
                let (xs, xz) = act_params(g, &format!("{b}.x"), &xq);
                let v = op1(g, "QuantizeLinear", &format!("{b}.xq"), &[Some(x), Some(xs), Some(xz)], vec![]);
                qs.push((v.0, xq));
                quantised.insert(l.x, (v, xs, xz));
                (v, xs, xz)
            }
        };
        let c = l.wq.scale.len();
        let ws = f32s(g, &format!("{b}.ws"), &[c], &l.wq.scale);
        let wz = int8s(g, &format!("{b}.wz"), &[c], &vec![0; c]);
        let (ys, yz) = act_params(g, &format!("{b}.y"), &yq);
        let yv = if matches!(l.kind, OpKind::Conv(_)) {
            let wq = int8s(g, &format!("{b}.w"), &l.dims, &l.codes);
            let bias = l.bias.as_ref().map(|bias| {
                let q: Vec<i32> = (0..c)
                    .map(|k| {
                        let s = xq.scale as f64 * l.wq.scale[k] as f64;
                        (bias[k] as f64 / s).round().clamp(i32::MIN as f64, i32::MAX as f64) as i32
                    })
                    .collect();
                weight(g, &format!("{b}.bq"), DataType::Int32, &[c], q.iter().flat_map(|x| x.to_le_bytes()).collect())
            });
            let inputs = [Some(xv), Some(xs), Some(xz), Some(wq), Some(ws), Some(wz), Some(ys), Some(yz), bias];
            let n = if bias.is_some() { 9 } else { 8 };
            op1(g, "QLinearConv", &format!("{b}.qconv"), &inputs[..n], conv_attrs(g, l.op))
        } else {
            let (codes, dims) = kn_codes(l);
            let wq = int8s(g, &format!("{b}.w"), &dims, &codes);
            let inputs = [Some(xv), Some(xs), Some(xz), Some(wq), Some(ws), Some(wz), Some(ys), Some(yz)];
            op1(g, "QLinearMatMul", &format!("{b}.qmm"), &inputs, vec![])
        };
        let mut out = op1(g, "DequantizeLinear", &format!("{b}.ydq"), &[Some(yv), Some(ys), Some(yz)], vec![]);
        dqs.push((out.0, yq));
        if matches!(l.kind, OpKind::Gemm(_))
            && let Some(bias) = &l.bias
        {
            let bv = f32s(g, &format!("{b}.b"), &[bias.len()], bias);
            out = op1(g, "Add", &format!("{b}.add"), &[Some(out), Some(bv)], vec![]);
        }
        match l.relu {
            Some(r) => {
                moved.insert(ValueRef(r, 0), out);
                take_over(g, ValueRef(r, 0), out, &[l.op]);
            }
            None => take_over(g, l.y, out, &[]),
        }
        moved.insert(l.y, out);
    }
    // DequantizeLinear -> [MaxPool | Flatten | Reshape]* -> QuantizeLinear with equal parameters: run on codes.
    let dq_params: HashMap<NodeId, ActQ> = dqs.into_iter().collect();
    for (q, qp) in qs {
        let Some(mut u) = g.input(q, 0) else { continue };
        let mut chain = Vec::new();
        while let Some(op) = g.op(u.0)
            && transparent(op)
            && g.consumers(u).len() == 1
        {
            chain.push(u.0);
            match g.input(u.0, 0) {
                Some(v) => u = v,
                None => break,
            }
        }
        let Some(&dp) = dq_params.get(&u.0) else { continue };
        if dp != qp {
            continue;
        }
        let Some(codes) = g.input(u.0, 0) else { continue };
        match chain.last() {
            Some(&first) => {
                g.set_input(first, 0, Some(codes));
                let last = ValueRef(chain[0], 0);
                for &n in &chain {
                    let name = g.value_name(ValueRef(n, 0)).to_string();
                    g.value_info.retain(|vi| vi.name != name);
                }
                g.replace_uses(ValueRef(q, 0), last);
            }
            None => g.replace_uses(ValueRef(q, 0), codes),
        }
    }
    Ok(())
}

fn dynamic(g: &mut Graph, layers: &[Layer]) -> Result<(), GraphError> {
    let mut dql: HashMap<ValueRef, NodeId> = HashMap::new();
    let mut moved: HashMap<ValueRef, ValueRef> = HashMap::new();
    for (i, l) in layers.iter().enumerate() {
        let b = base(l, i);
        let x = resolve(&moved, l.x);
        let d = match dql.get(&l.x) {
            Some(&d) => d,
            None => {
                let name = fresh_name(g, &format!("{b}.xq"));
                let outs = vec![name.clone(), format!("{name}.s"), format!("{name}.zp")];
                let d = g.add_op(Op::new("DynamicQuantizeLinear", &name, 1, outs), &[Some(x)]);
                dql.insert(l.x, d);
                d
            }
        };
        let c = l.wq.scale.len();
        let (acc, shape) = if matches!(l.kind, OpKind::Conv(_)) {
            let wq = int8s(g, &format!("{b}.w"), &l.dims, &l.codes);
            let wz = int8s(g, &format!("{b}.wz"), &[], &[0]);
            let inputs = [Some(ValueRef(d, 0)), Some(wq), Some(ValueRef(d, 2)), Some(wz)];
            let extra = l.dims.len() - 2;
            let shape: Vec<usize> = std::iter::once(c).chain(std::iter::repeat_n(1, extra)).collect();
            (op1(g, "ConvInteger", &format!("{b}.iconv"), &inputs, conv_attrs(g, l.op)), shape)
        } else {
            let (codes, dims) = kn_codes(l);
            let wq = int8s(g, &format!("{b}.w"), &dims, &codes);
            let wz = int8s(g, &format!("{b}.wz"), &[], &[0]);
            let inputs = [Some(ValueRef(d, 0)), Some(wq), Some(ValueRef(d, 2)), Some(wz)];
            (op1(g, "MatMulInteger", &format!("{b}.imm"), &inputs, vec![]), vec![c])
        };
        let f = op1(g, "Cast", &format!("{b}.f"), &[Some(acc)], vec![attr_int("to", DataType::Float as i64)]);
        let ws = f32s(g, &format!("{b}.ws"), &shape, &l.wq.scale);
        let s = op1(g, "Mul", &format!("{b}.s"), &[Some(ValueRef(d, 1)), Some(ws)], vec![]);
        let mut out = op1(g, "Mul", &format!("{b}.mul"), &[Some(f), Some(s)], vec![]);
        if let Some(bias) = &l.bias {
            let bv = f32s(g, &format!("{b}.b"), &shape, bias);
            out = op1(g, "Add", &format!("{b}.add"), &[Some(out), Some(bv)], vec![]);
        }
        take_over(g, l.y, out, &[]);
        moved.insert(l.y, out);
    }
    Ok(())
}
