//! `shrink-pipeline`: TOML pipelines that compose stages, run them with tract
//! verification after every stage, checkpoint and resume, and write reports.
//!
//! - [`config`]: the TOML schema (`[pipeline]`, `[data]`, `[verify]`,
//!   `[[stage]]`), errors with file, line and column; `--set` overrides.
//! - [`runner`]: the straight-line runner, checkpoints and resume.
//! - [`report`]: `report.json`, `report.md`, `report.svg`.
//! - [`plugin`]: the host that loads stage plugins (shared libraries).
//! - [`builtin`]: the registry of stage kinds shipped with shrink.

pub mod config;
mod error;
pub mod plugin;
pub mod report;
pub mod runner;

#[cfg(test)]
mod tests;

pub use config::{Pipeline, PipelineFile};
pub use error::PipelineError;
pub use report::{Report, Row, STORED_BYTES};
pub use runner::{CODE_VERSION, RunOptions, RunOutcome, run};
use shrink_stage::Registry;

/// Every stage kind shipped with shrink: one `register` line per stage crate.
pub fn builtin() -> Registry {
    let mut reg = Registry::new();
    shrink_prune::register(&mut reg);
    shrink_quantize::register(&mut reg);
    shrink_huffman::register(&mut reg);
    shrink_lowrank::register(&mut reg);
    shrink_distill::register(&mut reg);
    shrink_early_exit::register(&mut reg);
    reg
}
