//! The one error type of this crate.

/// What can go wrong packing or unpacking a `.shrink` file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HuffmanError {
    /// The bytes are not a `.shrink` file (wrong magic).
    #[error("not a .shrink file: {0}")]
    NotShrink(String),
    /// A format version this build does not read.
    #[error("unsupported .shrink format version {found} (this build reads version {supported})")]
    Version { found: u8, supported: u8 },
    /// The file is truncated, corrupted or hostile: `what` names the field at fault.
    #[error("corrupt .shrink file at byte {offset}: {what}")]
    Corrupt { offset: u64, what: String },
    /// The unpacked model would exceed the output limit.
    #[error("the unpacked model would exceed {limit} bytes ({what})")]
    TooLarge { limit: u64, what: String },
    /// A tensor cannot be packed as asked.
    #[error("tensor `{tensor}`: {reason}")]
    Tensor { tensor: String, reason: String },
    #[error(transparent)]
    Graph(#[from] shrink_graph::GraphError),
}

impl HuffmanError {
    pub(crate) fn corrupt(offset: usize, what: impl Into<String>) -> HuffmanError {
        HuffmanError::Corrupt { offset: offset as u64, what: what.into() }
    }
}
