//! [`Judge`]: one model made runnable in tract for a fixed input shape.
//!
//! Classifier models take one float input `[batch, ...]` and give logits
//! `[batch, classes]` (trailing 1-dims, as after a 1x1 conv head, are
//! accepted). tract plans are built per batch size, with every dimension
//! fixed: the model's symbolic dims are bound to what the caller or the
//! dataset gives, and its declared batch is replaced by the batch asked for.
//!
//! The ONNX bytes are parsed by tract once, into one inference model; each
//! batch size gets a copy of it with the symbolic dims bound in tract's facts
//! (the same facts the bytes would give with those dims written in), then its
//! own typed, optimized plan.

use std::collections::{HashMap, HashSet};

use prost::Message;
use shrink_graph::{Dim, Model};
use tract_onnx::pb::{ModelProto, type_proto};
use tract_onnx::prelude::{
    DatumExt, Framework, InferenceModel, InferenceModelExt, IntoRunnable, IntoTensor, SymbolValues, TValue, TVec,
    Tensor, TypedSimpleState, tvec,
};
use tract_onnx::tract_hir::infer::{DimFact, GenericFactoid, ShapeFactoid};

use tracing::warn;

use crate::error::VerifyError;
use crate::run::{count_plan, guarded, onnx};

/// A model ready to run in tract on batches of one input shape.
pub struct Judge {
    name: String,
    /// The decoded bytes until tract first needs them, then tract's parse of them.
    model: Parsed,
    /// Symbolic dimension names bound to values (`--set-dim`); the input's
    /// batch symbol, if any, is bound per batch size.
    dims: HashMap<String, i64>,
    batch_symbol: Option<String>,
    /// The input shape without its batch dimension, every dim known.
    sample: Vec<usize>,
    /// One tract plan, with its run state (buffers kept between runs), per batch size.
    states: HashMap<usize, TypedSimpleState>,
    /// The batch the model declares as a number (an export with static
    /// shapes), if it does.
    fixed_batch: Option<usize>,
    /// Set once a batch other than `fixed_batch` failed to plan: batches then
    /// run `fixed_batch` samples at a time.
    pub(crate) chunked: bool,
}

/// The model, parsed by tract at most once.
enum Parsed {
    Proto(Box<ModelProto>),
    Model(Box<InferenceModel>),
}

impl std::fmt::Debug for Judge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Judge")
            .field("name", &self.name)
            .field("sample", &self.sample)
            .field("batches", &self.states.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// How the non-batch dimensions of a model's input are fixed.
#[derive(Debug, Clone, Default)]
pub struct InputSpec {
    /// The whole input shape including the batch (the batch is replaced per run).
    pub shape: Option<Vec<usize>>,
    /// Values for named symbolic dimensions (`batch=1`, `height=224`).
    pub dims: HashMap<String, usize>,
}

impl Judge {
    /// Prepares `model` (named `name` in messages and reports). This exports
    /// the model; a caller that holds its ONNX bytes already uses [`Judge::from_bytes`].
    pub fn new(name: &str, model: &Model, spec: &InputSpec) -> Result<Judge, VerifyError> {
        Judge::from_bytes(name, &model.to_bytes(), spec)
    }

    /// Prepares the model whose ONNX encoding (every tensor inline, as
    /// [`Model::to_bytes`] gives it) is `bytes`.
    pub fn from_bytes(name: &str, bytes: &[u8], spec: &InputSpec) -> Result<Judge, VerifyError> {
        let bad = |reason: String| VerifyError::Model { model: name.into(), reason };
        let proto = ModelProto::decode(bytes).map_err(|e| bad(format!("its ONNX bytes do not decode: {e}")))?;
        let Some(g) = proto.graph.as_ref() else { return Err(bad("it has no graph".into())) };
        // Graph inputs that an initializer feeds are weights, not inputs.
        let weights: HashSet<&str> = g
            .initializer
            .iter()
            .map(|t| t.name.as_str())
            .chain(g.sparse_initializer.iter().filter_map(|s| s.values.as_ref()).map(|t| t.name.as_str()))
            .collect();
        let inputs: Vec<_> = g.input.iter().filter(|vi| !weights.contains(vi.name.as_str())).collect();
        let [vi] = inputs[..] else {
            return Err(bad(format!("it has {} inputs; evaluation takes single-input classifiers", inputs.len())));
        };
        let declared = declared_dims(vi.r#type.as_ref()).unwrap_or_default();
        let sample = match &spec.shape {
            Some(s) if s.len() >= 2 => s[1..].to_vec(),
            Some(s) => {
                return Err(VerifyError::Model {
                    model: name.into(),
                    reason: format!("input shape {s:?} has no batch dimension and sample dimensions"),
                });
            }
            None => {
                if declared.len() < 2 {
                    return Err(VerifyError::Model {
                        model: name.into(),
                        reason: format!(
                            "input `{}` declares shape {}; give the shape with --input-shape",
                            vi.name,
                            shape_text(&declared)
                        ),
                    });
                }
                let mut out = Vec::new();
                for d in &declared[1..] {
                    out.push(match d {
                        Dim::Known(n) => *n as usize,
                        Dim::Sym(s) if spec.dims.contains_key(s) => spec.dims[s],
                        other => {
                            return Err(VerifyError::Model {
                                model: name.into(),
                                reason: format!(
                                    "input `{}` has dimension `{other}` in shape {}: fix it with --set-dim NAME=N or --input-shape",
                                    vi.name,
                                    shape_text(&declared)
                                ),
                            });
                        }
                    });
                }
                out
            }
        };
        let batch_symbol = match declared.first() {
            Some(Dim::Sym(s)) => Some(s.clone()),
            _ => None,
        };
        let fixed_batch = match declared.first() {
            Some(Dim::Known(n)) if *n >= 1 => Some(*n as usize),
            _ => None,
        };
        let dims = spec.dims.iter().map(|(k, &v)| (k.clone(), v as i64)).collect();
        Ok(Judge {
            name: name.into(),
            model: Parsed::Proto(Box::new(proto)),
            dims,
            batch_symbol,
            sample,
            states: HashMap::new(),
            fixed_batch,
            chunked: false,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The input shape of one sample (without the batch).
    pub fn sample_shape(&self) -> &[usize] {
        &self.sample
    }

    /// The full input shape for `batch` samples.
    pub fn input_shape(&self, batch: usize) -> Vec<usize> {
        std::iter::once(batch).chain(self.sample.iter().copied()).collect()
    }

    /// tract's parse of the model, made on first use.
    fn parsed(&mut self) -> Result<&InferenceModel, VerifyError> {
        if let Parsed::Proto(proto) = &self.model {
            let wrap = |e: VerifyError| VerifyError::Model { model: self.name.clone(), reason: e.to_string() };
            let model = guarded("parsing", || onnx().model_for_proto_model(proto)).map_err(wrap)?;
            self.model = Parsed::Model(Box::new(model));
        }
        match &self.model {
            Parsed::Model(m) => Ok(m),
            Parsed::Proto(_) => unreachable!("parsed above"),
        }
    }

    fn state(&mut self, batch: usize) -> Result<&mut TypedSimpleState, VerifyError> {
        if !self.states.contains_key(&batch) {
            let shape = self.input_shape(batch);
            let mut values = self.dims.clone();
            if let Some(s) = &self.batch_symbol {
                values.insert(s.clone(), batch as i64);
            }
            let mut model = self.parsed()?.clone();
            // Bind symbolic dims in the declared facts (inputs, outputs,
            // value_info: exporters write `batch` on every intermediate) so
            // that tract does not meet a symbol where the input fact has a number.
            bind_dims(&mut model, &values);
            let wrap = |e: VerifyError| VerifyError::Model { model: self.name.clone(), reason: e.to_string() };
            guarded("setting the input shape", || model.set_input_fact(0, f32::fact(&shape).into())).map_err(wrap)?;
            let typed = guarded("typing", || model.into_typed()).map_err(wrap)?;
            let optimized = guarded("optimizing", || typed.into_optimized()).map_err(wrap)?;
            let plan = guarded("planning", || optimized.into_runnable()).map_err(wrap)?;
            count_plan();
            let state = guarded("planning", || plan.spawn()).map_err(wrap)?;
            self.states.insert(batch, state);
        }
        Ok(self.states.get_mut(&batch).expect("inserted above"))
    }

    /// Builds the tract plan for `batch` now (so that timing excludes it).
    pub fn prepare(&mut self, batch: usize) -> Result<(), VerifyError> {
        if let Some(n) = self.fixed_batch.filter(|&n| n != batch && batch.is_multiple_of(n))
            && (self.chunked || self.state(batch).is_err())
        {
            self.chunked = true;
            return self.state(n).map(|_| ());
        }
        self.state(batch).map(|_| ())
    }

    /// Runs `batch` samples (`inputs` holds `batch * prod(sample)` values) and
    /// returns the first output as `[batch, classes]` logits.
    pub fn logits(&mut self, inputs: &[f32], batch: usize) -> Result<Logits, VerifyError> {
        let shape = self.input_shape(batch);
        if inputs.len() != shape.iter().product::<usize>() {
            return Err(VerifyError::Model {
                model: self.name.clone(),
                reason: format!("{} input values do not fill shape {shape:?}", inputs.len()),
            });
        }
        let tensor = Tensor::from_shape(&shape, inputs)
            .map_err(|e| VerifyError::Tract { stage: "making the input", message: format!("{e:#}") })?;
        let out = self.run_tensor(tensor, batch)?;
        let name = self.name.clone();
        let bad = |reason: String| VerifyError::Model { model: name.clone(), reason };
        let out = out.cast_to::<f32>().map_err(|e| bad(format!("output is not numeric: {e}")))?.into_owned();
        let dims = out.shape().to_vec();
        if dims.first() != Some(&batch) || dims[1..].iter().skip(1).any(|&d| d != 1) || dims.len() < 2 {
            return Err(bad(format!("output shape {dims:?} is not [batch, classes] logits for batch {batch}")));
        }
        let classes = dims[1];
        let data: Vec<f32> =
            out.to_plain_array_view::<f32>().map_err(|e| bad(format!("{e}")))?.iter().copied().collect();
        Ok(Logits { data, batch, classes })
    }

    /// Runs one input tensor through the plan for `batch`; returns output 0.
    ///
    /// A model exported with a fixed batch (say 1) often runs at other
    /// batches once its input fact is reset; when it does not (a `Reshape`
    /// to `[1, 512]`, value_info pinning the batch on every intermediate),
    /// the batch runs in pieces of the declared size, concatenated, and a
    /// warning says so once.
    pub(crate) fn run_tensor(&mut self, input: Tensor, batch: usize) -> Result<Tensor, VerifyError> {
        if let Some(n) = self.fixed_batch.filter(|&n| n != batch && batch.is_multiple_of(n)) {
            if !self.chunked
                && let Err(e) = self.state(batch)
            {
                warn!(
                    model = %self.name,
                    "the model declares a fixed batch of {n} and does not run at batch {batch} ({e}); \
                     it runs {n} sample(s) at a time"
                );
                self.chunked = true;
            }
            if self.chunked {
                let bad = |e: tract_onnx::prelude::TractError| VerifyError::Tract {
                    stage: "splitting the batch",
                    message: format!("{e:#}"),
                };
                let mut parts = Vec::with_capacity(batch / n);
                for k in 0..batch / n {
                    let piece = input.slice(0, k * n, (k + 1) * n).map_err(bad)?;
                    parts.push(self.run_plan(piece, n)?);
                }
                return Tensor::stack_tensors(0, &parts).map_err(bad);
            }
        }
        self.run_plan(input, batch)
    }

    /// One run of the plan for `batch`.
    fn run_plan(&mut self, input: Tensor, batch: usize) -> Result<Tensor, VerifyError> {
        let name = self.name.clone();
        let state = self.state(batch)?;
        let outputs = guarded("running", || state.run(tvec![TValue::from(input)]))
            .map_err(|e| VerifyError::Model { model: name, reason: e.to_string() })?;
        Ok(outputs.into_iter().next().expect("a model has at least one output").into_tensor())
    }
}

/// Logits of one batch, row-major `[batch, classes]`.
#[derive(Debug, Clone)]
pub struct Logits {
    pub data: Vec<f32>,
    pub batch: usize,
    pub classes: usize,
}

impl Logits {
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.classes..(i + 1) * self.classes]
    }

    /// Index of the largest logit of row `i` (the first one on ties; NaN never wins).
    pub fn argmax(&self, i: usize) -> usize {
        top_k(self.row(i), 1)[0]
    }
}

/// Indices of the `k` largest values, largest first (ties keep index order).
pub fn top_k(row: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    let key = |i: usize| if row[i].is_nan() { f32::NEG_INFINITY } else { row[i] };
    idx.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// Replaces named dimensions by values in every fact of the main graph (the
/// facts tract made of the declared types of its inputs, outputs and value_info).
fn bind_dims(model: &mut InferenceModel, values: &HashMap<String, i64>) {
    let mut bound = SymbolValues::default();
    for (name, &v) in values {
        bound.set(&model.symbols.sym(name), v);
    }
    for node in &mut model.nodes {
        for out in &mut node.outputs {
            let shape = &out.fact.shape;
            if !shape.dims().any(|d| matches!(d, GenericFactoid::Only(t) if !t.symbols().is_empty())) {
                continue;
            }
            let dims: TVec<DimFact> = shape
                .dims()
                .map(|d| match d {
                    GenericFactoid::Only(t) => GenericFactoid::Only(t.eval(&bound)),
                    GenericFactoid::Any => GenericFactoid::Any,
                })
                .collect();
            out.fact.shape = if shape.is_open() { ShapeFactoid::open(dims) } else { ShapeFactoid::closed(dims) };
        }
    }
}

/// The shape a tract `TypeProto` declares, if it is a tensor with a shape
/// (as `shrink_graph::declared_shape` reads the same field).
fn declared_dims(tp: Option<&tract_onnx::pb::TypeProto>) -> Option<Vec<Dim>> {
    use tract_onnx::pb::tensor_shape_proto::dimension::Value;
    let Some(type_proto::Value::TensorType(t)) = tp.and_then(|t| t.value.as_ref()) else { return None };
    let shape = t.shape.as_ref()?;
    Some(
        shape
            .dim
            .iter()
            .map(|d| match &d.value {
                Some(Value::DimValue(v)) if *v >= 0 => Dim::Known(*v as u64),
                Some(Value::DimParam(p)) if !p.is_empty() => Dim::Sym(p.clone()),
                _ => Dim::Unknown,
            })
            .collect(),
    )
}

pub(crate) fn shape_text(s: &[Dim]) -> String {
    format!("[{}]", s.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))
}
