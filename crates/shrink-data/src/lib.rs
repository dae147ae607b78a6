//! `shrink-data`: datasets for fine-tuning and judging compressed models.
//!
//! Reads labelled image sets from the formats they ship in, applies the
//! preprocessing a pipeline declares, and hands out batches of `f32` inputs
//! with `u32` labels. No ML framework: a [`Batch`] is a flat `Vec<f32>` plus a
//! batch-first shape, which the trainer and tract both accept.
//!
//! - Loaders: IDX ([`read_idx`], raw or gzip, told apart by magic bytes),
//!   numpy's `.npy` ([`read_npy`]) and `.npz` ([`read_npz_array`]). Each gives
//!   a [`RawArray`]; [`load_pair`] and [`load_npz`] pair images with labels.
//!   Arrays of images are read channels first (`[N, C, H, W]`, or `[N, H, W]`
//!   grey, or `[N, F]` features); [`RawArray::nhwc_to_nchw`] turns channels-last
//!   arrays (numpy's CIFAR-10, Keras) around first.
//! - Image folders ([`load_image_folder`]): `root/<class>/<image>.png|jpg`,
//!   labels from the sorted class names, as torchvision's `ImageFolder`, with
//!   an optional resize and centre crop ([`FolderOptions`]).
//! - [`Dataset`] is the trait the trainer and the verifier iterate;
//!   [`InMemoryDataset`] holds the raw values (u8 pixels stay u8) and applies
//!   the [`Preprocess`] when a batch is made; [`Subset`] views some of its
//!   samples (a validation split, say).
//! - [`Preprocess`] (deserialized from the pipeline TOML): scale to [0, 1],
//!   mean/std normalisation (per channel), NCHW or flattened layout.
//! - [`Augment`]: a seeded random shift and horizontal flip of image batches
//!   for training.
//! - Determinism: [`SplitMix64`] is the crate's one PRNG; [`permutation`]
//!   shuffles and [`train_val_split`] holds out a validation set, both purely
//!   from a seed, the same on every platform and every version of this crate.
//! - Builtin datasets by name ([`load_builtin`]): `mnist` (shipped under
//!   `fixtures/data/mnist/`), `fashion-mnist` and `cifar10` (fetched into the
//!   cache by `cargo xtask data fashion-mnist` / `cargo xtask data cifar10`).
//!
//! **Invariant:** bad files and bad parameters are a [`DataError`] naming the
//! file or field, never a panic; nothing here allocates more than the input
//! actually holds, whatever a header claims.

mod augment;
mod builtin;
mod dataset;
mod error;
mod folder;
mod idx;
mod npy;
mod preprocess;
mod rng;

#[cfg(test)]
mod tests;

pub use augment::Augment;
pub use builtin::{BUILTIN, DataDirs, Split, find_data_dir, load_builtin, load_builtin_from};
pub use dataset::{Batch, Dataset, InMemoryDataset, Subset, SubsetRef, load_npz, load_pair, read_array};
pub use error::DataError;
pub use folder::{FolderOptions, IMAGE_EXTENSIONS, PROGRESS_MIN, load_image_folder};
pub use idx::read_idx;
pub use npy::{npz_names, read_npy, read_npz_array};
pub use preprocess::{Layout, Preprocess};
pub use rng::{Holdout, SplitMix64, TrainVal, derive_seed, permutation, shuffle, train_val_split};

/// Values of an array as read from a file, before any preprocessing.
///
/// Unsigned bytes stay bytes (MNIST pixels cost one byte each in memory);
/// other integer types widen to `i64`, floating types become `f32`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Values {
    /// `u8` / `uint8` data.
    U8(Vec<u8>),
    /// Signed or wider unsigned integers, widened.
    I64(Vec<i64>),
    /// `f32` or `f64` data (`f64` is narrowed).
    F32(Vec<f32>),
}

impl Values {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Values::U8(v) => v.len(),
            Values::I64(v) => v.len(),
            Values::F32(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type's name, for messages.
    pub fn dtype(&self) -> &'static str {
        match self {
            Values::U8(_) => "u8",
            Values::I64(_) => "i64",
            Values::F32(_) => "f32",
        }
    }
}

/// An n-dimensional array read from a file: row-major values and their shape.
#[derive(Debug, Clone, PartialEq)]
pub struct RawArray {
    /// Where it came from, for messages: a path, or `path:name` inside an `.npz`.
    pub origin: String,
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values, row-major.
    pub values: Values,
}

impl RawArray {
    /// Moves the channel axis of a channels-last image array `[N, H, W, C]`
    /// in front: `[N, C, H, W]`, the layout [`InMemoryDataset::new`] reads
    /// (numpy's CIFAR-10 arrays and Keras datasets are channels last).
    /// Any other rank is a [`DataError::Shape`].
    pub fn nhwc_to_nchw(self) -> Result<RawArray, DataError> {
        let RawArray { origin, shape, values } = self;
        let &[n, h, w, c] = &shape[..] else {
            return Err(DataError::Shape { origin, shape, reason: "channels-last images must be [N, H, W, C]".into() });
        };
        fn transpose<T: Copy>(v: &[T], n: usize, h: usize, w: usize, c: usize) -> Vec<T> {
            if h * w * c == 0 {
                return Vec::new(); // empty samples: InMemoryDataset::new says so
            }
            let mut out = Vec::with_capacity(v.len());
            for sample in v.chunks_exact(h * w * c).take(n) {
                for ch in 0..c {
                    out.extend(sample.iter().skip(ch).step_by(c).copied());
                }
            }
            out
        }
        let values = match values {
            Values::U8(v) => Values::U8(transpose(&v, n, h, w, c)),
            Values::I64(v) => Values::I64(transpose(&v, n, h, w, c)),
            Values::F32(v) => Values::F32(transpose(&v, n, h, w, c)),
        };
        Ok(RawArray { origin, shape: vec![n, c, h, w], values })
    }
}
