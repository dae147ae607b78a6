//! `shrink-train`: the differentiable executor over the IR, on burn's flex
//! CPU backend with autodiff.
//!
//! - [`Executor::new`] compiles a [`shrink_graph::Model`]'s graph into steps
//!   over value slots. Each op is read through its typed view
//!   ([`shrink_graph::op`]) and mapped to the trainer's form in one match;
//!   a variant the trainer does not run is a [`TrainError::Unsupported`]
//!   naming the node, at build time (there is no second list of op types).
//!   Float values run on burn and are differentiable; integer values (the
//!   `Shape → Gather → Unsqueeze → Concat → Reshape` chains PyTorch writes for
//!   `flatten`) are computed on the host. Float ranks 1..=4 are supported.
//! - Parameters: every float32 initializer, trainable unless it is a scalar
//!   or only a BatchNormalization mean/variance (those are frozen; use
//!   [`Executor::set_trainable`]). `Constant` values are frozen constants.
//! - Hooks, per parameter: [`Executor::set_mask`] (pruned entries stay exactly
//!   zero: gradient masked, mask re-applied after every step),
//!   [`Executor::set_trainable`] (frozen), [`Executor::tie`] (k-means sharing:
//!   each entry is its centroid; centroids get the sum of their members'
//!   gradients), [`Executor::set_ste`] (straight-through estimators: the
//!   forward pass sees `quantise(w)`, the backward pass the identity).
//!   Activation taps: [`Executor::forward_with_taps`] reads any named value.
//! - [`Executor::write_back`] stores the effective (masked, tied, quantised)
//!   parameters into their initializers with `Tensor::set_f32` (float32 stays
//!   float32); nothing else of the graph changes.
//! - Pipelines: [`FineTuneConfig`] is the `finetune` TOML table every
//!   training stage accepts (same keys, defaults and errors everywhere).
//! - Training: [`Executor::train_step`] with a [`Loss`] (cross-entropy or
//!   distillation) and an [`Optimizer`] (SGD with momentum and decay, Adam,
//!   AdamW, PyTorch defaults); [`FineTune`] runs epochs with shuffling,
//!   validation, early stopping, best-checkpoint restore and a [`Progress`]
//!   callback. Runs are deterministic for a seed (shuffling uses
//!   `shrink_data::SplitMix64`; weights come from the IR).
//! - Speed on flex (see `examples/profile_ops.rs` for the per-op times and
//!   `examples/bench_train.rs` for whole steps): a Conv whose input needs no
//!   gradient (a first layer) runs as a host im2col and one batched matmul;
//!   MaxPool (floor mode) is a host argmax and a `select` (burn's values and
//!   gradient routing); SGD updates every parameter in one host pass
//!   (bit-identical to burn's `Sgd`); other optimizers get row-major gradients.
//!   With several rayon threads a step runs on a pool thread, and a graph
//!   with a Conv trains an even batch of 32 or more as two halves in parallel
//!   (gradients averaged: equal to the whole batch's up to float summation
//!   order, so results differ between one thread and several by rounding).
//!
//! **Invariant:** bad graphs, shapes and parameters are a [`TrainError`];
//! burn panics that slip past the checks are caught and returned as
//! [`TrainError::Backend`].

mod config;
mod error;
mod exec;
mod finetune;
mod loss;
mod ops;
mod optim;
mod train;
mod value;

#[cfg(test)]
mod tests;

pub use config::FineTuneConfig;
pub use error::TrainError;
pub use exec::{BatchNormMode, Executor, ParamInfo, Snapshot, Ste, SteFn};
pub use finetune::{EpochInfo, FineTune, FineTuneReport, NoProgress, Progress, StepInfo, accuracy};
pub use loss::Loss;
pub use optim::{LrPlan, LrSchedule, Optimizer, OptimizerKind};
pub use value::{HostTensor, MAX_RANK};
