//! Losses on `[batch, classes]` logits: cross-entropy and knowledge distillation.

use burn::tensor::activation as act;
use burn::tensor::{Int, Tensor};

/// The training objective.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Loss {
    /// Mean cross-entropy of softmax(logits) against the labels.
    CrossEntropy,
    /// Hinton's distillation: `alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, labels)`,
    /// KL averaged over the batch. Needs teacher logits.
    Distill { alpha: f32, temperature: f32 },
}

pub(crate) fn cross_entropy(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
    let [n, _] = logits.dims();
    act::log_softmax(logits, 1).gather(1, labels.reshape([n, 1])).mean().neg()
}

pub(crate) fn kl_distill(student: Tensor<2>, teacher: Tensor<2>, temperature: f32) -> Tensor<1> {
    let [n, _] = student.dims();
    let teacher = teacher.detach();
    let p = act::softmax(teacher.clone() / temperature, 1);
    let lp = act::log_softmax(teacher / temperature, 1);
    let lq = act::log_softmax(student / temperature, 1);
    (p * (lp - lq)).sum().mul_scalar(temperature * temperature / n as f32)
}

impl Loss {
    pub(crate) fn compute(
        &self,
        logits: Tensor<2>,
        labels: Tensor<1, Int>,
        teacher: Option<Tensor<2>>,
    ) -> Result<Tensor<1>, String> {
        match *self {
            Loss::CrossEntropy => Ok(cross_entropy(logits, labels)),
            Loss::Distill { alpha, temperature } => {
                if !(0.0..=1.0).contains(&alpha) || temperature <= 0.0 {
                    return Err(format!("distillation needs alpha in [0, 1] and T > 0, got {alpha} and {temperature}"));
                }
                let t = teacher.ok_or("distillation needs teacher logits")?;
                if t.dims() != logits.dims() {
                    return Err(format!("teacher logits {:?} differ from the student's {:?}", t.dims(), logits.dims()));
                }
                let kd = kl_distill(logits.clone(), t, temperature).mul_scalar(alpha);
                Ok(kd + cross_entropy(logits, labels).mul_scalar(1.0 - alpha))
            }
        }
    }
}
