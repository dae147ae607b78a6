//! `shrink-huffman`: Deep Compression storage: sparse relative indices and cluster ids, Huffman coded, in a .shrink container that unpacks bit-exactly to ONNX.
//!
//! Work in progress: no stage kind is registered until it is implemented.

use shrink_stage::Registry;

/// Adds this crate's stage kinds to `reg`.
pub fn register(_reg: &mut Registry) {}
