//! `shrink-distill`: knowledge distillation: a teacher trains a student (built from a spec, loaded, or the current model) with soft targets at temperature T.
//!
//! Work in progress: no stage kind is registered until it is implemented.

use shrink_stage::Registry;

/// Adds this crate's stage kinds to `reg`.
pub fn register(_reg: &mut Registry) {}
