//! The TOML parameters of `method = "int8"`.

use serde::Deserialize;

/// Which ONNX form the quantised model takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Form {
    /// `QuantizeLinear`/`DequantizeLinear` pairs on the layers' activation
    /// inputs, int8 weights read through `DequantizeLinear`, float bias.
    Qdq,
    /// `QLinearConv` / `QLinearMatMul` with int32 bias, quantised tensors
    /// flowing through `MaxPool`/`Flatten`/`Reshape` between them.
    Qlinear,
    /// int8 weights + `DequantizeLinear`, float activations.
    WeightOnly,
    /// ORT-style dynamic quantisation: `DynamicQuantizeLinear` +
    /// `ConvInteger`/`MatMulInteger`, activation ranges found at run time.
    Dynamic,
    /// The form the static rule in the module doc picks (measured in tract).
    Auto,
}

impl Form {
    pub fn name(self) -> &'static str {
        match self {
            Form::Qdq => "qdq",
            Form::Qlinear => "qlinear",
            Form::WeightOnly => "weight-only",
            Form::Dynamic => "dynamic",
            Form::Auto => "auto",
        }
    }
}

/// How an activation's range is chosen from its calibration histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Calibration {
    /// The observed minimum and maximum.
    Minmax,
    /// The `percentile`-th and `(100 - percentile)`-th percentiles.
    Percentile,
    /// The range (a shrunk min/max) whose quantisation has the least mean squared error.
    Mse,
    /// TensorRT's entropy calibration: the |x| threshold minimising KL(P‖Q).
    /// Refused by the stage (see `ENTROPY_REFUSED`); parsed so the error can say why.
    Entropy,
}

/// Integer type of quantised activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActType {
    /// Affine: `uint8` with a zero point (ranges need not be symmetric; a
    /// ReLU output uses all 256 codes).
    Uint8,
    /// Symmetric: `int8`, zero point 0.
    Int8,
}

fn default_samples() -> usize {
    512
}

fn default_percentile() -> f64 {
    99.99
}

fn default_true() -> bool {
    true
}

/// `[[stage]] kind = "quantize", method = "int8"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Int8Params {
    /// `quantize` (read by the registry).
    #[serde(default)]
    pub kind: Option<String>,
    /// `int8` (read by the dispatcher).
    pub method: String,
    /// Export form: "qdq" | "qlinear" | "weight-only" | "dynamic" | "auto" (default "auto").
    #[serde(default = "default_form")]
    pub form: Form,
    /// Activation range choice: "minmax" | "percentile" | "mse" (default "percentile"); "entropy" is refused.
    #[serde(default = "default_calibration")]
    pub calibration: Calibration,
    /// Training samples (a seeded random subset of `[data] train`) used for calibration (default 512).
    #[serde(default = "default_samples")]
    pub calibration_samples: usize,
    /// The percentile of `calibration = "percentile"`, in (50, 100] (default 99.99).
    #[serde(default = "default_percentile")]
    pub percentile: f64,
    /// Activation integer type: "int8" (symmetric, default) | "uint8" (affine).
    #[serde(default = "default_act")]
    pub activation_type: ActType,
    /// Globs over op names, op types or weight names of layers kept in float.
    /// Absent: the first and the last layer (Softmax and every op that is not
    /// Conv/Gemm/MatMul are never quantised). `[]`: quantise every layer.
    #[serde(default)]
    pub keep_float: Option<Vec<String>>,
    /// Shift each quantised layer's bias by the mean error its weight
    /// quantisation causes in its output on the calibration data (default false).
    #[serde(default)]
    pub bias_correction: bool,
    /// Fold inference `BatchNormalization` into the Conv before it first (default true).
    #[serde(default = "default_true")]
    pub fold_batchnorm: bool,
}

fn default_form() -> Form {
    Form::Auto
}

fn default_calibration() -> Calibration {
    Calibration::Percentile
}

fn default_act() -> ActType {
    ActType::Int8
}
