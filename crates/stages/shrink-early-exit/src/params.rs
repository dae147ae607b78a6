//! The `early-exit` stage's TOML table.

use serde::Deserialize;

/// Parameters of `[[stage]] kind = "early-exit"`. Every field has a default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// `"auto"` (before each op that changes the spatial size, where the tensor
    /// is a cut of the graph and the backbone up to it costs under 90 % of the
    /// MACs) or a list of tensor names, in backbone order. The final
    /// classifier is always the last exit.
    #[serde(default)]
    pub exits: Exits,
    /// The head put on every early exit.
    #[serde(default)]
    pub head: HeadParams,
    /// `"max_prob"` (exit when the largest softmax probability is >= the
    /// threshold) or `"entropy"` (exit when the softmax entropy, in nats, is
    /// <= the threshold).
    #[serde(default = "default_policy")]
    pub policy: String,
    /// Largest accuracy drop of the policy against the final exit on the
    /// calibration split (a fraction: 0.005 = 0.5 percentage points).
    #[serde(default = "default_drop")]
    pub target_accuracy_drop: f64,
    /// Training samples held out (seeded) to calibrate the thresholds; heads
    /// never train on them and the test split is never read.
    #[serde(default = "default_calibration")]
    pub calibration: usize,
    /// `"heads"`: each head trained alone with the backbone frozen (the only
    /// mode; joint training needs a loss over several outputs that the trainer
    /// does not have).
    #[serde(default = "default_train")]
    pub train: String,
    /// Self-distillation from the final exit: each head learns
    /// `alpha * T^2 * KL(final || head) + (1 - alpha) * CE`.
    pub self_distill: Option<Distill>,
    /// The shared `finetune` table (shrink_train::FineTuneConfig) for every head.
    pub finetune: Option<toml::Table>,
}

/// `exits = "auto"` or `exits = ["/a/relu", ...]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Exits {
    Auto(String),
    Named(Vec<String>),
}

impl Default for Exits {
    fn default() -> Exits {
        Exits::Auto("auto".into())
    }
}

/// `[stage.head]`.
/// The values `head.pool` takes (checked by the stage, built by `add_head`).
pub const POOLS: &[&str] = &["gap", "flatten", "avg", "max"];

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeadParams {
    /// `"gap"` (GlobalAveragePool, then Flatten), `"flatten"`, or `"avg"` /
    /// `"max"` (AveragePool / MaxPool of `kernel` x `kernel`, stride
    /// `kernel`, then Flatten: `kernel`^2 times fewer head weights than
    /// `flatten`, which matters at batch 1, where a big head's Gemm is bound
    /// by reading its weights, not by its MACs).
    #[serde(default = "default_pool")]
    pub pool: String,
    /// The pooling window of `avg` and `max` (both spatial axes).
    #[serde(default = "default_kernel")]
    pub kernel: usize,
    /// Width of a hidden Gemm + Relu before the classifying Gemm (at most
    /// one entry; empty: a single Gemm).
    #[serde(default)]
    pub hidden: Vec<usize>,
}

impl Default for HeadParams {
    fn default() -> HeadParams {
        HeadParams { pool: default_pool(), kernel: default_kernel(), hidden: Vec::new() }
    }
}

/// `[stage.self_distill]`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Distill {
    #[serde(default = "default_alpha")]
    pub alpha: f32,
    #[serde(default = "default_temperature")]
    pub temperature: f32,
}

fn default_policy() -> String {
    "max_prob".into()
}
fn default_drop() -> f64 {
    0.005
}
fn default_calibration() -> usize {
    5000
}
fn default_train() -> String {
    "heads".into()
}
fn default_kernel() -> usize {
    2
}
fn default_pool() -> String {
    "gap".into()
}
fn default_alpha() -> f32 {
    0.5
}
fn default_temperature() -> f32 {
    4.0
}
