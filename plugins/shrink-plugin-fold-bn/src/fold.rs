//! Folding `BatchNormalization` into the `Conv`/`Gemm` before it, with
//! [`shrink_graph::rewrite::fold_batchnorm`], and the stage's report.

use shrink_graph::op::{self, OpKind};
use shrink_graph::rewrite::{FoldInto, Folded, fold_batchnorm};
use shrink_graph::{GraphError, Model, NodeId};
use shrink_stage::{LayerNote, StageReport};

/// Folds every foldable BN of `model`; returns the report of the stage.
pub fn fold_batchnorms(model: &mut Model) -> Result<StageReport, GraphError> {
    let g = &mut model.graph;
    let ops = g.ops();
    let before = ops.len();
    let bns: Vec<NodeId> =
        ops.into_iter().filter(|&n| matches!(g.op(n).and_then(op::kind), Some(OpKind::BatchNorm(_)))).collect();
    let mut layers = Vec::new();
    let mut kept = Vec::new();
    for bn in bns {
        let label = g.label(bn);
        match fold_batchnorm(g, bn, FoldInto::ConvOrGemm)? {
            Folded::Into { op } => {
                layers.push(LayerNote { layer: g.label(op), note: format!("folded {label}"), ..LayerNote::default() })
            }
            Folded::Kept(reason) => {
                kept.push(LayerNote { layer: label, note: format!("kept: {reason}"), ..LayerNote::default() })
            }
        }
    }
    g.remove_dead();
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
