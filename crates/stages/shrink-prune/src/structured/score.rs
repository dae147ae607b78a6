//! Channel importance per class of the channel analysis: weight norms, BN
//! scales, or the average percentage of zeros after ReLUs on training data.

use std::collections::HashMap;

use shrink_data::Dataset;
use shrink_graph::groups::{ChannelGroups, Rewrite};
use shrink_graph::op::{self, OpKind};
use shrink_graph::{Graph, Model, NodeId, ValueRef};
use shrink_train::{Executor, HostTensor};

use crate::structured::STAGE;
use shrink_stage::StageError;

/// Scores of each class: one entry per member that measured it.
pub type ClassScores = HashMap<usize, Vec<f64>>;

fn fail(reason: impl Into<String>) -> StageError {
    StageError::failed(STAGE, reason)
}

/// Per position along `axis` of a tensor of `dims`: the L1 or L2 norm of its slice.
fn norms(data: &[f32], dims: &[i64], axis: usize, l2: bool) -> Vec<f64> {
    let d: Vec<usize> = dims.iter().map(|&x| x as usize).collect();
    let outer: usize = d[..axis].iter().product();
    let inner: usize = d[axis + 1..].iter().product();
    let mut out = vec![0f64; d[axis]];
    for o in 0..outer {
        for (p, acc) in out.iter_mut().enumerate() {
            let start = (o * d[axis] + p) * inner;
            for &x in &data[start..start + inner] {
                *acc += if l2 { (x as f64) * (x as f64) } else { (x as f64).abs() };
            }
        }
    }
    if l2 {
        out.iter_mut().for_each(|x| *x = x.sqrt());
    }
    out
}

fn push(scores: &mut ClassScores, a: &ChannelGroups, v: ValueRef, per_position: &[f64]) {
    if let Some(l) = a.layout(v) {
        for (j, &c) in l.classes.iter().enumerate() {
            let s: f64 = per_position[j * l.inner..(j + 1) * l.inner].iter().sum();
            scores.entry(c).or_default().push(s);
        }
    }
}

/// L1/L2 norm of every producer's (and depthwise conv's) output-channel weights.
pub fn weight_norms(graph: &Graph, a: &ChannelGroups, l2: bool) -> Result<ClassScores, StageError> {
    let mut scores = ClassScores::new();
    for rw in &a.rewrites {
        let Rewrite::Slice { op, slot: 1, axis, layout_of } = *rw else { continue };
        if layout_of != ValueRef(op, 0) {
            continue; // input-side slices are consumers, not producers
        }
        let Some(t) = graph.input(op, 1).and_then(|v| graph.weight(v)) else { continue };
        let data = t.to_f32().map_err(|e| fail(e.to_string()))?;
        let n = norms(&data, t.dims(), axis, l2);
        push(&mut scores, a, layout_of, &n);
    }
    Ok(scores)
}

/// |γ| of every BatchNormalization on a channel.
pub fn bn_scales(graph: &Graph, a: &ChannelGroups) -> Result<ClassScores, StageError> {
    let mut scores = ClassScores::new();
    for rw in &a.rewrites {
        let Rewrite::Slice { op, slot: 1, axis: 0, layout_of } = *rw else { continue };
        if !is_bn(graph, op) {
            continue;
        }
        let Some(t) = graph.input(op, 1).and_then(|v| graph.weight(v)) else { continue };
        let gamma: Vec<f64> = t.to_f32().map_err(|e| fail(e.to_string()))?.iter().map(|&v| (v as f64).abs()).collect();
        push(&mut scores, a, layout_of, &gamma);
    }
    Ok(scores)
}

/// 1 − the fraction of zeros of each channel after every ReLU, on the first
/// `samples` training samples.
pub fn apoz(model: &Model, a: &ChannelGroups, data: &dyn Dataset, samples: usize) -> Result<ClassScores, StageError> {
    let g = &model.graph;
    let mut taps: Vec<ValueRef> = Vec::new();
    for (_, grp) in a.prunable() {
        for &v in &grp.values {
            let relu = matches!(g.op(v.0).and_then(op::kind), Some(OpKind::Activation(a)) if a.f == op::Act::Relu);
            if relu && !taps.contains(&v) {
                taps.push(v);
            }
        }
    }
    if taps.is_empty() {
        return Ok(ClassScores::new());
    }
    let names: Vec<String> = taps.iter().map(|&v| g.value_name(v).to_string()).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let exec = Executor::new(model).map_err(|e| fail(format!("apoz: {e}")))?;
    let n = samples.min(data.len());
    if n == 0 {
        return Err(StageError::param(STAGE, "samples", "apoz needs at least one training sample"));
    }
    let mut zeros: Vec<Vec<f64>> =
        taps.iter().map(|&v| vec![0.0; a.layout(v).map_or(0, |l| l.classes.len())]).collect();
    let mut counts: Vec<f64> = vec![0.0; taps.len()];
    for start in (0..n).step_by(128) {
        let idx: Vec<usize> = (start..(start + 128).min(n)).collect();
        let b = data.batch(&idx).map_err(|e| fail(format!("apoz: {e}")))?;
        let (_, outs) = exec
            .forward_with_taps(&[HostTensor::new(b.inputs, b.shape)], &refs)
            .map_err(|e| fail(format!("apoz: {e}")))?;
        for (k, t) in outs.iter().enumerate() {
            let Some(l) = a.layout(taps[k]) else { continue };
            let axis = l.axis;
            let d = &t.dims;
            let c = d[axis];
            if c != l.classes.len() {
                return Err(fail(format!("apoz: `{}` has {c} channels, expected {}", names[k], l.classes.len())));
            }
            let outer: usize = d[..axis].iter().product();
            let inner: usize = d[axis + 1..].iter().product();
            for o in 0..outer {
                for (ch, z) in zeros[k].iter_mut().enumerate() {
                    let s = (o * c + ch) * inner;
                    *z += t.data[s..s + inner].iter().filter(|&&x| x == 0.0).count() as f64;
                }
            }
            counts[k] += (outer * inner) as f64;
        }
    }
    let mut scores = ClassScores::new();
    for (k, &v) in taps.iter().enumerate() {
        let per: Vec<f64> = zeros[k].iter().map(|z| 1.0 - z / counts[k].max(1.0)).collect();
        push(&mut scores, a, v, &per);
    }
    Ok(scores)
}

/// The parameters of one op on one layout: (op, layout value, [(initializer, channel axis)]).
type Unit = (shrink_graph::NodeId, ValueRef, Vec<(String, usize)>);

/// First-order Taylor importance (Molchanov et al. 2017, 2019): per batch,
/// `|Σ θ·∂L/∂θ|` over the parameters of each channel of each member (a
/// producer's output-channel weights and bias, a depthwise conv's, a
/// BatchNormalization's γ and β), averaged over batches of the first
/// `samples` training samples. For a BN in inference form, `y = γ·x̂ + β`,
/// this equals `|Σ y·∂L/∂y|` over the positions of its output: activation ×
/// gradient. The gradients are the trainer's: one plain SGD step of learning
/// rate 1 (no momentum, no decay) moves each parameter by exactly `−∂L/∂θ`,
/// and the parameters are restored after each batch.
pub fn taylor(model: &Model, a: &ChannelGroups, data: &dyn Dataset, samples: usize) -> Result<ClassScores, StageError> {
    use shrink_train::{Loss, Optimizer, OptimizerKind};
    let g = &model.graph;
    // units: the parameters of one op on one layout, measured together: (op, layout value, [(name, axis)])
    let mut units: Vec<Unit> = Vec::new();
    for rw in &a.rewrites {
        let Rewrite::Slice { op, slot, axis, layout_of } = *rw else { continue };
        if g.op(op).is_none() {
            continue;
        }
        let bn = is_bn(g, op);
        let is_bn = bn && (slot == 1 || slot == 2);
        let is_out = layout_of == ValueRef(op, 0) && (slot == 1 || slot == 2) && !bn;
        if !(is_bn || is_out) {
            continue;
        }
        let Some(v) = g.input(op, slot) else { continue };
        let name = g.value_name(v).to_string();
        match units.iter_mut().find(|u| u.0 == op && u.1 == layout_of) {
            Some(u) => u.2.push((name, axis)),
            None => units.push((op, layout_of, vec![(name, axis)])),
        }
    }
    if units.is_empty() {
        return Ok(ClassScores::new());
    }
    let mut exec = Executor::new(model).map_err(|e| fail(format!("taylor: {e}")))?;
    let mut opt = Optimizer::new(OptimizerKind::sgd(0.0, 0.0)).map_err(|e| fail(format!("taylor: {e}")))?;
    let n = samples.min(data.len());
    if n == 0 {
        return Err(StageError::param(STAGE, "samples", "taylor needs at least one training sample"));
    }
    let mut acc: Vec<Vec<f64>> =
        units.iter().map(|u| vec![0.0; a.layout(u.1).map_or(0, |l| l.classes.len())]).collect();
    let mut batches = 0f64;
    for start in (0..n).step_by(64) {
        let idx: Vec<usize> = (start..(start + 64).min(n)).collect();
        let b = data.batch(&idx).map_err(|e| fail(format!("taylor: {e}")))?;
        let snap = exec.snapshot();
        let names: Vec<&String> = units.iter().flat_map(|u| u.2.iter().map(|(n, _)| n)).collect();
        let before: Vec<_> =
            names.iter().map(|n| exec.param(n)).collect::<Result<_, _>>().map_err(|e| fail(format!("taylor: {e}")))?;
        exec.train_step(&mut opt, 1.0, &HostTensor::new(b.inputs, b.shape), &b.labels, &Loss::CrossEntropy, None)
            .map_err(|e| fail(format!("taylor: {e}")))?;
        let mut k = 0;
        for (ui, u) in units.iter().enumerate() {
            let c = acc[ui].len();
            let mut per = vec![0f64; c];
            for (name, axis) in &u.2 {
                let axis = *axis;
                let after = exec.param(name).map_err(|e| fail(format!("taylor: {e}")))?;
                let w = &before[k];
                k += 1;
                // θ·g with g = θ_before − θ_after, summed per channel
                let dims = &w.dims;
                if dims.get(axis) != Some(&c) {
                    return Err(fail(format!("taylor: `{name}` has dims {dims:?}, expected {c} channels")));
                }
                let outer: usize = dims[..axis].iter().product();
                let inner: usize = dims[axis + 1..].iter().product();
                for o in 0..outer {
                    for (ch, p) in per.iter_mut().enumerate() {
                        let s = (o * c + ch) * inner;
                        for i in s..s + inner {
                            *p += w.data[i] as f64 * (w.data[i] - after.data[i]) as f64;
                        }
                    }
                }
            }
            for (x, p) in acc[ui].iter_mut().zip(&per) {
                *x += p.abs();
            }
        }
        exec.restore(&snap).map_err(|e| fail(format!("taylor: {e}")))?;
        batches += 1.0;
    }
    let mut scores = ClassScores::new();
    for (ui, u) in units.iter().enumerate() {
        let per: Vec<f64> = acc[ui].iter().map(|x| x / batches).collect();
        push(&mut scores, a, u.1, &per);
    }
    Ok(scores)
}

/// Whether `op` is a BatchNormalization.
fn is_bn(graph: &Graph, op: NodeId) -> bool {
    matches!(graph.op(op).and_then(op::kind), Some(OpKind::BatchNorm(_)))
}
