//! The plugin side of the ABI: decode, build, run, encode, catch panics, free.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use shrink_graph::Model;
use shrink_plugin_abi::{RunInput, RunOutput, STATUS_ERROR, STATUS_OK, Slice};
use shrink_stage::{NoProgress, Stage, StageCx};

use crate::Export;

/// `run` of a plugin exporting `stages`: never unwinds, always returns an
/// output for [`free_output`].
///
/// # Safety
/// `input` is null or points to a valid [`RunInput`] whose slices are readable
/// for the duration of the call.
pub unsafe fn run_input(input: *const RunInput, stages: &[Export]) -> *mut RunOutput {
    // SAFETY: forwarded from the caller.
    guarded(|| unsafe { run(input, stages) })
}

/// `check` of a plugin exporting `stages`: builds the stage from its
/// parameters and drops it.
///
/// # Safety
/// As for [`run_input`].
pub unsafe fn check_input(input: *const RunInput, stages: &[Export]) -> *mut RunOutput {
    guarded(|| {
        // SAFETY: forwarded from the caller.
        let input = unsafe { read_input(input)? };
        build(&input, stages)?;
        Ok((Vec::new(), Vec::new()))
    })
}

/// Frees an output of [`run_input`] or [`check_input`]. Null is ignored.
///
/// # Safety
/// `out` is null or was returned by this library's `run`/`check` and not freed yet.
pub unsafe extern "C" fn free_output(out: *mut RunOutput) {
    if out.is_null() {
        return;
    }
    // SAFETY: `out` came from `Box::into_raw` in `guarded`, and each slice from `owned`.
    unsafe {
        let out = Box::from_raw(out);
        for s in [out.model, out.report, out.error] {
            if !s.ptr.is_null() {
                drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(s.ptr as *mut u8, s.len)));
            }
        }
    }
}

/// The input's fields as Rust values.
struct Input<'a> {
    kind: &'a str,
    model: &'a [u8],
    params: toml::Table,
    context: serde_json::Map<String, serde_json::Value>,
}

/// Runs `f` catching panics; the result becomes an owned [`RunOutput`].
fn guarded(f: impl FnOnce() -> Result<(Vec<u8>, Vec<u8>), String>) -> *mut RunOutput {
    let out = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok((model, report))) => output(STATUS_OK, model, report, Vec::new()),
        Ok(Err(text)) => output(STATUS_ERROR, Vec::new(), Vec::new(), text.into_bytes()),
        Err(payload) => {
            let text = format!("panicked: {}", panic_text(payload.as_ref()));
            // Dropping a payload can panic in turn; leak it instead.
            std::mem::forget(payload);
            output(STATUS_ERROR, Vec::new(), Vec::new(), text.into_bytes())
        }
    };
    Box::into_raw(Box::new(out))
}

fn output(status: u32, model: Vec<u8>, report: Vec<u8>, error: Vec<u8>) -> RunOutput {
    RunOutput { size: RunOutput::SIZE_V1, status, model: owned(model), report: owned(report), error: owned(error) }
}

/// Leaks `v` as a slice that [`free_output`] takes back.
fn owned(v: Vec<u8>) -> Slice {
    let b = v.into_boxed_slice();
    let len = b.len();
    Slice { ptr: Box::into_raw(b) as *const u8, len }
}

fn panic_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".into()
    }
}

/// # Safety
/// As for [`run_input`]; the returned borrows live as long as the call.
unsafe fn read_input<'a>(input: *const RunInput) -> Result<Input<'a>, String> {
    if input.is_null() {
        return Err("the host passed no input".into());
    }
    // SAFETY: non-null, and valid per the caller; `size` is the first field of every version.
    let size = unsafe { std::ptr::addr_of!((*input).size).read() };
    if size < RunInput::SIZE_V1 {
        return Err(format!("the host's input is {size} bytes, ABI v1 needs {}", RunInput::SIZE_V1));
    }
    // SAFETY: `size` covers every v1 field.
    let input = unsafe { &*input };
    // SAFETY: the host keeps the slices readable for the call.
    let (kind, model, params, context) =
        unsafe { (input.kind.as_bytes(), input.model.as_bytes(), input.params.as_bytes(), input.context.as_bytes()) };
    let kind = std::str::from_utf8(kind).map_err(|_| "the stage kind is not UTF-8".to_string())?;
    let params = std::str::from_utf8(params).map_err(|_| format!("stage `{kind}`: parameters are not UTF-8"))?;
    let params: toml::Table =
        toml::from_str(params).map_err(|e| format!("stage `{kind}`: parameters are not a TOML table: {e}"))?;
    let context = if context.is_empty() {
        serde_json::Map::new()
    } else {
        serde_json::from_slice(context).map_err(|e| format!("stage `{kind}`: the context is not a JSON object: {e}"))?
    };
    Ok(Input { kind, model, params, context })
}

fn build(input: &Input<'_>, stages: &[Export]) -> Result<Box<dyn Stage>, String> {
    let export = stages.iter().find(|e| e.kind == input.kind).ok_or_else(|| {
        let known: Vec<&str> = stages.iter().map(|e| e.kind).collect();
        format!("unknown stage kind `{}` (this plugin offers: {})", input.kind, known.join(", "))
    })?;
    (export.build)(&input.params).map_err(|e| e.to_string())
}

/// # Safety
/// As for [`run_input`].
unsafe fn run(input: *const RunInput, stages: &[Export]) -> Result<(Vec<u8>, Vec<u8>), String> {
    // SAFETY: forwarded from the caller.
    let input = unsafe { read_input(input)? };
    let kind = input.kind;
    let stage = build(&input, stages)?;
    let mut model = Model::from_bytes(input.model)
        .map_err(|e| format!("stage `{kind}`: cannot read the model the host sent: {e}"))?;
    let original = model.clone();
    let ctx = &input.context;
    let text = |k: &str| ctx.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let scratch = text("scratch").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let mut progress = NoProgress;
    let mut cx = StageCx {
        pipeline: text("pipeline").unwrap_or_else(|| "plugin".into()),
        index: ctx.get("index").and_then(|v| v.as_u64()).unwrap_or(0) as usize,
        train: None,
        test: None,
        original: &original,
        seed: ctx.get("seed").and_then(|v| v.as_u64()).unwrap_or(0),
        progress: &mut progress,
        output_dir: text("output_dir").map(PathBuf::from).unwrap_or_else(|| scratch.clone()),
        scratch,
        // the host's bytes are any valid encoding, not necessarily `to_bytes`'s
        encoded: Default::default(),
    };
    let report = stage.run(&mut model, &mut cx).map_err(|e| e.to_string())?;
    model.graph.verify().map_err(|e| format!("stage `{kind}` left an invalid graph (a bug in the plugin): {e}"))?;
    let report = serde_json::to_vec(&report).map_err(|e| format!("stage `{kind}`: cannot encode the report: {e}"))?;
    Ok((model.to_bytes(), report))
}
