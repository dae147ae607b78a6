//! The executor: an IR graph compiled into a list of steps over value slots,
//! its float initializers held as parameters, run forward on burn's flex
//! backend (plain for evaluation, autodiff for training).

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use burn::tensor::{Device, Int, Tensor, TensorData};
use shrink_graph::op;
use shrink_graph::{DataType, Dim, Graph, Model, NodeId, NodeKind, ValueRef, declared_shape};
use tracing::debug;

use crate::error::TrainError;
use crate::ops::{Kind, eval};
use crate::value::{F, HostTensor, IntT, Value};

/// A host function of (values, dims) giving the forward values of a [`Ste::Custom`].
pub type SteFn = Arc<dyn Fn(&[f32], &[usize]) -> Vec<f32> + Send + Sync>;

/// A straight-through estimator on a parameter: the forward pass uses
/// `quantise(w)`, the backward pass treats it as the identity.
#[derive(Clone)]
pub enum Ste {
    /// Symmetric per-tensor fake quantisation to `bits` bits (scale = max |w| / (2^(bits-1) - 1)).
    FakeQuant { bits: u32 },
    /// `sign(w) * mean(|w|)` (XNOR-net style binarisation).
    Binarize,
    /// Any host function of (values, dims) returning as many values.
    Custom(SteFn),
}

impl std::fmt::Debug for Ste {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ste::FakeQuant { bits } => write!(f, "FakeQuant {{ bits: {bits} }}"),
            Ste::Binarize => write!(f, "Binarize"),
            Ste::Custom(_) => write!(f, "Custom(..)"),
        }
    }
}

impl Ste {
    /// The forward value of `w`.
    pub fn apply(&self, w: &[f32], dims: &[usize]) -> Vec<f32> {
        match self {
            Ste::FakeQuant { bits } => {
                let qmax = ((1u64 << (bits.clamp(&2, &31) - 1)) - 1) as f32;
                let amax = w.iter().fold(0f32, |a, &x| a.max(x.abs()));
                if amax == 0.0 {
                    return w.to_vec();
                }
                let s = amax / qmax;
                w.iter().map(|&x| (x / s).round().clamp(-qmax, qmax) * s).collect()
            }
            Ste::Binarize => {
                let mean = w.iter().map(|x| x.abs()).sum::<f32>() / w.len().max(1) as f32;
                w.iter().map(|&x| if x >= 0.0 { mean } else { -mean }).collect()
            }
            Ste::Custom(f) => f(w, dims),
        }
    }
}

/// What the executor knows about one parameter.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ParamInfo {
    /// The initializer's name.
    pub name: String,
    pub dims: Vec<usize>,
    pub trainable: bool,
    pub masked: bool,
    /// Number of clusters when the parameter is tied to a codebook.
    pub clusters: Option<usize>,
    pub ste: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Param {
    pub name: String,
    pub node: NodeId,
    pub slot: usize,
    pub dims: Vec<usize>,
    /// The trained tensor (plain device): the weight itself, or the codebook when tied.
    pub latent: F,
    pub trainable: bool,
    pub mask: Option<F>,
    pub tie: Option<Tensor<1, Int>>,
    pub ste: Option<Ste>,
}

#[derive(Debug, Clone)]
struct Step {
    node: String,
    op_type: String,
    kind: Kind,
    inputs: Vec<Option<usize>>,
    outputs: Vec<Option<usize>>,
    /// A BatchNormalization whose mean and variance are parameters: their
    /// indices, for the running-statistics update in training mode.
    running: Option<(usize, usize)>,
}

/// How BatchNormalization behaves while training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatchNormMode {
    /// The stored running statistics, as in inference (PyTorch's `eval()`
    /// while fine-tuning): BatchNorm is a fixed per-channel affine map whose
    /// scale and bias train.
    #[default]
    Frozen,
    /// The batch's statistics, as PyTorch's `train()`: the forward pass
    /// normalises by them (gradients flow through them) and every step
    /// updates the running mean and variance with the node's `momentum`
    /// (ONNX's meaning: `running · momentum + batch · (1 − momentum)`; the
    /// variance folded in is the unbiased one, as PyTorch does). Evaluation
    /// and the written model use the running statistics. When a step runs
    /// as two half-batches in parallel, each half normalises by its own
    /// statistics and the update uses those of the whole batch.
    Batch,
}

/// The batch statistics one BatchNormalization saw in a training pass.
#[derive(Debug, Clone)]
pub(crate) struct BnStat {
    mean_param: usize,
    var_param: usize,
    momentum: f32,
    mean: Vec<f32>,
    /// Biased (divided by `count`).
    var: Vec<f32>,
    /// Values per channel that went into them.
    count: usize,
}

impl BnStat {
    /// The statistics of two disjoint batches together (exact for the biased variance).
    pub(crate) fn merge(a: &BnStat, b: &BnStat) -> BnStat {
        let (na, nb) = (a.count as f64, b.count as f64);
        let n = na + nb;
        let mut mean = Vec::with_capacity(a.mean.len());
        let mut var = Vec::with_capacity(a.mean.len());
        for k in 0..a.mean.len() {
            let (ma, mb) = (f64::from(a.mean[k]), f64::from(b.mean[k]));
            let m = (na * ma + nb * mb) / n;
            let v = (na * (f64::from(a.var[k]) + (ma - m).powi(2)) + nb * (f64::from(b.var[k]) + (mb - m).powi(2))) / n;
            mean.push(m as f32);
            var.push(v as f32);
        }
        BnStat { mean, var, count: a.count + b.count, ..a.clone() }
    }

    #[cfg(test)]
    pub(crate) fn for_test(mean: Vec<f32>, var: Vec<f32>, count: usize) -> BnStat {
        BnStat { mean_param: 0, var_param: 0, momentum: 0.9, mean, var, count }
    }

    #[cfg(test)]
    pub(crate) fn mean(&self) -> &[f32] {
        &self.mean
    }

    #[cfg(test)]
    pub(crate) fn var(&self) -> &[f32] {
        &self.var
    }
}

/// A snapshot of every parameter's trained tensor (for best-checkpoint restore).
#[derive(Debug, Clone)]
pub struct Snapshot(Vec<F>);

/// An IR graph made runnable and trainable.
#[derive(Debug, Clone)]
pub struct Executor {
    device: Device,
    steps: Vec<Step>,
    n_slots: usize,
    inputs: Vec<(String, usize, Vec<Option<usize>>)>,
    outputs: Vec<(String, usize)>,
    consts: Vec<(usize, Value)>,
    pub(crate) params: Vec<Param>,
    names: HashMap<String, usize>,
    last_use: Vec<usize>,
    batchnorm: BatchNormMode,
}

/// Result of one forward pass.
pub(crate) struct Pass {
    pub outputs: Vec<F>,
    pub taps: Vec<F>,
    /// Per parameter: the autodiff leaf, when it requires a gradient.
    pub leaves: Vec<Option<F>>,
    /// Batch statistics of each BatchNormalization ([`BatchNormMode::Batch`] training passes only).
    pub bn: Vec<BnStat>,
}

pub(crate) fn guard<T>(context: &str, f: impl FnOnce() -> Result<T, TrainError>) -> Result<T, TrainError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let message = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            Err(TrainError::Backend { context: context.into(), message })
        }
    }
}

fn int_const(t: &shrink_graph::Tensor) -> Option<IntT> {
    let dims: Vec<usize> = t.dims().iter().map(|&d| d as usize).collect();
    t.to_i64().ok().map(|data| IntT { data, dims })
}

fn is_float(dt: DataType) -> bool {
    matches!(dt, DataType::Float | DataType::Double | DataType::Float16 | DataType::Bfloat16)
}

impl Executor {
    /// Compiles `model`'s graph. Every op must be one the trainer runs (see `ops.rs`);
    /// every float32 initializer becomes a parameter, trainable unless it is a
    /// scalar or only a BatchNormalization mean/variance. Other float
    /// initializers and `Constant` values are frozen constants.
    pub fn new(model: &Model) -> Result<Executor, TrainError> {
        let opset = model.opset("").unwrap_or(13);
        Executor::from_graph(&model.graph, opset)
    }

    /// Compiles a graph for the given default-domain opset.
    pub fn from_graph(graph: &Graph, opset: i64) -> Result<Executor, TrainError> {
        let device = Device::flex();
        let mut slots: HashMap<ValueRef, usize> = HashMap::new();
        let mut names = HashMap::new();
        let mut slot_of = |v: ValueRef, graph: &Graph, names: &mut HashMap<String, usize>| {
            let n = slots.len();
            let s = *slots.entry(v).or_insert(n);
            names.entry(graph.value_name(v).to_string()).or_insert(s);
            s
        };
        let mut inputs = Vec::new();
        for id in graph.real_inputs() {
            let NodeKind::Input(vi) = graph.node(id) else { continue };
            let declared = declared_shape(vi.r#type.as_ref())
                .unwrap_or_default()
                .iter()
                .map(|d| match d {
                    Dim::Known(n) => Some(*n as usize),
                    _ => None,
                })
                .collect();
            inputs.push((vi.name.clone(), slot_of(ValueRef(id, 0), graph, &mut names), declared));
        }
        let mut consts = Vec::new();
        let mut params = Vec::new();
        for &id in graph.initializers() {
            let NodeKind::Weight(w) = graph.node(id) else { continue };
            let v = ValueRef(id, 0);
            let t = &w.tensor;
            let slot = slot_of(v, graph, &mut names);
            let dims: Vec<usize> = t.dims().iter().map(|&d| d as usize).collect();
            if t.dtype() == DataType::Float {
                let data = t.to_f32()?;
                let latent = F::from_host(data, &dims, &device).map_err(|r| TrainError::param(t.name(), r))?;
                let bn_stat = {
                    let cons = graph.consumers(v);
                    !cons.is_empty()
                        && cons.iter().all(|(n, s)| {
                            matches!(graph.op(*n).and_then(op::kind), Some(op::OpKind::BatchNorm(_)))
                                && matches!(s, shrink_graph::Slot::Input(3 | 4))
                        })
                };
                let trainable = !dims.is_empty() && !bn_stat;
                params.push(Param {
                    name: t.name().to_string(),
                    node: id,
                    slot,
                    dims,
                    latent,
                    trainable,
                    mask: None,
                    tie: None,
                    ste: None,
                });
            } else if is_float(t.dtype()) {
                let f = F::from_host(t.to_f32()?, &dims, &device).map_err(|r| TrainError::param(t.name(), r))?;
                consts.push((slot, Value::F(f)));
            } else if let Some(i) = int_const(t) {
                consts.push((slot, Value::I(i)));
            }
        }
        let order = graph.ops();
        let mut steps = Vec::new();
        for id in order {
            let Some(op) = graph.op(id) else { continue };
            if op::is_constant(op) {
                let slot = slot_of(ValueRef(id, 0), graph, &mut names);
                let err = |r: &str| TrainError::op(&op.label(), &op.op_type, r);
                let value = if let Some(t) = graph.weight(ValueRef(id, 0)) {
                    let dims: Vec<usize> = t.dims().iter().map(|&d| d as usize).collect();
                    if is_float(t.dtype()) {
                        Value::F(F::from_host(t.to_f32()?, &dims, &device).map_err(|r| err(&r))?)
                    } else {
                        Value::I(int_const(t).ok_or_else(|| err("value is neither float nor integer"))?)
                    }
                } else if let Some(a) = op.attr("value_float") {
                    Value::F(F::from_host(vec![a.f], &[], &device).map_err(|r| err(&r))?)
                } else if let Some(a) = op.attr("value_floats") {
                    Value::F(F::from_host(a.floats.clone(), &[a.floats.len()], &device).map_err(|r| err(&r))?)
                } else if let Some(a) = op.attr("value_int") {
                    Value::I(IntT { data: vec![a.i], dims: vec![] })
                } else if let Some(a) = op.attr("value_ints") {
                    Value::I(IntT { data: a.ints.clone(), dims: vec![a.ints.len()] })
                } else {
                    return Err(err("only value, value_float(s) and value_int(s) constants are supported"));
                };
                consts.push((slot, value));
                continue;
            }
            let kind = Kind::parse(op, opset)?;
            let ins = graph.op_inputs(id).into_iter().map(|v| v.map(|v| slot_of(v, graph, &mut names))).collect();
            let outs = op
                .outputs
                .iter()
                .enumerate()
                .map(|(k, o)| (!o.is_empty()).then(|| slot_of(ValueRef(id, k), graph, &mut names)))
                .collect();
            steps.push(Step {
                node: op.label(),
                op_type: op.op_type.clone(),
                kind,
                inputs: ins,
                outputs: outs,
                running: None,
            });
        }
        let mut outputs = Vec::new();
        for &o in graph.outputs() {
            let NodeKind::Output(vi) = graph.node(o) else { continue };
            let v =
                graph.input(o, 0).ok_or_else(|| TrainError::Model(format!("output `{}` has no producer", vi.name)))?;
            outputs.push((vi.name.clone(), slot_of(v, graph, &mut names)));
        }
        let n_slots = slots.len();
        // Values computed from graph inputs and constants only never need a gradient;
        // a Conv on such an input takes the im2col path (see `ops::conv_im2col`).
        let mut grad_free = vec![false; n_slots];
        for &(_, s, _) in &inputs {
            grad_free[s] = true;
        }
        for (s, _) in &consts {
            grad_free[*s] = true;
        }
        for st in &mut steps {
            let free = st.inputs.iter().flatten().all(|&s| grad_free[s]);
            for &o in st.outputs.iter().flatten() {
                grad_free[o] = free;
            }
            if let Kind::Conv { x_const, .. } = &mut st.kind {
                *x_const = st.inputs.first().copied().flatten().is_some_and(|s| grad_free[s]);
            }
        }
        // BatchNormalization whose mean and variance are parameters can update them in training mode.
        for st in &mut steps {
            if let Kind::BatchNorm { .. } = st.kind {
                let param_at = |k: usize| {
                    st.inputs.get(k).copied().flatten().and_then(|s| params.iter().position(|p| p.slot == s))
                };
                st.running = param_at(3).zip(param_at(4));
            }
        }
        let mut last_use = vec![0usize; n_slots];
        for (i, s) in steps.iter().enumerate() {
            for &x in s.inputs.iter().flatten() {
                last_use[x] = i;
            }
        }
        for &(_, s) in &outputs {
            last_use[s] = usize::MAX;
        }
        debug!(steps = steps.len(), params = params.len(), "compiled graph for training");
        Ok(Executor {
            device,
            steps,
            n_slots,
            inputs,
            outputs,
            consts,
            params,
            names,
            last_use,
            batchnorm: BatchNormMode::Frozen,
        })
    }

    /// Names of the graph inputs to feed, in order.
    pub fn input_names(&self) -> Vec<&str> {
        self.inputs.iter().map(|(n, _, _)| n.as_str()).collect()
    }

    /// Names of the graph outputs, in order.
    pub fn output_names(&self) -> Vec<&str> {
        self.outputs.iter().map(|(n, _)| n.as_str()).collect()
    }

    // ---- parameters -----------------------------------------------------------------

    /// How BatchNormalization behaves in training steps (see [`BatchNormMode`]).
    pub fn set_batchnorm(&mut self, mode: BatchNormMode) {
        self.batchnorm = mode;
    }

    /// The current [`BatchNormMode`].
    pub fn batchnorm(&self) -> BatchNormMode {
        self.batchnorm
    }

    /// Whether the graph has a BatchNormalization that [`BatchNormMode::Batch`] would change.
    pub fn has_batchnorm(&self) -> bool {
        self.steps.iter().any(|s| s.running.is_some())
    }

    /// Folds batch statistics into the running mean and variance parameters.
    pub(crate) fn update_running_stats(&mut self, stats: &[BnStat]) -> Result<(), TrainError> {
        for st in stats {
            let m = f64::from(st.momentum);
            let unbias = if st.count > 1 { st.count as f64 / (st.count - 1) as f64 } else { 1.0 };
            for (k, batch) in [(st.mean_param, &st.mean), (st.var_param, &st.var)] {
                let p = &self.params[k];
                let old = p.latent.to_host();
                if old.data.len() != batch.len() {
                    return Err(TrainError::param(&p.name, "running statistic and batch statistic differ in size"));
                }
                let scale = if k == st.var_param { unbias } else { 1.0 };
                let new: Vec<f32> = old
                    .data
                    .iter()
                    .zip(batch)
                    .map(|(&r, &b)| (f64::from(r) * m + f64::from(b) * scale * (1.0 - m)) as f32)
                    .collect();
                self.params[k].latent =
                    F::from_host(new, &old.dims, &self.device).map_err(|r| TrainError::param(&p.name, r))?;
            }
        }
        Ok(())
    }

    /// Every parameter, in initializer order.
    pub fn params(&self) -> Vec<ParamInfo> {
        self.params
            .iter()
            .map(|p| ParamInfo {
                name: p.name.clone(),
                dims: p.dims.clone(),
                trainable: p.trainable,
                masked: p.mask.is_some(),
                clusters: p.tie.as_ref().map(|_| p.latent.dims()[0]),
                ste: p.ste.is_some(),
            })
            .collect()
    }

    fn find(&self, name: &str) -> Result<usize, TrainError> {
        self.params.iter().position(|p| p.name == name).ok_or_else(|| TrainError::param(name, "no such parameter"))
    }

    /// The value the forward pass uses for a parameter (masked, tied, quantised).
    pub fn param(&self, name: &str) -> Result<HostTensor, TrainError> {
        let i = self.find(name)?;
        let (w, _) = self.effective(i, false)?;
        Ok(w.to_host())
    }

    /// Replaces a parameter's values (not allowed while tied; the mask is re-applied).
    pub fn set_param(&mut self, name: &str, values: &[f32]) -> Result<(), TrainError> {
        let i = self.find(name)?;
        let p = &self.params[i];
        if p.tie.is_some() {
            return Err(TrainError::param(name, "is tied to a codebook; untie it first"));
        }
        let mut f = F::from_host(values.to_vec(), &p.dims, &self.device).map_err(|r| TrainError::param(name, r))?;
        if let Some(m) = &p.mask {
            f = f.mul(m.clone()).ok_or_else(|| TrainError::param(name, "mask rank mismatch"))?;
        }
        self.params[i].latent = f;
        Ok(())
    }

    /// Makes a parameter trainable or frozen.
    pub fn set_trainable(&mut self, name: &str, trainable: bool) -> Result<(), TrainError> {
        let i = self.find(name)?;
        self.params[i].trainable = trainable;
        Ok(())
    }

    /// Keeps the entries where `keep` is false at exactly zero through training
    /// (their gradient is masked and the mask re-applied after every step).
    /// `None` removes the mask.
    pub fn set_mask(&mut self, name: &str, keep: Option<&[bool]>) -> Result<(), TrainError> {
        let i = self.find(name)?;
        let Some(keep) = keep else {
            self.params[i].mask = None;
            return Ok(());
        };
        let p = &self.params[i];
        let n: usize = p.dims.iter().product();
        if keep.len() != n {
            return Err(TrainError::param(name, format!("mask has {} entries, the parameter {n}", keep.len())));
        }
        let m = F::from_host(keep.iter().map(|&k| if k { 1.0 } else { 0.0 }).collect(), &p.dims, &self.device)
            .map_err(|r| TrainError::param(name, r))?;
        if p.tie.is_none() {
            self.params[i].latent = p.latent.clone().mul(m.clone()).ok_or_else(|| TrainError::param(name, "rank"))?;
        }
        self.params[i].mask = Some(m);
        Ok(())
    }

    /// Ties a parameter's entries to a codebook: entry `j` becomes
    /// `centroids[assignment[j]]`; training updates the centroids with the
    /// sum of their members' gradients.
    pub fn tie(&mut self, name: &str, centroids: &[f32], assignment: &[u32]) -> Result<(), TrainError> {
        let i = self.find(name)?;
        let p = &self.params[i];
        let n: usize = p.dims.iter().product();
        if assignment.len() != n {
            return Err(TrainError::param(name, format!("{} assignments for {n} entries", assignment.len())));
        }
        if centroids.is_empty() || assignment.iter().any(|&a| a as usize >= centroids.len()) {
            return Err(TrainError::param(name, format!("assignments must index the {} centroids", centroids.len())));
        }
        let idx: Vec<i64> = assignment.iter().map(|&a| a as i64).collect();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [n]), &self.device);
        let cb = F::from_host(centroids.to_vec(), &[centroids.len()], &self.device)
            .map_err(|r| TrainError::param(name, r))?;
        let p = &mut self.params[i];
        p.latent = cb;
        p.tie = Some(idx);
        Ok(())
    }

    /// Replaces a tied parameter by its current effective values (untied).
    pub fn untie(&mut self, name: &str) -> Result<(), TrainError> {
        let i = self.find(name)?;
        if self.params[i].tie.is_none() {
            return Ok(());
        }
        let ste = self.params[i].ste.take();
        let (w, _) = self.effective(i, false)?;
        let p = &mut self.params[i];
        p.latent = w;
        p.tie = None;
        p.ste = ste;
        Ok(())
    }

    /// The codebook of a tied parameter.
    pub fn codebook(&self, name: &str) -> Result<Option<Vec<f32>>, TrainError> {
        let p = &self.params[self.find(name)?];
        Ok(p.tie.as_ref().map(|_| p.latent.to_host().data))
    }

    /// Sets (or with `None` removes) a straight-through estimator on a parameter.
    pub fn set_ste(&mut self, name: &str, ste: Option<Ste>) -> Result<(), TrainError> {
        let i = self.find(name)?;
        self.params[i].ste = ste;
        Ok(())
    }

    /// Every parameter's trained tensor, cheaply (tensors are shared, not copied).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot(self.params.iter().map(|p| p.latent.clone()).collect())
    }

    /// Puts back a [`Snapshot`] taken from this executor.
    pub fn restore(&mut self, s: &Snapshot) -> Result<(), TrainError> {
        if s.0.len() != self.params.len() {
            return Err(TrainError::Model("snapshot is from another executor".into()));
        }
        for (p, f) in self.params.iter_mut().zip(&s.0) {
            if p.latent.dims() != f.dims() {
                return Err(TrainError::param(&p.name, "snapshot dims differ (tied or untied since)"));
            }
            p.latent = f.clone();
        }
        Ok(())
    }

    /// Writes every parameter's effective value (masked, tied, quantised) into
    /// its initializer with [`shrink_graph::Tensor::set_f32`]; nothing else of
    /// the graph changes.
    pub fn write_back(&self, graph: &mut Graph) -> Result<(), TrainError> {
        for i in 0..self.params.len() {
            let p = &self.params[i];
            let (w, _) = self.effective(i, false)?;
            let mut h = w.to_host();
            if p.mask.is_some() {
                // A pruned negative weight times its 0 mask is -0.0: store +0.0,
                // so pruned entries are the same bits as every other zero (the
                // huffman stage's sparse encoding relies on it).
                for v in h.data.iter_mut().filter(|v| **v == 0.0) {
                    *v = 0.0;
                }
            }
            if !graph.contains(p.node) {
                return Err(TrainError::param(&p.name, "its initializer is gone from the graph"));
            }
            match graph.node_mut(p.node) {
                NodeKind::Weight(wt) if wt.tensor.name() == p.name => wt.tensor.set_f32(&h.data)?,
                _ => return Err(TrainError::param(&p.name, "its node is no longer that initializer")),
            }
        }
        debug!(params = self.params.len(), "wrote trained parameters back");
        Ok(())
    }

    /// The effective forward value of parameter `i` and, when training a
    /// trainable parameter, its autodiff leaf.
    fn effective(&self, i: usize, train: bool) -> Result<(F, Option<F>), TrainError> {
        let p = &self.params[i];
        let err = |r: &str| TrainError::param(&p.name, r);
        let leaf = if train {
            let l = p.latent.clone().autodiff();
            if p.trainable { l.require_grad() } else { l }
        } else {
            p.latent.clone()
        };
        let mut w = match (&p.tie, leaf.clone()) {
            (Some(idx), F::R1(cb)) => {
                let idx = if train { idx.clone().autodiff() } else { idx.clone() };
                F::R1(cb.select(0, idx)).reshape(&p.dims).map_err(|r| err(&r))?
            }
            (Some(_), _) => return Err(err("codebook is not a vector")),
            (None, l) => l,
        };
        if let Some(ste) = &p.ste {
            let h = w.to_host();
            let q = ste.apply(&h.data, &h.dims);
            if q.len() != h.data.len() {
                return Err(err("straight-through function changed the number of values"));
            }
            let delta: Vec<f32> = q.iter().zip(&h.data).map(|(q, x)| q - x).collect();
            let dev = if train { self.device.clone().autodiff() } else { self.device.clone() };
            let d = F::from_host(delta, &h.dims, &dev).map_err(|r| err(&r))?;
            w = w.add(d).ok_or_else(|| err("rank"))?;
        }
        if let Some(m) = &p.mask {
            let m = if train { m.clone().autodiff() } else { m.clone() };
            w = w.mul(m).ok_or_else(|| err("mask rank mismatch"))?;
        }
        Ok((w, (train && p.trainable).then_some(leaf)))
    }

    /// Slot of a value name, for taps.
    fn tap_slot(&self, name: &str) -> Result<usize, TrainError> {
        self.names
            .get(name)
            .copied()
            .ok_or_else(|| TrainError::Input { name: name.into(), reason: "no value of that name".into() })
    }

    pub(crate) fn feed(&self, inputs: &[HostTensor], train: bool) -> Result<Vec<F>, TrainError> {
        if inputs.len() != self.inputs.len() {
            return Err(TrainError::Model(format!("{} inputs fed, the graph has {}", inputs.len(), self.inputs.len())));
        }
        let dev = if train { self.device.clone().autodiff() } else { self.device.clone() };
        self.inputs
            .iter()
            .zip(inputs)
            .map(|((name, _, declared), h)| {
                let bad = |reason: String| TrainError::Input { name: name.clone(), reason };
                if !declared.is_empty()
                    && (declared.len() != h.dims.len()
                        || declared.iter().zip(&h.dims).any(|(d, &n)| d.is_some_and(|d| d != n)))
                {
                    return Err(bad(format!("fed dims {:?}, the graph declares {declared:?}", h.dims)));
                }
                F::from_host(h.data.clone(), &h.dims, &dev).map_err(bad)
            })
            .collect()
    }

    /// One forward pass over fed tensors (already on the right device).
    pub(crate) fn run(&self, feeds: Vec<F>, train: bool, taps: &[&str]) -> Result<Pass, TrainError> {
        let tap_slots: Vec<usize> = taps.iter().map(|t| self.tap_slot(t)).collect::<Result<_, _>>()?;
        guard("forward", || {
            let mut vals: Vec<Option<Value>> = vec![None; self.n_slots];
            for ((_, s, _), f) in self.inputs.iter().zip(feeds) {
                vals[*s] = Some(Value::F(f));
            }
            for (s, v) in &self.consts {
                vals[*s] = Some(match v {
                    Value::F(f) if train => Value::F(f.clone().autodiff()),
                    other => other.clone(),
                });
            }
            let mut leaves = Vec::with_capacity(self.params.len());
            for (i, p) in self.params.iter().enumerate() {
                let (w, leaf) = self.effective(i, train)?;
                vals[p.slot] = Some(Value::F(w));
                leaves.push(leaf);
            }
            let mut tapped: Vec<Option<F>> = vec![None; tap_slots.len()];
            let grab = |vals: &[Option<Value>], tapped: &mut Vec<Option<F>>| {
                for (k, &s) in tap_slots.iter().enumerate() {
                    if tapped[k].is_none()
                        && let Some(Value::F(f)) = &vals[s]
                    {
                        tapped[k] = Some(f.clone());
                    }
                }
            };
            grab(&vals, &mut tapped);
            let dev = if train { self.device.clone().autodiff() } else { self.device.clone() };
            let batch_stats = train && self.batchnorm == BatchNormMode::Batch;
            let mut bn = Vec::new();
            for (i, st) in self.steps.iter().enumerate() {
                let ins: Vec<Option<Value>> = st
                    .inputs
                    .iter()
                    .map(|s| match s {
                        Some(s) if self.last_use[*s] == i && !tap_slots.contains(s) => vals[*s].take(),
                        Some(s) => vals[*s].clone(),
                        None => None,
                    })
                    .collect();
                let stats_here = batch_stats && st.running.is_some();
                let mut outs =
                    eval(&st.kind, ins, &dev, stats_here).map_err(|r| TrainError::op(&st.node, &st.op_type, r))?;
                if let (true, Some((mean_param, var_param)), Kind::BatchNorm { momentum, .. }) =
                    (stats_here, st.running, &st.kind)
                {
                    let host = |v: Option<Value>| match v {
                        Some(Value::F(f)) => Ok(f.to_host().data),
                        _ => Err(TrainError::op(&st.node, &st.op_type, "batch statistics are missing")),
                    };
                    let var = host(outs.pop())?;
                    let mean = host(outs.pop())?;
                    let channels = mean.len().max(1);
                    let count = match outs.first() {
                        Some(Value::F(y)) => y.dims().iter().product::<usize>() / channels,
                        _ => 0,
                    };
                    bn.push(BnStat { mean_param, var_param, momentum: *momentum, mean, var, count });
                }
                for (slot, v) in st.outputs.iter().zip(outs) {
                    if let Some(slot) = slot {
                        vals[*slot] = Some(v);
                    }
                }
                grab(&vals, &mut tapped);
            }
            let outputs = self
                .outputs
                .iter()
                .map(|(name, s)| match vals[*s].take() {
                    Some(Value::F(f)) => Ok(f),
                    Some(Value::I(i)) => F::from_host(i.data.iter().map(|&x| x as f32).collect(), &i.dims, &dev)
                        .map_err(|r| TrainError::Model(format!("output `{name}`: {r}"))),
                    None => Err(TrainError::Model(format!("output `{name}` was not computed"))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let taps = tapped
                .into_iter()
                .zip(taps)
                .map(|(t, name)| {
                    t.ok_or_else(|| TrainError::Input { name: name.to_string(), reason: "not a float value".into() })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Pass { outputs, taps, leaves, bn })
        })
    }

    /// Runs the graph (no autodiff) and returns its outputs.
    pub fn forward(&self, inputs: &[HostTensor]) -> Result<Vec<HostTensor>, TrainError> {
        Ok(self.forward_with_taps(inputs, &[])?.0)
    }

    /// Runs the graph and also returns the named intermediate values (activation taps).
    pub fn forward_with_taps(
        &self,
        inputs: &[HostTensor],
        taps: &[&str],
    ) -> Result<(Vec<HostTensor>, Vec<HostTensor>), TrainError> {
        let feeds = self.feed(inputs, false)?;
        let pass = self.run(feeds, false, taps)?;
        Ok((pass.outputs.iter().map(F::to_host).collect(), pass.taps.iter().map(F::to_host).collect()))
    }

    pub(crate) fn device(&self) -> &Device {
        &self.device
    }

    /// Whether a training step may run its batch as two halves in parallel (see
    /// [`Executor::train_step`]): when the graph has a Conv.
    pub(crate) fn split_batches(&self) -> bool {
        self.steps.iter().any(|s| matches!(s.kind, Kind::Conv { .. }))
    }
}
