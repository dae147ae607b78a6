//! `shrink-plugin-sdk`: write a `shrink` stage plugin in Rust.
//!
//! A plugin crate is a `cdylib` that implements [`Stage`] and [`ExportStage`]
//! for its stage types and calls [`export_stage!`] once, at its root:
//!
//! ```ignore
//! #[derive(Debug)]
//! struct FoldBatchNorm;
//!
//! impl shrink_plugin_sdk::ExportStage for FoldBatchNorm {
//!     const KIND: &'static str = "fold-batchnorm";
//!     fn from_params(params: &toml::Table) -> Result<Self, StageError> { /* ... */ }
//! }
//! impl Stage for FoldBatchNorm { /* kind(), run() */ }
//!
//! shrink_plugin_sdk::export_stage!(FoldBatchNorm);
//! ```
//!
//! The macro writes the `shrink_plugin_entry_v1` symbol and a `static`
//! descriptor (see `shrink-plugin-abi`) listing each type's `KIND`. On each
//! call the generated code decodes the ONNX bytes into a [`Model`] (verified),
//! builds the stage from the TOML parameters, runs it, verifies the graph and
//! encodes the whole model and a JSON [`StageReport`]. Everything runs inside
//! `catch_unwind`: a stage error or a panic becomes error text for the host,
//! never an unwind across `extern "C"` (which aborts since Rust 1.81). Plugins
//! must therefore not be built with `panic = "abort"`.
//!
//! What a plugin stage gets in its [`StageCx`] under ABI v1:
//! - no datasets: `train` and `test` are `None`, so [`StageCx::require_train`]
//!   fails with "needs data" (ABI v1 carries no data; see `RunInput::context`
//!   in `shrink-plugin-abi` for how a later version would add it);
//! - `original` is the model the plugin received, not the pipeline's input;
//! - `pipeline`, `index`, `seed`, `scratch` and `output_dir` from the host;
//! - no progress display and no log output (the plugin's `tracing` has no
//!   subscriber).

mod ffi;

#[cfg(test)]
mod tests;

pub use shrink_graph::Model;
pub use shrink_plugin_abi as abi;
pub use shrink_stage::{Stage, StageCx, StageError, StageReport};

#[doc(hidden)]
pub use ffi::{check_input, free_output, run_input};

/// A [`Stage`] a plugin can export: its kind and how to build it from the
/// parameters of its `[[stage]]` table (every key but `kind`).
pub trait ExportStage: Stage + Sized + 'static {
    /// The `kind` a pipeline names; must equal what [`Stage::kind`] returns.
    const KIND: &'static str;

    /// Builds the stage. Unknown or bad keys are a [`StageError::Param`].
    fn from_params(params: &toml::Table) -> Result<Self, StageError>;
}

/// One exported stage kind; written by [`export_stage!`].
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct Export {
    pub kind: &'static str,
    pub build: fn(&toml::Table) -> Result<Box<dyn Stage>, StageError>,
}

/// Builds a `T` as a boxed stage; [`export_stage!`] stores it in an [`Export`].
#[doc(hidden)]
pub fn build<T: ExportStage>(params: &toml::Table) -> Result<Box<dyn Stage>, StageError> {
    Ok(Box::new(T::from_params(params)?))
}

/// Exports one or more [`ExportStage`] types as this library's plugin entry
/// (`shrink_plugin_entry_v1`). Call it once, at the crate root of a `cdylib`.
#[macro_export]
macro_rules! export_stage {
    ($($stage:ty),+ $(,)?) => {
        /// The plugin's entry (ABI v1): a pointer to its static descriptor.
        #[unsafe(no_mangle)]
        pub extern "C" fn shrink_plugin_entry_v1() -> *const $crate::abi::PluginDescriptor {
            const STAGES: &[$crate::Export] = &[$(
                $crate::Export {
                    kind: <$stage as $crate::ExportStage>::KIND,
                    build: $crate::build::<$stage>,
                }
            ),+];
            const KINDS: &[$crate::abi::Slice] =
                &[$($crate::abi::Slice::from_static(<$stage as $crate::ExportStage>::KIND)),+];

            unsafe extern "C" fn run(input: *const $crate::abi::RunInput) -> *mut $crate::abi::RunOutput {
                // SAFETY: the host passes a valid `RunInput` for the duration of the call.
                unsafe { $crate::run_input(input, STAGES) }
            }

            unsafe extern "C" fn check(input: *const $crate::abi::RunInput) -> *mut $crate::abi::RunOutput {
                // SAFETY: as for `run`.
                unsafe { $crate::check_input(input, STAGES) }
            }

            static DESCRIPTOR: $crate::abi::PluginDescriptor = $crate::abi::PluginDescriptor {
                abi: $crate::abi::ABI_VERSION,
                size: $crate::abi::PluginDescriptor::SIZE_V1,
                name: $crate::abi::Slice::from_static(env!("CARGO_PKG_NAME")),
                version: $crate::abi::Slice::from_static(env!("CARGO_PKG_VERSION")),
                kinds: KINDS.as_ptr(),
                n_kinds: KINDS.len(),
                run,
                check,
                free: $crate::free_output,
            };
            &DESCRIPTOR
        }
    };
}
