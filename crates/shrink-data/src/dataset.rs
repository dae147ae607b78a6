//! The [`Dataset`] trait, batches, the in-memory dataset and subsets.

use std::path::Path;
use std::sync::Arc;

use crate::preprocess::Plan;
use crate::{DataError, Layout, Preprocess, RawArray, Values, read_idx, read_npy, read_npz_array};

/// A batch of samples: inputs ready for a network, and their labels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// `shape.iter().product()` values, row-major, sample after sample.
    pub inputs: Vec<f32>,
    /// Batch-first: `[N, C, H, W]` or `[N, features]`.
    pub shape: Vec<usize>,
    /// One class index per sample.
    pub labels: Vec<u32>,
}

impl Batch {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch holds no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// A labelled classification dataset, read by index.
pub trait Dataset: Send + Sync + std::fmt::Debug {
    /// Number of samples.
    fn len(&self) -> usize;

    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of classes: every label is in `0..num_classes()`.
    fn num_classes(&self) -> usize;

    /// Shape of one sample as batches hold it, e.g. `[1, 28, 28]` or `[784]`.
    fn sample_shape(&self) -> &[usize];

    /// Fills `out` with the samples at `indices`, in that order, reusing its
    /// buffers. An index `>= len()` is an [`DataError::IndexOutOfRange`].
    fn batch_into(&self, indices: &[usize], out: &mut Batch) -> Result<(), DataError>;

    /// Per channel, what a raw value of 0 (a black pixel) becomes after the
    /// preprocessing: what [`crate::Augment`] fills the border of a shifted
    /// image with. The default, empty, means 0 for every channel.
    fn background(&self) -> Vec<f32> {
        Vec::new()
    }

    /// How raw values become model inputs (scale, per-channel mean and std;
    /// the layout as the dataset was built): what a tool reading the raw
    /// data again for a model made from this dataset must apply (`shrink
    /// infer` takes it from the early-exit manifest). `None` when unknown.
    fn preprocess(&self) -> Option<Preprocess> {
        None
    }

    /// The samples at `indices`, in that order.
    fn batch(&self, indices: &[usize]) -> Result<Batch, DataError> {
        let mut out = Batch::default();
        self.batch_into(indices, &mut out)?;
        Ok(out)
    }
}

/// Raw sample values kept as read: u8 pixels stay one byte each.
#[derive(Debug, Clone)]
enum Pixels {
    U8(Vec<u8>),
    F32(Vec<f32>),
}

/// A dataset held in memory as raw values, preprocessed batch by batch.
#[derive(Debug, Clone)]
pub struct InMemoryDataset {
    origin: String,
    pixels: Pixels,
    labels: Vec<u32>,
    num_classes: usize,
    /// Per-sample shape as stored, channels first (`[C, H, W]`, or `[F]`).
    stored_shape: Vec<usize>,
    /// Per-sample shape after the layout.
    sample_shape: Vec<usize>,
    sample_len: usize,
    plan: Plan,
}

impl InMemoryDataset {
    /// Pairs images with labels.
    ///
    /// `images` is `[N, ...]`: `[N, F]` gives samples `[F]`, `[N, H, W]` grey
    /// images `[1, H, W]`, `[N, C, H, W]` (or higher rank) samples `[C, H, W]`.
    /// `labels` is `[N]` (or `[N, 1]`) of integers. `num_classes`: all labels
    /// must be below it; `None` takes the largest label plus one.
    pub fn new(
        images: RawArray,
        labels: RawArray,
        num_classes: Option<usize>,
        preprocess: &Preprocess,
    ) -> Result<InMemoryDataset, DataError> {
        let RawArray { origin, shape, values } = images;
        if shape.len() < 2 {
            return Err(DataError::Shape {
                origin,
                shape,
                reason: "images need a sample axis first and at least one more: [N, ...]".into(),
            });
        }
        let n = shape[0];
        let stored_shape = match shape.len() {
            3 => vec![1, shape[1], shape[2]],
            _ => shape[1..].to_vec(),
        };
        let sample_len: usize = stored_shape.iter().product();
        if sample_len == 0 {
            return Err(DataError::Shape { origin, shape, reason: "samples are empty".into() });
        }
        let (labels_origin, raw_labels) = labels_from(labels, n, &origin)?;
        let (labels, num_classes) = check_labels(&raw_labels, &labels_origin, num_classes)?;
        let pixels = match values {
            Values::U8(v) => Pixels::U8(v),
            Values::F32(v) => Pixels::F32(v),
            Values::I64(v) => Pixels::F32(v.into_iter().map(|x| x as f32).collect()),
        };
        let plan = preprocess.plan(stored_shape[0])?;
        let sample_shape = layout_shape(&stored_shape, preprocess.layout);
        tracing::debug!(%origin, samples = n, ?sample_shape, num_classes, "dataset ready");
        Ok(InMemoryDataset { origin, pixels, labels, num_classes, stored_shape, sample_shape, sample_len, plan })
    }

    /// Replaces the preprocessing (raw values are kept, so this is cheap).
    pub fn set_preprocess(&mut self, preprocess: &Preprocess) -> Result<(), DataError> {
        self.plan = preprocess.plan(self.stored_shape[0])?;
        self.sample_shape = layout_shape(&self.stored_shape, preprocess.layout);
        Ok(())
    }

    /// Keeps only the first `n` samples (all of them when `n >= len`).
    pub fn truncated(mut self, n: usize) -> Result<InMemoryDataset, DataError> {
        let n = n.min(self.labels.len());
        self.labels.truncate(n);
        match &mut self.pixels {
            Pixels::U8(v) => v.truncate(n * self.sample_len),
            Pixels::F32(v) => v.truncate(n * self.sample_len),
        }
        Ok(self)
    }

    /// Where the images came from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// All labels, in sample order.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// Per-sample shape as stored, channels first, before the layout.
    pub fn stored_shape(&self) -> &[usize] {
        &self.stored_shape
    }

    fn write_sample(&self, i: usize, dst: &mut [f32]) {
        let channels = self.stored_shape[0];
        let plane = self.sample_len / channels;
        let start = i * self.sample_len;
        for c in 0..channels {
            let range = start + c * plane..start + (c + 1) * plane;
            let out = &mut dst[c * plane..(c + 1) * plane];
            match &self.pixels {
                Pixels::U8(v) => self.plan.apply(c, &v[range], out),
                Pixels::F32(v) => self.plan.apply(c, &v[range], out),
            }
        }
    }
}

impl Dataset for InMemoryDataset {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn num_classes(&self) -> usize {
        self.num_classes
    }

    fn sample_shape(&self) -> &[usize] {
        &self.sample_shape
    }

    fn background(&self) -> Vec<f32> {
        self.plan.background()
    }

    fn preprocess(&self) -> Option<Preprocess> {
        Some(self.plan.preprocess(self.sample_shape.len() == 1 && self.stored_shape.len() > 1))
    }

    fn batch_into(&self, indices: &[usize], out: &mut Batch) -> Result<(), DataError> {
        check_indices(indices, self.len())?;
        out.shape.clear();
        out.shape.push(indices.len());
        out.shape.extend_from_slice(&self.sample_shape);
        out.labels.clear();
        out.labels.extend(indices.iter().map(|&i| self.labels[i]));
        out.inputs.clear();
        out.inputs.resize(indices.len() * self.sample_len, 0.0);
        for (dst, &i) in out.inputs.chunks_exact_mut(self.sample_len).zip(indices) {
            self.write_sample(i, dst);
        }
        Ok(())
    }
}

/// Some samples of another dataset, in a given order (a validation split, say).
#[derive(Debug, Clone)]
pub struct Subset {
    inner: Arc<dyn Dataset>,
    indices: Vec<usize>,
}

impl Subset {
    /// The samples of `inner` at `indices`; sample `k` of the subset is
    /// sample `indices[k]` of `inner`.
    pub fn new(inner: Arc<dyn Dataset>, indices: Vec<usize>) -> Result<Subset, DataError> {
        check_indices(&indices, inner.len())?;
        Ok(Subset { inner, indices })
    }

    /// Indices into the inner dataset.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }
}

impl Dataset for Subset {
    fn len(&self) -> usize {
        self.indices.len()
    }

    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }

    fn sample_shape(&self) -> &[usize] {
        self.inner.sample_shape()
    }

    fn background(&self) -> Vec<f32> {
        self.inner.background()
    }

    fn preprocess(&self) -> Option<Preprocess> {
        self.inner.preprocess()
    }

    fn batch_into(&self, indices: &[usize], out: &mut Batch) -> Result<(), DataError> {
        check_indices(indices, self.len())?;
        let mapped: Vec<usize> = indices.iter().map(|&i| self.indices[i]).collect();
        self.inner.batch_into(&mapped, out)
    }
}

/// Like [`Subset`], over a borrowed dataset (a stage's `&dyn Dataset`).
#[derive(Debug, Clone)]
pub struct SubsetRef<'a> {
    inner: &'a dyn Dataset,
    indices: Vec<usize>,
}

impl<'a> SubsetRef<'a> {
    /// The samples of `inner` at `indices`, in that order.
    pub fn new(inner: &'a dyn Dataset, indices: Vec<usize>) -> Result<SubsetRef<'a>, DataError> {
        check_indices(&indices, inner.len())?;
        Ok(SubsetRef { inner, indices })
    }

    /// Indices into the inner dataset.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }
}

impl Dataset for SubsetRef<'_> {
    fn len(&self) -> usize {
        self.indices.len()
    }

    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }

    fn sample_shape(&self) -> &[usize] {
        self.inner.sample_shape()
    }

    fn background(&self) -> Vec<f32> {
        self.inner.background()
    }

    fn preprocess(&self) -> Option<Preprocess> {
        self.inner.preprocess()
    }

    fn batch_into(&self, indices: &[usize], out: &mut Batch) -> Result<(), DataError> {
        check_indices(indices, self.len())?;
        let mapped: Vec<usize> = indices.iter().map(|&i| self.indices[i]).collect();
        self.inner.batch_into(&mapped, out)
    }
}

fn check_indices(indices: &[usize], len: usize) -> Result<(), DataError> {
    match indices.iter().find(|&&i| i >= len) {
        Some(&index) => Err(DataError::IndexOutOfRange { index, len }),
        None => Ok(()),
    }
}

fn layout_shape(stored: &[usize], layout: Layout) -> Vec<usize> {
    match layout {
        Layout::Nchw => stored.to_vec(),
        Layout::Flat => vec![stored.iter().product()],
    }
}

/// Checks the label array's shape and count; returns `(origin, labels)`
/// with labels still as `i64` for the range check.
fn labels_from(labels: RawArray, image_count: usize, images_origin: &str) -> Result<(String, Vec<i64>), DataError> {
    let RawArray { origin, shape, values } = labels;
    let vector = shape.len() == 1 || (shape.len() == 2 && shape[1] == 1);
    if !vector {
        return Err(DataError::Shape { origin, shape, reason: "labels must be a vector [N] (or [N, 1])".into() });
    }
    if shape[0] != image_count {
        return Err(DataError::CountMismatch {
            images: images_origin.into(),
            image_count,
            labels: origin,
            label_count: shape[0],
        });
    }
    let list = match values {
        Values::U8(v) => v.into_iter().map(i64::from).collect(),
        Values::I64(v) => v,
        Values::F32(_) => {
            return Err(DataError::DType { origin, dtype: "f32".into(), expected: "labels must be integers" });
        }
    };
    Ok((origin, list))
}

/// Checks every label against `num_classes` (or finds it) and narrows them to
/// `u32`; returns the labels and the number of classes.
fn check_labels(labels: &[i64], origin: &str, num_classes: Option<usize>) -> Result<(Vec<u32>, usize), DataError> {
    // labels become u32: no limit above that
    let limit = num_classes.map_or(u32::MAX as usize, |k| k.min(u32::MAX as usize));
    let bad = labels.iter().position(|&l| l < 0 || l as u64 >= limit as u64);
    if let Some(index) = bad {
        return Err(DataError::LabelOutOfRange {
            origin: origin.into(),
            index,
            label: labels[index],
            num_classes: limit,
        });
    }
    let num_classes = num_classes.unwrap_or_else(|| labels.iter().max().map_or(0, |&m| m as usize + 1));
    Ok((labels.iter().map(|&l| l as u32).collect(), num_classes))
}

/// Reads one array by extension: `.npy` with numpy's format, anything else as
/// IDX (raw or gzip). For `.npz` archives use [`read_npz_array`].
pub fn read_array(path: &Path) -> Result<RawArray, DataError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => read_npy(path),
        _ => read_idx(path),
    }
}

/// Loads an images file and a labels file (each IDX, IDX.gz or `.npy`, see
/// [`read_array`]) as one dataset; see [`InMemoryDataset::new`].
pub fn load_pair(
    images: &Path,
    labels: &Path,
    num_classes: Option<usize>,
    preprocess: &Preprocess,
) -> Result<InMemoryDataset, DataError> {
    InMemoryDataset::new(read_array(images)?, read_array(labels)?, num_classes, preprocess)
}

/// Loads images and labels from two arrays of one `.npz` archive (as written
/// by `numpy.savez(path, x=images, y=labels)`: keys `"x"` and `"y"`).
pub fn load_npz(
    path: &Path,
    images_key: &str,
    labels_key: &str,
    num_classes: Option<usize>,
    preprocess: &Preprocess,
) -> Result<InMemoryDataset, DataError> {
    let images = read_npz_array(path, images_key)?;
    let labels = read_npz_array(path, labels_key)?;
    InMemoryDataset::new(images, labels, num_classes, preprocess)
}
