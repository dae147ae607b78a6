//! `shrink-plugin-abi`: the C ABI between the `shrink` host and stage plugins.
//!
//! A plugin is a shared library (`cdylib`) that exports one symbol per ABI
//! version, [`ENTRY_SYMBOL_V1`] (`shrink_plugin_entry_v1`), an
//! `extern "C" fn() -> *const PluginDescriptor` returning a pointer to a
//! `static` [`PluginDescriptor`]. Only bytes cross the boundary: ONNX
//! `ModelProto` bytes, TOML parameter text and a JSON context go in; ONNX
//! bytes and a JSON report, or an error text, come out. No Rust type, trait
//! object or allocator is shared: each side frees what it allocated (the host
//! hands every [`RunOutput`] back to the plugin's `free`).
//!
//! Versioning (after CLAP's entry struct): every versioned struct starts with
//! `abi`/`size` fields. New fields are only ever appended, and a reader checks
//! `size` before touching a field it did not know in v1. An incompatible change
//! gets a new entry symbol (`shrink_plugin_entry_v2`) and [`ABI_VERSION`] 2.
//!
//! Rules for both sides:
//! - every [`Slice`] is UTF-8 where it holds text, and lives as long as the
//!   struct that holds it (descriptor slices: as long as the library is loaded);
//! - nothing unwinds out of `run`, `check` or `free` (since Rust 1.81 an unwind
//!   out of `extern "C"` aborts the process): plugins catch panics and return
//!   them as error text;
//! - the host checks `abi`, `size` and the kinds before any other call, may call
//!   `run`/`check` from any thread and concurrently, and never unloads a plugin.
//!
//! This crate has no dependencies and never will.

#![cfg_attr(not(test), no_std)]

use core::mem::size_of;

/// The version this crate describes.
pub const ABI_VERSION: u32 = 1;

/// Name of the entry symbol of ABI v1, as a Rust string.
pub const ENTRY_SYMBOL_V1: &str = "shrink_plugin_entry_v1";

/// The entry symbol's type: returns a `static` descriptor, never null for a
/// working plugin. It must do no work beyond returning the pointer.
pub type EntryFn = unsafe extern "C" fn() -> *const PluginDescriptor;

/// Runs one stage: reads `input` (valid for the duration of the call) and
/// returns a result the host passes to the descriptor's `free`. Never unwinds.
pub type RunFn = unsafe extern "C" fn(input: *const RunInput) -> *mut RunOutput;

/// Checks that `input.params` are valid for `input.kind` without running
/// anything (`input.model` and `input.context` are empty). Returns a result with
/// [`STATUS_OK`] and empty `model`/`report`, or [`STATUS_ERROR`] and a text.
pub type CheckFn = unsafe extern "C" fn(input: *const RunInput) -> *mut RunOutput;

/// Frees a [`RunOutput`] returned by this plugin's `run` or `check`. Null is ignored.
pub type FreeFn = unsafe extern "C" fn(output: *mut RunOutput);

/// `RunOutput::status`: `model` and `report` are set.
pub const STATUS_OK: u32 = 0;
/// `RunOutput::status`: `error` says what went wrong (a stage error or a panic).
pub const STATUS_ERROR: u32 = 1;

/// Borrowed bytes: a pointer and a length. `ptr` may be null when `len` is 0.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Slice {
    pub ptr: *const u8,
    pub len: usize,
}

// SAFETY: a `Slice` is a plain address and length; what it points to is
// immutable for as long as the slice is valid (descriptor slices point into
// `static` data), so sharing it between threads is sound.
unsafe impl Sync for Slice {}
// SAFETY: as above.
unsafe impl Send for Slice {}

impl Slice {
    /// The empty slice.
    pub const EMPTY: Slice = Slice { ptr: core::ptr::null(), len: 0 };

    /// A slice of `'static` text, for descriptors.
    pub const fn from_static(s: &'static str) -> Slice {
        Slice { ptr: s.as_ptr(), len: s.len() }
    }

    /// Borrows `bytes`; the slice must not outlive them.
    pub const fn from_bytes(bytes: &[u8]) -> Slice {
        Slice { ptr: bytes.as_ptr(), len: bytes.len() }
    }

    /// The bytes.
    ///
    /// # Safety
    /// `ptr` must point to `len` readable bytes (or `len` be 0) that stay valid
    /// and unchanged for `'a`.
    pub unsafe fn as_bytes<'a>(&self) -> &'a [u8] {
        if self.ptr.is_null() || self.len == 0 {
            &[]
        } else {
            // SAFETY: the caller guarantees `len` readable bytes at `ptr` for 'a.
            unsafe { core::slice::from_raw_parts(self.ptr, self.len) }
        }
    }
}

/// What a plugin offers. Returned by the entry symbol; lives in `static` memory.
///
/// Layout (ABI v1, 64-bit): `abi` u32 @0, `size` u32 @4, `name` @8, `version`
/// @24, `kinds` @40, `n_kinds` @48, `run` @56, `check` @64, `free` @72; 80 bytes.
#[repr(C)]
#[derive(Debug)]
pub struct PluginDescriptor {
    /// [`ABI_VERSION`] of the plugin. The host refuses any other value.
    pub abi: u32,
    /// `size_of::<PluginDescriptor>()` as the plugin compiled it; fields a
    /// later version appends are read only when `size` covers them.
    pub size: u32,
    /// The plugin's name (e.g. its crate name), UTF-8, for messages.
    pub name: Slice,
    /// The plugin's version, UTF-8, for reports.
    pub version: Slice,
    /// `n_kinds` stage kinds (UTF-8, non-empty, distinct), what a pipeline's
    /// `kind = "..."` names.
    pub kinds: *const Slice,
    pub n_kinds: usize,
    pub run: RunFn,
    pub check: CheckFn,
    pub free: FreeFn,
}

// SAFETY: a descriptor is immutable `static` data: its pointers lead to other
// immutable statics and its functions may be called from any thread.
unsafe impl Sync for PluginDescriptor {}

impl PluginDescriptor {
    /// The `size` a v1 descriptor declares.
    pub const SIZE_V1: u32 = size_of::<PluginDescriptor>() as u32;
}

/// The input of `run` and `check`, owned by the host.
///
/// Layout (ABI v1, 64-bit): `size` u32 @0, `kind` @8, `model` @24, `params`
/// @40, `context` @56; 72 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RunInput {
    /// `size_of::<RunInput>()` as the host compiled it. A plugin reads an
    /// appended field only when `size` covers it.
    pub size: u32,
    /// The stage kind to run, one of the descriptor's kinds.
    pub kind: Slice,
    /// ONNX `ModelProto` bytes, every tensor inline.
    pub model: Slice,
    /// The `[[stage]]` table without `kind`, as TOML text.
    pub params: Slice,
    /// A JSON object: `pipeline` (string), `index` (stage position), `seed`,
    /// `scratch` and `output_dir` (folders, UTF-8 paths). Unknown keys are ignored.
    ///
    /// ABI v1 passes no datasets: a stage that needs `data.train` fails with
    /// "needs data". A later minor version would append a `data` field here: a
    /// host-owned table of `extern "C"` callbacks that fill host-allocated f32
    /// batches by index, readable when `size` covers it.
    pub context: Slice,
}

impl RunInput {
    /// The `size` a v1 input declares.
    pub const SIZE_V1: u32 = size_of::<RunInput>() as u32;
}

/// The result of `run` or `check`, owned by the plugin until `free`.
///
/// Layout (ABI v1, 64-bit): `size` u32 @0, `status` u32 @4, `model` @8,
/// `report` @24, `error` @40; 56 bytes.
#[repr(C)]
#[derive(Debug)]
pub struct RunOutput {
    /// `size_of::<RunOutput>()` as the plugin compiled it.
    pub size: u32,
    /// [`STATUS_OK`] or [`STATUS_ERROR`]; the host treats anything else as an error.
    pub status: u32,
    /// On success: the whole rewritten model as ONNX `ModelProto` bytes (model
    /// metadata, opsets and every tensor inline), not a diff.
    pub model: Slice,
    /// On success: the stage report as JSON: `summary` (string), `layers`
    /// (array of `{layer, note, figures}`), `figures` (object of numbers),
    /// `files` (array of paths relative to `output_dir`).
    pub report: Slice,
    /// On failure: what went wrong, UTF-8, one line or more, no trailing period.
    pub error: Slice,
}

impl RunOutput {
    /// The `size` a v1 output declares.
    pub const SIZE_V1: u32 = size_of::<RunOutput>() as u32;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layouts documented above; a change here is an ABI break.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn layouts_are_stable() {
        assert_eq!(size_of::<Slice>(), 16);
        assert_eq!(size_of::<PluginDescriptor>(), 80);
        assert_eq!(core::mem::offset_of!(PluginDescriptor, kinds), 40);
        assert_eq!(core::mem::offset_of!(PluginDescriptor, free), 72);
        assert_eq!(size_of::<RunInput>(), 72);
        assert_eq!(core::mem::offset_of!(RunInput, context), 56);
        assert_eq!(size_of::<RunOutput>(), 56);
        assert_eq!(core::mem::offset_of!(RunOutput, error), 40);
    }
}
