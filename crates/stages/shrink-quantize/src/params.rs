//! The TOML parameters of each `quantize` method. A `[[stage]]` table with
//! `kind = "quantize"` is read whole into the struct of its `method`
//! (`#[serde(deny_unknown_fields)]`: a key of another method is an error).
//! Each field's doc comment is its TOML documentation.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use shrink_stage::StageError;
use shrink_train::FineTuneConfig;

use crate::KIND;

/// Reads the whole stage table into a method's parameter struct; an unknown
/// or mistyped key is an error naming it.
pub(crate) fn from_table<T: DeserializeOwned>(table: &toml::Table, method: &str) -> Result<T, StageError> {
    T::deserialize(toml::Value::Table(table.clone())).map_err(|e| {
        let msg = e.to_string();
        // serde names the key in backticks for unknown and missing fields
        let key = msg
            .split_once("field `")
            .and_then(|(_, rest)| rest.split_once('`'))
            .map(|(k, _)| k.to_string())
            .unwrap_or_else(|| format!("method = \"{method}\""));
        StageError::param(KIND, &key, msg.trim().replace('\n', " "))
    })
}

/// Parses an optional `[stage.finetune]` table at build time, so a bad key
/// fails before anything runs.
pub(crate) fn finetune(table: &Option<toml::Table>) -> Result<Option<FineTuneConfig>, StageError> {
    table
        .as_ref()
        .map(|t| FineTuneConfig::from_toml(t).map_err(|e| StageError::param(KIND, "finetune", e.to_string())))
        .transpose()
}

fn yes() -> bool {
    true
}

fn eight() -> u32 {
    8
}

fn five() -> u32 {
    5
}

fn max_iter() -> usize {
    1000
}

fn first_last() -> Vec<String> {
    vec!["first".into(), "last".into()]
}

/// `method = "linear"`: uniform n-bit weight quantisation, round to nearest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearParams {
    /// Always `quantize` (accepted so the whole `[[stage]]` table can be read).
    #[serde(default)]
    pub kind: Option<String>,
    /// Always `linear`.
    pub method: String,
    /// Bits per weight, 2 to 8 (default 8).
    #[serde(default = "eight")]
    pub bits: u32,
    /// `true` (default): zero point 0, codes in ±(2^(bits-1) - 1). `false`:
    /// affine, codes in [-2^(bits-1), 2^(bits-1) - 1] with a zero point.
    #[serde(default = "yes")]
    pub symmetric: bool,
    /// `true` (default): one scale per output channel; `false`: one per tensor.
    #[serde(default = "yes")]
    pub per_channel: bool,
    /// Globs over op or weight names selecting the layers (empty: every layer).
    #[serde(default)]
    pub layers: Vec<String>,
    /// Globs of layers left in float (wins over `layers`).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Op types whose weights are considered (empty: Conv, Gemm, MatMul).
    #[serde(default)]
    pub ops: Vec<String>,
    /// Quantisation-aware fine-tuning (straight-through estimator); the shared
    /// `[stage.finetune]` table. Absent: post-training quantisation only.
    #[serde(default)]
    pub finetune: Option<toml::Table>,
}

/// How k-means centroids start (Deep Compression §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// Evenly spaced between the layer's min and max weight (the paper's best).
    Linear,
    /// Evenly spaced in the weights' cumulative distribution (quantiles).
    Density,
    /// `k` weights drawn at random (Forgy), seeded by the pipeline seed.
    Random,
}

/// `method = "kmeans"`: weight sharing by 1-D k-means per layer, then
/// fine-tuning of the centroids.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmeansParams {
    /// Always `quantize`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Always `kmeans`.
    pub method: String,
    /// Bits per weight index, 1 to 16 (k = 2^bits centroids per layer; default 5).
    #[serde(default = "five")]
    pub bits: u32,
    /// Per-layer overrides of `bits`: a key is an op type (`Conv`, `Gemm`,
    /// `MatMul`: every layer of that type) or a glob over op or weight names,
    /// e.g. `layer_bits = { Conv = 8, Gemm = 5 }` or `{ "/0/*" = 8 }`. A glob
    /// wins over an op type; two globs giving one layer different bits is an error.
    #[serde(default)]
    pub layer_bits: BTreeMap<String, u32>,
    /// Centroid initialisation: `linear` (default), `density` or `random`.
    #[serde(default = "default_init")]
    pub init: Init,
    /// Lloyd iterations at most (default 1000; it stops when no weight moves).
    #[serde(default = "max_iter")]
    pub max_iter: usize,
    /// `dense` (default): f32 weights, each equal to a centroid (what the
    /// Huffman stage reads). `gather`: an f32 codebook plus an index tensor
    /// (uint8 up to 256 entries, else uint16, else int32) read by
    /// `Cast` + `Gather`: a smaller file that tract runs (folded at load).
    #[serde(default)]
    pub export: Export,
    #[serde(default)]
    pub layers: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub ops: Vec<String>,
    /// Centroid fine-tuning (each centroid gets the sum of its members'
    /// gradients; every other parameter is frozen; pruned zeros stay zero).
    /// Absent: clustering only.
    #[serde(default)]
    pub finetune: Option<toml::Table>,
}

/// How the k-means result is written into the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Export {
    /// De-quantised f32 weights.
    #[default]
    Dense,
    /// Codebook + indices + `Gather`.
    Gather,
}

fn default_init() -> Init {
    Init::Linear
}

/// `method = "binary"`: BinaryConnect, `sign(w) · α` with α the mean |w| of
/// each output channel, trained through a straight-through estimator.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinaryParams {
    /// Always `quantize`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Always `binary`.
    pub method: String,
    /// Layers kept in float: `first` and `last` (of the selected layers, in
    /// graph order) or globs over op or weight names. Default `["first", "last"]`.
    #[serde(default = "first_last")]
    pub keep_float: Vec<String>,
    #[serde(default)]
    pub layers: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub ops: Vec<String>,
    /// Training with the shadow weights (every parameter trains). Absent:
    /// binarise without training (expect a large accuracy drop).
    #[serde(default)]
    pub finetune: Option<toml::Table>,
}
