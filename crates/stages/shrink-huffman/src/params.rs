//! The `[[stage]]` table of `kind = "huffman"`.

use serde::Deserialize;

use crate::format::{CodebookMode, PackOptions};

/// Parameters of the `huffman` stage. Every key is optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Bits per relative index (the gap to the previous non-zero) for weights of
    /// rank ≤ 2 (fully connected), 1 to 12. Default 5, as in Deep Compression.
    #[serde(default = "default_fc")]
    pub index_bits_fc: u8,
    /// Bits per relative index for weights of rank ≥ 3 (convolutions), 1 to 12. Default 8.
    #[serde(default = "default_conv")]
    pub index_bits_conv: u8,
    /// Also try every index width from 1 to 12 per tensor and keep the one that
    /// packs smallest (default true). With `false` only the two widths above are used.
    #[serde(default = "yes")]
    pub search_index_bits: bool,
    /// A float tensor with at most 2^max_codebook_bits distinct non-zero values
    /// is stored as cluster ids into a codebook of those values (1 to 8, default 8).
    #[serde(default = "default_codebook_bits")]
    pub max_codebook_bits: u8,
    /// Codebook storage: "auto" (f16 when every value round-trips through f16
    /// exactly, else f32) or "f32".
    #[serde(default)]
    pub codebook: CodebookMode,
    /// The file written into the run's output folder (a plain file name; default "model.shrink").
    #[serde(default = "default_output")]
    pub output: String,
}

fn default_fc() -> u8 {
    5
}

fn default_conv() -> u8 {
    8
}

fn yes() -> bool {
    true
}

fn default_codebook_bits() -> u8 {
    8
}

fn default_output() -> String {
    "model.shrink".into()
}

impl Params {
    pub fn pack_options(&self) -> PackOptions {
        PackOptions {
            index_bits_fc: self.index_bits_fc,
            index_bits_conv: self.index_bits_conv,
            search_index_bits: self.search_index_bits,
            max_codebook_bits: self.max_codebook_bits,
            codebook: self.codebook,
        }
    }
}
