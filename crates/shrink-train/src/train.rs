//! One training step: forward on the autodiff device, loss, backward, and an
//! optimizer update of every trainable parameter (masks re-applied after).

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::error::TrainError;
use crate::exec::{BnStat, Executor, guard};
use crate::loss::Loss;
use crate::ops::as_matrix;
use crate::optim::Optimizer;
use crate::value::{F, HostTensor};

/// A step's loss, each parameter's gradient and each BatchNorm's batch statistics.
pub(crate) type StepGrads = (f32, Vec<Option<F>>, Vec<BnStat>);

/// Gradient of a parameter leaf, by rank.
fn grad_of(leaf: &F, grads: &burn::tensor::Gradients) -> Option<F> {
    match leaf {
        F::R1(t) => t.grad(grads).map(F::R1),
        F::R2(t) => t.grad(grads).map(F::R2),
        F::R3(t) => t.grad(grads).map(F::R3),
        F::R4(t) => t.grad(grads).map(F::R4),
        F::R5(t) => t.grad(grads).map(F::R5),
    }
}

impl Executor {
    /// Forward on `inputs`, `loss_fn` on the outputs, backward: the loss and
    /// every trainable parameter's gradient (of its trained tensor: the
    /// codebook when tied).
    #[cfg(test)]
    pub(crate) fn gradients(
        &self,
        inputs: &[HostTensor],
        loss_fn: impl FnOnce(Vec<F>) -> Result<Tensor<1>, String>,
    ) -> Result<(f32, Vec<Option<F>>), TrainError> {
        self.gradients_and_stats(inputs, loss_fn).map(|(l, g, _)| (l, g))
    }

    /// [`Executor::gradients`], and the batch statistics of each
    /// BatchNormalization in [`crate::BatchNormMode::Batch`].
    pub(crate) fn gradients_and_stats(
        &self,
        inputs: &[HostTensor],
        loss_fn: impl FnOnce(Vec<F>) -> Result<Tensor<1>, String>,
    ) -> Result<StepGrads, TrainError> {
        let feeds = self.feed(inputs, true)?;
        let pass = self.run(feeds, true, &[])?;
        let bn = pass.bn;
        guard("backward", || {
            let loss = loss_fn(pass.outputs).map_err(|r| TrainError::Model(format!("loss: {r}")))?;
            let grads = loss.backward();
            let value = loss.inner().into_scalar::<f32>();
            let g = pass.leaves.iter().map(|l| l.as_ref().and_then(|l| grad_of(l, &grads))).collect();
            Ok((value, g, bn))
        })
    }

    /// Applies gradients with the optimizer at learning rate `lr`.
    pub(crate) fn apply(&mut self, opt: &mut Optimizer, lr: f64, grads: Vec<Option<F>>) -> Result<(), TrainError> {
        guard("optimizer step", || {
            for (i, g) in grads.into_iter().enumerate() {
                let Some(g) = g else { continue };
                let p = &self.params[i];
                if !p.trainable {
                    continue;
                }
                let mut nw = match opt.host_sgd() {
                    true => {
                        // Move the weights out (the step's autodiff leaves are gone, so the buffer is
                        // this parameter's alone unless a snapshot shares it) and update them in place.
                        let rank = p.latent.rank();
                        let keep = F::R1(Tensor::zeros([1], self.device()));
                        let latent = std::mem::replace(&mut self.params[i].latent, keep);
                        let (mut wd, gd) = (latent.into_data(), g.into_data());
                        let p = &self.params[i];
                        let bad = |r: &str| TrainError::param(&p.name, r);
                        let (w, gs) = (wd.as_mut_slice::<f32>(), gd.as_slice::<f32>());
                        let (Ok(w), Ok(gs)) = (w, gs) else { return Err(bad("parameter or gradient is not f32")) };
                        opt.sgd_step(i, lr, w, gs).ok_or_else(|| bad("gradient and parameter sizes differ"))?;
                        F::from_data(rank, wd, self.device()).ok_or_else(|| bad("optimizer changed the rank"))?
                    }
                    false => {
                        let (rank, w) = p.latent.clone().into_bridge();
                        let (_, gb) = g.contiguous().into_bridge();
                        let (nw, st) = opt.inner.step_dyn(rank, lr, w, gb, opt.states.remove(&i));
                        if let Some(st) = st {
                            opt.states.insert(i, st);
                        }
                        F::from_bridge(rank, nw)
                            .ok_or_else(|| TrainError::param(&p.name, "optimizer changed the rank"))?
                    }
                };
                let p = &self.params[i];
                if let (Some(m), None) = (&p.mask, &p.tie) {
                    nw = nw.mul(m.clone()).ok_or_else(|| TrainError::param(&p.name, "mask rank mismatch"))?;
                }
                self.params[i].latent = nw;
            }
            Ok(())
        })
    }

    /// One step on a batch: `input` is the (single) graph input, `labels` one class
    /// per sample, `teacher` the teacher's logits for [`Loss::Distill`]. Returns the loss.
    ///
    /// With several rayon threads, a graph with a Conv and an even batch of at
    /// least [`SPLIT_MIN_BATCH`] samples, the two half-batches run forward and
    /// backward in parallel (one autodiff graph each) and their gradients are
    /// averaged: the losses are batch means, so this is the whole batch's
    /// gradient up to the order of float summation. burn runs a Conv's input
    /// gradient serially at these sizes, so halves use both threads where
    /// burn's own ops would not. Graphs without a Conv (MLPs), one thread or a
    /// small batch keep one pass over the whole batch (per-step costs that do
    /// not shrink with the batch, such as the weight gradients, would double).
    pub fn train_step(
        &mut self,
        opt: &mut Optimizer,
        lr: f64,
        input: &HostTensor,
        labels: &[u32],
        loss: &Loss,
        teacher: Option<&HostTensor>,
    ) -> Result<f32, TrainError> {
        let n = input.dims.first().copied().unwrap_or(0);
        if labels.len() != n || n == 0 {
            return Err(TrainError::Input {
                name: self.input_names().first().unwrap_or(&"").to_string(),
                reason: format!("batch of {n} samples with {} labels", labels.len()),
            });
        }
        let halves =
            self.split_batches() && rayon::current_num_threads() > 1 && n >= SPLIT_MIN_BATCH && n.is_multiple_of(2);
        // Run the step on a pool thread: the parallel parts inside then fork from
        // a worker (which takes its share and runs unstolen work itself) instead
        // of waking the pool and sleeping for every parallel region.
        let mut step = |ex: &mut Executor| -> Result<f32, TrainError> {
            let (value, grads, stats) = ex.step_gradients(input, labels, loss, teacher, halves)?;
            if !value.is_finite() {
                return Err(TrainError::Model(format!("loss is {value}")));
            }
            ex.apply(opt, lr, grads)?;
            ex.update_running_stats(&stats)?;
            Ok(value)
        };
        let parallel = rayon::current_num_threads() > 1 && rayon::current_thread_index().is_none();
        let serial = if parallel && !halves && self.serial_step_work(n) { serial_pool() } else { None };
        if let Some(pool) = serial {
            // A small step that does not split into halves (an MLP at batch 64; also a
            // conv graph's odd or under-32 batch, weighed by its weights alone): gemm's
            // threads cost more than they save here (LeNet-300-100 ran 560 steps/s on 2 threads
            // against 741 on 1, `cargo xtask bench train`), so the step runs on a
            // one-thread pool: no parallel region, one hop to its thread per step.
            pool.install(|| step(self))
        } else if !halves && parallel {
            rayon::scope(|_| step(self))
        } else {
            step(self)
        }
    }

    /// Whether a whole-batch step of `n` samples is too small to gain from
    /// threads: weights (≈ multiply-accumulates per sample for the dense
    /// layers of a conv-free graph) times the batch under [`SERIAL_STEP_MACS`].
    fn serial_step_work(&self, n: usize) -> bool {
        let weights: usize = self.params.iter().map(|p| p.dims.iter().product::<usize>()).sum();
        weights.saturating_mul(n) < SERIAL_STEP_MACS
    }

    /// The loss and gradients of a batch, in one pass or (`halves`, even batch)
    /// as the mean of its two halves' run in parallel.
    pub(crate) fn step_gradients(
        &self,
        input: &HostTensor,
        labels: &[u32],
        loss: &Loss,
        teacher: Option<&HostTensor>,
        halves: bool,
    ) -> Result<StepGrads, TrainError> {
        let n = labels.len();
        if !halves || n < 2 || !n.is_multiple_of(2) {
            return self.batch_gradients(input, labels, loss, teacher);
        }
        let h = n / 2;
        let (xa, xb) = split_rows(input, h, "input")?;
        let (ta, tb) = match teacher {
            Some(t) => {
                let (a, b) = split_rows(t, h, "teacher logits")?;
                (Some(a), Some(b))
            }
            None => (None, None),
        };
        let (a, b) = rayon::join(
            || self.batch_gradients(&xa, &labels[..h], loss, ta.as_ref()),
            || self.batch_gradients(&xb, &labels[h..], loss, tb.as_ref()),
        );
        let ((la, ga, sa), (lb, gb, sb)) = (a?, b?);
        let stats = sa.iter().zip(&sb).map(|(a, b)| BnStat::merge(a, b)).collect();
        // Both halves are batch means over h samples: the batch's mean is their
        // mean, and halving is exact in floating point.
        let grads = ga
            .into_iter()
            .zip(gb)
            .zip(&self.params)
            .map(|((a, b), p)| match (a, b) {
                (Some(a), Some(b)) => {
                    mean_of_two(a, b, self.device()).map(Some).map_err(|r| TrainError::param(&p.name, r))
                }
                (None, None) => Ok(None),
                _ => Err(TrainError::param(&p.name, "a gradient in one half-batch only")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(((la + lb) * 0.5, grads, stats))
    }

    /// The loss and gradients of one batch, in one forward and backward pass.
    fn batch_gradients(
        &self,
        input: &HostTensor,
        labels: &[u32],
        loss: &Loss,
        teacher: Option<&HostTensor>,
    ) -> Result<StepGrads, TrainError> {
        let n = labels.len();
        let dev = self.device().clone().autodiff();
        let lab: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
        let lab = Tensor::<1, Int>::from_data(TensorData::new(lab, [n]), &dev);
        let teacher = match teacher {
            Some(t) => Some(
                as_matrix(F::from_host(t.data.clone(), &t.dims, &dev).map_err(TrainError::Model)?)
                    .map_err(|r| TrainError::Model(format!("teacher logits: {r}")))?,
            ),
            None => None,
        };
        self.gradients_and_stats(std::slice::from_ref(input), |outs| {
            let logits = as_matrix(outs.into_iter().next().ok_or("the graph has no output")?)?;
            let classes = logits.dims()[1];
            if labels.iter().any(|&l| l as usize >= classes) {
                return Err(format!("a label is >= the {classes} logits"));
            }
            loss.compute(logits, lab, teacher)
        })
    }
}

/// Batches below this size run in one pass even with several threads: halves
/// of a small batch do too little work to pay for the second thread.
pub(crate) const SPLIT_MIN_BATCH: usize = 32;

/// Below this many multiply-accumulates per step (weights × batch), a step that
/// does not split into half-batches runs on one thread (see
/// [`Executor::train_step`]). For a graph without a Conv, weights × batch is its
/// MACs; a conv graph gets here only with a batch too small or odd to split.
/// LeNet-300-100 at batch 64 is 17 M; gemm itself goes parallel from 7 M.
const SERIAL_STEP_MACS: usize = 64 << 20;

/// The one-thread pool that small steps run on (`None` if the system would not
/// start its thread: the step then runs on the caller's pool).
fn serial_pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new().num_threads(1).thread_name(|_| "shrink-train-serial".into()).build().ok()
    })
    .as_ref()
}

/// The first `h` rows (samples) of `t` and the rest.
fn split_rows(t: &HostTensor, h: usize, what: &str) -> Result<(HostTensor, HostTensor), TrainError> {
    let n = t.dims.first().copied().unwrap_or(0);
    let bad = || TrainError::Model(format!("{what}: dims {:?} do not hold {} samples", t.dims, 2 * h));
    if n != 2 * h || !t.data.len().is_multiple_of(n) {
        return Err(bad());
    }
    let at = t.data.len() / n * h;
    let dims = |rows: usize| std::iter::once(rows).chain(t.dims[1..].iter().copied()).collect();
    Ok((HostTensor::new(t.data[..at].to_vec(), dims(h)), HostTensor::new(t.data[at..].to_vec(), dims(n - h))))
}

/// `(a + b) * 0.5`, elementwise, on the host.
fn mean_of_two(a: F, b: F, dev: &Device) -> Result<F, String> {
    let rank = a.rank();
    if a.dims() != b.dims() {
        return Err(format!("half-batch gradients of dims {:?} and {:?}", a.dims(), b.dims()));
    }
    let (mut ad, bd) = (a.into_data(), b.into_data());
    let (Ok(x), Ok(y)) = (ad.as_mut_slice::<f32>(), bd.as_slice::<f32>()) else {
        return Err("gradient is not f32".into());
    };
    for (x, &y) in x.iter_mut().zip(y) {
        *x = (*x + y) * 0.5;
    }
    F::from_data(rank, ad, dev).ok_or_else(|| "rank".to_string())
}
