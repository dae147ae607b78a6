//! `shrink-stage`: what every compression stage implements and receives.
//!
//! A [`Stage`] rewrites a [`Model`] in place and says what it changed in a
//! [`StageReport`]. It gets a [`StageCx`]: the datasets (if the pipeline has
//! any), the original model (a teacher, a reference), the seed, a progress
//! callback and folders. A [`StageFactory`] builds a stage from its TOML
//! table; the [`Registry`] maps `kind` names to factories. Stage crates offer
//! `pub fn register(reg: &mut Registry)`; `shrink_pipeline::builtin()` calls
//! each one, so adding a stage is one crate and one line.
//!
//! Stages take `&mut Model` rather than `&mut Graph`: some need the model's
//! opset imports (quantization adds a domain) and plugins exchange whole
//! ONNX models.

mod error;
mod registry;
mod report;
mod select;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::path::PathBuf;

pub use error::StageError;
pub use registry::{Registry, StageFactory};
pub use report::{LayerNote, StageReport};
pub use select::{DEFAULT_LAYER_OPS, WeightSite, glob_match, select_weights};
use shrink_data::Dataset;
use shrink_graph::Model;

/// A compression step.
pub trait Stage: Send + Sync + std::fmt::Debug {
    /// The `kind` of its `[[stage]]` table.
    fn kind(&self) -> &str;

    /// Rewrites `model`. Errors name the stage and the parameter or node at fault.
    fn run(&self, model: &mut Model, cx: &mut StageCx<'_>) -> Result<StageReport, StageError>;
}

/// Receives progress from long stages; the CLI draws it, libraries never do.
pub trait Progress {
    /// A named phase of `total` steps starts (`total` 0 when unknown).
    fn start(&mut self, phase: &str, total: u64);
    /// `done` steps of the current phase are finished; `message` says what.
    fn update(&mut self, done: u64, message: &str);
    fn finish(&mut self);
}

/// A [`Progress`] that ignores everything (tests, quiet runs).
#[derive(Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&mut self, _: &str, _: u64) {}
    fn update(&mut self, _: u64, _: &str) {}
    fn finish(&mut self) {}
}

/// Everything a stage may use besides the model it rewrites.
pub struct StageCx<'a> {
    /// The pipeline's name, for messages.
    pub pipeline: String,
    /// Index of this stage in the pipeline (0-based).
    pub index: usize,
    /// Training data (`[data] train`), if the pipeline declares it.
    pub train: Option<&'a dyn Dataset>,
    /// Held-out data (`[data] test`), if declared.
    pub test: Option<&'a dyn Dataset>,
    /// The pipeline's input model, before any stage: a teacher, a reference.
    pub original: &'a Model,
    pub seed: u64,
    pub progress: &'a mut dyn Progress,
    /// A folder the stage may write temporary files into.
    pub scratch: PathBuf,
    /// The run's output folder (e.g. the Huffman stage writes `model.shrink` there).
    pub output_dir: PathBuf,
    /// ONNX bytes the caller already holds (use [`StageCx::original_bytes`]
    /// and [`StageCx::model_bytes`], which export when they are absent).
    pub encoded: Encoded<'a>,
}

/// Inline ONNX encodings ([`Model::to_bytes`]) that the caller of a stage
/// already holds, so that the stage need not export the same model again
/// (the pipeline runner encodes each model it holds once). Each is optional;
/// `Encoded::default()` holds none.
#[derive(Debug, Clone, Copy, Default)]
pub struct Encoded<'a> {
    /// The bytes of [`StageCx::original`].
    pub original: Option<&'a [u8]>,
    /// The bytes of the model [`Stage::run`] receives, as it receives it.
    pub model: Option<&'a [u8]>,
}

impl std::fmt::Debug for StageCx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageCx")
            .field("pipeline", &self.pipeline)
            .field("index", &self.index)
            .field("train", &self.train.map(|d| d.len()))
            .field("test", &self.test.map(|d| d.len()))
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

impl<'a> StageCx<'a> {
    /// The original's inline ONNX bytes: the caller's, or exported now.
    pub fn original_bytes(&self) -> Cow<'a, [u8]> {
        match self.encoded.original {
            Some(b) => Cow::Borrowed(b),
            None => Cow::Owned(self.original.to_bytes()),
        }
    }

    /// The inline ONNX bytes of `model`, the model `run` received, before the
    /// stage changes it: the caller's, or exported now.
    pub fn model_bytes(&self, model: &Model) -> Cow<'a, [u8]> {
        match self.encoded.model {
            Some(b) => Cow::Borrowed(b),
            None => Cow::Owned(model.to_bytes()),
        }
    }

    /// The training data, or the error that tells the user which key to add.
    pub fn require_train(&self, stage: &str, why: &str) -> Result<&'a dyn Dataset, StageError> {
        self.train.ok_or_else(|| StageError::NeedsData {
            stage: stage.into(),
            key: "data.train".into(),
            why: why.into(),
        })
    }
}
