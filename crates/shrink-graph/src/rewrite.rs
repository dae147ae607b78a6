//! Rewrites every stage needs, one copy each: fresh value names, weight
//! access and replacement, and folding an inference `BatchNormalization`
//! into the `Conv` or `Gemm` that feeds it.

use crate::error::GraphError;
use crate::graph::{Graph, NodeId, NodeKind, Slot, ValueRef};
use crate::op::OpKind;
use crate::tensor::{DataType, Tensor};

/// `base`, or `base_1`, `base_2`, ... whichever no value is named yet.
pub fn fresh_name(graph: &Graph, base: &str) -> String {
    let mut name = base.to_string();
    let mut i = 1;
    while graph.find_value(&name).is_some() {
        name = format!("{base}_{i}");
        i += 1;
    }
    name
}

/// The tensor of the initializer `id`, or an error naming the node.
pub fn weight_mut(graph: &mut Graph, id: NodeId) -> Result<&mut Tensor, GraphError> {
    let label = graph.label(id);
    match graph.node_mut(id) {
        NodeKind::Weight(w) => Ok(&mut w.tensor),
        _ => Err(GraphError::Invalid { node: label, reason: "expected an initializer".into() }),
    }
}

/// Overwrites the f32 values of the initializer `id` (same element count).
pub fn set_weight_f32(graph: &mut Graph, id: NodeId, data: &[f32]) -> Result<(), GraphError> {
    weight_mut(graph, id)?.set_f32(data)
}

/// What [`fold_batchnorm`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Folded {
    /// The BN is gone; its scale and shift live in `into`'s weight and bias.
    Into { op: NodeId },
    /// The BN was left as it is, for this reason.
    Kept(String),
}

/// Which producers [`fold_batchnorm`] may fold into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoldInto {
    Conv,
    ConvOrGemm,
}

/// Folds the inference `BatchNormalization` `bn` into the op that feeds it:
/// `s = gamma / sqrt(var + eps)`, `W' = W · s` per output channel,
/// `b' = beta_gemm · b · s + (beta - mean · s)` (computed in f64). Folds
/// only when the BN's input is that op's only use, its parameters are
/// constants, and the op's weight (and bias) are f32 initializers no other
/// node reads; otherwise returns [`Folded::Kept`] with the reason. The
/// model's output names are kept; `value_info` of the removed value is dropped.
pub fn fold_batchnorm(g: &mut Graph, bn: NodeId, into: FoldInto) -> Result<Folded, GraphError> {
    match plan(g, bn, into) {
        Ok(p) => {
            let op = p.op;
            apply(g, p)?;
            Ok(Folded::Into { op })
        }
        Err(reason) => Ok(Folded::Kept(reason)),
    }
}

struct Plan {
    bn: NodeId,
    op: NodeId,
    weight: NodeId,
    bias: Option<NodeId>,
    /// The weight's output channels are its rows (Conv, Gemm with transB).
    rows: bool,
    gemm_beta: f64,
    scale: Vec<f64>,
    shift: Vec<f64>,
}

fn plan(g: &Graph, bn: NodeId, into: FoldInto) -> Result<Plan, String> {
    let bn_op = g.op(bn).ok_or("not an op")?;
    let Some(OpKind::BatchNorm(b)) = crate::op::kind(bn_op) else { return Err("not a BatchNormalization".into()) };
    if b.training_mode {
        return Err("training mode".into());
    }
    if (1..bn_op.outputs.len()).any(|i| !g.consumers(ValueRef(bn, i)).is_empty()) {
        return Err("its running-statistics outputs are read".into());
    }
    let x = g.input(bn, 0).ok_or("no input")?;
    let kind = g.op(x.0).and_then(crate::op::kind);
    let gemm = match (&kind, into) {
        (Some(OpKind::Conv(_)), _) if x.1 == 0 => None,
        (Some(OpKind::Gemm(gm)), FoldInto::ConvOrGemm) if x.1 == 0 => Some(gm.clone()),
        _ if into == FoldInto::Conv => return Err("its input is not made by a Conv".into()),
        _ => return Err("its input is not made by a Conv or Gemm".into()),
    };
    if g.consumers(x) != [(bn, Slot::Input(0))] {
        return Err("the Conv/Gemm output is also read elsewhere".into());
    }
    let param = |slot: usize, what: &str| -> Result<Vec<f64>, String> {
        let v = g.input(bn, slot).ok_or_else(|| format!("no {what}"))?;
        let t = g.weight(v).ok_or_else(|| format!("its {what} is not a constant"))?;
        Ok(t.to_f32().map_err(|e| e.to_string())?.into_iter().map(f64::from).collect())
    };
    let (gamma, beta, mean, var) = (param(1, "scale")?, param(2, "bias")?, param(3, "mean")?, param(4, "var")?);
    let c = gamma.len();
    if c == 0 || [beta.len(), mean.len(), var.len()].iter().any(|&n| n != c) {
        return Err("its scale, bias, mean and var differ in length".into());
    }
    let eps = b.epsilon as f64;
    let scale: Vec<f64> = gamma.iter().zip(&var).map(|(g, v)| g / (v + eps).sqrt()).collect();
    if scale.iter().any(|s| !s.is_finite()) {
        return Err("var + epsilon is not positive".into());
    }
    let shift: Vec<f64> = (0..c).map(|i| beta[i] - mean[i] * scale[i]).collect();

    // the weight and bias: f32 initializers that only this op reads
    let own_f32 = |v: ValueRef| -> Result<(NodeId, &Tensor), String> {
        let NodeKind::Weight(w) = g.node(v.0) else {
            return Err(format!("`{}` is not an initializer", g.value_name(v)));
        };
        if w.tensor.dtype() != DataType::Float || w.input_info.is_some() {
            return Err(format!("`{}` is not an f32 initializer", w.tensor.name()));
        }
        if g.consumers(v).len() != 1 {
            return Err(format!("`{}` is shared with other nodes", w.tensor.name()));
        }
        Ok((v.0, &w.tensor))
    };
    let op = x.0;
    let (weight, w) = own_f32(g.input(op, 1).ok_or("the op has no weight")?)?;
    let dims = w.dims();
    let (rows, gemm_beta) = match &gemm {
        None => {
            if dims.first() != Some(&(c as i64)) {
                return Err(format!("weight dims {dims:?} do not start with {c} output channels"));
            }
            (true, 1.0)
        }
        Some(gm) => {
            let want = if gm.trans_b { dims.first() } else { dims.get(1) };
            if dims.len() != 2 || want != Some(&(c as i64)) || gm.trans_a {
                return Err(format!("Gemm weight dims {dims:?} do not hold {c} outputs"));
            }
            (gm.trans_b, gm.beta as f64)
        }
    };
    let bias = match g.input(op, 2) {
        None => None,
        Some(v) => {
            let (id, t) = own_f32(v)?;
            if t.numel().ok() != Some(c as u64) || t.dims().len() > 2 {
                return Err(format!("bias `{}` of dims {:?} is not one value per output", t.name(), t.dims()));
            }
            Some(id)
        }
    };
    Ok(Plan { bn, op, weight, bias, rows, gemm_beta, scale, shift })
}

fn apply(g: &mut Graph, p: Plan) -> Result<(), GraphError> {
    let c = p.scale.len();
    let w = weight_mut(g, p.weight)?;
    let mut vals = w.to_f32()?;
    let block = vals.len() / c;
    for (i, x) in vals.iter_mut().enumerate() {
        let ch = if p.rows { i / block } else { i % c };
        *x = (*x as f64 * p.scale[ch]) as f32;
    }
    w.set_f32(&vals)?;
    let w_name = w.name().to_string();
    match p.bias {
        Some(b) => {
            let t = weight_mut(g, b)?;
            let old = t.to_f32()?;
            let new: Vec<f32> =
                (0..c).map(|i| (p.gemm_beta * old[i] as f64 * p.scale[i] + p.shift[i]) as f32).collect();
            t.set_f32(&new)?;
        }
        None => {
            let name = fresh_name(g, &format!("{}.bias", w_name.strip_suffix(".weight").unwrap_or(&w_name)));
            let data: Vec<f32> = p.shift.iter().map(|&x| x as f32).collect();
            let id = g.add_weight(Tensor::from_f32(&name, &[c as i64], &data));
            g.set_input(p.op, 2, Some(ValueRef(id, 0)));
        }
    }
    // Gemm's beta scaled the old bias; the new one is exact
    if let Some(op) = g.op_mut(p.op)
        && let Some(a) = op.attributes.iter_mut().find(|a| a.name == "beta")
    {
        a.f = 1.0;
    }
    let bn_out = ValueRef(p.bn, 0);
    let bn_name = g.value_name(bn_out).to_string();
    let op_name = g.value_name(ValueRef(p.op, 0)).to_string();
    let feeds_output = g.consumers(bn_out).iter().any(|&(n, _)| matches!(g.node(n), NodeKind::Output(_)));
    g.replace_uses(bn_out, ValueRef(p.op, 0));
    g.remove_node(p.bn);
    // keep the model's output name: the op's output takes the BN's
    let gone = if feeds_output {
        if let Some(op) = g.op_mut(p.op) {
            op.outputs[0] = bn_name;
        }
        op_name
    } else {
        bn_name
    };
    g.value_info.retain(|vi| vi.name != gone);
    Ok(())
}

/// Gives every reader of an `Identity` of a weight its own copy of that
/// weight, and removes the `Identity` (and the weight, once nothing reads it).
///
/// PyTorch's TorchScript exporter stores identical initializers once and
/// hands them to their other readers through `Identity` nodes: the zero
/// biases of BatchNorm-folded convolutions of a freshly initialised
/// torchvision model, for instance. Per-layer edits (removing a conv's
/// output channels, quantising its bias) must not change another layer's
/// tensor, and the analyses read a layer's parameters as weights, not as an
/// `Identity` output. The outputs are bit-exact; the file grows by the
/// copies. An `Identity` that is a graph output is left alone. Returns the
/// number of copies made.
pub fn unshare_identity_weights(g: &mut Graph) -> Result<usize, GraphError> {
    let mut copies = 0;
    for id in g.ops() {
        let Some(op) = g.op(id) else { continue };
        if !matches!(crate::op::kind(op), Some(OpKind::Passthrough(crate::op::Passthrough::Identity))) {
            continue;
        }
        let Some(src) = g.input(id, 0) else { continue };
        let Some(tensor) = g.weight(src).cloned() else { continue };
        let out = ValueRef(id, 0);
        let readers = g.consumers(out);
        if readers.iter().any(|&(n, s)| !matches!(s, Slot::Input(_)) || g.op(n).is_none()) {
            continue; // a graph output or a subgraph reads it by name
        }
        let base = g.value_name(out).to_string();
        g.remove_node(id); // first, so that the first copy keeps the name the readers knew
        for (n, s) in readers {
            let Slot::Input(i) = s else { continue };
            let mut t = tensor.clone();
            t.proto.name = fresh_name(g, &base);
            let w = g.add_weight(t);
            g.set_input(n, i, Some(ValueRef(w, 0)));
            copies += 1;
        }
        if g.consumers(src).is_empty() && !g.inputs().contains(&src.0) {
            g.remove_node(src.0);
        }
    }
    Ok(copies)
}
