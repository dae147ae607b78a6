//! The one error type of stages.

/// What can go wrong building or running a stage. Variants name the stage
/// kind and the parameter, node or key at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StageError {
    /// A parameter of the stage's TOML table is wrong.
    #[error("stage `{stage}`: parameter `{key}`: {reason}")]
    Param { stage: String, key: String, reason: String },
    /// The stage needs data the pipeline does not declare.
    #[error("stage `{stage}` needs data ({why}): add `{key}` to the pipeline's [data] table")]
    NeedsData { stage: String, key: String, why: String },
    /// No factory is registered for this kind.
    #[error("unknown stage kind `{kind}` (known kinds: {known})")]
    UnknownKind { kind: String, known: String },
    #[error("stage `{stage}`: {source}")]
    Graph {
        stage: String,
        #[source]
        source: shrink_graph::GraphError,
    },
    /// The stage could not do its work; `reason` says why.
    #[error("stage `{stage}`: {reason}")]
    Failed { stage: String, reason: String },
}

impl StageError {
    pub fn param(stage: &str, key: &str, reason: impl Into<String>) -> StageError {
        StageError::Param { stage: stage.into(), key: key.into(), reason: reason.into() }
    }

    pub fn failed(stage: &str, reason: impl Into<String>) -> StageError {
        StageError::Failed { stage: stage.into(), reason: reason.into() }
    }

    pub fn graph(stage: &str, source: shrink_graph::GraphError) -> StageError {
        StageError::Graph { stage: stage.into(), source }
    }
}
