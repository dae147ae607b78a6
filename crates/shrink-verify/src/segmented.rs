//! [`Segmented`]: an early-exit model run segment by segment, one sample at a
//! time (batch 1, the deployment case).
//!
//! Segment `k` is an ONNX model with one input (the model's input for `k = 0`,
//! the previous segment's feature tensor after) and outputs `[logits]` (the
//! last segment) or `[logits, feature]`. [`Segmented::run`] runs segment 0,
//! asks the caller's policy whether to leave with these logits, and otherwise
//! feeds the feature to the next segment. The feature stays a tract value
//! between segments (no copy). Every symbolic dimension is bound to 1.

use prost::Message;
use shrink_graph::{Dim, Model, NodeKind, declared_shape};
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::{
    DatumExt, Framework, InferenceModelExt, IntoRunnable, TValue, Tensor, TypedSimpleState, tvec,
};

use crate::error::VerifyError;
use crate::run::{guarded, onnx};

/// One segment's tract plan.
struct Plan {
    name: String,
    shape: Vec<usize>,
    state: TypedSimpleState,
}

/// The segments of an early-exit model, planned for batch 1.
pub struct Segmented {
    plans: Vec<Plan>,
}

impl std::fmt::Debug for Segmented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segmented").field("segments", &self.plans.iter().map(|p| &p.name).collect::<Vec<_>>()).finish()
    }
}

/// Where one sample left and with which logits.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentedRun {
    /// The segment whose head gave the answer.
    pub exit: usize,
    pub logits: Vec<f32>,
}

impl SegmentedRun {
    /// Index of the largest logit (the first one on ties; NaN never wins).
    pub fn argmax(&self) -> usize {
        crate::judge::top_k(&self.logits, 1).first().copied().unwrap_or(0)
    }
}

/// Replaces every named dimension by 1 in the main graph's declared types.
fn bind_to_one(proto: &mut shrink_graph::onnx::ModelProto) {
    use shrink_graph::onnx::tensor_shape_proto::dimension::Value;
    use shrink_graph::onnx::type_proto;
    let Some(g) = proto.graph.as_mut() else { return };
    for vi in g.input.iter_mut().chain(g.output.iter_mut()).chain(g.value_info.iter_mut()) {
        let Some(type_proto::Value::TensorType(t)) = vi.r#type.as_mut().and_then(|t| t.value.as_mut()) else {
            continue;
        };
        for d in t.shape.iter_mut().flat_map(|s| s.dim.iter_mut()) {
            if let Some(Value::DimParam(_)) = &d.value {
                d.value = Some(Value::DimValue(1));
            }
        }
    }
}

impl Segmented {
    /// Plans every segment (named for messages) for batch 1.
    pub fn new(segments: &[(&str, &Model)]) -> Result<Segmented, VerifyError> {
        let mut plans = Vec::new();
        for (k, &(name, model)) in segments.iter().enumerate() {
            let bad = |reason: String| VerifyError::Model { model: name.to_string(), reason };
            let inputs: Vec<_> = model.graph.real_inputs().collect();
            let [input] = inputs[..] else {
                return Err(bad(format!("it has {} inputs, a segment takes 1", inputs.len())));
            };
            let want_outputs = if k + 1 == segments.len() { 1 } else { 2 };
            if model.graph.outputs().len() != want_outputs {
                return Err(bad(format!(
                    "it has {} outputs; segment {k} of {} needs {want_outputs} (logits{})",
                    model.graph.outputs().len(),
                    segments.len(),
                    if want_outputs == 2 { ", feature" } else { "" }
                )));
            }
            let NodeKind::Input(vi) = model.graph.node(input) else { unreachable!("real_inputs yields inputs") };
            let shape: Vec<usize> = declared_shape(vi.r#type.as_ref())
                .ok_or_else(|| bad(format!("input `{}` declares no shape", vi.name)))?
                .iter()
                .enumerate()
                .map(|(i, d)| match d {
                    Dim::Known(n) => Ok(*n as usize),
                    Dim::Sym(_) => Ok(1),
                    Dim::Unknown if i == 0 => Ok(1),
                    Dim::Unknown => Err(bad(format!("input `{}` has an unknown dimension {i}", vi.name))),
                })
                .collect::<Result<_, _>>()?;
            let mut proto = model.to_proto();
            bind_to_one(&mut proto);
            let proto = ModelProto::decode(proto.encode_to_vec().as_slice())?;
            let wrap = |e: VerifyError| VerifyError::Model { model: name.to_string(), reason: e.to_string() };
            let mut m = guarded("parsing", || onnx().model_for_proto_model(&proto)).map_err(wrap)?;
            guarded("setting the input shape", || m.set_input_fact(0, f32::fact(&shape).into())).map_err(wrap)?;
            let typed = guarded("typing", || m.into_typed()).map_err(wrap)?;
            let optimized = guarded("optimizing", || typed.into_optimized()).map_err(wrap)?;
            let plan = guarded("planning", || optimized.into_runnable()).map_err(wrap)?;
            crate::run::count_plan();
            let state = guarded("planning", || plan.spawn()).map_err(wrap)?;
            plans.push(Plan { name: name.to_string(), shape, state });
        }
        if plans.is_empty() {
            return Err(VerifyError::Model { model: "segmented".into(), reason: "no segments".into() });
        }
        Ok(Segmented { plans })
    }

    /// Number of segments.
    pub fn len(&self) -> usize {
        self.plans.len()
    }

    /// Always false: [`Segmented::new`] refuses an empty list.
    pub fn is_empty(&self) -> bool {
        self.plans.is_empty()
    }

    /// The input shape of one sample, batch (1) included.
    pub fn input_shape(&self) -> &[usize] {
        &self.plans[0].shape
    }

    /// Runs one sample: segment after segment until `leave(k, logits)` says
    /// yes (it is not asked at the last segment).
    pub fn run(
        &mut self,
        sample: &[f32],
        leave: &mut dyn FnMut(usize, &[f32]) -> bool,
    ) -> Result<SegmentedRun, VerifyError> {
        let shape = self.plans[0].shape.clone();
        if sample.len() != shape.iter().product::<usize>() {
            return Err(VerifyError::Model {
                model: self.plans[0].name.clone(),
                reason: format!("{} input values do not fill shape {shape:?}", sample.len()),
            });
        }
        let input = Tensor::from_shape(&shape, sample)
            .map_err(|e| VerifyError::Tract { stage: "making the input", message: format!("{e:#}") })?;
        let mut x = TValue::from(input);
        let n = self.plans.len();
        for k in 0..n {
            let plan = &mut self.plans[k];
            let name = plan.name.clone();
            let bad = |reason: String| VerifyError::Model { model: name.clone(), reason };
            let state = &mut plan.state;
            let mut out = guarded("running", || state.run(tvec![x])).map_err(|e| bad(e.to_string()))?;
            if out.len() < if k + 1 == n { 1 } else { 2 } {
                return Err(bad(format!("{} outputs", out.len())));
            }
            let feature = if k + 1 < n { Some(out.remove(1)) } else { None };
            let logits_t = out.remove(0);
            let logits: Vec<f32> = logits_t
                .to_plain_array_view::<f32>()
                .map_err(|e| bad(format!("logits are not float32: {e}")))?
                .iter()
                .copied()
                .collect();
            match feature {
                Some(f) if !leave(k, &logits) => x = f,
                _ => return Ok(SegmentedRun { exit: k, logits }),
            }
        }
        unreachable!("the last segment always returns")
    }
}
