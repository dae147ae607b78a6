//! `shrink-huffman`: Deep Compression's storage stage. Sparse relative indices
//! and cluster ids, Huffman coded, in a `.shrink` container that unpacks
//! bit-exactly to the ONNX model it was packed from.
//!
//! Stage `kind = "huffman"` writes `model.shrink` into the run's output folder
//! and reports, per float initializer, the non-zeros, the bits per non-zero
//! weight of indices and ids before and after Huffman coding, and the total;
//! plus the ratio to the original model's ONNX size. It does not change the
//! model: the `.shrink` file is the artefact.
//!
//! TOML parameters ([`params::Params`]): `index_bits_fc` (5), `index_bits_conv`
//! (8), `search_index_bits` (true), `max_codebook_bits` (8), `codebook`
//! ("auto" | "f32"), `output` ("model.shrink").
//!
//! Nothing here comes from other stages: the codebook is inferred from the
//! values. A float tensor whose distinct non-zero values number at most
//! 2^max_codebook_bits is a clustered tensor: codebook = those exact f32
//! values (f16 when each converts exactly), ids index it, so the round trip
//! is bit-exact by construction. Every choice (sparse or dense ids, sparse raw
//! values, raw; scan order; index width; Huffman or fixed-width streams;
//! deflated graph part or not) is made per tensor by trying and keeping the
//! smallest. The layout is in `docs/format.md`.
//!
//! Invariants: `unpack(pack(m))` encodes to the same bytes as `m`; decoding a
//! truncated, corrupted or hostile file is an error naming the field, never a
//! panic, and no allocation exceeds what the remaining bytes could hold (and
//! [`UnpackOptions::max_output_bytes`] in all).

pub mod bits;
mod error;
pub mod format;
pub mod huffman;
pub mod params;
pub mod sparse;
mod stage;

#[cfg(test)]
mod tests;

pub use error::HuffmanError;
pub use format::{
    CodebookMode, Encoding, MAGIC, PackOptions, Packed, TensorStats, UnpackOptions, is_shrink, pack, pack_proto,
    unpack, unpack_model, unpack_proto,
};
use shrink_stage::{Registry, StageFactory};
pub use stage::report;

/// Adds this crate's stage kinds to `reg`.
pub fn register(reg: &mut Registry) {
    reg.register(StageFactory {
        kind: stage::KIND,
        summary: "Deep Compression storage: writes a Huffman-coded .shrink file of the model (model unchanged)",
        build: stage::build,
    });
}
