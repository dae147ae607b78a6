//! `shrink-quantize`: the stage kind `quantize`, weight quantisation by one of
//! several methods chosen with the `method` key. The whole `[[stage]]` table
//! is read into that method's own parameter struct (`deny_unknown_fields`;
//! `kind` and `method` are accepted), so a key of another method is an error.
//!
//! Every method selects layers the same way ([`shrink_stage::select_weights`]):
//! `layers` (globs over op or weight names; empty: all), `exclude` (globs,
//! wins), `ops` (op types; empty: Conv, Gemm, MatMul). Optional fine-tuning is
//! the shared `[stage.finetune]` table (`shrink_train::FineTuneConfig`) on
//! the pipeline's `[data] train`.
//!
//! ## `method = "linear"`: n-bit uniform
//! ```toml
//! [[stage]]
//! kind = "quantize"
//! method = "linear"
//! bits = 4              # 2..=8 (default 8)
//! symmetric = true      # false: affine with a zero point (default true)
//! per_channel = true    # one scale per output channel (default true)
//! [stage.finetune]      # optional quantisation-aware training (straight-through estimator)
//! epochs = 1
//! ```
//! Rounds to nearest (see `common` for the scale and zero-point formulas;
//! `|w - ŵ| ≤ scale / 2`). With `finetune`, the forward pass sees the
//! fake-quantised weights (scales recomputed from the current weights every
//! step) and the backward pass the identity; pruned zeros stay zero.
//!
//! **Export:** each weight becomes an int8 initializer `W_quantized` (the
//! codes), `W_scale` (f32, scalar or one per output channel) and
//! `W_zero_point` (int8, same shape), read by a `DequantizeLinear` (with
//! `axis` = the output-channel axis when per channel) whose output replaces
//! the float weight. Under 8 bits the n-bit codes are stored the same way,
//! one int8 per code (values within the n-bit range); packing them is left
//! to a storage stage. tract folds the `DequantizeLinear` into an f32
//! constant at load, so inference runs the de-quantised weights. The
//! trainer has no `DequantizeLinear`, so no training stage can follow.
//! The report gives, per layer, max |w − ŵ| and the relative L2 error.
//!
//! ## `method = "kmeans"`: weight sharing (Deep Compression §3)
//! ```toml
//! method = "kmeans"
//! bits = 5                          # k = 2^bits centroids per layer (default 5, 1..=16)
//! layer_bits = { Conv = 8, Gemm = 5 }   # overrides by op type or by glob ("/0/*" = 6)
//! init = "linear"                   # "linear" (default) | "density" | "random"
//! max_iter = 1000                   # Lloyd iterations at most
//! export = "dense"                  # "dense" (default) | "gather"
//! [stage.finetune]                  # optional centroid fine-tuning
//! ```
//! Exact zeros count as pruned: only the non-zero weights are clustered and
//! the zeros stay exactly zero. Fine-tuning trains only the centroids (each
//! gets the sum of its members' gradients); every other parameter is frozen.
//! **Export:** `dense`: f32 weights, each equal to one of its layer's
//! ≤ 2^bits centroids exactly (a Huffman stage reads the codebook off the
//! distinct values). `gather`: per layer an f32 codebook `W_codebook`
//! (entry 0 is 0.0 when the layer has pruned zeros) and the indices
//! `W_indices` (uint8 for ≤ 256 entries, else uint16, else int32, the
//! weight's shape), read by `Cast(to int32)` + `Gather(axis 0)`, whose output
//! replaces the weight: one byte per weight on disk; tract folds it at load.
//!
//! ## `method = "binary"`: BinaryConnect
//! ```toml
//! method = "binary"
//! keep_float = ["first", "last"]    # default; or globs
//! [stage.finetune]                  # training with real-valued shadow weights
//! optimizer = "adam"
//! ```
//! Forward `sign(w) · α_c` (α_c = mean |w| of output channel c), backward
//! straight-through; every parameter trains. The trainer cannot clip the
//! shadow weights to [-1, 1] as BinaryConnect does, so they are not clipped;
//! each layer's note gives max |shadow w| to show whether a clip would have
//! acted (on LeNet-300-100 from the float fixture it stays below 0.75).
//! **Export:** the ±α weights in f32; the report gives the 1-bit storage size.
//!
//! ## `method = "int8"`
//! int8 with calibration: see the [`int8`] module's documentation.

mod binary;
pub mod common;
pub mod int8;
pub mod kmeans;
mod linear;
mod params;

#[cfg(test)]
mod tests;

pub use params::{BinaryParams, Export, Init, KmeansParams, LinearParams};
use shrink_stage::{Registry, Stage, StageError, StageFactory};

/// The stage kind of every method.
pub const KIND: &str = "quantize";

/// The methods [`build`] knows.
pub const METHODS: &[&str] = &["linear", "kmeans", "binary", "int8"];

/// Adds this crate's stage kinds to `reg`.
pub fn register(reg: &mut Registry) {
    reg.register(StageFactory {
        kind: KIND,
        summary: "quantisation: method = linear (n-bit, QAT), kmeans (weight sharing), binary (BinaryConnect), int8",
        build,
    });
}

/// Builds the stage of the table's `method`.
pub fn build(table: &toml::Table) -> Result<Box<dyn Stage>, StageError> {
    let method = match table.get("method") {
        Some(toml::Value::String(m)) => m.as_str(),
        Some(_) => return Err(StageError::param(KIND, "method", "must be a string")),
        None => {
            return Err(StageError::param(KIND, "method", format!("missing (one of {})", METHODS.join(", "))));
        }
    };
    match method {
        "linear" => linear::build(table),
        "kmeans" => kmeans::build(table),
        "binary" => binary::build(table),
        "int8" => int8::build(table),
        other => {
            Err(StageError::param(KIND, "method", format!("unknown method `{other}` (one of {})", METHODS.join(", "))))
        }
    }
}
