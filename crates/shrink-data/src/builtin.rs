//! Datasets known by name: `mnist`, `fashion-mnist` and `cifar10`.
//!
//! `mnist` ships with the repository under `fixtures/data/mnist/` (gzip IDX,
//! re-created by `cargo xtask data mnist`); the data folder is
//! `$SHRINK_DATA_DIR`, or the first `fixtures/data` holding `mnist/` found
//! from the current directory upwards. `fashion-mnist` and `cifar10` are not
//! committed: `cargo xtask data fashion-mnist` puts gzip IDX files in
//! `<cache>/data/fashion-mnist/`, `cargo xtask data cifar10` raw IDX files in
//! `<cache>/data/cifar10/` (`{train,test}-images-idx4-ubyte`, u8
//! `[N, 3, 32, 32]` channels first, and `{train,test}-labels-idx1-ubyte`),
//! where the cache is `$SHRINK_CACHE_DIR`, `$XDG_CACHE_HOME/shrink` or
//! `$HOME/.cache/shrink` (the same folder as xtask's). Every loader takes
//! each file raw or gzip-compressed (`NAME` or `NAME.gz`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{DataError, InMemoryDataset, Preprocess, read_idx};

/// Names [`load_builtin`] knows.
pub const BUILTIN: &[&str] = &["mnist", "fashion-mnist", "cifar10"];

/// Which part of a builtin dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// The training set (60000 samples for both MNISTs, 50000 for CIFAR-10).
    Train,
    /// The test set (10000 samples for all three).
    Test,
}

/// Where builtin datasets live. `None` fields are found as the module doc says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataDirs {
    /// The folder holding `mnist/` (the repository's `fixtures/data`).
    pub data_dir: Option<PathBuf>,
    /// The cache folder, holding `data/fashion-mnist/` and `data/cifar10/`.
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
/// Both MNISTs are 28x28 grey images, CIFAR-10 32x32 RGB images (samples
/// `[3, 32, 32]`, u8); all three have 10 classes. Anything else in their
/// files is an error.
pub fn load_builtin_from(
    dirs: &DataDirs,
    name: &str,
    split: Split,
    preprocess: &Preprocess,
) -> Result<InMemoryDataset, DataError> {
    let set = match name {
        "mnist" => Builtin::mnist(dirs.data_dir()?.join("mnist"), "cargo xtask data mnist"),
        "fashion-mnist" => {
            Builtin::mnist(dirs.cache_dir()?.join("data").join("fashion-mnist"), "cargo xtask data fashion-mnist")
        }
        "cifar10" => Builtin {
            dir: dirs.cache_dir()?.join("data").join("cifar10"),
            fix: "cargo xtask data cifar10",
            test_prefix: "test",
            rank: 4,
            image_shape: &[3, 32, 32],
            gzip: false,
        },
        _ => {
            return Err(DataError::UnknownDataset { name: name.into(), known: BUILTIN.to_vec() });
        }
    };
    let prefix = match split {
        Split::Train => "train",
        Split::Test => set.test_prefix,
    };
    let file = |kind: &str, rank: usize| -> Result<PathBuf, DataError> {
        let stem = format!("{prefix}-{kind}-idx{rank}-ubyte");
        let (raw, gz) = (set.dir.join(&stem), set.dir.join(format!("{stem}.gz")));
        match (gz.is_file(), raw.is_file()) {
            (true, _) => Ok(gz),
            (false, true) => Ok(raw),
            (false, false) => {
                let path = if set.gzip { gz } else { raw };
                Err(DataError::MissingDataset { name: name.into(), path, fix: set.fix })
            }
        }
    };
    let images = read_idx(&file("images", set.rank)?)?;
    if images.shape.len() != set.rank || images.shape[1..] != *set.image_shape {
        let dims: Vec<String> = set.image_shape.iter().map(|d| d.to_string()).collect();
        return Err(DataError::Shape {
            origin: images.origin,
            shape: images.shape,
            reason: format!("{name} images are [N, {}]", dims.join(", ")),
        });
    }
    let labels = read_idx(&file("labels", 1)?)?;
    let data = InMemoryDataset::new(images, labels, Some(10), preprocess)?;
    tracing::info!(name, ?split, samples = crate::Dataset::len(&data), "loaded builtin dataset");
    Ok(data)
}

/// Where a builtin dataset's files are and what its images are.
struct Builtin {
    dir: PathBuf,
    /// The command that installs it.
    fix: &'static str,
    /// The test files' prefix (`train` for the training files).
    test_prefix: &'static str,
    /// The images' IDX rank (the `idx3` / `idx4` in their names).
    rank: usize,
    /// An image's dimensions.
    image_shape: &'static [usize],
    /// Whether the installed files are `.gz` (the name a missing file is reported by).
    gzip: bool,
}

impl Builtin {
    /// MNIST's layout: `{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`, 28x28 grey.
    fn mnist(dir: PathBuf, fix: &'static str) -> Builtin {
        Builtin { dir, fix, test_prefix: "t10k", rank: 3, image_shape: &[28, 28], gzip: true }
    }
}
