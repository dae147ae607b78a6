//! `shrink-lowrank`: low-rank factorisation: truncated SVD of fully connected layers, channel/spatial decomposition and depthwise-separable replacement of convolutions, with fine-tuning.
//!
//! Work in progress: no stage kind is registered until it is implemented.

use shrink_stage::Registry;

/// Adds this crate's stage kinds to `reg`.
pub fn register(_reg: &mut Registry) {}
