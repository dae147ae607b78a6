//! Running ONNX model bytes in tract, every call guarded against errors and panics.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use prost::Message;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::{
    Arc, DatumType, Framework, InferenceFact, InferenceModelExt, IntoRunnable, IntoTensor, TValue, TVec, Tensor,
    TractResult, TypedFact,
};
use tract_onnx::tract_hir::ops::konst::Const;

use crate::error::VerifyError;

/// tract's ONNX front end; building its op table once is enough.
pub(crate) fn onnx() -> &'static tract_onnx::Onnx {
    static ONNX: OnceLock<tract_onnx::Onnx> = OnceLock::new();
    ONNX.get_or_init(tract_onnx::onnx)
}

/// How many tract plans this process has built.
static PLANS: AtomicUsize = AtomicUsize::new(0);

/// The number of tract plans (typed, optimized, runnable models) this
/// process has built so far: one per [`crate::Judge`] and batch size, one per
/// [`run_onnx`] call, one per segment of a [`crate::Segmented`].
///
/// A test and diagnostic hook (plans are the expensive part of judging a
/// model); it is process-wide, so a test that reads it must be the only code
/// using tract while it measures.
pub fn plans_built() -> usize {
    PLANS.load(Ordering::Relaxed)
}

pub(crate) fn count_plan() {
    PLANS.fetch_add(1, Ordering::Relaxed);
}

/// Runs one stage of tract, turning its error or its panic into a [`VerifyError`].
pub(crate) fn guarded<T>(stage: &'static str, f: impl FnOnce() -> TractResult<T>) -> Result<T, VerifyError> {
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
/// graph-output order. Outputs tract computes as its symbolic `TDim` type
/// (`Shape`, `Size`) come back as `i64`, the ONNX type.
///
/// The inputs are matched by position to the graph inputs that are not
/// initializers; their datum types and shapes become the model's input facts,
/// so the model is typed and optimized for exactly these tensors. External
/// data is not read (there is no folder for it).
pub fn run_onnx(model_bytes: &[u8], inputs: &[Tensor]) -> Result<Vec<Tensor>, VerifyError> {
    run(model_bytes, inputs, false)
}

/// Like [`run_onnx`], but with every input baked into the model as a
/// constant, so that tract evaluates the model while typing it.
///
/// For models that tract cannot type with variable inputs: tract wants
/// shapes, axes, pads, scales and the like as constants. The outputs are
/// the same computation on the same values.
pub fn run_onnx_folded(model_bytes: &[u8], inputs: &[Tensor]) -> Result<Vec<Tensor>, VerifyError> {
    run(model_bytes, inputs, true)
}

fn run(model_bytes: &[u8], inputs: &[Tensor], fold: bool) -> Result<Vec<Tensor>, VerifyError> {
    let proto = ModelProto::decode(model_bytes)?;
    let mut model = guarded("parsing", || onnx().model_for_proto_model(&proto))?;
    drop(proto);
    let outlets = guarded("parsing", || Ok(model.input_outlets()?.to_vec()))?;
    if outlets.len() != inputs.len() {
        return Err(VerifyError::InputCount { expected: outlets.len(), given: inputs.len() });
    }
    for (ix, input) in inputs.iter().enumerate() {
        guarded("setting input facts", || model.set_input_fact(ix, InferenceFact::dt_shape_from_tensor(input)))?;
    }
    if fold {
        guarded("folding inputs", || {
            for (outlet, input) in outlets.iter().zip(inputs) {
                let value = Arc::new(input.clone());
                model.set_outlet_fact(*outlet, InferenceFact::from(&TypedFact::try_from(value.clone())?))?;
                model.node_mut(outlet.node).op = Box::new(Const::new(value)?);
            }
            model.set_input_outlets(&[])
        })?;
    }
    guarded("parsing", || tract_onnx::Onnx::determinize(&mut model))?;
    let typed = guarded("typing", || model.into_typed())?;
    let optimized = guarded("optimizing", || typed.into_optimized())?;
    let runnable = guarded("planning", || optimized.into_runnable())?;
    count_plan();
    let values: TVec<TValue> = if fold { TVec::new() } else { inputs.iter().map(|t| t.clone().into()).collect() };
    let outputs = guarded("running", || runnable.run(values))?;
    Ok(outputs.into_iter().map(|v| onnx_typed(v.into_tensor())).collect())
}

/// tract computes `Shape` and `Size` (and what follows them) as its own
/// `TDim` type; ONNX says int64.
fn onnx_typed(t: Tensor) -> Tensor {
    if t.datum_type() != DatumType::TDim {
        return t;
    }
    match t.cast_to::<i64>() {
        Ok(cast) => cast.into_owned(),
        Err(_) => t,
    }
}
