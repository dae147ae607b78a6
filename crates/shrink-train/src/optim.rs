//! Optimizers (burn's, configured with PyTorch's defaults) over the
//! executor's parameters, and learning-rate schedules.

use std::collections::HashMap;

use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, AdamWConfig, DynOptimizer, DynState, SgdConfig};

use crate::error::TrainError;

/// An optimizer and its hyper-parameters. The constructors give PyTorch's defaults
/// (burn's differ: SGD dampening 0.1, Adam epsilon 1e-5, AdamW decay 1e-4).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimizerKind {
    /// `torch.optim.SGD` (dampening 0 unless set).
    Sgd { momentum: f64, dampening: f64, nesterov: bool, weight_decay: f64 },
    /// `torch.optim.Adam` (L2 weight decay added to the gradient).
    Adam { beta1: f32, beta2: f32, eps: f32, weight_decay: f32 },
    /// `torch.optim.AdamW` (decoupled weight decay).
    AdamW { beta1: f32, beta2: f32, eps: f32, weight_decay: f32 },
}

impl OptimizerKind {
    /// SGD with momentum (no dampening, no Nesterov) and L2 weight decay.
    pub fn sgd(momentum: f64, weight_decay: f64) -> OptimizerKind {
        OptimizerKind::Sgd { momentum, dampening: 0.0, nesterov: false, weight_decay }
    }

    /// Adam with PyTorch's defaults (betas 0.9/0.999, eps 1e-8, no decay).
    pub fn adam() -> OptimizerKind {
        OptimizerKind::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }

    /// AdamW with PyTorch's defaults (betas 0.9/0.999, eps 1e-8, decay 0.01).
    pub fn adamw() -> OptimizerKind {
        OptimizerKind::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }

    fn build(&self) -> Result<Box<dyn DynOptimizer>, TrainError> {
        let decay = |wd: f64| (wd != 0.0).then(|| WeightDecayConfig::new(wd as f32));
        Ok(match *self {
            OptimizerKind::Sgd { momentum, dampening, nesterov, weight_decay } => {
                if momentum < 0.0 || weight_decay < 0.0 || (nesterov && (momentum == 0.0 || dampening != 0.0)) {
                    return Err(TrainError::config(
                        "optimizer",
                        "sgd needs momentum >= 0, weight decay >= 0, and nesterov only with momentum and no dampening",
                    ));
                }
                let m = (momentum > 0.0).then(|| {
                    MomentumConfig::new().with_momentum(momentum).with_dampening(dampening).with_nesterov(nesterov)
                });
                Box::new(SgdConfig::new().with_momentum(m).with_weight_decay(decay(weight_decay)).build())
            }
            OptimizerKind::Adam { beta1, beta2, eps, weight_decay } => Box::new(
                AdamConfig::new()
                    .with_beta_1(beta1)
                    .with_beta_2(beta2)
                    .with_epsilon(eps)
                    .with_weight_decay(decay(weight_decay as f64))
                    .build(),
            ),
            OptimizerKind::AdamW { beta1, beta2, eps, weight_decay } => Box::new(
                AdamWConfig::new()
                    .with_beta_1(beta1)
                    .with_beta_2(beta2)
                    .with_epsilon(eps)
                    .with_weight_decay(weight_decay)
                    .build(),
            ),
        })
    }
}

/// An optimizer with its per-parameter state.
pub struct Optimizer {
    kind: OptimizerKind,
    pub(crate) inner: Box<dyn DynOptimizer>,
    pub(crate) states: HashMap<usize, DynState>,
    /// SGD's momentum buffers, per parameter, when SGD runs on the host ([`Optimizer::sgd_step`]).
    velocity: HashMap<usize, Vec<f32>>,
}

impl std::fmt::Debug for Optimizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Optimizer").field("kind", &self.kind).field("states", &self.states.len()).finish()
    }
}

impl Optimizer {
    pub fn new(kind: OptimizerKind) -> Result<Optimizer, TrainError> {
        Ok(Optimizer { kind, inner: kind.build()?, states: HashMap::new(), velocity: HashMap::new() })
    }

    pub fn kind(&self) -> OptimizerKind {
        self.kind
    }

    /// Forgets momentum and moment estimates.
    pub fn reset(&mut self) {
        self.states.clear();
        self.velocity.clear();
    }

    /// Whether updates go through [`Optimizer::sgd_step`] (SGD) rather than burn's optimizer.
    pub(crate) fn host_sgd(&self) -> bool {
        matches!(self.kind, OptimizerKind::Sgd { .. })
    }

    /// One SGD update of parameter `i` in place, in one pass over host
    /// values, when the optimizer is SGD (`None` for another optimizer or
    /// mismatched lengths). The arithmetic is burn's `Sgd::step`, operation for operation in
    /// f32 (scalars rounded to f32 as flex rounds them), so results are
    /// bit-identical; burn's version makes five passes with a fresh buffer
    /// each.
    pub(crate) fn sgd_step(&mut self, i: usize, lr: f64, w: &mut [f32], g: &[f32]) -> Option<()> {
        let OptimizerKind::Sgd { momentum, dampening, nesterov, weight_decay } = self.kind else { return None };
        if w.len() != g.len() {
            return None;
        }
        let (lr, wd) = (lr as f32, weight_decay as f32);
        let (m, keep) = (momentum as f32, (1.0 - dampening) as f32);
        let decay = weight_decay != 0.0;
        if momentum <= 0.0 {
            chunked(w, g, None, |w, g, _| {
                for (w, &g) in w.iter_mut().zip(g) {
                    let g = if decay { *w * wd + g } else { g };
                    *w -= g * lr;
                }
            });
            return Some(());
        }
        match self.velocity.get_mut(&i).filter(|v| v.len() == w.len()) {
            Some(v) => chunked(w, g, Some(v), |w, g, v| {
                let Some(v) = v else { return };
                for ((w, &g), v) in w.iter_mut().zip(g).zip(v.iter_mut()) {
                    let g = if decay { *w * wd + g } else { g };
                    *v = g * keep + *v * m;
                    let step = if nesterov { *v * m + g } else { *v };
                    *w -= step * lr;
                }
            }),
            None => {
                // The first step's velocity is the gradient (with decay) itself.
                let mut v = vec![0f32; w.len()];
                chunked(w, g, Some(&mut v), |w, g, v| {
                    let Some(v) = v else { return };
                    for ((w, &g), v) in w.iter_mut().zip(g).zip(v.iter_mut()) {
                        let g = if decay { *w * wd + g } else { g };
                        *v = g;
                        let step = if nesterov { g * m + g } else { g };
                        *w -= step * lr;
                    }
                });
                self.velocity.insert(i, v);
            }
        }
        Some(())
    }
}

/// Parameters at least this long are updated in [`SGD_CHUNK`]-sized pieces on rayon's pool.
pub(crate) const SGD_PARALLEL_MIN: usize = 1 << 20;
const SGD_CHUNK: usize = 1 << 14;

/// Runs `f` over matching pieces of the weights, gradient and velocity: in
/// parallel pieces for a long parameter with several threads, else whole.
/// Every element's update reads only its own entries, so the result does not
/// depend on the split.
fn chunked(w: &mut [f32], g: &[f32], v: Option<&mut [f32]>, f: impl Fn(&mut [f32], &[f32], Option<&mut [f32]>) + Sync) {
    if w.len() < SGD_PARALLEL_MIN || rayon::current_num_threads() < 2 {
        return f(w, g, v);
    }
    use rayon::prelude::*;
    let pieces = w.par_chunks_mut(SGD_CHUNK).zip(g.par_chunks(SGD_CHUNK));
    match v {
        Some(v) => pieces.zip(v.par_chunks_mut(SGD_CHUNK)).for_each(|((w, g), v)| f(w, g, Some(v))),
        None => pieces.for_each(|(w, g)| f(w, g, None)),
    }
}

/// How the learning rate changes over training.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LrSchedule {
    Constant,
    /// Multiply by `gamma` every `every_epochs` epochs (PyTorch's StepLR).
    Step {
        every_epochs: usize,
        gamma: f64,
    },
    /// Cosine from the base rate to `min_lr` over all steps, set per step.
    Cosine {
        min_lr: f64,
    },
}

/// A base learning rate, a schedule and an optional linear warm-up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrPlan {
    pub base: f64,
    pub schedule: LrSchedule,
    /// Linear warm-up from 0 over this many steps (0: none).
    pub warmup_steps: usize,
}

impl LrPlan {
    pub fn constant(base: f64) -> LrPlan {
        LrPlan { base, schedule: LrSchedule::Constant, warmup_steps: 0 }
    }

    /// The rate at `step` (0-based, counted over the whole run) in `epoch` of a run of `total_steps`.
    pub fn at(&self, step: usize, epoch: usize, total_steps: usize) -> f64 {
        let lr = match self.schedule {
            LrSchedule::Constant => self.base,
            LrSchedule::Step { every_epochs, gamma } => self.base * gamma.powi((epoch / every_epochs.max(1)) as i32),
            LrSchedule::Cosine { min_lr } => {
                let t = step as f64 / total_steps.max(1) as f64;
                min_lr + 0.5 * (self.base - min_lr) * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos())
            }
        };
        if step < self.warmup_steps { lr * (step + 1) as f64 / self.warmup_steps as f64 } else { lr }
    }
}
