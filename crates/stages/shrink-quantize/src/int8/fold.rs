//! Folding inference `BatchNormalization` into the `Conv` that feeds it,
//! before calibration: the folded weight is what gets quantised per channel,
//! and no float BN runs between quantised layers.
//!
//! `s = gamma / sqrt(var + eps)`, `W' = W · s` (per output channel),
//! `b' = (b - mean) · s + beta`. A BN is folded only when its input is the
//! Conv's only use, its parameters are f32 constants and the Conv's weight
//! (and bias) are f32 initializers that only this Conv reads.

use shrink_graph::{DataType, Graph, NodeId, NodeKind, Slot, Tensor, ValueRef};
use tracing::debug;

/// Folds what it can; returns the labels of the folded BNs.
pub fn fold_conv_bn(g: &mut Graph) -> Result<Vec<String>, shrink_graph::GraphError> {
    let mut folded = Vec::new();
    for bn in g.ops() {
        let Some(op) = g.op(bn) else { continue };
        if op.op_type != "BatchNormalization" || !op.is_onnx() {
            continue;
        }
        match plan(g, bn) {
            Some(p) => {
                folded.push(g.label(bn));
                apply(g, bn, p)?;
            }
            None => debug!(bn = %g.label(bn), "batchnorm not folded"),
        }
    }
    g.remove_dead();
    Ok(folded)
}

struct Plan {
    conv: NodeId,
    weight: NodeId,
    bias: Option<NodeId>,
    scale: Vec<f64>,
    shift: Vec<f64>,
}

fn f32_init(g: &Graph, v: ValueRef, uses: usize) -> Option<(NodeId, &Tensor)> {
    match g.node(v.0) {
        NodeKind::Weight(w) if w.tensor.dtype() == DataType::Float && w.input_info.is_none() => {
            (g.consumers(v).len() <= uses).then_some((v.0, &w.tensor))
        }
        _ => None,
    }
}

fn plan(g: &Graph, bn: NodeId) -> Option<Plan> {
    let op = g.op(bn)?;
    if op.attr_int("training_mode").unwrap_or(0) != 0 || (1..op.outputs.len()).any(|i| !op.outputs[i].is_empty()) {
        return None;
    }
    let eps = op.attr_float("epsilon").unwrap_or(1e-5) as f64;
    let x = g.input(bn, 0)?;
    let conv = g.op(x.0)?;
    if conv.op_type != "Conv" || !conv.is_onnx() || g.consumers(x) != [(bn, Slot::Input(0))] {
        return None;
    }
    let param = |slot| -> Option<Vec<f64>> {
        let t = g.weight(g.input(bn, slot)?)?;
        Some(t.to_f32().ok()?.into_iter().map(f64::from).collect())
    };
    let (gamma, beta, mean, var) = (param(1)?, param(2)?, param(3)?, param(4)?);
    let c = gamma.len();
    if c == 0 || [beta.len(), mean.len(), var.len()].iter().any(|&n| n != c) {
        return None;
    }
    let (weight, w) = f32_init(g, g.input(x.0, 1)?, 1)?;
    if w.dims().first() != Some(&(c as i64)) {
        return None;
    }
    let bias = match g.input(x.0, 2) {
        Some(v) => Some(f32_init(g, v, 1)?.0),
        None => None,
    };
    let scale: Vec<f64> = (0..c).map(|i| gamma[i] / (var[i] + eps).sqrt()).collect();
    if scale.iter().any(|s| !s.is_finite()) {
        return None;
    }
    let shift = (0..c).map(|i| beta[i] - mean[i] * scale[i]).collect();
    Some(Plan { conv: x.0, weight, bias, scale, shift })
}

fn apply(g: &mut Graph, bn: NodeId, p: Plan) -> Result<(), shrink_graph::GraphError> {
    let c = p.scale.len();
    let (w_name, mut w) = match g.node(p.weight) {
        NodeKind::Weight(w) => (w.tensor.name().to_string(), w.tensor.to_f32()?),
        _ => return Ok(()),
    };
    let block = w.len() / c;
    for (i, x) in w.iter_mut().enumerate() {
        *x = (*x as f64 * p.scale[i / block]) as f32;
    }
    if let NodeKind::Weight(t) = g.node_mut(p.weight) {
        t.tensor.set_f32(&w)?;
    }
    let old_bias = match p.bias {
        Some(b) => g.weight(ValueRef(b, 0)).map(|t| t.to_f32()).transpose()?.unwrap_or_else(|| vec![0.0; c]),
        None => vec![0.0; c],
    };
    let bias: Vec<f32> = (0..c).map(|i| (old_bias[i] as f64 * p.scale[i] + p.shift[i]) as f32).collect();
    match p.bias {
        Some(b) => {
            if let NodeKind::Weight(t) = g.node_mut(b) {
                t.tensor.set_f32(&bias)?;
            }
        }
        None => {
            let name =
                super::export::free_name(g, &format!("{}.bias", w_name.strip_suffix(".weight").unwrap_or(&w_name)));
            let id = g.add_weight(Tensor::from_f32(&name, &[c as i64], &bias));
            g.set_input(p.conv, 2, Some(ValueRef(id, 0)));
        }
    }
    let out = ValueRef(bn, 0);
    let bn_name = g.value_name(out).to_string();
    let feeds_output = g.consumers(out).iter().any(|&(n, _)| matches!(g.node(n), NodeKind::Output(_)));
    let conv_name = g.value_name(ValueRef(p.conv, 0)).to_string();
    g.replace_uses(out, ValueRef(p.conv, 0));
    g.remove_node(bn);
    if feeds_output && let Some(op) = g.op_mut(p.conv) {
        op.outputs[0] = bn_name.clone();
    }
    let gone = if feeds_output { conv_name } else { bn_name };
    g.value_info.retain(|vi| vi.name != gone);
    Ok(())
}
