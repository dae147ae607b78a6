//! The TOML parameters of `prune` with `method = "structured"`.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `[[stage]] kind = "prune"`, `method = "structured"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StructuredParams {
    /// The stage kind (`prune`), accepted when the table still holds it.
    #[serde(default)]
    pub kind: Option<String>,
    /// Always `structured` here.
    pub method: String,
    /// Channel importance: `l1` (default) or `l2` norm of each producer's
    /// weights, `bn-scale` (|γ| of the BatchNormalizations on the channel),
    /// `apoz` (1 − average percentage of zeros after each ReLU on the channel,
    /// on `samples` training samples), `taylor` (|Σ θ·∂L/∂θ| over each
    /// channel's parameters = |Σ activation × gradient| at a BN output, on
    /// `samples` training samples).
    #[serde(default = "default_criterion")]
    pub criterion: String,
    /// Fraction of channels to remove: one number for every group, or a table
    /// from layer-name globs to fractions (`{ "/concat/*" = 0.5, "*" = 0.25 }`).
    /// A group takes the smallest fraction its producer layers ask for; a
    /// layer no key matches asks for nothing; an exact name wins over a glob,
    /// a longer glob over a shorter one.
    pub ratio: Ratio,
    /// Round the channels kept in each group to a multiple of this (at least
    /// this many; a group with fewer channels is left alone). Default 1.
    #[serde(default = "one")]
    pub round_to: usize,
    /// Prune in this many equal steps, fine-tuning after each. Default 1.
    #[serde(default = "one")]
    pub steps: usize,
    /// How a group's score combines its members' scores: `mean` (default) or `sum`.
    #[serde(default = "default_reduce")]
    pub reduce: String,
    /// Training samples for `apoz` and `taylor`. Default 512.
    #[serde(default = "default_samples")]
    pub samples: usize,
    /// Training samples on which BatchNormalization statistics are
    /// re-estimated after each surgery (0: keep them). Default 2048.
    #[serde(default = "default_recalibrate")]
    pub recalibrate_bn: usize,
    /// Layer-name globs whose groups are never pruned.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Fine-tuning after each step: the shared `[stage.finetune]` table.
    #[serde(default)]
    pub finetune: Option<toml::Table>,
    /// Distil from the unpruned original while fine-tuning:
    /// `{ alpha = 0.5, temperature = 4.0 }` (loss = alpha · T² · KL + (1 - alpha) · CE).
    #[serde(default)]
    pub distill: Option<crate::params::DistillParams>,
}

/// `ratio = 0.5` or `ratio = { "glob" = 0.5, ... }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Ratio {
    Global(f64),
    PerLayer(BTreeMap<String, f64>),
}

fn default_criterion() -> String {
    "l1".into()
}

fn default_reduce() -> String {
    "mean".into()
}

fn default_samples() -> usize {
    512
}

fn default_recalibrate() -> usize {
    2048
}

fn one() -> usize {
    1
}

/// The criteria this method implements.
pub const CRITERIA: &[&str] = &["l1", "l2", "bn-scale", "apoz", "taylor"];
