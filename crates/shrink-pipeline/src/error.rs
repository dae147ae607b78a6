//! The one error type of the pipeline crate.

use std::path::{Path, PathBuf};

/// What can go wrong reading or running a pipeline. Variants name the file,
/// key, stage or path involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The pipeline file does not parse or does not fit the schema.
    #[error("{}: {message}", path.display())]
    Toml { path: PathBuf, message: String },
    #[error("--set {set}: {message}")]
    Set { set: String, message: String },
    /// A path the pipeline names does not exist.
    #[error("{}: {location}`{key}` names {}, which does not exist", pipeline.display(), path.display())]
    Missing { pipeline: PathBuf, location: String, key: String, path: PathBuf },
    #[error("{}: stage {index} (`{kind}`): {location}{source}", pipeline.display())]
    Stage {
        pipeline: PathBuf,
        index: usize,
        kind: String,
        location: String,
        #[source]
        source: Box<shrink_stage::StageError>,
    },
    /// A stage left the graph broken: a bug in that stage.
    #[error("stage {index} (`{kind}`) left an invalid graph (a bug in the stage): {source}")]
    StageBug {
        index: usize,
        kind: String,
        #[source]
        source: Box<shrink_graph::GraphError>,
    },
    #[error("{0}")]
    Graph(#[from] shrink_graph::GraphError),
    #[error("data `{key}`: {source}")]
    Data {
        key: String,
        #[source]
        source: shrink_data::DataError,
    },
    #[error("{0}")]
    Verify(#[from] shrink_verify::VerifyError),
    /// The output folder holds something else.
    #[error("output folder {} {reason}; use --force to replace it", path.display())]
    OutputInUse { path: PathBuf, reason: String },
    /// The final model lost more accuracy than `verify.max_accuracy_drop` allows.
    #[error(
        "top-1 accuracy dropped by {:.3} pp ({:.2} % → {:.2} %), more than verify.max_accuracy_drop = {:.3} pp; reports are in {}",
        drop * 100.0, before * 100.0, after * 100.0, limit * 100.0, output.display()
    )]
    AccuracyDrop { before: f64, after: f64, drop: f64, limit: f64, output: PathBuf },
    #[error("{0}")]
    Other(String),
}

impl PipelineError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> PipelineError {
        PipelineError::Io { path: path.to_path_buf(), source }
    }
}
