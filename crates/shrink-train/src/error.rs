//! The one error type of the crate.

use shrink_data::DataError;
use shrink_graph::GraphError;

/// Everything that can go wrong while building, running or training a graph.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// The op type is outside the trainer's set (found at build time).
    #[error("node `{node}`: op {op} is not supported by the trainer")]
    Unsupported { node: String, op: String },
    /// An op's attributes, inputs or run-time shapes are invalid.
    #[error("node `{node}` ({op}): {reason}")]
    Op { node: String, op: String, reason: String },
    /// A parameter name is unknown, or a hook does not fit it.
    #[error("parameter `{name}`: {reason}")]
    Param { name: String, reason: String },
    /// Inputs fed to the executor do not match the graph.
    #[error("input `{name}`: {reason}")]
    Input { name: String, reason: String },
    /// The model as a whole cannot be trained this way.
    #[error("model: {0}")]
    Model(String),
    /// A training configuration value is invalid.
    #[error("config `{key}`: {reason}")]
    Config { key: String, reason: String },
    /// burn panicked on something the checks above did not catch.
    #[error("backend failure in {context}: {message}")]
    Backend { context: String, message: String },
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Data(#[from] DataError),
}

impl TrainError {
    pub(crate) fn op(node: &str, op: &str, reason: impl Into<String>) -> TrainError {
        TrainError::Op { node: node.into(), op: op.into(), reason: reason.into() }
    }

    pub(crate) fn param(name: &str, reason: impl Into<String>) -> TrainError {
        TrainError::Param { name: name.into(), reason: reason.into() }
    }

    pub(crate) fn config(key: &str, reason: impl Into<String>) -> TrainError {
        TrainError::Config { key: key.into(), reason: reason.into() }
    }
}
