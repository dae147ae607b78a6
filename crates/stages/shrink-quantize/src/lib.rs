//! `shrink-quantize`: n-bit linear, int8 with calibration, k-means weight sharing with centroid fine-tuning, binary weights.
//!
//! Work in progress: no stage kind is registered until it is implemented.

use shrink_stage::Registry;

/// Adds this crate's stage kinds to `reg`.
pub fn register(_reg: &mut Registry) {}
