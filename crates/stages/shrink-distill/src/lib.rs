//! `shrink-distill`: knowledge distillation: a teacher trains a student (built from a spec, loaded, or the current model) with soft targets at temperature T.
//!
//! Stage `distill` (parameters in [`params`]):
//!
//! - **Teacher** (`teacher`): `original` (the pipeline's input model, the
//!   default), `current` (the model before this stage) or an ONNX file. Its
//!   logits come from the trainer's forward ([`shrink_train::Executor`]),
//!   batch by batch, on the same shuffled batches as the student.
//! - **Student** (`student`): `{ mlp = [300, 30] }` or `{ cnn = { channels =
//!   [8, 16], fc = [64] } }`, built in the IR ([`student`]) for the teacher's
//!   input shape and class count with PyTorch's default Kaiming-uniform
//!   initialisation (seeded by `init_seed`, default the pipeline's seed),
//!   input and output named like the teacher's; `current` (e.g. after
//!   structured pruning: prune → distill with the original as teacher); or an
//!   ONNX file. The student must give logits of the teacher's shape.
//! - **Loss**: alpha · T² · KL(softmax(t/T) ‖ softmax(s/T)) + (1 − alpha) ·
//!   CE(s, y) ([`shrink_train::Loss::Distill`]); `alpha = 0` is plain
//!   cross-entropy (hard labels, the teacher is not run): the baseline.
//! - **Training**: the shared `[stage.finetune]` table
//!   ([`shrink_train::FineTuneConfig`]; validation hold-out, best epoch kept).
//!
//! The trained student replaces the model; the runner then verifies it in
//! tract like any other stage's output. Feature (hint) losses and
//! teacher-assistant chains are not implemented: their keys (`hint`,
//! `assistant`, ...) are rejected with an error saying so.
//!
//! Report: the student's parameters against the teacher's (`param_ratio`),
//! alpha, T, steps, validation accuracy, and one note per student layer.

pub mod distill;
pub mod params;
pub mod student;

#[cfg(test)]
mod tests;

use shrink_stage::{Registry, Stage, StageError, StageFactory};

pub use distill::Distill;
pub use params::{DistillConfig, StudentSpec, TeacherSpec};

/// Adds this crate's stage kinds to `reg`.
pub fn register(reg: &mut Registry) {
    reg.register(StageFactory {
        kind: "distill",
        summary: "knowledge distillation: train a student (mlp/cnn spec, file or the current model) on a teacher's soft targets",
        build,
    });
}

/// Builds a `distill` stage from its `[[stage]]` table.
pub fn build(table: &toml::Table) -> Result<Box<dyn Stage>, StageError> {
    Ok(Box::new(Distill::from_table(table)?))
}
