//! Which layers a stage touches: the weight tensors of Conv, Gemm and MatMul
//! ops, chosen by op type and by name globs (`*`, `?`) matched against the op's
//! name or the weight's name. Shared by every stage that rewrites weights so
//! `layers = ["fc*"]` means the same thing in prune, quantize and lowrank.

use shrink_graph::{Graph, NodeId, NodeKind, ValueRef};

use crate::StageError;

/// A weight input of a layer op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightSite {
    /// The op (Conv, Gemm, MatMul, ...).
    pub op: NodeId,
    pub op_name: String,
    pub op_type: String,
    /// The initializer node holding the weight.
    pub weight: NodeId,
    pub weight_name: String,
    /// The op's input slot the weight feeds ([`shrink_graph::op::OpKind::weight_slots`]).
    pub slot: usize,
    pub dims: Vec<i64>,
}

/// The op types [`select_weights`] looks at when `ops` is empty.
pub const DEFAULT_LAYER_OPS: &[&str] = &["Conv", "Gemm", "MatMul"];

/// The float initializers of rank ≥ 2 that feed the weight slot of a layer
/// op, in graph order. `ops` empty means [`DEFAULT_LAYER_OPS`]; `include`
/// empty means every layer; `exclude` wins over `include`. A glob in
/// `include` that matches nothing is an error naming it (a typo would
/// otherwise silently select nothing). `stage` and `field` name the stage
/// and the TOML key in errors.
pub fn select_weights(
    stage: &str,
    graph: &Graph,
    ops: &[String],
    include: &[String],
    exclude: &[String],
    field: &str,
) -> Result<Vec<WeightSite>, StageError> {
    let ops: Vec<&str> =
        if ops.is_empty() { DEFAULT_LAYER_OPS.to_vec() } else { ops.iter().map(String::as_str).collect() };
    let mut used = vec![false; include.len()];
    let mut out = Vec::new();
    for id in graph.ops() {
        let Some(op) = graph.op(id) else { continue };
        if !ops.contains(&op.op_type.as_str()) {
            continue;
        }
        let Some(kind) = shrink_graph::op::kind(op) else { continue };
        for &slot in kind.weight_slots() {
            let Some(v) = graph.input(id, slot) else { continue };
            let Some(site) = weight_site(graph, id, slot, v) else { continue };
            let names = [site.op_name.as_str(), site.weight_name.as_str()];
            let matched: Vec<usize> =
                (0..include.len()).filter(|&i| names.iter().any(|n| glob_match(&include[i], n))).collect();
            for &i in &matched {
                used[i] = true;
            }
            let excluded = exclude.iter().any(|p| names.iter().any(|n| glob_match(p, n)));
            if (include.is_empty() || !matched.is_empty()) && !excluded {
                out.push(site);
            }
            break;
        }
    }
    if let Some(i) = used.iter().position(|u| !u) {
        return Err(StageError::param(stage, field, format!("`{}` matches no {} layer", include[i], ops.join("/"))));
    }
    Ok(out)
}

fn weight_site(graph: &Graph, op: NodeId, slot: usize, v: ValueRef) -> Option<WeightSite> {
    let NodeKind::Weight(w) = graph.node(v.0) else { return None };
    let dims = w.tensor.dims().to_vec();
    if dims.len() < 2 || w.tensor.dtype() != shrink_graph::DataType::Float {
        return None;
    }
    let o = graph.op(op)?;
    Some(WeightSite {
        op,
        op_name: o.name.clone(),
        op_type: o.op_type.clone(),
        weight: v.0,
        weight_name: w.tensor.name().to_string(),
        slot,
        dims,
    })
}

/// Shell-style glob over a whole name: `*` any run, `?` one character.
/// Written by hand: these are node names, not paths, and the `glob` crate's
/// path rules (separators, `**`) would only get in the way.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}
