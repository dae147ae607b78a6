//! BatchNormalization recalibration after surgery: once input channels are
//! removed, a BN's running mean and variance no longer describe its input.
//! They are re-estimated on training samples, BN by BN in graph order (each
//! one sees the already recalibrated layers before it).

use shrink_data::Dataset;
use shrink_graph::op::{self, OpKind};
use shrink_graph::{Model, NodeKind, ValueRef};
use shrink_stage::StageError;
use shrink_train::{Executor, HostTensor};
use tracing::debug;

use crate::structured::STAGE;

fn fail(reason: impl Into<String>) -> StageError {
    StageError::failed(STAGE, format!("bn recalibration: {}", reason.into()))
}

/// Re-estimates every inference-form BN's mean and variance on the first
/// `samples` samples of `data`. Returns how many BNs were updated.
pub fn recalibrate_bn(model: &mut Model, data: &dyn Dataset, samples: usize) -> Result<usize, StageError> {
    let n = samples.min(data.len());
    if n == 0 {
        return Ok(0);
    }
    let mut exec = Executor::new(model).map_err(|e| fail(e.to_string()))?;
    let batches: Vec<HostTensor> = (0..n)
        .step_by(256)
        .map(|s| {
            let idx: Vec<usize> = (s..(s + 256).min(n)).collect();
            data.batch(&idx).map(|b| HostTensor::new(b.inputs, b.shape)).map_err(|e| fail(e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    let bns: Vec<_> = model
        .graph
        .ops()
        .into_iter()
        .filter(|&id| {
            let op = model.graph.op(id);
            op.is_some_and(|o| o.outputs.len() == 1) && matches!(op.and_then(op::kind), Some(OpKind::BatchNorm(_)))
        })
        .collect();
    let mut updated = 0;
    for bn in bns {
        let g = &model.graph;
        let (Some(x), Some(mv), Some(vv)) = (g.input(bn, 0), g.input(bn, 3), g.input(bn, 4)) else { continue };
        let private = |v: ValueRef| matches!(g.node(v.0), NodeKind::Weight(_)) && g.consumers(v).len() == 1;
        if !private(mv) || !private(vv) {
            debug!(bn = %g.label(bn), "not recalibrated: shared statistics");
            continue;
        }
        let name = g.value_name(x).to_string();
        let (mut sum, mut sq, mut count) = (Vec::<f64>::new(), Vec::<f64>::new(), 0f64);
        for b in &batches {
            let (_, taps) =
                exec.forward_with_taps(std::slice::from_ref(b), &[&name]).map_err(|e| fail(e.to_string()))?;
            let t = &taps[0];
            if t.dims.len() < 2 {
                break;
            }
            let c = t.dims[1];
            let inner: usize = t.dims[2..].iter().product();
            if sum.is_empty() {
                sum = vec![0.0; c];
                sq = vec![0.0; c];
            }
            for o in 0..t.dims[0] {
                for ch in 0..c {
                    let s = (o * c + ch) * inner;
                    for &v in &t.data[s..s + inner] {
                        sum[ch] += v as f64;
                        sq[ch] += (v as f64) * (v as f64);
                    }
                }
            }
            count += (t.dims[0] * inner) as f64;
        }
        if sum.is_empty() || count == 0.0 {
            continue;
        }
        let mean: Vec<f32> = sum.iter().map(|s| (s / count) as f32).collect();
        let var: Vec<f32> =
            sq.iter().zip(&sum).map(|(q, s)| ((q / count) - (s / count) * (s / count)).max(0.0) as f32).collect();
        let (mn, vn) = (g.value_name(mv).to_string(), g.value_name(vv).to_string());
        for (v, vals) in [(mv, &mean), (vv, &var)] {
            if let NodeKind::Weight(w) = model.graph.node_mut(v.0) {
                w.tensor.set_f32(vals).map_err(|e| fail(e.to_string()))?;
            }
        }
        exec.set_param(&mn, &mean).map_err(|e| fail(e.to_string()))?;
        exec.set_param(&vn, &var).map_err(|e| fail(e.to_string()))?;
        updated += 1;
    }
    Ok(updated)
}
