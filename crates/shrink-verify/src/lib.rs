//! `shrink-verify`: tract-onnx as the judge of what a stage did to a model.
//!
//! This is the only crate of the workspace that links tract. It runs ONNX
//! model bytes on given inputs ([`run_onnx`], or [`run_onnx_folded`] with the
//! inputs baked in as constants), turns serialized ONNX
//! `TensorProto`s (the `input_N.pb` / `output_N.pb` files of the ONNX test
//! data) into tract tensors ([`tensor_from_proto_bytes`]), and compares two
//! output lists, bit for bit ([`compare_exact`]) or within a tolerance
//! ([`compare_close`]).
//!
//! For evaluation, a [`Judge`] holds one classifier made runnable for fixed
//! input shapes; [`evaluate`] streams a dataset through one or more judges
//! (accuracy, and agreement with the first), [`latency::measure`] times them
//! interleaved, [`size`] reads the model's size, and a [`VerifyReport`] /
//! [`CompareReport`] holds it all (serde).
//!
//! Every call into tract is guarded: a tract error and a panic inside tract
//! both come back as a [`VerifyError`], so a driver looping over many models
//! survives any one of them.

mod compare;
mod error;
mod eval;
mod judge;
pub mod latency;
mod report;
mod run;
mod segmented;
mod tensor;

#[cfg(test)]
mod tests;

pub use compare::{compare_close, compare_exact};
pub use error::VerifyError;
pub use eval::{EvalResult, Reference, agreement_on_random, check_fit, evaluate, size, size_of_encoded};
pub use judge::{InputSpec, Judge, Logits, top_k};
pub use latency::LatencyConfig;
pub use report::{AccuracyReport, AgreementReport, CompareReport, LatencyReport, Ratios, SizeReport, VerifyReport};
pub use run::{plans_built, run_onnx, run_onnx_folded};
pub use segmented::{Segmented, SegmentedRun};
pub use tensor::{datum_type, tensor_from_proto, tensor_from_proto_bytes, zero_tensor};

/// The tract tensor type the functions of this crate take and return.
pub use tract_onnx::prelude::{DatumType, Tensor};
