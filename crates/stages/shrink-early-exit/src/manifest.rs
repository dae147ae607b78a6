//! `early-exit.toml`: what `shrink infer` needs to run the segmented model.
//!
//! ```toml
//! format = 1
//! policy = "max_prob"      # exit when max softmax >= threshold ("entropy": entropy <= threshold)
//! classes = 10
//! full = "full.onnx"       # the model the stage started from (the reference for latency)
//! [[segments]]
//! file = "segment-0.onnx"  # input: the model's input; outputs: logits, then `feature`
//! logits = "early_exit_0_logits"
//! feature = "/stem/stem.2/Relu_output_0"
//! threshold = 0.999
//! macs = 357840
//! cumulative_macs = 357840
//! relative_cost = 0.074
//! [calibration]            # the held-out part of the training split
//! split = "train"
//! ...
//! [preprocess]             # the pipeline's [data.preprocess], applied by `shrink infer`
//! scale = true
//! mean = [0.4914, 0.4822, 0.4465]
//! std = [0.247, 0.2435, 0.2616]
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};
use shrink_stage::StageError;

use crate::KIND;
use crate::policy::Policy;

/// The manifest's file name inside the `early-exit/` folder.
pub const MANIFEST: &str = "early-exit.toml";

/// The whole manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub policy: Policy,
    pub classes: usize,
    pub target_accuracy_drop: f64,
    /// The full model (input of the stage), for latency comparisons.
    pub full: String,
    /// MACs of the full model per sample.
    pub full_macs: u64,
    pub calibration: CalibrationEntry,
    /// How raw dataset values became the model's inputs when the stage ran
    /// (the pipeline's `[data.preprocess]`), so that `shrink infer` feeds
    /// the segments the same. Absent: scale to [0, 1] only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocess: Option<InputPreprocess>,
    /// Segments in execution order; the last one has no feature and no threshold.
    pub segments: Vec<SegmentEntry>,
}

/// One segment: backbone part and head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentEntry {
    pub file: String,
    /// Output 0: the exit's logits.
    pub logits: String,
    /// Output 1 (all but the last segment): the tensor the next segment takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
    /// Exit here when the policy passes this (all but the last segment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    pub macs: u64,
    /// MACs of this segment and all before it: the cost of leaving here.
    pub cumulative_macs: u64,
    /// `cumulative_macs / full_macs`.
    pub relative_cost: f64,
}

/// The input normalisation: `(raw / 255 if scale - mean[c]) / std[c]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputPreprocess {
    /// Raw values were divided by 255.
    pub scale: bool,
    /// One per channel (or one for all; empty: 0).
    pub mean: Vec<f32>,
    /// One per channel (or one for all; empty: 1).
    pub std: Vec<f32>,
}

/// Where the thresholds came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationEntry {
    /// Always `"train"`: the calibration samples are held out of the training split.
    pub split: String,
    /// Samples in the training split the stage received.
    pub train_samples: usize,
    /// Samples held out for calibration.
    pub samples: usize,
    pub seed: u64,
    /// File (beside the manifest) listing the held-out indices into the training split.
    pub indices: String,
    /// Accuracy of the final exit alone on the calibration samples.
    pub final_accuracy: f64,
    /// Accuracy of the policy at the chosen thresholds.
    pub policy_accuracy: f64,
    /// Mean relative cost at the chosen thresholds.
    pub mean_cost: f64,
    /// Fraction leaving at each exit.
    pub exit_fractions: Vec<f64>,
    /// Accuracy of each exit's own prediction on the calibration samples.
    pub exit_accuracy: Vec<f64>,
}

impl Manifest {
    /// Reads `dir/early-exit.toml`.
    pub fn load(dir: &Path) -> Result<Manifest, StageError> {
        let path = dir.join(MANIFEST);
        let text =
            std::fs::read_to_string(&path).map_err(|e| StageError::failed(KIND, format!("{}: {e}", path.display())))?;
        let m: Manifest =
            toml::from_str(&text).map_err(|e| StageError::failed(KIND, format!("{}: {e}", path.display())))?;
        if m.segments.is_empty() {
            return Err(StageError::failed(KIND, format!("{}: no segments", path.display())));
        }
        for (i, s) in m.segments.iter().enumerate() {
            let last = i + 1 == m.segments.len();
            if last != s.threshold.is_none() || last != s.feature.is_none() {
                return Err(StageError::failed(
                    KIND,
                    format!(
                        "{}: segment {i}: every segment but the last needs `threshold` and `feature`",
                        path.display()
                    ),
                ));
            }
        }
        Ok(m)
    }

    /// The thresholds of the early exits.
    pub fn thresholds(&self) -> Vec<f64> {
        self.segments.iter().filter_map(|s| s.threshold).collect()
    }

    pub fn to_toml(&self) -> Result<String, StageError> {
        toml::to_string(self).map_err(|e| StageError::failed(KIND, format!("writing {MANIFEST}: {e}")))
    }
}
