//! The TOML parameters of `method = "magnitude"`, and their checks. Every
//! error names the key at fault.
//!
//! ```toml
//! [[stage]]
//! kind = "prune"
//! method = "magnitude"                               # the default
//! sparsity = { "fc1*" = 0.92, "fc2*" = 0.91, "fc3*" = 0.74 }   # or one number: a global threshold
//! schedule = "agp"                                   # "oneshot" | "equal" | "agp"
//! steps = 8
//! [stage.finetune]                                   # after every prune step (shrink_train::FineTuneConfig)
//! epochs = 3
//! lr = 0.01
//! [stage.final_finetune]                             # once more after the last step (optional)
//! epochs = 10
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use shrink_stage::StageError;
use shrink_train::FineTuneConfig;

use crate::schedule::Schedule;

/// The stage kind, for messages.
pub(crate) const STAGE: &str = "prune";

/// `method = "magnitude"`, as written. Read with [`MagnitudeParams::from_table`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MagnitudeParams {
    /// Always `prune`; accepted so the whole `[[stage]]` table can be read.
    #[serde(default)]
    pub kind: Option<String>,
    /// `magnitude` (the default).
    #[serde(default)]
    pub method: Option<String>,
    /// The fraction of weights set to zero: a number (one magnitude threshold
    /// over all selected layers together: a global ranking) or a table of
    /// layer globs to per-layer sparsities (`{ "fc1*" = 0.92 }`; each glob is
    /// matched against op and weight names and must match a layer; a layer
    /// matched by two globs is an error). Each value in [0, 1).
    pub sparsity: toml::Value,
    /// Layer globs to prune (empty: every layer of `ops`). Only with a global
    /// `sparsity`; a per-layer table names its layers itself.
    #[serde(default)]
    pub layers: Vec<String>,
    /// Layer globs never to prune (win over `layers` and the sparsity table).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Op types whose weights are pruned (default Conv, Gemm, MatMul). Biases
    /// and BatchNormalization parameters are never pruned.
    #[serde(default)]
    pub ops: Vec<String>,
    /// `oneshot`, `equal` (the default) or `agp` (cubic, Zhu & Gupta 2017).
    #[serde(default)]
    pub schedule: Option<String>,
    /// Prune steps (default 1; must be 1 for `oneshot`). With `finetune`,
    /// a fine-tune follows every step.
    #[serde(default)]
    pub steps: Option<usize>,
    /// The sparsity the schedule starts from (default 0).
    #[serde(default)]
    pub initial_sparsity: f64,
    /// Fine-tune after every prune step (the shared `[stage.finetune]` table).
    /// Each run restarts its learning-rate schedule from `lr`: learning-rate
    /// rewinding (Renda et al. 2020), with the weights kept.
    #[serde(default)]
    pub finetune: Option<toml::Table>,
    /// One more fine-tune after the last step (same keys as `finetune`).
    #[serde(default)]
    pub final_finetune: Option<toml::Table>,
    /// Distil from the unpruned original during fine-tuning:
    /// `{ alpha = 0.5, temperature = 4.0 }` (loss = alpha · T² · KL + (1 - alpha) · CE).
    #[serde(default)]
    pub distill: Option<DistillParams>,
}

/// `distill = { alpha, temperature }`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DistillParams {
    #[serde(default = "default_alpha")]
    pub alpha: f32,
    #[serde(default = "default_temperature")]
    pub temperature: f32,
}

impl DistillParams {
    /// Checks the values; `fine_tunes`: whether the stage fine-tunes at all
    /// (distillation happens only there), `needs`: the keys that would make
    /// it, for the message. Errors name the key.
    pub fn check(&self, fine_tunes: bool, needs: &str) -> Result<(), StageError> {
        if !(0.0..=1.0).contains(&self.alpha) {
            return Err(StageError::param(STAGE, "distill.alpha", format!("{} is not in [0, 1]", self.alpha)));
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(StageError::param(STAGE, "distill.temperature", "must be positive"));
        }
        if !fine_tunes {
            return Err(StageError::param(STAGE, "distill", format!("needs {needs}")));
        }
        Ok(())
    }
}

fn default_alpha() -> f32 {
    0.5
}

fn default_temperature() -> f32 {
    4.0
}

/// How much to prune.
#[derive(Debug, Clone, PartialEq)]
pub enum Sparsity {
    /// One threshold over all selected layers.
    Global(f64),
    /// Layer glob → sparsity, in key order.
    PerLayer(BTreeMap<String, f64>),
}

/// The checked parameters.
#[derive(Debug, Clone)]
pub struct MagnitudeConfig {
    pub sparsity: Sparsity,
    pub layers: Vec<String>,
    pub exclude: Vec<String>,
    pub ops: Vec<String>,
    pub schedule: Schedule,
    pub steps: usize,
    pub initial_sparsity: f64,
    pub finetune: Option<FineTuneConfig>,
    pub final_finetune: Option<FineTuneConfig>,
    pub distill: Option<DistillParams>,
}

fn check_fraction(key: &str, v: &toml::Value) -> Result<f64, StageError> {
    let x = match v {
        toml::Value::Float(f) => *f,
        toml::Value::Integer(i) => *i as f64,
        other => {
            return Err(StageError::param(
                STAGE,
                key,
                format!("expected a number in [0, 1), got {}", other.type_str()),
            ));
        }
    };
    if !(0.0..1.0).contains(&x) {
        return Err(StageError::param(STAGE, key, format!("{x} is not in [0, 1) (1 would remove the whole layer)")));
    }
    Ok(x)
}

/// The key a serde error is about (`unknown field `x``, `missing field `x``), if it says.
fn key_of(message: &str) -> Option<String> {
    for marker in ["unknown field `", "missing field `"] {
        if let Some(rest) = message.split(marker).nth(1) {
            return rest.split('`').next().map(str::to_string);
        }
    }
    None
}

fn finetune_config(key: &str, t: &Option<toml::Table>) -> Result<Option<FineTuneConfig>, StageError> {
    let Some(t) = t else { return Ok(None) };
    let cfg = FineTuneConfig::from_toml(t).map_err(|e| {
        let inner = key_of(&e.to_string()).map_or_else(|| key.to_string(), |k| format!("{key}.{k}"));
        StageError::param(STAGE, &inner, e.to_string())
    })?;
    // catch bad optimizer/schedule names now, not after the first prune step
    cfg.to_finetune(0).map_err(|e| StageError::param(STAGE, key, e.to_string()))?;
    Ok(Some(cfg))
}

impl MagnitudeParams {
    /// Reads and checks the whole `[[stage]]` table.
    pub fn from_table(table: &toml::Table) -> Result<MagnitudeConfig, StageError> {
        let p = MagnitudeParams::deserialize(toml::Value::Table(table.clone())).map_err(|e| {
            let msg = e.to_string();
            let key = key_of(&msg).unwrap_or_else(|| "(table)".into());
            StageError::param(STAGE, &key, msg.trim().to_string())
        })?;
        if let Some(k) = p.kind.as_deref().filter(|k| *k != STAGE) {
            return Err(StageError::param(STAGE, "kind", format!("`{k}` is not `prune`")));
        }
        if let Some(m) = p.method.as_deref().filter(|m| *m != "magnitude") {
            return Err(StageError::param(STAGE, "method", format!("`{m}` is not `magnitude`")));
        }
        let sparsity = match &p.sparsity {
            toml::Value::Table(t) => {
                if t.is_empty() {
                    return Err(StageError::param(STAGE, "sparsity", "the per-layer table is empty"));
                }
                if !p.layers.is_empty() {
                    return Err(StageError::param(
                        STAGE,
                        "layers",
                        "a per-layer `sparsity` table names its layers itself: drop `layers` or use one number",
                    ));
                }
                let mut m = BTreeMap::new();
                for (k, v) in t {
                    m.insert(k.clone(), check_fraction(&format!("sparsity.{k}"), v)?);
                }
                Sparsity::PerLayer(m)
            }
            v => Sparsity::Global(check_fraction("sparsity", v)?),
        };
        let schedule = match p.schedule.as_deref() {
            None => Schedule::Equal,
            Some(s) => Schedule::parse(s).ok_or_else(|| {
                StageError::param(STAGE, "schedule", format!("`{s}` is not one of oneshot, equal, agp"))
            })?,
        };
        let steps = p.steps.unwrap_or(1);
        if steps == 0 {
            return Err(StageError::param(STAGE, "steps", "must be at least 1"));
        }
        if schedule == Schedule::OneShot && steps != 1 {
            return Err(StageError::param(STAGE, "steps", format!("{steps} steps with schedule = \"oneshot\"")));
        }
        let initial = check_fraction("initial_sparsity", &toml::Value::Float(p.initial_sparsity))?;
        let max_target = match &sparsity {
            Sparsity::Global(s) => *s,
            Sparsity::PerLayer(m) => m.values().copied().fold(0.0, f64::max),
        };
        if initial > max_target {
            return Err(StageError::param(
                STAGE,
                "initial_sparsity",
                format!("{initial} is above the target sparsity {max_target}"),
            ));
        }
        let finetune = finetune_config("finetune", &p.finetune)?;
        let final_finetune = finetune_config("final_finetune", &p.final_finetune)?;
        if let Some(d) = p.distill {
            d.check(finetune.is_some() || final_finetune.is_some(), "`finetune` or `final_finetune`")?;
        }
        Ok(MagnitudeConfig {
            sparsity,
            layers: p.layers,
            exclude: p.exclude,
            ops: p.ops,
            schedule,
            steps,
            initial_sparsity: initial,
            finetune,
            final_finetune,
            distill: p.distill,
        })
    }
}
