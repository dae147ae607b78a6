//! TEST FIXTURE (not a real plugin; `cargo xtask plugins` skips `shrink-plugin-test-*`):
//! its descriptor says ABI version 99; the host must refuse it before calling
//! anything (its `run` and `check` return null, which the host would reject too).

use shrink_plugin_abi::{PluginDescriptor, RunInput, RunOutput, Slice};

static KINDS: [Slice; 1] = [Slice::from_static("test-wrong-abi")];

unsafe extern "C" fn run(_: *const RunInput) -> *mut RunOutput {
    std::ptr::null_mut()
}

unsafe extern "C" fn free(_: *mut RunOutput) {}

static DESCRIPTOR: PluginDescriptor = PluginDescriptor {
    abi: 99,
    size: PluginDescriptor::SIZE_V1,
    name: Slice::from_static("shrink-plugin-test-wrong-abi"),
    version: Slice::from_static("0.0.0"),
    kinds: KINDS.as_ptr(),
    n_kinds: 1,
    run,
    check: run,
    free,
};

/// The entry (ABI v1 symbol, wrong version inside).
#[unsafe(no_mangle)]
pub extern "C" fn shrink_plugin_entry_v1() -> *const PluginDescriptor {
    &DESCRIPTOR
}
