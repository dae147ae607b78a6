//! The one integration-test binary. A module per area; model-sized checks run
//! only with `SHRINK_SLOW_TESTS=1` (and in `cargo xtask bench`).

mod cli;
mod distill;
mod early_exit;
mod errors;
mod golden;
mod huffman;
mod info;
mod int8;
mod lowrank;
mod plugins;
mod prune;
mod quantize;
mod roundtrip;
mod structured;
mod tidy;
mod train;
mod util;
mod verify;
mod verify_once;
