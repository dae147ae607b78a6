//! The TOML parameters of stage `distill`, and their checks. Every error names
//! the key at fault.
//!
//! ```toml
//! [[stage]]
//! kind = "distill"
//! teacher = "original"                             # "original" | "current" | "path/to/teacher.onnx"
//! student = { cnn = { channels = [8, 16], fc = [32] } }   # or { mlp = [300, 30] }, "current", "path.onnx"
//! alpha = 0.7                                      # weight of the soft-target term
//! temperature = 4.0
//! [stage.finetune]                                 # the shared training table (shrink_train::FineTuneConfig)
//! epochs = 3
//! optimizer = "adam"
//! lr = 0.001
//! ```

use std::path::PathBuf;

use serde::Deserialize;
use shrink_stage::StageError;
use shrink_train::{FineTuneConfig, Loss};

/// The stage kind, for messages.
pub(crate) const STAGE: &str = "distill";

/// Keys of distillation variants this stage does not implement: rejected
/// with a message saying so, rather than the generic unknown-key error.
const NOT_AVAILABLE: &[(&str, &str)] = &[
    ("hint", "feature (hint) losses are not available; only the logit loss is implemented"),
    ("hints", "feature (hint) losses are not available; only the logit loss is implemented"),
    ("feature_loss", "feature (hint) losses are not available; only the logit loss is implemented"),
    ("assistant", "teacher-assistant chains are not available; run two distill stages instead"),
    ("assistants", "teacher-assistant chains are not available; run two distill stages instead"),
];

/// `[[stage]] kind = "distill"`, as written. Read with [`DistillConfig::from_table`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillParams {
    /// Always `distill`; accepted so the whole `[[stage]]` table can be read.
    #[serde(default)]
    pub kind: Option<String>,
    /// The teacher whose logits are the soft targets: `original` (the
    /// pipeline's input model, the default), `current` (the model before this
    /// stage) or the path of an ONNX file.
    #[serde(default)]
    pub teacher: Option<String>,
    /// The model trained: `{ mlp = [hidden, ...] }` (Gemm + ReLU layers),
    /// `{ cnn = { channels = [c1, ...], fc = [hidden, ...] } }` (Conv 3×3 +
    /// ReLU + MaxPool 2×2 blocks, then Gemm + ReLU layers), both built for the
    /// teacher's input shape and class count with PyTorch's default
    /// (Kaiming-uniform) initialisation, seeded; `current` (the model before
    /// this stage, e.g. after structured pruning); or the path of an ONNX file.
    pub student: toml::Value,
    /// Weight of the distillation term: loss = alpha · T² · KL(softmax(t/T) ‖
    /// softmax(s/T)) + (1 − alpha) · CE(s, y). In [0, 1]; 0 trains on hard
    /// labels only (the teacher is then not run). Default 0.5.
    #[serde(default = "default_alpha")]
    pub alpha: f32,
    /// The softmax temperature T (> 0). Default 4.
    #[serde(default = "default_temperature")]
    pub temperature: f32,
    /// Seed of the student's initialisation (default: the pipeline's seed).
    #[serde(default)]
    pub init_seed: Option<u64>,
    /// How the student is trained (the shared `[stage.finetune]` table).
    #[serde(default)]
    pub finetune: Option<toml::Table>,
}

fn default_alpha() -> f32 {
    0.5
}

fn default_temperature() -> f32 {
    4.0
}

/// Where the teacher comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum TeacherSpec {
    Original,
    Current,
    File(PathBuf),
}

/// Where the student comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum StudentSpec {
    /// Fully connected: hidden widths (the class layer is added).
    Mlp { hidden: Vec<usize> },
    /// Conv blocks of `channels`, then fully connected `fc` hidden widths.
    Cnn { channels: Vec<usize>, fc: Vec<usize> },
    /// The model before this stage.
    Current,
    /// An ONNX file.
    File(PathBuf),
}

impl StudentSpec {
    /// A short description for reports.
    pub fn describe(&self) -> String {
        match self {
            StudentSpec::Mlp { hidden } => format!("mlp {hidden:?}"),
            StudentSpec::Cnn { channels, fc } => format!("cnn channels {channels:?} fc {fc:?}"),
            StudentSpec::Current => "the current model".into(),
            StudentSpec::File(p) => p.display().to_string(),
        }
    }
}

/// The checked parameters.
#[derive(Debug, Clone)]
pub struct DistillConfig {
    pub teacher: TeacherSpec,
    pub student: StudentSpec,
    pub alpha: f32,
    pub temperature: f32,
    pub init_seed: Option<u64>,
    pub finetune: FineTuneConfig,
}

impl DistillConfig {
    /// Reads and checks a whole `[[stage]]` table.
    pub fn from_table(table: &toml::Table) -> Result<DistillConfig, StageError> {
        for (key, why) in NOT_AVAILABLE {
            if table.contains_key(*key) {
                return Err(StageError::param(STAGE, key, *why));
            }
        }
        let p = DistillParams::deserialize(toml::Value::Table(table.clone())).map_err(|e| {
            // serde names the key in backticks: "unknown field `x`", "missing field `student`"
            let msg = e.message().to_string();
            let key = msg.split('`').nth(1).unwrap_or("(table)").to_string();
            StageError::param(STAGE, &key, msg)
        })?;
        if !(0.0..=1.0).contains(&p.alpha) {
            return Err(StageError::param(STAGE, "alpha", format!("{} is not in [0, 1]", p.alpha)));
        }
        if !(p.temperature.is_finite() && p.temperature > 0.0) {
            return Err(StageError::param(STAGE, "temperature", format!("{} is not a positive number", p.temperature)));
        }
        let teacher = match p.teacher.as_deref() {
            None | Some("original") => TeacherSpec::Original,
            Some("current") => TeacherSpec::Current,
            Some("") => return Err(StageError::param(STAGE, "teacher", "is empty")),
            Some(path) => TeacherSpec::File(PathBuf::from(path)),
        };
        let student = student_spec(&p.student)?;
        let finetune = match &p.finetune {
            Some(t) => FineTuneConfig::from_toml(t).map_err(|e| StageError::param(STAGE, "finetune", e.to_string()))?,
            None => FineTuneConfig::default(),
        };
        finetune.to_finetune(0).map_err(|e| StageError::param(STAGE, "finetune", e.to_string()))?;
        Ok(DistillConfig {
            teacher,
            student,
            alpha: p.alpha,
            temperature: p.temperature,
            init_seed: p.init_seed,
            finetune,
        })
    }

    /// The training loss: distillation with this stage's alpha and T, or
    /// plain cross-entropy when alpha is 0 (the same loss, without running the teacher).
    pub fn loss(&self) -> Loss {
        if self.alpha == 0.0 {
            Loss::CrossEntropy
        } else {
            Loss::Distill { alpha: self.alpha, temperature: self.temperature }
        }
    }
}

fn widths(v: &toml::Value, key: &str) -> Result<Vec<usize>, StageError> {
    let arr = v.as_array().ok_or_else(|| StageError::param(STAGE, key, "expected an array of positive integers"))?;
    arr.iter()
        .map(|x| match x.as_integer() {
            Some(n) if n > 0 => Ok(n as usize),
            _ => Err(StageError::param(STAGE, key, format!("{x} is not a positive integer"))),
        })
        .collect()
}

fn student_spec(v: &toml::Value) -> Result<StudentSpec, StageError> {
    match v {
        toml::Value::String(s) if s == "current" => Ok(StudentSpec::Current),
        toml::Value::String(s) if s.is_empty() => Err(StageError::param(STAGE, "student", "is empty")),
        toml::Value::String(s) => Ok(StudentSpec::File(PathBuf::from(s))),
        toml::Value::Table(t) => {
            let mut keys = t.keys();
            let (Some(kind), None) = (keys.next(), keys.next()) else {
                return Err(StageError::param(STAGE, "student", "a table needs exactly one key: `mlp` or `cnn`"));
            };
            match kind.as_str() {
                "mlp" => Ok(StudentSpec::Mlp { hidden: widths(&t["mlp"], "student.mlp")? }),
                "cnn" => {
                    let c = t["cnn"].as_table().ok_or_else(|| {
                        StageError::param(STAGE, "student.cnn", "expected { channels = [...], fc = [...] }")
                    })?;
                    if let Some(k) = c.keys().find(|k| *k != "channels" && *k != "fc") {
                        return Err(StageError::param(
                            STAGE,
                            &format!("student.cnn.{k}"),
                            "unknown key (channels, fc)",
                        ));
                    }
                    let channels = match c.get("channels") {
                        Some(v) => widths(v, "student.cnn.channels")?,
                        None => return Err(StageError::param(STAGE, "student.cnn.channels", "is missing")),
                    };
                    if channels.is_empty() {
                        return Err(StageError::param(STAGE, "student.cnn.channels", "needs at least one block"));
                    }
                    let fc = match c.get("fc") {
                        Some(v) => widths(v, "student.cnn.fc")?,
                        None => Vec::new(),
                    };
                    Ok(StudentSpec::Cnn { channels, fc })
                }
                other => Err(StageError::param(STAGE, "student", format!("`{other}` is not one of mlp, cnn"))),
            }
        }
        other => Err(StageError::param(
            STAGE,
            "student",
            format!("expected \"current\", a path or a table, got {}", other.type_str()),
        )),
    }
}
