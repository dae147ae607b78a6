//! The one error type of the graph crate.

use std::path::PathBuf;

/// Everything that can go wrong loading, saving or checking a model.
///
/// Variants name the file, node, value or tensor involved. Messages are
/// lowercase without a trailing period; callers print them with `{:#}`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GraphError {
    /// Wraps any error with the file it came from.
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: Box<GraphError>,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("model is {size} bytes, over the limit of {limit} bytes (raise it with LoadOptions::max_bytes)")]
    TooLarge { size: u64, limit: u64 },
    #[error("not an ONNX model (protobuf decode failed: {0})")]
    Decode(#[from] prost::DecodeError),
    #[error("the model has no graph")]
    NoGraph,
    #[error("node `{node}` ({op}) reads value `{value}`, which nothing produces")]
    DanglingInput { node: String, op: String, value: String },
    #[error("graph output `{value}` is not produced by any node, input or initializer")]
    DanglingOutput { value: String },
    #[error("value `{value}` is produced twice: by {first} and by {second}")]
    DuplicateValue { value: String, first: String, second: String },
    #[error("tensor `{tensor}`: {reason}")]
    Tensor { tensor: String, reason: String },
    #[error("tensor `{tensor}`: external data: {reason}")]
    ExternalData { tensor: String, reason: String },
    #[error("node `{node}` ({op}): {reason}")]
    Attribute { node: String, op: String, reason: String },
    #[error("invalid graph at {node}: {reason}")]
    Invalid { node: String, reason: String },
}

impl GraphError {
    /// Attaches the file this error came from.
    pub fn in_file(self, path: impl Into<PathBuf>) -> GraphError {
        match self {
            e @ GraphError::File { .. } => e,
            e => GraphError::File { path: path.into(), source: Box::new(e) },
        }
    }
}
