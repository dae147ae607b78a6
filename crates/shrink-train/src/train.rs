//! One training step: forward on the autodiff device, loss, backward, and an
//! optimizer update of every trainable parameter (masks re-applied after).

use burn::tensor::{Int, Tensor, TensorData};

use crate::error::TrainError;
use crate::exec::{Executor, guard};
use crate::loss::Loss;
use crate::ops::as_matrix;
use crate::optim::Optimizer;
use crate::value::{F, HostTensor};

/// Gradient of a parameter leaf, by rank.
fn grad_of(leaf: &F, grads: &burn::tensor::Gradients) -> Option<F> {
    match leaf {
        F::R1(t) => t.grad(grads).map(F::R1),
        F::R2(t) => t.grad(grads).map(F::R2),
        F::R3(t) => t.grad(grads).map(F::R3),
        F::R4(t) => t.grad(grads).map(F::R4),
    }
}

impl Executor {
    /// Forward on `inputs`, `loss_fn` on the outputs, backward: the loss and
    /// every trainable parameter's gradient (of its trained tensor: the
    /// codebook when tied).
    pub(crate) fn gradients(
        &self,
        inputs: &[HostTensor],
        loss_fn: impl FnOnce(Vec<F>) -> Result<Tensor<1>, String>,
    ) -> Result<(f32, Vec<Option<F>>), TrainError> {
        let feeds = self.feed(inputs, true)?;
        let pass = self.run(feeds, true, &[])?;
        guard("backward", || {
            let loss = loss_fn(pass.outputs).map_err(|r| TrainError::Model(format!("loss: {r}")))?;
            let grads = loss.backward();
            let value = loss.inner().into_scalar::<f32>();
            let g = pass.leaves.iter().map(|l| l.as_ref().and_then(|l| grad_of(l, &grads))).collect();
            Ok((value, g))
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
        let (value, grads) = self.gradients(std::slice::from_ref(input), |outs| {
            let logits = as_matrix(outs.into_iter().next().ok_or("the graph has no output")?)?;
            let classes = logits.dims()[1];
            if labels.iter().any(|&l| l as usize >= classes) {
                return Err(format!("a label is >= the {classes} logits"));
            }
            loss.compute(logits, lab, teacher)
        })?;
        if !value.is_finite() {
            return Err(TrainError::Model(format!("loss is {value}")));
        }
        self.apply(opt, lr, grads)?;
        Ok(value)
    }
}
