//! Running ONNX model bytes in tract, every call guarded against errors and panics.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

use tract_onnx::pb::ModelProto;
use prost::Message;
use tract_onnx::prelude::{
    Framework, InferenceFact, InferenceModelExt, IntoRunnable, IntoTensor, TValue, TVec, Tensor, TractResult,
};

use crate::error::VerifyError;

/// tract's ONNX front end; building its op table once is enough.
fn onnx() -> &'static tract_onnx::Onnx {
    static ONNX: OnceLock<tract_onnx::Onnx> = OnceLock::new();
    ONNX.get_or_init(tract_onnx::onnx)
}

/// Runs one stage of tract, turning its error or its panic into a [`VerifyError`].
fn guarded<T>(stage: &'static str, f: impl FnOnce() -> TractResult<T>) -> Result<T, VerifyError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(VerifyError::Tract { stage, message: format!("{e:#}") }),
        Err(payload) => {
            let message = if let Some(s) = payload.downcast_ref::<&str>() {
                (*s).to_string()
            } else if let Some(s) = payload.downcast_ref::<String>() {
                s.clone()
            } else {
                "a panic without a message".to_string()
            };
            Err(VerifyError::Panic { stage, message })
        }
    }
}

/// Runs ONNX model bytes in tract on `inputs` and returns its outputs, in
/// graph-output order.
///
/// The inputs are matched by position to the graph inputs that are not
/// initializers; their datum types and shapes become the model's input facts,
/// so the model is typed and optimized for exactly these tensors. External
/// data is not read (there is no folder for it).
pub fn run_onnx(model_bytes: &[u8], inputs: &[Tensor]) -> Result<Vec<Tensor>, VerifyError> {
    let proto = ModelProto::decode(model_bytes)?;
    let mut model = guarded("parsing", || onnx().model_for_proto_model(&proto))?;
    drop(proto);
    let expected = guarded("parsing", || Ok(model.input_outlets()?.len()))?;
    if expected != inputs.len() {
        return Err(VerifyError::InputCount { expected, given: inputs.len() });
    }
    for (ix, input) in inputs.iter().enumerate() {
        guarded("setting input facts", || model.set_input_fact(ix, InferenceFact::dt_shape_from_tensor(input)))?;
    }
    guarded("parsing", || tract_onnx::Onnx::determinize(&mut model))?;
    let typed = guarded("typing", || model.into_typed())?;
    let optimized = guarded("optimizing", || typed.into_optimized())?;
    let runnable = guarded("planning", || optimized.into_runnable())?;
    let values: TVec<TValue> = inputs.iter().map(|t| t.clone().into()).collect();
    let outputs = guarded("running", || runnable.run(values))?;
    Ok(outputs.into_iter().map(|v| v.into_tensor()).collect())
}
