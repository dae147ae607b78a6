//! `shrink-prune`: magnitude (unstructured) and structured neuron/channel pruning, with fine-tuning between steps.
//!
//! Work in progress: no stage kind is registered until it is implemented.

use shrink_stage::Registry;

/// Adds this crate's stage kinds to `reg`.
pub fn register(_reg: &mut Registry) {}
