//! The fine-tune loop: epochs of shuffled batches, validation after each
//! epoch, early stopping on patience, best-checkpoint restore, and progress
//! reported through a [`Progress`] trait (the library never draws).

use std::time::Instant;

use shrink_data::{Augment, Batch, Dataset, SplitMix64, derive_seed, shuffle};
use tracing::info;

use crate::error::TrainError;
use crate::exec::Executor;
use crate::loss::Loss;
use crate::optim::{LrPlan, Optimizer, OptimizerKind};
use crate::value::HostTensor;

/// What a fine-tune run does.
#[derive(Debug, Clone, PartialEq)]
pub struct FineTune {
    pub epochs: usize,
    /// Stop after this many steps in all (`None`: run every epoch to the end).
    pub max_steps: Option<usize>,
    pub batch_size: usize,
    /// Seeds the shuffling; the run is deterministic for a seed.
    pub seed: u64,
    pub shuffle: bool,
    pub lr: LrPlan,
    pub optimizer: OptimizerKind,
    pub loss: Loss,
    /// Stop when validation accuracy has not improved for this many epochs.
    pub patience: Option<usize>,
    /// Put back the parameters of the best validation epoch at the end.
    pub restore_best: bool,
    /// Batch size for validation and teacher runs.
    pub eval_batch: usize,
    /// Random shift / flip of each training batch (identity by default). The
    /// teacher of a distillation sees the same augmented batch as the student,
    /// so its logits are computed per step instead of cached.
    pub augment: Augment,
}

impl Default for FineTune {
    fn default() -> Self {
        FineTune {
            epochs: 1,
            max_steps: None,
            batch_size: 64,
            seed: 0,
            shuffle: true,
            lr: LrPlan::constant(0.01),
            optimizer: OptimizerKind::sgd(0.9, 0.0),
            loss: Loss::CrossEntropy,
            patience: None,
            restore_best: true,
            eval_batch: 256,
            augment: Augment::default(),
        }
    }
}

/// The [`derive_seed`] stream of the augmentation draws.
const AUGMENT_STREAM: u64 = 0xA06;

/// Reported after every step.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StepInfo {
    pub epoch: usize,
    /// Steps done in all, this one included.
    pub step: usize,
    pub total_steps: usize,
    pub lr: f64,
    pub loss: f32,
}

/// Reported after every epoch.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EpochInfo {
    pub epoch: usize,
    pub mean_loss: f64,
    /// Top-1 accuracy on the validation set, when there is one.
    pub val_accuracy: Option<f64>,
    pub seconds: f64,
}

/// Receives progress; every method has a do-nothing default.
pub trait Progress {
    fn step(&mut self, _info: &StepInfo) {}
    fn epoch(&mut self, _info: &EpochInfo) {}
    /// Asked after every step: true stops the run (the current epoch is still validated).
    fn stop(&mut self) -> bool {
        false
    }
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FineTuneReport {
    pub epochs: Vec<EpochInfo>,
    pub steps: usize,
    /// The epoch whose parameters were kept (`None` without validation or restore).
    pub best_epoch: Option<usize>,
    pub best_val_accuracy: Option<f64>,
    pub stopped_early: bool,
}

/// Runs `exec` over `data` in batches and returns top-1 accuracy
/// (output 0 as `[batch, classes]` logits).
pub fn accuracy(exec: &Executor, data: &dyn Dataset, batch: usize) -> Result<f64, TrainError> {
    let mut buf = Batch::default();
    let (mut correct, mut seen) = (0usize, 0usize);
    let n = data.len();
    let mut start = 0;
    while start < n {
        let k = batch.max(1).min(n - start);
        let idx: Vec<usize> = (start..start + k).collect();
        data.batch_into(&idx, &mut buf)?;
        let out = exec.forward(&[HostTensor::new(std::mem::take(&mut buf.inputs), buf.shape.clone())])?;
        let logits = out.into_iter().next().ok_or_else(|| TrainError::Model("the graph has no output".into()))?;
        let classes = logits.dims.last().copied().unwrap_or(0);
        if logits.dims.len() != 2 || logits.dims[0] != k || classes == 0 {
            return Err(TrainError::Model(format!("output dims {:?} are not [batch, classes]", logits.dims)));
        }
        for (row, &label) in logits.data.chunks(classes).zip(&buf.labels) {
            let top = row.iter().enumerate().fold(0, |b, (i, &x)| if x > row[b] { i } else { b });
            correct += usize::from(top == label as usize);
        }
        seen += k;
        start += k;
    }
    Ok(correct as f64 / seen.max(1) as f64)
}

impl FineTune {
    fn check(&self, train: &dyn Dataset) -> Result<(), TrainError> {
        if self.batch_size == 0 || self.eval_batch == 0 {
            return Err(TrainError::config("batch_size", "must be positive"));
        }
        if self.epochs == 0 {
            return Err(TrainError::config("epochs", "must be positive"));
        }
        if !(self.lr.base.is_finite() && self.lr.base > 0.0) {
            return Err(TrainError::config("lr", format!("{} is not a positive rate", self.lr.base)));
        }
        if train.is_empty() {
            return Err(TrainError::config("data", "the training set is empty"));
        }
        Ok(())
    }

    fn needs_teacher(&self) -> bool {
        matches!(self.loss, Loss::Distill { .. })
    }

    /// Trains `exec` on `train`, validating on `val` after each epoch.
    /// `teacher` gives the logits for [`Loss::Distill`].
    pub fn run(
        &self,
        exec: &mut Executor,
        train: &dyn Dataset,
        val: Option<&dyn Dataset>,
        teacher: Option<&Executor>,
        progress: &mut dyn Progress,
    ) -> Result<FineTuneReport, TrainError> {
        self.run_with(exec, train, val, teacher, progress, true)
    }

    /// [`FineTune::run`]; `cache_teacher` false runs the teacher on every
    /// batch instead of once over the training set (for the test that the two
    /// train identically).
    pub(crate) fn run_with(
        &self,
        exec: &mut Executor,
        train: &dyn Dataset,
        val: Option<&dyn Dataset>,
        teacher: Option<&Executor>,
        progress: &mut dyn Progress,
        cache_teacher: bool,
    ) -> Result<FineTuneReport, TrainError> {
        self.check(train)?;
        if self.needs_teacher() && teacher.is_none() {
            return Err(TrainError::config("loss", "distillation needs a teacher"));
        }
        let mut opt = Optimizer::new(self.optimizer)?;
        let per_epoch = train.len().div_ceil(self.batch_size);
        let total = self.max_steps.map_or(per_epoch * self.epochs, |m| m.min(per_epoch * self.epochs));
        let mut rng = SplitMix64::new(self.seed);
        // Its own stream, so turning augmentation on leaves the shuffles as they were.
        let mut aug_rng = SplitMix64::new(derive_seed(self.seed, AUGMENT_STREAM));
        let background = train.background();
        let mut order: Vec<usize> = (0..train.len()).collect();
        let mut buf = Batch::default();
        let mut report = FineTuneReport {
            epochs: Vec::new(),
            steps: 0,
            best_epoch: None,
            best_val_accuracy: None,
            stopped_early: false,
        };
        let teacher_cache = match (self.needs_teacher(), teacher) {
            (true, Some(t)) if cache_teacher && self.augment.is_identity() => {
                TeacherLogits::compute(t, train, self.eval_batch)?
            }
            _ => None,
        };
        let mut best: Option<(f64, crate::exec::Snapshot)> = None;
        let mut since_best = 0;
        'epochs: for epoch in 0..self.epochs {
            let t0 = Instant::now();
            if self.shuffle {
                shuffle(&mut order, &mut rng);
            }
            let (mut loss_sum, mut batches) = (0.0f64, 0usize);
            let mut stop = false;
            for chunk in order.chunks(self.batch_size) {
                if report.steps >= total {
                    stop = true;
                    break;
                }
                train.batch_into(chunk, &mut buf)?;
                self.augment.apply(&mut buf, &background, &mut aug_rng)?;
                let input = HostTensor::new(buf.inputs.clone(), buf.shape.clone());
                let t_logits = match (&teacher_cache, self.needs_teacher(), teacher) {
                    (Some(cache), _, _) => Some(cache.gather(chunk)),
                    (None, true, Some(t)) => t.forward(std::slice::from_ref(&input))?.into_iter().next(),
                    _ => None,
                };
                let lr = self.lr.at(report.steps, epoch, total);
                let loss = exec.train_step(&mut opt, lr, &input, &buf.labels, &self.loss, t_logits.as_ref())?;
                report.steps += 1;
                loss_sum += loss as f64;
                batches += 1;
                progress.step(&StepInfo { epoch, step: report.steps, total_steps: total, lr, loss });
                if progress.stop() {
                    stop = true;
                    break;
                }
            }
            let val_accuracy = match val {
                Some(v) => Some(accuracy(exec, v, self.eval_batch)?),
                None => None,
            };
            let info = EpochInfo {
                epoch,
                mean_loss: loss_sum / batches.max(1) as f64,
                val_accuracy,
                seconds: t0.elapsed().as_secs_f64(),
            };
            info!(epoch, loss = info.mean_loss, val = ?info.val_accuracy, "epoch done");
            progress.epoch(&info);
            report.epochs.push(info);
            if let Some(acc) = val_accuracy {
                if best.as_ref().is_none_or(|(b, _)| acc > *b) {
                    best = Some((acc, exec.snapshot()));
                    report.best_epoch = Some(epoch);
                    report.best_val_accuracy = Some(acc);
                    since_best = 0;
                } else {
                    since_best += 1;
                    if self.patience.is_some_and(|p| since_best >= p) {
                        report.stopped_early = true;
                        break 'epochs;
                    }
                }
            }
            if stop {
                report.stopped_early = report.steps < per_epoch * self.epochs && self.max_steps.is_none();
                break;
            }
        }
        if self.restore_best
            && let Some((_, snap)) = &best
        {
            exec.restore(snap)?;
        } else if !self.restore_best {
            report.best_epoch = None;
        }
        Ok(report)
    }
}

/// The teacher's logits for every training sample, computed once before
/// training. Samples are fed unchanged every epoch (the datasets do no
/// augmentation), so the teacher's output for a sample never changes, and one
/// forward pass over the training set replaces one per step: the teacher's
/// forward pass (often a model many times the student's size) no longer costs
/// each epoch.
struct TeacherLogits {
    /// `len × classes`, row `i` for sample `i`.
    data: Vec<f32>,
    classes: usize,
}

impl TeacherLogits {
    /// The most floats the cache may hold (1 GiB); above it the teacher runs
    /// per batch as before.
    const MAX_FLOATS: usize = 1 << 28;

    fn compute(teacher: &Executor, train: &dyn Dataset, batch: usize) -> Result<Option<TeacherLogits>, TrainError> {
        let t0 = Instant::now();
        let mut buf = Batch::default();
        let mut data = Vec::new();
        let mut classes = 0;
        let indices: Vec<usize> = (0..train.len()).collect();
        for chunk in indices.chunks(batch.max(1)) {
            train.batch_into(chunk, &mut buf)?;
            let input = HostTensor::new(buf.inputs.clone(), buf.shape.clone());
            let out = teacher
                .forward(std::slice::from_ref(&input))?
                .into_iter()
                .next()
                .ok_or_else(|| TrainError::Model("the teacher has no output".into()))?;
            let [rows, c] = out.dims[..] else {
                return Err(TrainError::Model(format!(
                    "teacher logits have shape {:?}, not [batch, classes]",
                    out.dims
                )));
            };
            if rows != chunk.len() || (classes != 0 && c != classes) {
                return Err(TrainError::Model(format!(
                    "teacher logits have shape {:?} for a batch of {}",
                    out.dims,
                    chunk.len()
                )));
            }
            if classes == 0 {
                classes = c;
                if train.len().saturating_mul(c) > Self::MAX_FLOATS {
                    return Ok(None);
                }
                data.reserve_exact(train.len() * c);
            }
            data.extend_from_slice(&out.data);
        }
        info!(samples = train.len(), classes, secs = t0.elapsed().as_secs_f64(), "teacher logits cached");
        Ok(Some(TeacherLogits { data, classes }))
    }

    /// The cached logits of the samples `chunk`, as a `[chunk.len(), classes]`
    /// tensor.
    fn gather(&self, chunk: &[usize]) -> HostTensor {
        let mut data = Vec::with_capacity(chunk.len() * self.classes);
        for &i in chunk {
            data.extend_from_slice(&self.data[i * self.classes..(i + 1) * self.classes]);
        }
        HostTensor::new(data, vec![chunk.len(), self.classes])
    }
}
