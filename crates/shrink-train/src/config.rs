//! [`FineTuneConfig`]: the `finetune` table that every training stage accepts
//! in a pipeline (`[stage.finetune]`), so prune, quantize, lowrank and distill
//! read the same keys with the same defaults and the same error messages.
//!
//! ```toml
//! [stage.finetune]
//! epochs = 2            # default 1
//! batch_size = 64
//! lr = 0.01
//! schedule = "cosine"   # "constant" | "cosine" | "step" (with step_every, gamma)
//! optimizer = "sgd"     # "sgd" | "adam" | "adamw"
//! momentum = 0.9
//! weight_decay = 0.0
//! validation = 5000     # training samples held out to pick the best epoch (0: none)
//! augment = { shift = 2, flip = true }  # image batches only; default none
//! batchnorm = "batch"   # "frozen" (default: running statistics) | "batch" (PyTorch's train())
//! ```

use serde::Deserialize;
use shrink_data::{Augment, Dataset, Holdout, SubsetRef, train_val_split};

use crate::error::TrainError;
use crate::exec::{BatchNormMode, Executor};
use crate::finetune::{EpochInfo, FineTune, FineTuneReport, Progress, StepInfo};
use crate::loss::Loss;
use crate::optim::{LrPlan, LrSchedule, OptimizerKind};

/// A fine-tune run as written in TOML. Every field has a default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FineTuneConfig {
    /// Passes over the training data.
    pub epochs: usize,
    /// Stop after this many steps in all (for quick runs).
    pub max_steps: Option<usize>,
    pub batch_size: usize,
    /// Base learning rate.
    pub lr: f64,
    /// `constant`, `cosine` (to `min_lr`) or `step` (× `gamma` every `step_every` epochs).
    pub schedule: String,
    pub min_lr: f64,
    pub step_every: usize,
    pub gamma: f64,
    /// Linear warm-up steps.
    pub warmup_steps: usize,
    /// `sgd`, `adam` or `adamw`.
    pub optimizer: String,
    pub momentum: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
    /// Training samples held out for validation after each epoch (0: no validation).
    pub validation: usize,
    /// Stop when validation accuracy has not improved for this many epochs.
    pub patience: Option<usize>,
    /// Keep the parameters of the best validation epoch.
    pub restore_best: bool,
    /// Random shift (pixels each way) and horizontal flip of training images.
    pub augment: Augment,
    /// BatchNormalization while training: `frozen` (the running statistics,
    /// a fixed affine map) or `batch` (batch statistics and a running-statistics
    /// update, as PyTorch's `train()`); see [`BatchNormMode`].
    pub batchnorm: String,
}

impl Default for FineTuneConfig {
    fn default() -> Self {
        FineTuneConfig {
            epochs: 1,
            max_steps: None,
            batch_size: 64,
            lr: 0.01,
            schedule: "cosine".into(),
            min_lr: 0.0,
            step_every: 1,
            gamma: 0.1,
            warmup_steps: 0,
            optimizer: "sgd".into(),
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.0,
            validation: 5000,
            patience: None,
            restore_best: true,
            augment: Augment::default(),
            batchnorm: "frozen".into(),
        }
    }
}

impl FineTuneConfig {
    /// The `batchnorm` key as a [`BatchNormMode`].
    pub fn batchnorm_mode(&self) -> Result<BatchNormMode, TrainError> {
        match self.batchnorm.as_str() {
            "frozen" => Ok(BatchNormMode::Frozen),
            "batch" => Ok(BatchNormMode::Batch),
            other => Err(TrainError::config("finetune.batchnorm", format!("`{other}` is not one of frozen, batch"))),
        }
    }

    /// Reads a `finetune` table; errors name the key.
    pub fn from_toml(table: &toml::Table) -> Result<FineTuneConfig, TrainError> {
        FineTuneConfig::deserialize(toml::Value::Table(table.clone()))
            .map_err(|e| TrainError::config("finetune", e.to_string()))
    }

    /// The [`FineTune`] this table describes (loss cross-entropy; set
    /// `loss` on the result for distillation).
    pub fn to_finetune(&self, seed: u64) -> Result<FineTune, TrainError> {
        self.batchnorm_mode()?;
        let schedule = match self.schedule.as_str() {
            "constant" => LrSchedule::Constant,
            "cosine" => LrSchedule::Cosine { min_lr: self.min_lr },
            "step" => LrSchedule::Step { every_epochs: self.step_every.max(1), gamma: self.gamma },
            other => {
                return Err(TrainError::config(
                    "finetune.schedule",
                    format!("`{other}` is not one of constant, cosine, step"),
                ));
            }
        };
        let optimizer = match self.optimizer.as_str() {
            "sgd" => OptimizerKind::Sgd {
                momentum: self.momentum,
                dampening: 0.0,
                nesterov: self.nesterov,
                weight_decay: self.weight_decay,
            },
            "adam" => match OptimizerKind::adam() {
                OptimizerKind::Adam { beta1, beta2, eps, .. } => {
                    OptimizerKind::Adam { beta1, beta2, eps, weight_decay: self.weight_decay as f32 }
                }
                k => k,
            },
            "adamw" => match OptimizerKind::adamw() {
                OptimizerKind::AdamW { beta1, beta2, eps, .. } => {
                    OptimizerKind::AdamW { beta1, beta2, eps, weight_decay: self.weight_decay as f32 }
                }
                k => k,
            },
            other => {
                return Err(TrainError::config(
                    "finetune.optimizer",
                    format!("`{other}` is not one of sgd, adam, adamw"),
                ));
            }
        };
        Ok(FineTune {
            epochs: self.epochs,
            max_steps: self.max_steps,
            batch_size: self.batch_size,
            seed,
            shuffle: true,
            lr: LrPlan { base: self.lr, schedule, warmup_steps: self.warmup_steps },
            optimizer,
            loss: Loss::CrossEntropy,
            patience: self.patience,
            restore_best: self.restore_best,
            eval_batch: 256,
            augment: self.augment,
        })
    }

    /// The steps [`FineTuneConfig::run`] takes on a training set of
    /// `train_len` samples (after holding out `validation`), `max_steps` included:
    /// the total a stage's progress bar announces.
    pub fn total_steps(&self, train_len: usize) -> usize {
        let fit = train_len.saturating_sub(self.validation);
        let all = fit.div_ceil(self.batch_size.max(1)) * self.epochs;
        self.max_steps.map_or(all, |m| m.min(all))
    }

    /// Holds out `validation` samples of `train` (seeded), then runs `ft` on
    /// the rest. `on_step(done, total, loss)` is called after every step and
    /// `on_epoch` after every epoch, so a stage can feed its own progress bar.
    pub fn run(
        &self,
        ft: &FineTune,
        exec: &mut Executor,
        train: &dyn Dataset,
        teacher: Option<&Executor>,
        on_step: &mut dyn FnMut(usize, usize, f32),
        on_epoch: &mut dyn FnMut(&EpochInfo),
    ) -> Result<FineTuneReport, TrainError> {
        if self.validation > 0 && self.validation >= train.len() {
            return Err(TrainError::config(
                "finetune.validation",
                format!("holds out {} samples but the training set has only {}", self.validation, train.len()),
            ));
        }
        let split = if self.validation > 0 {
            Some(train_val_split(train.len(), Holdout::Count(self.validation), ft.seed)?)
        } else {
            None
        };
        let (fit, val) = match split {
            Some(s) => (SubsetRef::new(train, s.train)?, Some(SubsetRef::new(train, s.validation)?)),
            None => (SubsetRef::new(train, (0..train.len()).collect())?, None),
        };
        let mut cb = Callbacks { on_step, on_epoch };
        let before = exec.batchnorm();
        exec.set_batchnorm(self.batchnorm_mode()?);
        let report = ft.run(exec, &fit, val.as_ref().map(|v| v as &dyn Dataset), teacher, &mut cb);
        exec.set_batchnorm(before);
        report
    }
}

/// How often [`FineTuneConfig::run_reporting`] reports a step.
const REPORT_EVERY: usize = 20;

impl FineTuneConfig {
    /// [`FineTuneConfig::run`] for a stage's progress bar: `update(done,
    /// message)` gets the first step, every 20th and the last, with the step's
    /// loss and the last epoch's validation accuracy (`loss 0.1234, validation
    /// 98.10 %`); each epoch is logged at debug level under `phase`.
    pub fn run_reporting(
        &self,
        ft: &FineTune,
        exec: &mut Executor,
        train: &dyn Dataset,
        teacher: Option<&Executor>,
        phase: &str,
        update: &mut dyn FnMut(u64, &str),
    ) -> Result<FineTuneReport, TrainError> {
        let last_val: std::cell::Cell<Option<f64>> = std::cell::Cell::new(None);
        self.run(
            ft,
            exec,
            train,
            teacher,
            &mut |done, total, loss| {
                if done == 1 || done % REPORT_EVERY == 0 || done == total {
                    let val = last_val.get().map(|v| format!(", validation {:.2} %", v * 100.0)).unwrap_or_default();
                    update(done as u64, &format!("loss {loss:.4}{val}"));
                }
            },
            &mut |e| {
                last_val.set(e.val_accuracy);
                tracing::debug!(phase, epoch = e.epoch, loss = e.mean_loss, val = ?e.val_accuracy, "epoch done");
            },
        )
    }
}

struct Callbacks<'a> {
    on_step: &'a mut dyn FnMut(usize, usize, f32),
    on_epoch: &'a mut dyn FnMut(&EpochInfo),
}

impl Progress for Callbacks<'_> {
    fn step(&mut self, info: &StepInfo) {
        (self.on_step)(info.step, info.total_steps, info.loss);
    }

    fn epoch(&mut self, info: &EpochInfo) {
        (self.on_epoch)(info);
    }
}
