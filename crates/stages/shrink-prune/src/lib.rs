//! `shrink-prune`: magnitude (unstructured) and structured neuron/channel pruning, with fine-tuning between steps.
//!
//! Stage `prune` dispatches on `method` (default `magnitude`); each method
//! deserializes the whole `[[stage]]` table into its own parameter struct
//! (`deny_unknown_fields`, accepting `kind` and `method`), so an unknown key
//! is an error naming it.
//!
//! - `magnitude` ([`magnitude`], parameters in [`params`]): zero the weights
//!   of smallest `|w|` in Conv/Gemm/MatMul weight tensors (never biases or
//!   BatchNormalization), per layer (`sparsity = { "fc1*" = 0.92, ... }`, keys
//!   are layer globs) or with one global threshold (`sparsity = 0.95`);
//!   `layers`, `exclude`, `ops` select layers. Schedules ([`schedule`]):
//!   `oneshot`, `equal` steps (`steps = 5`) or `agp` (cubic, Zhu & Gupta
//!   2017). With `[stage.finetune]` the model is fine-tuned after every step
//!   with the trainer's masks; `[stage.final_finetune]` adds one last run;
//!   `distill = { alpha, temperature }` distils from the unpruned original.
//! - `structured` ([`structured`]): removes whole channels/neurons per
//!   channel-dependency group.
//!
//! **Invariants** (magnitude): a pruned weight is exactly zero in the model
//! the stage returns (checked after write-back); masks only grow from step
//! to step; ranking ties are broken by layer order and position, so a run is
//! deterministic. Unstructured zeros do not change the dense MAC count: the
//! report says so and gives the MACs with non-zero weights beside it.
//!
//! Report (magnitude): per layer, kept %, non-zero weights before/after and
//! MACs; figures `nonzero_ratio`, `compression`, `nonzero_before/after`,
//! per-step sparsity and validation accuracy.

pub mod magnitude;
pub mod params;
pub mod schedule;
pub mod structured;

#[cfg(test)]
mod tests;

use shrink_stage::{Registry, Stage, StageError, StageFactory};

pub use magnitude::{MagnitudePrune, prune_count, prune_to_ratio, select_keep, select_keep_global};
pub use schedule::Schedule;

/// Adds this crate's stage kinds to `reg`.
pub fn register(reg: &mut Registry) {
    reg.register(StageFactory {
        kind: "prune",
        summary: "remove weights: method = \"magnitude\" (unstructured, by |w|) or \"structured\" (channels, neurons)",
        build,
    });
}

/// Builds a `prune` stage: `method` picks the parameter struct.
pub fn build(table: &toml::Table) -> Result<Box<dyn Stage>, StageError> {
    let method = match table.get("method") {
        None => "magnitude",
        Some(toml::Value::String(s)) => s.as_str(),
        Some(v) => {
            return Err(StageError::param("prune", "method", format!("expected a string, got {}", v.type_str())));
        }
    };
    match method {
        "magnitude" => Ok(Box::new(MagnitudePrune::from_table(table)?)),
        // method = "structured": its own module and parameter struct
        "structured" => Ok(Box::new(structured::StructuredPrune::from_table(table)?)),
        other => Err(StageError::param("prune", "method", format!("`{other}` is not one of magnitude, structured"))),
    }
}
