//! `shrink-early-exit`: early exit: intermediate classifier heads, a calibrated confidence policy, multi-output and segmented export.
//!
//! Work in progress: no stage kind is registered until it is implemented.

use shrink_stage::Registry;

/// Adds this crate's stage kinds to `reg`.
pub fn register(_reg: &mut Registry) {}
