//! Folding inference `BatchNormalization` into the `Conv` that feeds it,
//! before calibration: the folded weight is what gets quantised per channel,
//! and no float BN runs between quantised layers. The fold itself is
//! [`shrink_graph::rewrite::fold_batchnorm`].

use shrink_graph::op::{self, OpKind};
use shrink_graph::rewrite::{FoldInto, Folded, fold_batchnorm};
use shrink_graph::{Graph, GraphError};
use tracing::debug;

/// Folds what it can; returns the labels of the folded BNs.
pub fn fold_conv_bn(g: &mut Graph) -> Result<Vec<String>, GraphError> {
    let mut folded = Vec::new();
    for bn in g.ops() {
        if !matches!(g.op(bn).and_then(op::kind), Some(OpKind::BatchNorm(_))) {
            continue;
        }
        let label = g.label(bn);
        match fold_batchnorm(g, bn, FoldInto::Conv)? {
            Folded::Into { .. } => folded.push(label),
            Folded::Kept(why) => debug!(bn = %label, %why, "batchnorm not folded"),
        }
    }
    g.remove_dead();
    Ok(folded)
}
