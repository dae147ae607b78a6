//! TEST FIXTURE (not a real plugin; `cargo xtask plugins` skips `shrink-plugin-test-*`):
//! written against the raw ABI, its stage `test-garbage` claims success but
//! returns bytes that are not an ONNX model, which the host must reject.

use shrink_plugin_abi::{ABI_VERSION, PluginDescriptor, RunInput, RunOutput, STATUS_OK, Slice};

static GARBAGE: &[u8] = b"\x08\x07 these bytes are not an ONNX model \xff\xff\xff";
static KINDS: [Slice; 1] = [Slice::from_static("test-garbage")];

unsafe extern "C" fn run(_: *const RunInput) -> *mut RunOutput {
    Box::into_raw(Box::new(RunOutput {
        size: RunOutput::SIZE_V1,
        status: STATUS_OK,
        model: Slice::from_bytes(GARBAGE),
        report: Slice::from_static("{}"),
        error: Slice::EMPTY,
    }))
}

unsafe extern "C" fn check(input: *const RunInput) -> *mut RunOutput {
    // SAFETY: forwarded from the host.
    unsafe { run(input) }
}

unsafe extern "C" fn free(out: *mut RunOutput) {
    if !out.is_null() {
        // SAFETY: `out` came from `Box::into_raw` above; its slices are static.
        drop(unsafe { Box::from_raw(out) });
    }
}

static DESCRIPTOR: PluginDescriptor = PluginDescriptor {
    abi: ABI_VERSION,
    size: PluginDescriptor::SIZE_V1,
    name: Slice::from_static("shrink-plugin-test-garbage"),
    version: Slice::from_static("0.0.0"),
    kinds: KINDS.as_ptr(),
    n_kinds: 1,
    run,
    check,
    free,
};

/// The entry (ABI v1).
#[unsafe(no_mangle)]
pub extern "C" fn shrink_plugin_entry_v1() -> *const PluginDescriptor {
    &DESCRIPTOR
}
