//! Folding `BatchNormalization` into the `Conv`/`Gemm` before it.

use std::collections::HashSet;

use shrink_graph::{DataType, Graph, GraphError, Model, NodeId, NodeKind, Slot, Tensor, ValueRef};
use shrink_stage::{LayerNote, StageReport};

/// How the weight's elements map to output channels.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Layout {
    /// Channel `c` owns the `c`-th contiguous block (Conv `[M, C/g, kH, kW]`, Gemm `transB = 1`).
    Rows,
    /// Channel `c` owns column `c` of a `[K, N]` matrix (Gemm `transB = 0`).
    Cols,
}

/// One fold, decided before anything changes.
#[derive(Debug)]
struct Plan {
    bn: NodeId,
    op: NodeId,
    weight: NodeId,
    bias: Option<NodeId>,
    layout: Layout,
    /// Gemm's `beta`, which multiplies the old bias (1 for Conv).
    beta: f64,
    /// `gamma / sqrt(var + epsilon)`.
    scale: Vec<f64>,
    /// `beta_bn - mean * scale`.
    shift: Vec<f64>,
}

/// Folds every foldable BN of `model`; returns the report of the stage.
pub fn fold_batchnorms(model: &mut Model) -> Result<StageReport, GraphError> {
    let g = &mut model.graph;
    let ops = g.ops();
    let before = ops.len();
    let bns: Vec<NodeId> = ops
        .into_iter()
        .filter(|&n| g.op(n).is_some_and(|op| op.op_type == "BatchNormalization" && op.is_onnx()))
        .collect();
    let mut layers = Vec::new();
    let mut kept = Vec::new();
    let mut gone_names = HashSet::new();
    for bn in bns {
        let label = g.label(bn);
        match plan(g, bn) {
            Ok(plan) => {
                let op_label = g.label(plan.op);
                gone_names.extend(apply(g, plan)?);
                layers.push(LayerNote { layer: op_label, note: format!("folded {label}"), ..LayerNote::default() });
            }
            Err(reason) => {
                kept.push(LayerNote { layer: label, note: format!("kept: {reason}"), ..LayerNote::default() });
            }
        }
    }
    g.remove_dead();
    // value_info entries of values that no longer exist would only confuse readers.
    g.value_info.retain(|vi| !gone_names.contains(&vi.name));
    let after = g.ops().len();
    let (n_folded, n_kept) = (layers.len(), kept.len());
    layers.extend(kept);
    let mut report = StageReport::new(format!(
        "folded {n_folded} BatchNormalization node(s) into Conv/Gemm ({n_kept} kept); {before} -> {after} nodes"
    ))
    .figure("batchnorms_folded", n_folded as f64)
    .figure("batchnorms_kept", n_kept as f64)
    .figure("nodes_before", before as f64)
    .figure("nodes_after", after as f64);
    report.layers = layers;
    Ok(report)
}

/// Whether `bn` can be folded, and how; otherwise why not.
fn plan(g: &Graph, bn: NodeId) -> Result<Plan, String> {
    let bn_op = g.op(bn).ok_or("not an op")?;
    if bn_op.attr_int("training_mode").unwrap_or(0) != 0 {
        return Err("training mode".into());
    }
    if (1..bn_op.outputs.len()).any(|i| !g.consumers(ValueRef(bn, i)).is_empty()) {
        return Err("its running-statistics outputs are read".into());
    }
    let epsilon = bn_op.attr_float("epsilon").unwrap_or(1e-5) as f64;
    let x = g.input(bn, 0).ok_or("no input")?;
    let op = x.0;
    let kind = match g.node(op) {
        NodeKind::Op(o) if o.is_onnx() && (o.op_type == "Conv" || o.op_type == "Gemm") && x.1 == 0 => o,
        _ => return Err("its input is not made by a Conv or Gemm".into()),
    };
    if g.consumers(x) != [(bn, Slot::Input(0))] {
        return Err("the Conv/Gemm output is also read elsewhere".into());
    }
    let param = |slot: usize, what: &str| -> Result<Vec<f64>, String> {
        let v = g.input(bn, slot).ok_or_else(|| format!("no {what}"))?;
        let t = g.weight(v).ok_or_else(|| format!("its {what} is not a constant"))?;
        let vals = t.to_f32().map_err(|e| e.to_string())?;
        Ok(vals.into_iter().map(f64::from).collect())
    };
    let (gamma, beta_bn, mean, var) = (param(1, "scale")?, param(2, "bias")?, param(3, "mean")?, param(4, "var")?);
    let c = gamma.len();
    if [beta_bn.len(), mean.len(), var.len()].iter().any(|&n| n != c) || c == 0 {
        return Err("its scale, bias, mean and var differ in length".into());
    }
    let scale: Vec<f64> = gamma.iter().zip(&var).map(|(g, v)| g / (v + epsilon).sqrt()).collect();
    if scale.iter().any(|s| !s.is_finite()) {
        return Err("var + epsilon is not positive".into());
    }
    let shift: Vec<f64> = (0..c).map(|i| beta_bn[i] - mean[i] * scale[i]).collect();

    // The weight: an f32 initializer that only this op reads.
    let own_f32 = |v: ValueRef| -> Result<(NodeId, &Tensor), String> {
        let t = match g.node(v.0) {
            NodeKind::Weight(w) => &w.tensor,
            _ => return Err(format!("`{}` is not an initializer", g.value_name(v))),
        };
        if t.dtype() != DataType::Float {
            return Err(format!("`{}` is {:?}, not f32", t.name(), t.dtype()));
        }
        if g.consumers(v).len() != 1 {
            return Err(format!("`{}` is shared with other nodes", t.name()));
        }
        Ok((v.0, t))
    };
    let (weight, w) = own_f32(g.input(op, 1).ok_or("the op has no weight")?)?;
    let dims = w.dims();
    let (layout, gemm_beta) = if kind.op_type == "Conv" {
        if dims.first() != Some(&(c as i64)) {
            return Err(format!("weight dims {dims:?} do not start with {c} output channels"));
        }
        (Layout::Rows, 1.0)
    } else {
        let trans_b = kind.attr_int("transB").unwrap_or(0) != 0;
        let want = if trans_b { dims.first() } else { dims.get(1) };
        if dims.len() != 2 || want != Some(&(c as i64)) {
            return Err(format!("Gemm weight dims {dims:?} do not hold {c} outputs"));
        }
        let beta = kind.attr_float("beta").unwrap_or(1.0) as f64;
        (if trans_b { Layout::Rows } else { Layout::Cols }, beta)
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
    Ok(Plan { bn, op, weight, bias, layout, beta: gemm_beta, scale, shift })
}

/// Rewrites the weight and bias, rewires the BN's consumers and removes it.
/// Returns the value names that no longer exist.
fn apply(g: &mut Graph, p: Plan) -> Result<Vec<String>, GraphError> {
    let c = p.scale.len();
    let w = weight_mut(g, p.weight)?;
    let mut vals = w.to_f32()?;
    match p.layout {
        Layout::Rows => {
            let block = vals.len() / c;
            for (i, x) in vals.iter_mut().enumerate() {
                *x = (*x as f64 * p.scale[i / block]) as f32;
            }
        }
        Layout::Cols => {
            for (i, x) in vals.iter_mut().enumerate() {
                *x = (*x as f64 * p.scale[i % c]) as f32;
            }
        }
    }
    w.set_f32(&vals)?;
    let w_name = w.name().to_string();

    match p.bias {
        Some(b) => {
            let t = weight_mut(g, b)?;
            let old = t.to_f32()?;
            let new: Vec<f32> = (0..c).map(|i| (p.beta * old[i] as f64 * p.scale[i] + p.shift[i]) as f32).collect();
            t.set_f32(&new)?;
        }
        None => {
            let name = free_name(g, &format!("{}.bias", w_name.strip_suffix(".weight").unwrap_or(&w_name)));
            let data: Vec<f32> = p.shift.iter().map(|&x| x as f32).collect();
            let id = g.add_weight(Tensor::from_f32(&name, &[c as i64], &data));
            g.set_input(p.op, 2, Some(ValueRef(id, 0)));
        }
    }
    // Gemm's beta scaled the old bias; the new one is exact.
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
    if feeds_output {
        // Keep the model's output name: the op's output takes the BN's.
        if let Some(op) = g.op_mut(p.op) {
            op.outputs[0] = bn_name;
        }
        Ok(vec![op_name])
    } else {
        Ok(vec![bn_name])
    }
}

/// The tensor of an initializer (`plan` checked that it is one).
fn weight_mut(g: &mut Graph, id: NodeId) -> Result<&mut Tensor, GraphError> {
    let label = g.label(id);
    match g.node_mut(id) {
        NodeKind::Weight(w) => Ok(&mut w.tensor),
        _ => Err(GraphError::Invalid { node: label, reason: "expected an initializer".into() }),
    }
}

/// `base`, or `base.1`, `base.2`, ... whichever no value is named yet.
fn free_name(g: &Graph, base: &str) -> String {
    let mut name = base.to_string();
    let mut i = 1;
    while g.find_value(&name).is_some() {
        name = format!("{base}.{i}");
        i += 1;
    }
    name
}
