//! Datasets known by name: `mnist` and `fashion-mnist`.
//!
//! `mnist` ships with the repository under `fixtures/data/mnist/` (gzip IDX,
//! re-created by `cargo xtask data mnist`); the data folder is
//! `$SHRINK_DATA_DIR`, or the first `fixtures/data` holding `mnist/` found
//! from the current directory upwards. `fashion-mnist` is not committed:
//! `cargo xtask data fashion-mnist` puts it in `<cache>/data/fashion-mnist/`,
//! where the cache is `$SHRINK_CACHE_DIR`, `$XDG_CACHE_HOME/shrink` or
//! `$HOME/.cache/shrink` (the same folder as xtask's).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{DataError, InMemoryDataset, Preprocess, read_idx};

/// Names [`load_builtin`] knows.
pub const BUILTIN: &[&str] = &["mnist", "fashion-mnist"];

/// Which part of a builtin dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// The training set (60000 samples for both MNISTs).
    Train,
    /// The test set (10000 samples for both MNISTs).
    Test,
}

/// Where builtin datasets live. `None` fields are found as the module doc says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataDirs {
    /// The folder holding `mnist/` (the repository's `fixtures/data`).
    pub data_dir: Option<PathBuf>,
    /// The cache folder, holding `data/fashion-mnist/`.
    pub cache_dir: Option<PathBuf>,
}

impl DataDirs {
    /// Reads `SHRINK_DATA_DIR` and the cache variables; what they leave
    /// unset is searched for when needed.
    pub fn from_env() -> DataDirs {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let cache_dir = var("SHRINK_CACHE_DIR")
            .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("shrink")))
            .or_else(|| var("HOME").map(|h| h.join(".cache").join("shrink")));
        DataDirs { data_dir: var("SHRINK_DATA_DIR"), cache_dir }
    }

    /// The data folder: `data_dir`, or [`find_data_dir`] from the current directory.
    pub fn data_dir(&self) -> Result<PathBuf, DataError> {
        if let Some(d) = &self.data_dir {
            return Ok(d.clone());
        }
        let start = std::env::current_dir().map_err(|e| DataError::io(".", e))?;
        find_data_dir(&start).ok_or(DataError::NoDataDir { start })
    }

    /// The cache folder.
    pub fn cache_dir(&self) -> Result<PathBuf, DataError> {
        self.cache_dir.clone().ok_or(DataError::NoCacheDir)
    }
}

/// The first `fixtures/data` holding `mnist/` in `start` or a folder above it.
pub fn find_data_dir(start: &Path) -> Option<PathBuf> {
    start.ancestors().map(|a| a.join("fixtures").join("data")).find(|d| d.join("mnist").is_dir())
}

/// Loads a builtin dataset, locating its files with [`DataDirs::from_env`].
pub fn load_builtin(name: &str, split: Split, preprocess: &Preprocess) -> Result<InMemoryDataset, DataError> {
    load_builtin_from(&DataDirs::from_env(), name, split, preprocess)
}

/// Loads a builtin dataset from the given folders.
///
/// Both MNISTs are 28x28 grey images with 10 classes; anything else in their
/// files is an error.
pub fn load_builtin_from(
    dirs: &DataDirs,
    name: &str,
    split: Split,
    preprocess: &Preprocess,
) -> Result<InMemoryDataset, DataError> {
    let (dir, fix) = match name {
        "mnist" => (dirs.data_dir()?.join("mnist"), "cargo xtask data mnist"),
        "fashion-mnist" => (dirs.cache_dir()?.join("data").join("fashion-mnist"), "cargo xtask data fashion-mnist"),
        _ => {
            return Err(DataError::UnknownDataset { name: name.into(), known: BUILTIN.to_vec() });
        }
    };
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let file = |stem: &str| -> Result<PathBuf, DataError> {
        let gz = dir.join(format!("{prefix}-{stem}-ubyte.gz"));
        let raw = dir.join(format!("{prefix}-{stem}-ubyte"));
        match (gz.is_file(), raw.is_file()) {
            (true, _) => Ok(gz),
            (false, true) => Ok(raw),
            (false, false) => Err(DataError::MissingDataset { name: name.into(), path: gz, fix }),
        }
    };
    let images = read_idx(&file("images-idx3")?)?;
    if images.shape.len() != 3 || images.shape[1..] != [28, 28] {
        return Err(DataError::Shape {
            origin: images.origin,
            shape: images.shape,
            reason: format!("{name} images are [N, 28, 28]"),
        });
    }
    let labels = read_idx(&file("labels-idx1")?)?;
    let data = InMemoryDataset::new(images, labels, Some(10), preprocess)?;
    tracing::info!(name, ?split, samples = crate::Dataset::len(&data), "loaded builtin dataset");
    Ok(data)
}
