//! The one error type of the verify crate.

/// Everything that can go wrong running or comparing a model in tract.
///
/// Messages are lowercase without a trailing period; the text of a tract
/// error is kept as tract wrote it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// tract returned an error at one stage (`parsing`, `typing`, ...).
    #[error("tract failed while {stage}: {message}")]
    Tract { stage: &'static str, message: String },
    /// tract panicked at one stage; the panic was caught.
    #[error("tract panicked while {stage}: {message}")]
    Panic { stage: &'static str, message: String },
    #[error("the model takes {expected} inputs, {given} given")]
    InputCount { expected: usize, given: usize },
    #[error("not an ONNX tensor (protobuf decode failed: {0})")]
    Decode(#[from] prost::DecodeError),
    #[error("element type {0} is not supported by tract")]
    UnsupportedType(String),
    #[error("tensor `{tensor}`: {reason}")]
    Tensor { tensor: String, reason: String },
    #[error("{expected} outputs expected, {actual} found")]
    OutputCount { expected: usize, actual: usize },
    /// A model cannot be evaluated as asked.
    #[error("model `{model}`: {reason}")]
    Model { model: String, reason: String },
    /// The dataset's samples do not fit the model's input.
    #[error("model `{model}` takes input samples of shape {model_shape:?}, the dataset gives {data_shape:?}")]
    DataShape { model: String, model_shape: Vec<usize>, data_shape: Vec<usize> },
    #[error("dataset: {0}")]
    Data(#[from] shrink_data::DataError),
    /// Two output lists differ at output `index`.
    #[error("output {index}: {reason}")]
    Mismatch { index: usize, reason: String },
}
