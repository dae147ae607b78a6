//! The one error type of the data crate.

use std::path::PathBuf;

/// Everything that can go wrong reading a dataset or applying its parameters.
///
/// Variants name the file (a path), the array (`origin`: a path, or
/// `path:name` inside an `.npz`) or the parameter involved. Messages are
/// lowercase without a trailing period; callers print them with `{:#}`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// A file that should be there is not.
    #[error("{}: no such file", path.display())]
    MissingFile { path: PathBuf },
    /// Any other I/O failure (permissions, a corrupt gzip stream, ...).
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The first bytes are not an IDX header.
    #[error("{}: not an IDX file: {reason}", path.display())]
    BadMagic { path: PathBuf, reason: String },
    /// The file ends before the header or the data it declares.
    #[error("{}: truncated {part}: expected {expected} bytes, found {found}", path.display())]
    Truncated { path: PathBuf, part: &'static str, expected: u64, found: u64 },
    /// A file that is malformed in some other way (`.npy` header, zip archive, trailing data).
    #[error("{}: {reason}", path.display())]
    Format { path: PathBuf, reason: String },
    /// An element type this crate cannot use where it was found.
    #[error("{origin}: element type {dtype} is not supported here ({expected})")]
    DType { origin: String, dtype: String, expected: &'static str },
    /// An array whose shape does not fit its role.
    #[error("{origin}: wrong shape {shape:?}: {reason}")]
    Shape { origin: String, shape: Vec<usize>, reason: String },
    /// A label outside `0..num_classes`.
    #[error("{origin}: label {label} at index {index} is out of range for {num_classes} classes")]
    LabelOutOfRange { origin: String, index: usize, label: i64, num_classes: usize },
    /// Images and labels disagree on the number of samples.
    #[error("{images} holds {image_count} samples but {labels} holds {label_count} labels")]
    CountMismatch { images: String, image_count: usize, labels: String, label_count: usize },
    /// An `.npz` archive without the requested array.
    #[error("{}: no array `{name}` in the archive (it holds: {})", path.display(), available.join(", "))]
    NpzMember { path: PathBuf, name: String, available: Vec<String> },
    /// A preprocessing parameter that does not fit the data.
    #[error("preprocess.{field}: {reason}")]
    Preprocess { field: &'static str, reason: String },
    /// An augmentation that does not fit the batches (`field` as in the TOML).
    #[error("{field}: {reason}")]
    Augment { field: &'static str, reason: String },
    /// An image that cannot be used: undecodable, too small for the crop, or
    /// of another size than the folder's first image.
    #[error("{}: {reason}", path.display())]
    Image { path: PathBuf, reason: String },
    /// An image folder (its root or a class folder) that holds nothing to load.
    #[error("{}: {reason}", path.display())]
    Folder { path: PathBuf, reason: String },
    /// A loader option that cannot be used (`field` as in the TOML, e.g. `resize`).
    #[error("{field}: {reason}")]
    Parameter { field: &'static str, reason: String },
    /// A train/validation split that cannot be made.
    #[error("split: {reason}")]
    Split { reason: String },
    /// A batch asked for a sample the dataset does not have.
    #[error("sample index {index} is out of range for a dataset of {len} samples")]
    IndexOutOfRange { index: usize, len: usize },
    /// A builtin dataset name nobody knows.
    #[error("unknown dataset `{name}` (builtin: {})", known.join(", "))]
    UnknownDataset { name: String, known: Vec<&'static str> },
    /// A builtin dataset whose files are not where they should be.
    #[error("dataset `{name}`: {} is missing; run `{fix}`", path.display())]
    MissingDataset { name: String, path: PathBuf, fix: &'static str },
    /// No `fixtures/data` folder above the current directory and no `SHRINK_DATA_DIR`.
    #[error(
        "cannot find fixtures/data/mnist in {} or any folder above it; set SHRINK_DATA_DIR to the folder holding mnist/",
        start.display()
    )]
    NoDataDir { start: PathBuf },
    /// None of the variables that locate the cache folder is set.
    #[error("cannot locate the cache folder: set SHRINK_CACHE_DIR, XDG_CACHE_HOME or HOME")]
    NoCacheDir,
}

impl DataError {
    /// Turns an I/O error on `path` into [`DataError::MissingFile`] or [`DataError::Io`].
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> DataError {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            DataError::MissingFile { path }
        } else {
            DataError::Io { path, source }
        }
    }
}
