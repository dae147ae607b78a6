//! Helpers shared by the quantisation methods: which axis of a weight holds
//! its output channels, per-channel grouping, uniform (linear) quantisation
//! parameters with round-to-nearest, the error figures every method reports,
//! fine-tuning through the shared `[stage.finetune]` table, and the ONNX
//! `DequantizeLinear` rewrite of a weight.
//!
//! Uniform quantisation (ONNX semantics: `w ≈ (q - zero_point) · scale`):
//! - symmetric: `zero_point = 0`, `scale = max|w| / (2^(b-1) - 1)`, codes in `±(2^(b-1) - 1)`;
//! - affine: the range `[min(w, 0), max(w, 0)]` (zero is always exact) mapped
//!   onto `[-2^(b-1), 2^(b-1) - 1]`, `scale = (hi - lo) / (2^b - 1)`,
//!   `zero_point = qmin - round(lo / scale)`.
//!
//! The f32 scale is rounded up, never down, so every weight lies inside the
//! representable range and `|w - dequant(quant(w))| ≤ scale / 2` (plus f32
//! rounding of the product) holds.

use shrink_data::Dataset;
use shrink_graph::builder::attr_int;
use shrink_graph::{DataType, Graph, Op, Tensor, ValueRef};
use shrink_stage::{StageCx, StageError, WeightSite};
use shrink_train::{Executor, FineTuneConfig, FineTuneReport};

use crate::KIND;

/// The axis of `site`'s weight that indexes the op's output channels
/// ([`shrink_graph::op::OpKind::weight_out_axis`]).
pub fn channel_axis(graph: &Graph, site: &WeightSite) -> usize {
    let kind = graph.op(site.op).and_then(shrink_graph::op::kind);
    kind.map_or(0, |k| k.weight_out_axis(site.slot, site.dims.len()))
}

/// Maps a flat index of a tensor of `dims` to its index along `axis`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channels {
    /// Elements after `axis` (row-major stride of `axis`).
    pub inner: usize,
    /// Extent of `axis`: the number of channels.
    pub count: usize,
}

impl Channels {
    pub fn new(dims: &[usize], axis: usize) -> Channels {
        let count = dims.get(axis).copied().unwrap_or(1).max(1);
        let inner = dims.iter().skip(axis + 1).product::<usize>().max(1);
        Channels { inner, count }
    }

    /// A single group holding everything (per-tensor).
    pub fn whole() -> Channels {
        Channels { inner: usize::MAX, count: 1 }
    }

    pub fn of(&self, i: usize) -> usize {
        if self.count == 1 { 0 } else { (i / self.inner) % self.count }
    }
}

/// Uniform quantisation parameters of one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct QParams {
    pub bits: u32,
    pub symmetric: bool,
    /// One scale per channel (or one for the whole tensor).
    pub scale: Vec<f32>,
    pub zero_point: Vec<i32>,
    pub channels: Channels,
}

/// The code range `[qmin, qmax]` of `bits`-bit codes.
pub fn code_range(bits: u32, symmetric: bool) -> (i32, i32) {
    let half = 1i32 << (bits - 1);
    if symmetric { (-(half - 1), half - 1) } else { (-half, half - 1) }
}

/// The smallest f32 that is ≥ `x` (x > 0).
fn f32_up(x: f64) -> f32 {
    let f = x as f32;
    if (f as f64) < x { f32::from_bits(f.to_bits() + 1) } else { f }
}

impl QParams {
    /// Computes scales and zero points of `w` for `bits` (2..=8 for ONNX int8 storage;
    /// up to 16 works numerically), per channel when `channels.count > 1`.
    pub fn compute(w: &[f32], bits: u32, symmetric: bool, channels: Channels) -> QParams {
        let n = channels.count;
        let (mut lo, mut hi) = (vec![0f64; n], vec![0f64; n]);
        for (i, &x) in w.iter().enumerate() {
            let c = channels.of(i);
            lo[c] = lo[c].min(x as f64);
            hi[c] = hi[c].max(x as f64);
        }
        let (qmin, qmax) = code_range(bits, symmetric);
        let mut scale = Vec::with_capacity(n);
        let mut zero_point = Vec::with_capacity(n);
        for c in 0..n {
            if symmetric {
                let amax = lo[c].abs().max(hi[c]);
                let s = if amax > 0.0 { f32_up(amax / qmax as f64) } else { 1.0 };
                scale.push(s);
                zero_point.push(0);
            } else {
                let range = hi[c] - lo[c];
                let s = if range > 0.0 { f32_up(range / (qmax - qmin) as f64) } else { 1.0 };
                let zp = (qmin as f64 - (lo[c] / s as f64).round()).clamp(qmin as f64, qmax as f64) as i32;
                scale.push(s);
                zero_point.push(zp);
            }
        }
        QParams { bits, symmetric, scale, zero_point, channels }
    }

    /// The integer code of each weight (round to nearest, ties away from zero).
    pub fn quantize(&self, w: &[f32]) -> Vec<i32> {
        let (qmin, qmax) = code_range(self.bits, self.symmetric);
        w.iter()
            .enumerate()
            .map(|(i, &x)| {
                let c = self.channels.of(i);
                let q = (x as f64 / self.scale[c] as f64).round() + self.zero_point[c] as f64;
                q.clamp(qmin as f64, qmax as f64) as i32
            })
            .collect()
    }

    /// What ONNX `DequantizeLinear` computes: `(q - zero_point) · scale` in f32.
    pub fn dequantize(&self, q: &[i32]) -> Vec<f32> {
        q.iter()
            .enumerate()
            .map(|(i, &v)| {
                let c = self.channels.of(i);
                (v - self.zero_point[c]) as f32 * self.scale[c]
            })
            .collect()
    }

    pub fn max_scale(&self) -> f32 {
        self.scale.iter().fold(0f32, |a, &s| a.max(s))
    }
}

/// `dequantize(quantize(w))` with parameters computed from `w` itself: the
/// forward function of quantisation-aware training.
pub fn fake_quant(w: &[f32], bits: u32, symmetric: bool, channels: Channels) -> Vec<f32> {
    let p = QParams::compute(w, bits, symmetric, channels);
    p.dequantize(&p.quantize(w))
}

/// `sign(w) · α_c` with `α_c` the mean |w| of channel `c` (w = 0 counts as positive).
pub fn binarize(w: &[f32], channels: Channels) -> Vec<f32> {
    let mut sum = vec![0f64; channels.count];
    let mut cnt = vec![0usize; channels.count];
    for (i, &x) in w.iter().enumerate() {
        let c = channels.of(i);
        sum[c] += x.abs() as f64;
        cnt[c] += 1;
    }
    let alpha: Vec<f32> = sum.iter().zip(&cnt).map(|(s, &n)| (s / n.max(1) as f64) as f32).collect();
    w.iter()
        .enumerate()
        .map(|(i, &x)| {
            let a = alpha[channels.of(i)];
            if x >= 0.0 { a } else { -a }
        })
        .collect()
}

/// How far a quantised tensor is from the original.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErrorStats {
    /// max |w - ŵ|
    pub max_abs: f64,
    /// ‖w - ŵ‖₂ / ‖w‖₂ (0 when w is all zeros and so is ŵ)
    pub rel_l2: f64,
}

pub fn error_stats(w: &[f32], q: &[f32]) -> ErrorStats {
    let (mut max_abs, mut num, mut den) = (0f64, 0f64, 0f64);
    for (&a, &b) in w.iter().zip(q) {
        let d = (a as f64 - b as f64).abs();
        max_abs = max_abs.max(d);
        num += d * d;
        den += (a as f64) * (a as f64);
    }
    let rel_l2 = if den > 0.0 { (num / den).sqrt() } else { num.sqrt() };
    ErrorStats { max_abs, rel_l2 }
}

/// The f32 values of a selected weight.
pub fn weight_values(graph: &Graph, site: &WeightSite) -> Result<Vec<f32>, StageError> {
    graph
        .weight(ValueRef(site.weight, 0))
        .ok_or_else(|| StageError::failed(KIND, format!("`{}` is no longer an initializer", site.weight_name)))?
        .to_f32()
        .map_err(|e| StageError::graph(KIND, e))
}

/// Overwrites a selected weight's values (f32 stays f32).
pub fn set_weight_values(graph: &mut Graph, site: &WeightSite, values: &[f32]) -> Result<(), StageError> {
    shrink_graph::rewrite::set_weight_f32(graph, site.weight, values).map_err(|e| StageError::graph(KIND, e))
}

/// Dims of a site as `usize`.
pub fn dims_of(site: &WeightSite) -> Vec<usize> {
    site.dims.iter().map(|&d| d.max(0) as usize).collect()
}

/// Sites with each weight once (a weight read by two layers is quantised once).
pub fn dedup_sites(sites: Vec<WeightSite>) -> Vec<WeightSite> {
    let mut seen = std::collections::HashSet::new();
    sites.into_iter().filter(|s| seen.insert(s.weight)).collect()
}

/// Maps a trainer error to a stage error.
pub fn train_err(e: shrink_train::TrainError) -> StageError {
    StageError::failed(KIND, e.to_string())
}

/// Runs the shared fine-tune loop on `exec` with the pipeline's training
/// data, reporting steps through `cx.progress`.
pub fn finetune(
    cfg: &FineTuneConfig,
    exec: &mut Executor,
    cx: &mut StageCx<'_>,
    phase: &str,
) -> Result<FineTuneReport, StageError> {
    let train: &dyn Dataset = cx.require_train(KIND, "`finetune` trains on it")?;
    let ft = cfg.to_finetune(cx.seed).map_err(|e| StageError::param(KIND, "finetune", e.to_string()))?;
    let total = cfg.total_steps(train.len());
    let progress = &mut *cx.progress;
    progress.start(phase, total as u64);
    let report =
        cfg.run_reporting(&ft, exec, train, None, phase, &mut |done, m| progress.update(done, m)).map_err(train_err)?;
    progress.finish();
    Ok(report)
}

/// One line about a fine-tune run for the stage summary.
pub fn finetune_note(r: &FineTuneReport) -> String {
    match r.best_val_accuracy {
        Some(a) => format!(
            "fine-tuned {} steps, best validation accuracy {:.2} % (epoch {})",
            r.steps,
            a * 100.0,
            r.best_epoch.map_or(0, |e| e + 1)
        ),
        None => format!("fine-tuned {} steps", r.steps),
    }
}

/// Replaces a float weight by `DequantizeLinear(q, scale, zero_point)` with
/// `q` and `zero_point` int8 initializers (`axis` set when per channel). Every
/// reader of the weight reads the dequantised value instead; the float
/// initializer is removed. `q` holds the codes in weight order.
pub fn insert_dequantize(
    graph: &mut Graph,
    site: &WeightSite,
    p: &QParams,
    q: &[i32],
    axis: usize,
) -> Result<(), StageError> {
    let name = &site.weight_name;
    let raw: Vec<u8> = q.iter().map(|&v| (v.clamp(-128, 127) as i8) as u8).collect();
    let qt = Tensor::from_raw(&format!("{name}_quantized"), DataType::Int8, &site.dims, raw);
    let per_channel = p.channels.count > 1;
    let sdims: Vec<i64> = if per_channel { vec![p.scale.len() as i64] } else { vec![] };
    let st = Tensor::from_f32(&format!("{name}_scale"), &sdims, &p.scale);
    let zraw: Vec<u8> = p.zero_point.iter().map(|&z| (z.clamp(-128, 127) as i8) as u8).collect();
    let zt = Tensor::from_raw(&format!("{name}_zero_point"), DataType::Int8, &sdims, zraw);
    for t in [&qt, &st, &zt] {
        if graph.find_value(t.name()).is_some() {
            return Err(StageError::failed(KIND, format!("a value named `{}` already exists", t.name())));
        }
    }
    let (qn, sn, zn) = (graph.add_weight(qt), graph.add_weight(st), graph.add_weight(zt));
    let out = format!("{name}_dequantized");
    let mut op = Op::new("DequantizeLinear", &format!("{name}_DequantizeLinear"), 3, vec![out]);
    if per_channel {
        op.attributes.push(attr_int("axis", axis as i64));
    }
    let dq = graph.add_op(op, &[Some(ValueRef(qn, 0)), Some(ValueRef(sn, 0)), Some(ValueRef(zn, 0))]);
    graph.replace_uses(ValueRef(site.weight, 0), ValueRef(dq, 0));
    graph.remove_node(site.weight);
    Ok(())
}
