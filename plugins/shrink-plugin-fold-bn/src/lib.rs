//! `shrink-plugin-fold-bn`: the example stage plugin, built as a `cdylib`.
//!
//! Stage `fold-batchnorm` folds each inference-form `BatchNormalization` into
//! the `Conv` or `Gemm` that feeds it, when the BN is that op's only consumer
//! and its scale, bias, mean and variance are constants:
//!
//! ```text
//! s  = gamma / sqrt(var + epsilon)          (per output channel)
//! W' = W * s                                (Conv: along dim 0; Gemm: rows with transB, else columns)
//! b' = (b - mean) * s + beta                (b = 0 when the op had no bias: a bias is added)
//! ```
//!
//! then rewires the BN's consumers to the op and removes the BN and its now
//! unused constants. Weights keep their names and f32 dtype; a BN whose output
//! is a graph output hands its name to the op's output, so the model's
//! interface does not change. BNs it cannot fold (training mode, shared
//! producer, non-constant or non-f32 parameters, a Gemm bias that is not one
//! value per output) are left alone and named in the report.
//!
//! TOML parameters: none (`[[stage]] kind = "fold-batchnorm"`).
//!
//! Report figures: `batchnorms_folded`, `batchnorms_kept`, `nodes_before`,
//! `nodes_after` (op nodes), one layer note per folded BN.

mod fold;

#[cfg(test)]
mod tests;

use shrink_graph::Model;
use shrink_plugin_sdk::ExportStage;
use shrink_stage::{Stage, StageCx, StageError, StageReport};

pub use fold::fold_batchnorms;

/// The `fold-batchnorm` stage.
#[derive(Debug, Default, Clone)]
pub struct FoldBatchNorm;

impl FoldBatchNorm {
    pub const KIND: &'static str = "fold-batchnorm";
}

impl ExportStage for FoldBatchNorm {
    const KIND: &'static str = FoldBatchNorm::KIND;

    fn from_params(params: &toml::Table) -> Result<Self, StageError> {
        match params.keys().next() {
            Some(key) => Err(StageError::param(Self::KIND, key, "unknown parameter (fold-batchnorm takes none)")),
            None => Ok(FoldBatchNorm),
        }
    }
}

impl Stage for FoldBatchNorm {
    fn kind(&self) -> &str {
        Self::KIND
    }

    fn run(&self, model: &mut Model, _cx: &mut StageCx<'_>) -> Result<StageReport, StageError> {
        fold_batchnorms(model).map_err(|e| StageError::graph(Self::KIND, e))
    }
}

shrink_plugin_sdk::export_stage!(FoldBatchNorm);
