//! Graph surgery: exit points, heads, the multi-output model and the segments.
//!
//! An exit is a *cut* of the backbone: every path from the graph input to the
//! output passes through it, so that a segment can start from it. Segment
//! `k` is the backbone from exit `k-1` (or the graph input) to exit `k`, plus
//! head `k`; it outputs head `k`'s logits and, for `k` before the last, the
//! exit tensor that the next segment takes as input. The last segment is the
//! rest of the backbone with the original classifier.
//!
//! Cost model (the stage cannot link tract): the MACs of a segment are
//! `shrink_graph::summarize` of that segment model; leaving at exit `k`
//! costs the MACs of segments `0..=k` (heads of the exits passed included),
//! relative to the MACs of the original model.

use std::collections::{BTreeSet, HashMap, HashSet};

use shrink_data::SplitMix64;
use shrink_graph::builder::{attr_int, attr_ints, tensor_info};
use shrink_graph::{DataType, Dim, Graph, Model, NodeId, NodeKind, Op, Shape, Tensor, ValueRef, infer_shapes};
use shrink_stage::StageError;
use tracing::debug;

use crate::KIND;

fn err(reason: impl Into<String>) -> StageError {
    StageError::failed(KIND, reason)
}

/// Per-sample shapes of every value (leading symbolic dims of inputs set to 1).
pub fn sample_shapes(graph: &Graph) -> HashMap<ValueRef, Vec<usize>> {
    let mut overrides = HashMap::new();
    for id in graph.real_inputs() {
        if let NodeKind::Input(vi) = graph.node(id)
            && let Some(mut s) = shrink_graph::declared_shape(vi.r#type.as_ref())
        {
            if let Some(d0) = s.first_mut()
                && d0.known().is_none()
            {
                *d0 = Dim::Known(1);
            }
            overrides.insert(vi.name.clone(), s);
        }
    }
    let shapes = infer_shapes(graph, &overrides);
    shapes
        .shapes
        .iter()
        .filter_map(|(v, s)| {
            let dims: Option<Vec<usize>> = s.iter().map(|d| d.known().map(|n| n as usize)).collect();
            dims.filter(|d| !d.is_empty()).map(|d| (*v, d[1..].to_vec()))
        })
        .collect()
}

/// The single real input and the single output value of a classifier.
pub fn io(graph: &Graph) -> Result<(NodeId, ValueRef), StageError> {
    let inputs: Vec<NodeId> = graph.real_inputs().collect();
    let [input] = inputs[..] else {
        return Err(err(format!("the model has {} inputs; early exit takes single-input classifiers", inputs.len())));
    };
    let [out] = graph.outputs()[..] else {
        return Err(err(format!(
            "the model has {} outputs; early exit takes single-output classifiers",
            graph.outputs().len()
        )));
    };
    let v = graph.input(out, 0).ok_or_else(|| err("the graph output has no producer"))?;
    Ok((input, v))
}

/// Ops a value depends on (its producer included).
fn ancestors(graph: &Graph, v: ValueRef) -> HashSet<NodeId> {
    let mut seen = HashSet::new();
    let mut stack = vec![v.0];
    while let Some(n) = stack.pop() {
        if !matches!(graph.node(n), NodeKind::Op(_)) || !seen.insert(n) {
            continue;
        }
        for (src, _) in graph.in_edges(n) {
            stack.push(src.0);
        }
    }
    seen
}

/// Why `v` is not a cut between the graph input and the output, if it is not.
pub fn not_a_cut(graph: &Graph, v: ValueRef) -> Option<String> {
    let anc = ancestors(graph, v);
    let (input, _) = io(graph).ok()?;
    if !matches!(graph.node(v.0), NodeKind::Op(_)) {
        return Some("it is not computed by an op".into());
    }
    for n in graph.node_ids() {
        let reads_before = |src: ValueRef| src != v && (anc.contains(&src.0) || src.0 == input);
        match graph.node(n) {
            NodeKind::Op(op) if !anc.contains(&n) => {
                if let Some((src, _)) = graph.in_edges(n).into_iter().find(|(s, _)| reads_before(*s)) {
                    return Some(format!("`{}` reads `{}` past it", op.label(), graph.value_name(src)));
                }
            }
            NodeKind::Output(vi) => {
                if let Some((src, _)) = graph.in_edges(n).into_iter().find(|(s, _)| *s == v || reads_before(*s)) {
                    let _ = src;
                    return Some(format!("it feeds the graph output `{}` directly", vi.name));
                }
            }
            _ => {}
        }
    }
    None
}

/// Topological position of each op.
fn positions(graph: &Graph) -> HashMap<NodeId, usize> {
    graph.ops().into_iter().enumerate().map(|(i, n)| (n, i)).collect()
}

/// Exit values named by the user, checked and ordered; errors name the tensor.
pub fn named_exits(graph: &Graph, names: &[String]) -> Result<Vec<ValueRef>, StageError> {
    let pos = positions(graph);
    let mut out = Vec::new();
    for name in names {
        let v =
            graph.find_value(name).ok_or_else(|| StageError::param(KIND, "exits", format!("no tensor `{name}`")))?;
        if let Some(why) = not_a_cut(graph, v) {
            return Err(StageError::param(KIND, "exits", format!("`{name}` cannot be an exit: {why}")));
        }
        out.push(v);
    }
    for w in out.windows(2) {
        if pos.get(&w[0].0) >= pos.get(&w[1].0) {
            return Err(StageError::param(
                KIND,
                "exits",
                format!(
                    "`{}` comes after `{}`: list exits in backbone order",
                    graph.value_name(w[0]),
                    graph.value_name(w[1])
                ),
            ));
        }
    }
    Ok(out)
}

/// `exits = "auto"`: the input of each op that changes the spatial size of a
/// 4-D tensor, where that input is a cut and costs under 90 % of the MACs.
pub fn auto_exits(model: &Model) -> Result<Vec<ValueRef>, StageError> {
    let graph = &model.graph;
    let shapes = sample_shapes(graph);
    let (input, _) = io(graph)?;
    let total = shrink_graph::summarize(model).macs.max(1);
    let macs: HashMap<String, u64> =
        shrink_graph::summarize(model).layers.into_iter().filter_map(|l| l.macs.map(|m| (l.name, m))).collect();
    let mut out: Vec<ValueRef> = Vec::new();
    for n in graph.ops() {
        let Some(op) = graph.op(n) else { continue };
        let Some(x) = graph.input(n, 0) else { continue };
        if x.0 == input || out.contains(&x) {
            continue;
        }
        let (Some(si), Some(so)) = (shapes.get(&x), shapes.get(&ValueRef(n, 0))) else { continue };
        if si.len() != 3 || so.len() < 3 || si[1..] == so[1..] {
            continue;
        }
        if let Some(why) = not_a_cut(graph, x) {
            debug!(tensor = graph.value_name(x), op = op.label(), why, "not an exit");
            continue;
        }
        let before: u64 =
            ancestors(graph, x).iter().filter_map(|&a| graph.op(a)).filter_map(|o| macs.get(&o.name)).sum();
        if before * 10 >= total * 9 {
            debug!(tensor = graph.value_name(x), before, total, "too late for an exit");
            continue;
        }
        debug!(tensor = graph.value_name(x), op = op.label(), before, "auto exit");
        out.push(x);
    }
    if out.is_empty() {
        return Err(StageError::param(KIND, "exits", "`auto` found no tensor to exit at: name the exits"));
    }
    Ok(out)
}

/// The head of one exit.
#[derive(Debug, Clone)]
pub struct Head {
    pub exit: ValueRef,
    pub logits: ValueRef,
    /// Names of the head's initializers (what training updates).
    pub weights: Vec<String>,
    pub prefix: String,
}

/// Adds head `k` on `exit` (per-sample shape `shape`) to `graph`.
pub fn add_head(
    graph: &mut Graph,
    k: usize,
    exit: ValueRef,
    shape: &[usize],
    head: &crate::params::HeadParams,
    classes: usize,
    rng: &mut SplitMix64,
) -> Result<Head, StageError> {
    let (pool, hidden) = (head.pool.as_str(), head.hidden.as_slice());
    let prefix = format!("early_exit.{k}");
    let name = graph.value_name(exit).to_string();
    let mut x = exit;
    let mut dim = match pool {
        "gap" => {
            if shape.len() < 2 {
                return Err(StageError::param(
                    KIND,
                    "head.pool",
                    format!("`gap` needs a [C, H, W] tensor; `{name}` is {shape:?}"),
                ));
            }
            let id = graph.add_op(
                Op::new("GlobalAveragePool", &format!("/{prefix}/gap"), 1, vec![format!("/{prefix}/gap_out")]),
                &[Some(x)],
            );
            x = ValueRef(id, 0);
            shape[0]
        }
        "flatten" => shape.iter().product(),
        "avg" | "max" => {
            let k = head.kernel;
            let &[c, h, w] = shape else {
                return Err(StageError::param(
                    KIND,
                    "head.pool",
                    format!("`{pool}` needs a [C, H, W] tensor; `{name}` is {shape:?}"),
                ));
            };
            if k == 0 || k > h || k > w {
                return Err(StageError::param(
                    KIND,
                    "head.kernel",
                    format!("{k} does not fit the {h}x{w} maps of `{name}`"),
                ));
            }
            let op = if pool == "avg" { "AveragePool" } else { "MaxPool" };
            let mut p = Op::new(op, &format!("/{prefix}/{pool}pool"), 1, vec![format!("/{prefix}/{pool}pool_out")]);
            p.attributes.push(attr_ints("kernel_shape", &[k as i64, k as i64]));
            p.attributes.push(attr_ints("strides", &[k as i64, k as i64]));
            x = ValueRef(graph.add_op(p, &[Some(x)]), 0);
            c * (h / k) * (w / k)
        }
        other => {
            return Err(StageError::param(
                KIND,
                "head.pool",
                format!("`{other}` is not one of {}", crate::params::POOLS.join(", ")),
            ));
        }
    };
    let mut flat = Op::new("Flatten", &format!("/{prefix}/flatten"), 1, vec![format!("/{prefix}/flat")]);
    flat.attributes.push(attr_int("axis", 1));
    x = ValueRef(graph.add_op(flat, &[Some(x)]), 0);
    let widths: Vec<usize> = hidden.iter().copied().chain([classes]).collect();
    let mut weights = Vec::new();
    for (i, &w) in widths.iter().enumerate() {
        let last = i + 1 == widths.len();
        let bound = 1.0 / (dim as f64).sqrt();
        let mut uni = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| ((rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32 * bound as f32)
                .collect()
        };
        let wn = format!("{prefix}.fc{i}.weight");
        let bn = format!("{prefix}.fc{i}.bias");
        let wv = uni(w * dim);
        let bv = uni(w);
        let wid = graph.add_weight(Tensor::from_f32(&wn, &[w as i64, dim as i64], &wv));
        let bid = graph.add_weight(Tensor::from_f32(&bn, &[w as i64], &bv));
        weights.push(wn);
        weights.push(bn);
        let out = if last { format!("early_exit_{k}_logits") } else { format!("/{prefix}/fc{i}_out") };
        let mut gemm = Op::new("Gemm", &format!("/{prefix}/fc{i}/Gemm"), 3, vec![out]);
        gemm.attributes.push(attr_int("transB", 1));
        x = ValueRef(graph.add_op(gemm, &[Some(x), Some(ValueRef(wid, 0)), Some(ValueRef(bid, 0))]), 0);
        if !last {
            let relu = Op::new("Relu", &format!("/{prefix}/relu{i}"), 1, vec![format!("/{prefix}/relu{i}_out")]);
            x = ValueRef(graph.add_op(relu, &[Some(x)]), 0);
        }
        dim = w;
    }
    Ok(Head { exit, logits: x, weights, prefix })
}

/// The declared type of a `[batch, ...]` float value.
pub fn float_info(name: &str, batch: &Dim, shape: &[usize]) -> shrink_graph::onnx::ValueInfoProto {
    let dims: Shape = std::iter::once(batch.clone()).chain(shape.iter().map(|&d| Dim::Known(d as u64))).collect();
    tensor_info(name, DataType::Float, &dims)
}

/// The batch dimension the input declares (`Dim::Sym("batch")` for most exports).
pub fn batch_dim(graph: &Graph) -> Dim {
    graph
        .real_inputs()
        .next()
        .and_then(|id| match graph.node(id) {
            NodeKind::Input(vi) => shrink_graph::declared_shape(vi.r#type.as_ref()),
            _ => None,
        })
        .and_then(|s| s.first().cloned())
        .unwrap_or(Dim::Sym("batch".into()))
}

/// Keeps only `outputs` as graph outputs (in that order) and removes what no longer reaches them.
pub fn set_outputs(graph: &mut Graph, outputs: &[(ValueRef, shrink_graph::onnx::ValueInfoProto)]) {
    for o in graph.outputs().to_vec() {
        graph.remove_node(o);
    }
    for (v, info) in outputs {
        graph.add_output(*v, info.clone());
    }
    graph.remove_dead();
    prune_value_info(graph);
}

/// Drops `value_info` entries of values that are gone.
fn prune_value_info(graph: &mut Graph) {
    let mut names = BTreeSet::new();
    for n in graph.node_ids() {
        if let NodeKind::Op(op) = graph.node(n) {
            names.extend(op.outputs.iter().cloned());
        }
    }
    graph.value_info.retain(|vi| names.contains(&vi.name));
}

/// Segment `k` of the multi-output model: from `from` (a previous exit, or the
/// graph input when `None`) to the values `outputs`.
pub fn segment(
    multi: &Model,
    from: Option<(ValueRef, &[usize])>,
    outputs: &[(ValueRef, shrink_graph::onnx::ValueInfoProto)],
) -> Result<Model, StageError> {
    let mut m = multi.clone();
    m.source = None;
    let g = &mut m.graph;
    let batch = batch_dim(g);
    let (input, _) = {
        let inputs: Vec<NodeId> = g.real_inputs().collect();
        (inputs.first().copied().ok_or_else(|| err("the model has no input"))?, ())
    };
    if let Some((v, shape)) = from {
        let name = g.value_name(v).to_string();
        let new_in = g.add_input(float_info(&name, &batch, shape));
        g.replace_uses(v, ValueRef(new_in, 0));
        // the new input must come first in graph.input order: rebuild through remove/add
        set_outputs(g, outputs);
        if !g.consumers(ValueRef(input, 0)).is_empty() {
            return Err(err(format!("`{name}` is not a cut: the graph input is still read after it")));
        }
        g.remove_node(input);
    } else {
        set_outputs(g, outputs);
    }
    g.verify().map_err(|e| StageError::graph(KIND, e))?;
    Ok(m)
}

/// A value's name for messages and reports.
pub fn short(graph: &Graph, v: ValueRef) -> String {
    graph.value_name(v).to_string()
}
