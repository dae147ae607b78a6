//! The pipeline file: a TOML schema read with serde (`deny_unknown_fields`),
//! errors with the file, line and column.
//!
//! ```toml
//! [pipeline]
//! name = "fold-bn"
//! model = "fixtures/models/convnet-mix.onnx"   # relative to the current directory
//! output = "out/fold-bn"
//! seed = 7
//!
//! [data]                                        # optional
//! train = { builtin = "mnist", split = "train" }
//! test = { builtin = "mnist", split = "test", limit = 2000 }
//! # or arrays: test = { images = "x.npy", labels = "y.npy" } (channels_last = true for [N, H, W, C]),
//! #            test = { images = "test.npz" } (arrays `x` and `y`)
//! # or an image folder (<folder>/<class>/*.png|jpg|jpeg, classes sorted give labels 0, 1, ...):
//! #            test = { folder = "my-images/val", resize = 256, crop = 224 }
//! # [data.preprocess]: scale = true (divide by 255), mean = [...], std = [...] (per channel)
//!
//! [verify]                                      # tract, after every stage
//! batch_sizes = [1, 64]
//! max_accuracy_drop = 0.001
//!
//! [[stage]]
//! kind = "plugin"
//! path = "target/release/libshrink_plugin_fold_bn.so"
//! stage = "fold-batchnorm"
//! params = { }
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::PipelineError;

/// The whole file.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    pub pipeline: PipelineTable,
    #[serde(default)]
    pub data: Option<DataTable>,
    #[serde(default)]
    pub verify: VerifyTable,
    /// The stages, in order; each table has `kind` and the stage's parameters.
    #[serde(default)]
    pub stage: Vec<toml::Table>,
}

/// `[pipeline]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PipelineTable {
    /// Names the run; an output folder holding another pipeline's run is refused.
    pub name: String,
    /// The input ONNX model. Never overwritten.
    pub model: PathBuf,
    /// The output folder: `model.onnx`, `stages/`, `report.{json,md,svg}`.
    pub output: PathBuf,
    /// Seeds every random choice of every stage.
    #[serde(default)]
    pub seed: u64,
}

/// `[data]`: where labelled data comes from. Optional: without it, tract
/// measures agreement with the original on seeded random inputs.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataTable {
    /// Training data, for stages that fine-tune or calibrate.
    #[serde(default)]
    pub train: Option<DataSource>,
    /// Held-out data: accuracy after every stage is measured on it.
    #[serde(default)]
    pub test: Option<DataSource>,
    /// How raw samples become inputs (the layout follows the model when omitted).
    #[serde(default)]
    pub preprocess: Option<PreprocessTable>,
}

/// One dataset.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataSource {
    /// A builtin dataset: `mnist`, `fashion-mnist` or `cifar10`.
    #[serde(default)]
    pub builtin: Option<String>,
    /// `train` or `test`, for a builtin dataset.
    #[serde(default)]
    pub split: Option<String>,
    /// An images file (IDX, IDX.gz, .npy) or an .npz archive (arrays `x` and `y`).
    /// Images are read channels first, `[N, C, H, W]` (or `[N, H, W]` grey,
    /// or `[N, F]` features), unless `channels_last` says otherwise.
    #[serde(default)]
    pub images: Option<PathBuf>,
    /// The labels file, with `images` (not for .npz).
    #[serde(default)]
    pub labels: Option<PathBuf>,
    /// With `images`: the array is channels last, `[N, H, W, C]` (numpy's
    /// CIFAR-10, Keras datasets), and is turned to `[N, C, H, W]` on loading.
    #[serde(default)]
    pub channels_last: bool,
    /// An image folder: `<folder>/<class>/<image>.png|jpg|jpeg`, labels from
    /// the class folders' names in sorted order (torchvision's `ImageFolder`).
    /// Images become RGB, unless every one is grey (then one channel).
    #[serde(default)]
    pub folder: Option<PathBuf>,
    /// With `folder`: scale each image so its shorter side is this many
    /// pixels, bilinear (torchvision's `Resize(N)`).
    #[serde(default)]
    pub resize: Option<u32>,
    /// With `folder`: then cut the centred `crop`x`crop` square (`CenterCrop(N)`).
    /// Without `resize` and `crop` all images must have one size.
    #[serde(default)]
    pub crop: Option<u32>,
    /// Only the first `limit` samples (an image folder is in class order:
    /// its first samples are the first classes' images).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// `[data.preprocess]`: see `shrink_data::Preprocess`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PreprocessTable {
    #[serde(default = "yes")]
    pub scale: bool,
    #[serde(default)]
    pub mean: Vec<f32>,
    #[serde(default)]
    pub std: Vec<f32>,
}

fn yes() -> bool {
    true
}

/// `[verify]`: what tract measures after every stage.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VerifyTable {
    /// Latency is measured at each of these batch sizes (1 thread).
    pub batch_sizes: Vec<usize>,
    /// The run fails (after writing its reports) when the final model's
    /// top-1 accuracy is lower than the original's by more than this (a fraction).
    pub max_accuracy_drop: Option<f64>,
    /// The model's input shape, batch first, when it has symbolic dimensions.
    pub input_shape: Option<Vec<usize>>,
    /// Batches of seeded random inputs for agreement when there is no test data.
    pub random_batches: usize,
    /// Measure latency (off for quick runs).
    pub latency: bool,
}

impl Default for VerifyTable {
    fn default() -> VerifyTable {
        VerifyTable {
            batch_sizes: vec![1, 64],
            max_accuracy_drop: None,
            input_shape: None,
            random_batches: 8,
            latency: true,
        }
    }
}

/// A parsed pipeline and the file it came from.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub path: PathBuf,
    pub file: PipelineFile,
    /// `--set` overrides applied, as given.
    pub overrides: Vec<String>,
    /// The file's text, for locating keys in messages.
    pub text: String,
}

impl Pipeline {
    /// Reads and parses a pipeline file; `--set KEY=VALUE` overrides follow.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Pipeline, PipelineError> {
        let text = std::fs::read_to_string(path).map_err(|e| PipelineError::io(path, e))?;
        Pipeline::parse(path, &text, overrides)
    }

    /// Parses pipeline text (`path` names it in errors).
    pub fn parse(path: &Path, text: &str, overrides: &[String]) -> Result<Pipeline, PipelineError> {
        let toml_err =
            |e: toml::de::Error| PipelineError::Toml { path: path.to_path_buf(), message: describe(text, &e) };
        // Typed first, so that errors in the file point into the file.
        let mut file: PipelineFile = toml::from_str(text).map_err(toml_err)?;
        if !overrides.is_empty() {
            let mut doc: toml::Table = toml::from_str(text).map_err(toml_err)?;
            for o in overrides {
                apply_set(&mut doc, o)?;
            }
            file = PipelineFile::deserialize(toml::Value::Table(doc)).map_err(|e| PipelineError::Set {
                set: overrides.join(" "),
                message: e.to_string().trim().to_string(),
            })?;
        }
        for (i, s) in file.stage.iter().enumerate() {
            match s.get("kind") {
                Some(toml::Value::String(_)) => {}
                _ => {
                    return Err(PipelineError::Toml {
                        path: path.to_path_buf(),
                        message: format!("{}stage {i}: missing `kind` (a string)", stage_location(text, i)),
                    });
                }
            }
        }
        Ok(Pipeline { path: path.to_path_buf(), file, overrides: overrides.to_vec(), text: text.to_string() })
    }

    /// The kind of stage `i`.
    pub fn kind(&self, i: usize) -> &str {
        self.file.stage[i].get("kind").and_then(|v| v.as_str()).unwrap_or("")
    }

    /// The parameters of stage `i` (its table without `kind`).
    pub fn params(&self, i: usize) -> toml::Table {
        let mut t = self.file.stage[i].clone();
        t.remove("kind");
        t
    }

    /// `line L, column C: ` of the `i`-th `[[stage]]` header in the original text, if found.
    pub fn stage_location(&self, i: usize) -> String {
        stage_location(&self.text, i)
    }

    /// `line L, column C: ` of a dotted key (`pipeline.model`, `data.test.images`)
    /// in the file, written as `key = ...` under its table or inside an inline
    /// table; empty when not found (e.g. set by `--set`).
    pub fn key_location(&self, key: &str) -> String {
        let parts: Vec<&str> = key.split('.').collect();
        let Some((leaf, table)) = parts.split_last() else { return String::new() };
        let mut header = String::new();
        for (n, line) in self.text.lines().enumerate() {
            let t = line.trim_start();
            if t.starts_with('[') {
                header = t.trim_start_matches('[').split(']').next().unwrap_or("").trim().to_string();
                continue;
            }
            let assigns = |k: &str, s: &str| {
                let rest = s.strip_prefix(k)?;
                rest.trim_start().starts_with('=').then_some(())
            };
            let indent = line.len() - t.len();
            if header == table.join(".") && assigns(leaf, t).is_some() {
                return format!("line {}, column {}: ", n + 1, indent + 1);
            }
            // `test = { images = "..." }` under `[data]`
            if let Some((inline, outer)) = table.split_last()
                && header == outer.join(".")
                && assigns(inline, t).is_some()
                && let Some(col) = t.find(&format!("{leaf} =")).or_else(|| t.find(&format!("{leaf}=")))
            {
                return format!("line {}, column {}: ", n + 1, indent + col + 1);
            }
        }
        String::new()
    }
}

fn stage_location(text: &str, i: usize) -> String {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with("[[stage]]"))
        .nth(i)
        .map(|(n, _)| format!("line {}, column 1: ", n + 1))
        .unwrap_or_default()
}

/// The toml crate's message, with the line and column spelled out first.
fn describe(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().to_string();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |p| p + 1) + 1;
            format!("line {line}, column {col}: {msg}")
        }
        None => msg,
    }
}

/// Applies `KEY=VALUE`: KEY is a dotted path (`stage.0.sparsity`,
/// `pipeline.seed`), VALUE a TOML value (a bare word is taken as a string).
fn apply_set(doc: &mut toml::Table, set: &str) -> Result<(), PipelineError> {
    let bad = |message: String| PipelineError::Set { set: set.into(), message };
    let (key, value) = set.split_once('=').ok_or_else(|| bad("expected KEY=VALUE".into()))?;
    let value: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {value}")) {
        Ok(mut t) => t.remove("v").expect("parsed above"),
        Err(_) => toml::Value::String(value.to_string()),
    };
    let parts: Vec<&str> = key.trim().split('.').collect();
    let mut cur: &mut toml::Value = doc.entry(parts[0]).or_insert_with(|| toml::Value::Table(toml::Table::new()));
    for p in &parts[1..] {
        cur = match cur {
            toml::Value::Table(t) => t.entry(*p).or_insert_with(|| toml::Value::Table(toml::Table::new())),
            toml::Value::Array(a) => {
                let i: usize = p.parse().map_err(|_| bad(format!("`{p}` is not an index")))?;
                let len = a.len();
                a.get_mut(i).ok_or_else(|| bad(format!("index {i} is past the end ({len} entries)")))?
            }
            _ => return Err(bad(format!("`{p}`: the key above it is not a table"))),
        };
    }
    *cur = value;
    Ok(())
}
