//! `shrink-early-exit`: early exit (BranchyNet): intermediate classifier heads,
//! a calibrated confidence policy, multi-output and segmented export.
//!
//! Stage `early-exit` ([`EarlyExit`], parameters in [`params`]):
//!
//! ```toml
//! [[stage]]
//! kind = "early-exit"
//! exits = "auto"              # or ["/residual/relu2/Relu_output_0", ...], in backbone order
//! policy = "max_prob"         # or "entropy"
//! target_accuracy_drop = 0.005
//! calibration = 5000          # training samples held out to calibrate
//! train = "heads"             # the only mode: heads one at a time, backbone frozen
//! head = { pool = "flatten", hidden = [] }   # pool: gap | flatten | avg | max (with kernel = K); hidden: [] or [width]
//! self_distill = { alpha = 0.5, temperature = 4.0 }   # optional, from the final exit
//! [stage.finetune]            # the shared table, for every head (default: 1 epoch, Adam 0.002)
//! ```
//!
//! 1. Exits: named tensors or `auto` (see [`graph::auto_exits`]); each must
//!    be a cut of the backbone ([`graph::not_a_cut`] says why not).
//! 2. Heads: (GlobalAveragePool or nothing) → Flatten → 1–2 Gemm layers
//!    (seeded PyTorch-style uniform init). Each head is trained alone: the
//!    model truncated to that head's logits, every other parameter frozen
//!    ([`shrink_train::Executor::set_trainable`]), on the training split
//!    minus the calibration samples; optional self-distillation from the
//!    final exit. Joint training is not available: the trainer's loss reads
//!    output 0 only.
//! 3. Policy ([`policy`]): exit at the first head whose max softmax ≥ τᵢ
//!    (or entropy ≤ τᵢ). Thresholds are calibrated on `calibration` samples
//!    held out (seeded) of the *training* split, to keep accuracy within
//!    `target_accuracy_drop` of the final exit at the least mean cost. The
//!    cost model is MACs (the stage cannot link tract): leaving at exit `k`
//!    costs the MACs of segments `0..=k`; `shrink infer` measures latency.
//! 4. Export: the model passed on is the multi-output model, **output 0 the
//!    final classifier** (so the runner's accuracy is the final exit's), then
//!    one output per head. Beside it, `OUTPUT/early-exit/`: `segment-K.onnx`
//!    (backbone part + head; segment K>0 takes the previous exit tensor),
//!    `full.onnx` (the stage's input model), [`manifest::MANIFEST`] with the
//!    thresholds and where they came from, `calibration-indices.txt`
//!    (indices into the training split), `curve.svg` / `curve.csv` (accuracy
//!    vs mean cost over one shared threshold, the chosen point marked).
//!
//! **Invariants:** the backbone's weights are unchanged; the test split is
//! never read; output 0 of the returned model equals the input model's output.

pub mod graph;
pub mod manifest;
pub mod params;
mod plot;
pub mod policy;
mod stage;

#[cfg(test)]
mod tests;

use shrink_stage::{Registry, Stage, StageError, StageFactory};

pub use manifest::{InputPreprocess, MANIFEST, Manifest, SegmentEntry};
pub use policy::Policy;
pub use stage::{DIR, EarlyExit};

/// The stage kind.
pub const KIND: &str = "early-exit";

/// Adds this crate's stage kinds to `reg`.
pub fn register(reg: &mut Registry) {
    reg.register(StageFactory {
        kind: KIND,
        summary: "intermediate classifier heads with a calibrated confidence policy; multi-output and segmented export",
        build,
    });
}

fn build(table: &toml::Table) -> Result<Box<dyn Stage>, StageError> {
    Ok(Box::new(EarlyExit::from_table(table)?))
}
