//! The exit policy and its calibration.
//!
//! A sample leaves at the first early exit whose confidence passes that
//! exit's threshold, else at the final classifier. Confidence is the largest
//! softmax probability (`max_prob`: exit when `p_max >= tau`) or the softmax
//! entropy in nats (`entropy`: exit when `H <= tau`).
//!
//! Calibration searches the thresholds on a held-out split: among the
//! settings whose accuracy is at most `target_drop` below the final exit's,
//! the one with the least mean cost (cost of an exit: MACs of every segment
//! run up to it, see `crate::graph`). The search is a shared-threshold sweep
//! (also the curve of the report) followed by coordinate descent per exit
//! over the same grid.

use serde::{Deserialize, Serialize};

/// How confidence is read from logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    MaxProb,
    Entropy,
}

/// A threshold that no sample passes, per policy.
pub const NEVER_MAX_PROB: f64 = 2.0;
pub const NEVER_ENTROPY: f64 = -1.0;

impl Policy {
    pub fn parse(s: &str) -> Option<Policy> {
        match s {
            "max_prob" => Some(Policy::MaxProb),
            "entropy" => Some(Policy::Entropy),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Policy::MaxProb => "max_prob",
            Policy::Entropy => "entropy",
        }
    }

    /// The largest softmax probability, or the softmax entropy (nats).
    pub fn score(self, logits: &[f32]) -> f64 {
        let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        if !m.is_finite() {
            return self.never();
        }
        let e: Vec<f64> = logits.iter().map(|&x| (x as f64 - m).exp()).collect();
        let z: f64 = e.iter().sum();
        match self {
            Policy::MaxProb => 1.0 / z,
            Policy::Entropy => -e.iter().map(|&v| v / z).filter(|&p| p > 0.0).map(|p| p * p.ln()).sum::<f64>(),
        }
    }

    /// Whether a score passes a threshold.
    pub fn passes(self, score: f64, threshold: f64) -> bool {
        match self {
            Policy::MaxProb => score >= threshold,
            Policy::Entropy => score <= threshold,
        }
    }

    /// Whether a sample with these logits leaves at an exit with this threshold.
    pub fn exits(self, logits: &[f32], threshold: f64) -> bool {
        self.passes(self.score(logits), threshold)
    }

    /// A threshold nothing passes.
    pub fn never(self) -> f64 {
        match self {
            Policy::MaxProb => NEVER_MAX_PROB,
            Policy::Entropy => NEVER_ENTROPY,
        }
    }

    /// Candidate thresholds, loosest first, ending with [`Policy::never`].
    pub fn grid(self) -> Vec<f64> {
        let mut g: Vec<f64> = match self {
            Policy::MaxProb => vec![
                0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995, 0.9998,
                0.9999, 0.99995, 0.99999,
            ],
            Policy::Entropy => {
                vec![1.0, 0.7, 0.5, 0.3, 0.2, 0.1, 0.05, 0.03, 0.02, 0.01, 0.005, 0.002, 0.001, 5e-4, 2e-4, 1e-4, 5e-5]
            }
        };
        g.push(self.never());
        g
    }
}

/// What the calibration sees of one sample: the score at each early exit,
/// whether each exit (early ones, then the final) predicts the label.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleOutcome {
    pub scores: Vec<f64>,
    pub correct: Vec<bool>,
}

/// Accuracy and mean relative cost of one threshold setting.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Operating {
    pub thresholds: Vec<f64>,
    pub accuracy: f64,
    /// Mean cost over the samples, relative to the full model (1.0).
    pub mean_cost: f64,
    /// Fraction of samples leaving at each exit (early ones, then the final).
    pub exit_fractions: Vec<f64>,
}

/// Evaluates `thresholds` (one per early exit) on `samples`; `costs` holds one
/// relative cost per exit (early ones, then the final).
pub fn evaluate(policy: Policy, samples: &[SampleOutcome], thresholds: &[f64], costs: &[f64]) -> Operating {
    let k = costs.len();
    let mut counts = vec![0usize; k];
    let (mut correct, mut cost) = (0usize, 0.0f64);
    for s in samples {
        let e = (0..k - 1).find(|&i| policy.passes(s.scores[i], thresholds[i])).unwrap_or(k - 1);
        counts[e] += 1;
        correct += usize::from(s.correct[e]);
        cost += costs[e];
    }
    let n = samples.len().max(1) as f64;
    Operating {
        thresholds: thresholds.to_vec(),
        accuracy: correct as f64 / n,
        mean_cost: cost / n,
        exit_fractions: counts.iter().map(|&c| c as f64 / n).collect(),
    }
}

/// The result of a calibration: the sweep curve and the chosen point.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    /// Accuracy of the final exit alone on the calibration split.
    pub final_accuracy: f64,
    /// The same threshold at every early exit, over the grid.
    pub curve: Vec<Operating>,
    pub chosen: Operating,
}

/// Chooses thresholds (see the module docs). `costs` per exit, relative.
pub fn calibrate(policy: Policy, samples: &[SampleOutcome], costs: &[f64], target_drop: f64) -> Calibration {
    let k = costs.len();
    let n = samples.len().max(1) as f64;
    let final_accuracy = samples.iter().filter(|s| s.correct[k - 1]).count() as f64 / n;
    let floor = final_accuracy - target_drop - 1e-12;
    let grid = policy.grid();
    let curve: Vec<Operating> = grid.iter().map(|&t| evaluate(policy, samples, &vec![t; k - 1], costs)).collect();
    let better =
        |a: &Operating, b: &Operating| a.accuracy >= floor && (a.mean_cost < b.mean_cost - 1e-12 || b.accuracy < floor);
    let mut best = evaluate(policy, samples, &vec![policy.never(); k - 1], costs);
    for p in &curve {
        if better(p, &best) {
            best = p.clone();
        }
    }
    // coordinate descent per exit over the grid
    for _pass in 0..6 {
        let mut changed = false;
        for i in 0..k - 1 {
            for &t in &grid {
                let mut th = best.thresholds.clone();
                th[i] = t;
                let p = evaluate(policy, samples, &th, costs);
                if better(&p, &best) {
                    best = p;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    Calibration { final_accuracy, curve, chosen: best }
}
