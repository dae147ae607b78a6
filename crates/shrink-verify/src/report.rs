//! [`VerifyReport`]: everything tract measured about one model, and the
//! side-by-side comparison of two.

use serde::{Deserialize, Serialize};

/// Size of a model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SizeReport {
    /// Bytes of the ONNX encoding, every tensor inline.
    pub onnx_bytes: u64,
    pub params: u64,
    pub nonzero_params: u64,
    /// Bytes of the weights at their stored types.
    pub weight_bytes: u64,
}

/// Accuracy on a labelled dataset.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AccuracyReport {
    pub samples: u64,
    pub top1_correct: u64,
    /// Fraction in [0, 1].
    pub top1: f64,
    /// Top-5 accuracy, when there are more than 5 classes.
    pub top5: Option<f64>,
}

/// How closely a model follows a reference model on the same inputs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AgreementReport {
    pub samples: u64,
    /// Fraction of samples where both models' top-1 classes agree.
    pub top1_agreement: f64,
    pub max_abs_diff: f64,
    pub mean_abs_diff: f64,
}

/// Latency of one configuration; see [`crate::latency`] for the method.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LatencyReport {
    pub batch: usize,
    pub threads: usize,
    pub runs: usize,
    pub median_ms: f64,
    pub p90_ms: f64,
}

/// What tract measured about one model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VerifyReport {
    pub model: String,
    pub input_shape: Vec<usize>,
    pub size: SizeReport,
    pub accuracy: Option<AccuracyReport>,
    /// Against the reference model, when there is one.
    pub agreement: Option<AgreementReport>,
    pub latency: Vec<LatencyReport>,
    /// Latency configurations not measured, each with the reason (e.g. over
    /// the time budget of `shrink compare`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency_skipped: Vec<String>,
}

/// Two models measured in one run: `b` against the reference `a`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CompareReport {
    pub a: VerifyReport,
    pub b: VerifyReport,
    /// b / a for sizes and latencies (same order as `a.latency`); b - a for accuracy.
    pub ratios: Ratios,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Ratios {
    pub onnx_bytes: f64,
    pub params: f64,
    pub nonzero_params: f64,
    pub weight_bytes: f64,
    /// Per latency configuration: (batch, threads, b median / a median).
    pub latency: Vec<(usize, usize, f64)>,
    /// b top-1 minus a top-1 (fraction), when both were measured.
    pub top1_delta: Option<f64>,
}

impl CompareReport {
    pub fn new(a: VerifyReport, b: VerifyReport) -> CompareReport {
        let r = |x: u64, y: u64| if x == 0 { f64::NAN } else { y as f64 / x as f64 };
        let latency = a
            .latency
            .iter()
            .filter_map(|la| {
                let lb = b.latency.iter().find(|l| l.batch == la.batch && l.threads == la.threads)?;
                Some((la.batch, la.threads, lb.median_ms / la.median_ms))
            })
            .collect();
        let top1_delta = a.accuracy.as_ref().zip(b.accuracy.as_ref()).map(|(x, y)| y.top1 - x.top1);
        let ratios = Ratios {
            onnx_bytes: r(a.size.onnx_bytes, b.size.onnx_bytes),
            params: r(a.size.params, b.size.params),
            nonzero_params: r(a.size.nonzero_params, b.size.nonzero_params),
            weight_bytes: r(a.size.weight_bytes, b.size.weight_bytes),
            latency,
            top1_delta,
        };
        CompareReport { a, b, ratios }
    }
}
