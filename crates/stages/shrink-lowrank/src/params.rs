//! The TOML parameters of stage `lowrank`, and their checks. Every error
//! names the key at fault.
//!
//! ```toml
//! [[stage]]
//! kind = "lowrank"
//! method = "svd"                 # "svd" (default) | "spatial" | "depthwise-separable"
//! form = "output"                # svd of a Conv: "output" (default) | "input" | "tucker2"
//! layers = ["/0/Gemm"]           # layer globs (empty: every layer of `ops`)
//! exclude = ["/stem/*"]
//! ops = ["Gemm", "MatMul"]       # op types factorised (default Gemm, MatMul, Conv)
//! rank = 32                      # or energy = 0.95, or params_ratio = 0.3;
//!                                # each a number or { "glob" = value, ... }
//! sigma = "first"                # which factor takes Σ: "first" | "second" | "sqrt"
//! finetune_samples = 20000       # fine-tune on the first N training samples (default: all)
//! [stage.finetune]               # shrink_train::FineTuneConfig
//! epochs = 10
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use shrink_stage::{StageError, glob_match};
use shrink_train::FineTuneConfig;

/// The stage kind, for messages.
pub const STAGE: &str = "lowrank";

/// `[[stage]] kind = "lowrank"`, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LowRankParams {
    /// Always `lowrank`; accepted so the whole `[[stage]]` table can be read.
    #[serde(default)]
    pub kind: Option<String>,
    /// `svd` (default): truncated SVD of Gemm/MatMul weights and channel
    /// decomposition of Conv weights (k×k C→N becomes k×k C→R then 1×1 R→N);
    /// `spatial`: k×k C→N becomes k×1 C→R then 1×k R→N (Jaderberg et al.
    /// 2014); `depthwise-separable`: k×k C→N becomes depthwise k×k then
    /// pointwise 1×1.
    #[serde(default)]
    pub method: Option<String>,
    /// `svd` only, how a k×k Conv C→N is split (Gemm/MatMul are unaffected):
    /// `output` (default): k×k C→R then 1×1 R→N (SVD of the N × (C·k·k)
    /// weight); `input`: 1×1 C→R then k×k R→N (SVD of the (N·k·k) × C
    /// weight), so the k×k conv reads R channels instead of C; `tucker2`:
    /// 1×1 C→R₁, k×k R₁→R₂, 1×1 R₂→N (HOSVD: the leading singular vectors
    /// of the input- and output-channel unfoldings, the core projected on
    /// them). For `tucker2`, `rank` sets R₁ = R₂ (each at most its channel
    /// count), `energy` picks R₁ and R₂ from each unfolding's spectrum, and
    /// `params_ratio` takes the largest R₁ = R₂ whose three convs fit.
    #[serde(default)]
    pub form: Option<String>,
    /// Layer globs (matched against op and weight names) to factorise
    /// (empty: every layer of `ops`).
    #[serde(default)]
    pub layers: Vec<String>,
    /// Layer globs never factorised (win over `layers`).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Op types considered (default Gemm, MatMul and Conv for `svd`, Conv
    /// for the other methods).
    #[serde(default)]
    pub ops: Vec<String>,
    /// The rank kept per layer: a number or `{ "glob" = rank }`.
    #[serde(default)]
    pub rank: Option<toml::Value>,
    /// The fraction of Σσ² kept per layer (the smallest rank reaching it), in (0, 1].
    #[serde(default)]
    pub energy: Option<toml::Value>,
    /// The largest rank whose two factors hold at most this fraction of the
    /// layer's weights, in (0, 1).
    #[serde(default)]
    pub params_ratio: Option<toml::Value>,
    /// Which factor Σ is folded into: `first` (default: the first layer is
    /// Σ·Vᵀ, the second U, orthonormal), `second` (U·Σ), or `sqrt` (√Σ on both).
    #[serde(default)]
    pub sigma: Option<String>,
    /// `depthwise-separable` only: `lstsq` (default; each input channel's
    /// filters get their best rank-1 fit, then the pointwise weights and bias
    /// are the least-squares fit to the original conv's outputs on
    /// `calibration` training samples) or `random`.
    #[serde(default)]
    pub init: Option<String>,
    /// Training samples for the `lstsq` fit (default 256).
    #[serde(default)]
    pub calibration: Option<usize>,
    /// Fine-tune on the first N training samples only (default: all).
    #[serde(default)]
    pub finetune_samples: Option<usize>,
    /// Fine-tune after factorising (the shared `[stage.finetune]` table).
    #[serde(default)]
    pub finetune: Option<toml::Table>,
}

/// How the factorisation is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Svd,
    Spatial,
    DepthwiseSeparable,
}

/// How `method = "svd"` splits a k×k Conv.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Form {
    /// k×k C→R, then 1×1 R→N.
    #[default]
    Output,
    /// 1×1 C→R, then k×k R→N.
    Input,
    /// 1×1 C→R₁, k×k R₁→R₂, 1×1 R₂→N.
    Tucker2,
}

/// How a layer's rank is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Policy {
    Rank(usize),
    Energy(f64),
    ParamsRatio(f64),
}

/// Where Σ goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sigma {
    First,
    Second,
    Sqrt,
}

/// One value for every layer, or per layer glob.
#[derive(Debug, Clone, PartialEq)]
pub enum PerLayer {
    Global(f64),
    /// glob → value; an exact name wins, then the longest matching glob.
    Table(BTreeMap<String, f64>),
}

impl PerLayer {
    /// The value for a layer known by any of `names`, if a key matches.
    pub fn get(&self, names: &[&str]) -> Option<f64> {
        match self {
            PerLayer::Global(v) => Some(*v),
            PerLayer::Table(m) => names.iter().find_map(|n| m.get(*n).copied()).or_else(|| {
                m.iter()
                    .filter(|(k, _)| names.iter().any(|n| glob_match(k, n)))
                    .max_by_key(|(k, _)| k.len())
                    .map(|(_, &v)| v)
            }),
        }
    }
}

/// The checked parameters.
#[derive(Debug, Clone)]
pub struct LowRankConfig {
    pub method: Method,
    /// How `svd` splits a Conv.
    pub form: Form,
    pub layers: Vec<String>,
    pub exclude: Vec<String>,
    pub ops: Vec<String>,
    /// The rank policy and its per-layer values (absent for depthwise-separable).
    pub policy: Option<(PolicyKind, PerLayer)>,
    pub sigma: Sigma,
    /// `depthwise-separable`: fit the pointwise conv to outputs (true) or random init.
    pub lstsq: bool,
    pub calibration: usize,
    pub finetune_samples: Option<usize>,
    pub finetune: Option<FineTuneConfig>,
}

/// Which of `rank`, `energy`, `params_ratio` was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    Rank,
    Energy,
    ParamsRatio,
}

impl PolicyKind {
    pub fn key(self) -> &'static str {
        match self {
            PolicyKind::Rank => "rank",
            PolicyKind::Energy => "energy",
            PolicyKind::ParamsRatio => "params_ratio",
        }
    }

    pub fn policy(self, v: f64) -> Policy {
        match self {
            PolicyKind::Rank => Policy::Rank(v as usize),
            PolicyKind::Energy => Policy::Energy(v),
            PolicyKind::ParamsRatio => Policy::ParamsRatio(v),
        }
    }

    fn check(self, key: &str, v: f64) -> Result<(), StageError> {
        let ok = match self {
            PolicyKind::Rank => v >= 1.0 && v.fract() == 0.0,
            PolicyKind::Energy => v > 0.0 && v <= 1.0,
            PolicyKind::ParamsRatio => v > 0.0 && v < 1.0,
        };
        if ok {
            Ok(())
        } else {
            let want = match self {
                PolicyKind::Rank => "an integer ≥ 1",
                PolicyKind::Energy => "a number in (0, 1]",
                PolicyKind::ParamsRatio => "a number in (0, 1)",
            };
            Err(StageError::param(STAGE, key, format!("{v} is not {want}")))
        }
    }
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

fn number(key: &str, v: &toml::Value) -> Result<f64, StageError> {
    match v {
        toml::Value::Float(f) => Ok(*f),
        toml::Value::Integer(i) => Ok(*i as f64),
        other => Err(StageError::param(STAGE, key, format!("expected a number, got {}", other.type_str()))),
    }
}

fn per_layer(kind: PolicyKind, v: &toml::Value) -> Result<PerLayer, StageError> {
    let key = kind.key();
    match v {
        toml::Value::Table(t) => {
            if t.is_empty() {
                return Err(StageError::param(STAGE, key, "the per-layer table is empty"));
            }
            let mut m = BTreeMap::new();
            for (k, v) in t {
                let inner = format!("{key}.\"{k}\"");
                let x = number(&inner, v)?;
                kind.check(&inner, x)?;
                m.insert(k.clone(), x);
            }
            Ok(PerLayer::Table(m))
        }
        v => {
            let x = number(key, v)?;
            kind.check(key, x)?;
            Ok(PerLayer::Global(x))
        }
    }
}

impl LowRankParams {
    /// Reads and checks the whole `[[stage]]` table.
    pub fn from_table(table: &toml::Table) -> Result<LowRankConfig, StageError> {
        let p = LowRankParams::deserialize(toml::Value::Table(table.clone())).map_err(|e| {
            let msg = e.to_string();
            let key = key_of(&msg).unwrap_or_else(|| "(table)".into());
            StageError::param(STAGE, &key, msg.trim().to_string())
        })?;
        if let Some(k) = p.kind.as_deref().filter(|k| *k != STAGE) {
            return Err(StageError::param(STAGE, "kind", format!("`{k}` is not `lowrank`")));
        }
        let method = match p.method.as_deref().unwrap_or("svd") {
            "svd" => Method::Svd,
            "spatial" => Method::Spatial,
            "depthwise-separable" => Method::DepthwiseSeparable,
            other => {
                return Err(StageError::param(
                    STAGE,
                    "method",
                    format!("`{other}` is not one of svd, spatial, depthwise-separable"),
                ));
            }
        };
        let form = match (method, p.form.as_deref()) {
            (_, None) => Form::Output,
            (Method::Svd, Some("output")) => Form::Output,
            (Method::Svd, Some("input")) => Form::Input,
            (Method::Svd, Some("tucker2")) => Form::Tucker2,
            (Method::Svd, Some(other)) => {
                return Err(StageError::param(
                    STAGE,
                    "form",
                    format!("`{other}` is not one of output, input, tucker2"),
                ));
            }
            (_, Some(_)) => return Err(StageError::param(STAGE, "form", "only method = \"svd\" takes `form`")),
        };
        let given: Vec<(PolicyKind, &toml::Value)> =
            [(PolicyKind::Rank, &p.rank), (PolicyKind::Energy, &p.energy), (PolicyKind::ParamsRatio, &p.params_ratio)]
                .into_iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
                .collect();
        let policy = match (method, given.as_slice()) {
            (Method::DepthwiseSeparable, []) => None,
            (Method::DepthwiseSeparable, [(k, _), ..]) => {
                return Err(StageError::param(
                    STAGE,
                    k.key(),
                    "method = \"depthwise-separable\" has no rank: its shape is fixed",
                ));
            }
            (_, []) => {
                return Err(StageError::param(STAGE, "rank", "give one of rank, energy, params_ratio"));
            }
            (_, [(k, v)]) => Some((*k, per_layer(*k, v)?)),
            (_, [(a, _), (b, _), ..]) => {
                return Err(StageError::param(
                    STAGE,
                    b.key(),
                    format!("give only one of rank, energy, params_ratio (`{}` is given too)", a.key()),
                ));
            }
        };
        let sigma = match p.sigma.as_deref().unwrap_or("first") {
            "first" => Sigma::First,
            "second" => Sigma::Second,
            "sqrt" => Sigma::Sqrt,
            other => {
                return Err(StageError::param(STAGE, "sigma", format!("`{other}` is not one of first, second, sqrt")));
            }
        };
        let lstsq = match (method, p.init.as_deref()) {
            (Method::DepthwiseSeparable, None | Some("lstsq")) => true,
            (Method::DepthwiseSeparable, Some("random")) => false,
            (Method::DepthwiseSeparable, Some(other)) => {
                return Err(StageError::param(STAGE, "init", format!("`{other}` is not one of lstsq, random")));
            }
            (_, Some(_)) => {
                return Err(StageError::param(STAGE, "init", "only method = \"depthwise-separable\" takes `init`"));
            }
            (_, None) => false,
        };
        let calibration = p.calibration.unwrap_or(256);
        if calibration == 0 {
            return Err(StageError::param(STAGE, "calibration", "must be at least 1"));
        }
        if p.finetune_samples == Some(0) {
            return Err(StageError::param(STAGE, "finetune_samples", "must be at least 1"));
        }
        let finetune = match &p.finetune {
            Some(t) => {
                let cfg = FineTuneConfig::from_toml(t).map_err(|e| {
                    let inner =
                        key_of(&e.to_string()).map_or_else(|| "finetune".to_string(), |k| format!("finetune.{k}"));
                    StageError::param(STAGE, &inner, e.to_string())
                })?;
                cfg.to_finetune(0).map_err(|e| StageError::param(STAGE, "finetune", e.to_string()))?;
                Some(cfg)
            }
            None => None,
        };
        let ops = if p.ops.is_empty() {
            match method {
                Method::Svd => vec!["Gemm".into(), "MatMul".into(), "Conv".into()],
                _ => vec!["Conv".into()],
            }
        } else {
            p.ops
        };
        for o in &ops {
            let ok = match method {
                Method::Svd => matches!(o.as_str(), "Gemm" | "MatMul" | "Conv"),
                _ => o == "Conv",
            };
            if !ok {
                return Err(StageError::param(STAGE, "ops", format!("`{o}` cannot be factorised by this method")));
            }
        }
        Ok(LowRankConfig {
            method,
            form,
            layers: p.layers,
            exclude: p.exclude,
            ops,
            policy,
            sigma,
            lstsq,
            calibration,
            finetune_samples: p.finetune_samples,
            finetune,
        })
    }
}
