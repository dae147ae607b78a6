//! What a stage says it did.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A note about one layer (a pruned ratio, a chosen rank, a codebook size).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LayerNote {
    pub layer: String,
    pub note: String,
    /// Named figures, e.g. `{"sparsity": 0.92}`.
    pub figures: BTreeMap<String, f64>,
}

/// The stage's own account; the runner adds tract's measurements beside it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StageReport {
    /// One line: what was done.
    pub summary: String,
    pub layers: Vec<LayerNote>,
    /// Named figures for the whole model (e.g. `{"nodes_removed": 8}`).
    pub figures: BTreeMap<String, f64>,
    /// Files the stage wrote into the output folder, relative to it.
    pub files: Vec<String>,
    /// What the stage did not do, or did much less of than asked, each with
    /// its reason (a group left whole, a layer skipped, nothing changed). The
    /// runner prints each on the terminal and the report lists them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl StageReport {
    pub fn new(summary: impl Into<String>) -> StageReport {
        StageReport { summary: summary.into(), ..StageReport::default() }
    }

    pub fn figure(mut self, name: &str, value: f64) -> StageReport {
        self.figures.insert(name.into(), value);
        self
    }

    /// Adds a warning (see [`StageReport::warnings`]).
    pub fn warn(mut self, warning: impl Into<String>) -> StageReport {
        self.warnings.push(warning.into());
        self
    }
}
