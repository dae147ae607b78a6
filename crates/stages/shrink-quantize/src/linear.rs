//! `method = "linear"`: uniform n-bit weight quantisation (round to nearest),
//! symmetric or affine, per tensor or per output channel, optionally with
//! quantisation-aware fine-tuning through a straight-through estimator, then
//! exported as int8 initializers + `DequantizeLinear`.

use std::sync::Arc;

use shrink_graph::Model;
use shrink_stage::{LayerNote, Stage, StageCx, StageError, StageReport, select_weights};
use shrink_train::{Executor, FineTuneConfig, Ste};
use tracing::{debug, info, instrument};

use crate::KIND;
use crate::common::{
    Channels, QParams, channel_axis, dedup_sites, dims_of, error_stats, fake_quant, finetune, finetune_note,
    insert_dequantize, train_err, weight_values,
};
use crate::params::{LinearParams, from_table};

/// The `linear` method with its parsed parameters.
#[derive(Debug)]
pub struct LinearStage {
    p: LinearParams,
    ft: Option<FineTuneConfig>,
}

/// Builds the stage from its `[[stage]]` table.
pub fn build(table: &toml::Table) -> Result<Box<dyn Stage>, StageError> {
    let p: LinearParams = from_table(table, "linear")?;
    if !(2..=8).contains(&p.bits) {
        return Err(StageError::param(KIND, "bits", format!("{} is not in 2..=8", p.bits)));
    }
    let ft = crate::params::finetune(&p.finetune)?;
    Ok(Box::new(LinearStage { p, ft }))
}

impl Stage for LinearStage {
    fn kind(&self) -> &str {
        KIND
    }

    #[instrument(skip_all, fields(stage = KIND, method = "linear"))]
    fn run(&self, model: &mut Model, cx: &mut StageCx<'_>) -> Result<StageReport, StageError> {
        let p = &self.p;
        let opset = model.opset("").unwrap_or(1);
        let need = if p.per_channel { 13 } else { 10 };
        if opset < need {
            return Err(StageError::failed(
                KIND,
                format!("DequantizeLinear{} needs opset {need}, the model imports {opset}", per(p.per_channel)),
            ));
        }
        let sites = dedup_sites(select_weights(KIND, &model.graph, &p.ops, &p.layers, &p.exclude, "layers")?);
        if sites.is_empty() {
            return Err(StageError::failed(KIND, "no layer weight is selected"));
        }
        let axes: Vec<usize> = sites.iter().map(|s| channel_axis(&model.graph, s)).collect();
        let mut note = String::new();
        if let Some(cfg) = &self.ft {
            let mut exec = Executor::new(model).map_err(train_err)?;
            for (site, &axis) in sites.iter().zip(&axes) {
                let (bits, sym, pc) = (p.bits, p.symmetric, p.per_channel);
                let f = move |w: &[f32], dims: &[usize]| {
                    let ch = if pc { Channels::new(dims, axis) } else { Channels::whole() };
                    fake_quant(w, bits, sym, ch)
                };
                exec.set_ste(&site.weight_name, Some(Ste::Custom(Arc::new(f)))).map_err(train_err)?;
                let w = weight_values(&model.graph, site)?;
                if w.contains(&0.0) {
                    // pruned entries stay exactly zero through training (zero quantises to zero)
                    let keep: Vec<bool> = w.iter().map(|&x| x != 0.0).collect();
                    exec.set_mask(&site.weight_name, Some(&keep)).map_err(train_err)?;
                }
            }
            let r = finetune(cfg, &mut exec, cx, "quantize: quantisation-aware fine-tuning")?;
            // write back the real-valued weights; they are quantised below exactly as the forward pass did
            for site in &sites {
                exec.set_ste(&site.weight_name, None).map_err(train_err)?;
            }
            exec.write_back(&mut model.graph).map_err(train_err)?;
            note = format!("; {}", finetune_note(&r));
        }
        let mut layers = Vec::new();
        let (mut n_weights, mut n_scales, mut worst) = (0usize, 0usize, 0f64);
        for (site, &axis) in sites.iter().zip(&axes) {
            let w = weight_values(&model.graph, site)?;
            let dims = dims_of(site);
            let ch = if p.per_channel { Channels::new(&dims, axis) } else { Channels::whole() };
            let qp = QParams::compute(&w, p.bits, p.symmetric, ch);
            let q = qp.quantize(&w);
            let err = error_stats(&w, &qp.dequantize(&q));
            debug!(layer = %site.op_name, max_abs = err.max_abs, rel_l2 = err.rel_l2, "quantised");
            insert_dequantize(&mut model.graph, site, &qp, &q, axis)?;
            n_weights += w.len();
            n_scales += qp.scale.len();
            worst = worst.max(err.rel_l2);
            let mut n = LayerNote {
                layer: site.op_name.clone(),
                note: format!(
                    "{}-bit {}{}: {} scale(s), max |w - ŵ| {:.3e}, relative L2 {:.3e}",
                    p.bits,
                    if p.symmetric { "symmetric" } else { "affine" },
                    per(p.per_channel),
                    qp.scale.len(),
                    err.max_abs,
                    err.rel_l2
                ),
                ..LayerNote::default()
            };
            n.figures.insert("bits".into(), p.bits as f64);
            n.figures.insert("max_abs_error".into(), err.max_abs);
            n.figures.insert("rel_l2_error".into(), err.rel_l2);
            n.figures.insert("max_scale".into(), qp.max_scale() as f64);
            layers.push(n);
        }
        // n-bit codes packed, plus an f32 scale and an 8-bit zero point per channel
        let packed = (n_weights * p.bits as usize).div_ceil(8) + n_scales * 5;
        let summary = format!(
            "{} layer(s) to {}-bit {}{} weights ({} weights, stored as int8 + DequantizeLinear), worst relative L2 error {:.3e}{note}",
            sites.len(),
            p.bits,
            if p.symmetric { "symmetric" } else { "affine" },
            per(p.per_channel),
            n_weights,
            worst
        );
        info!("{summary}");
        let mut report = StageReport::new(summary)
            .figure("layers_quantized", sites.len() as f64)
            .figure("weights_quantized", n_weights as f64)
            .figure("bits", p.bits as f64)
            .figure("int8_weight_bytes", (n_weights + n_scales * 5) as f64)
            .figure("packed_weight_bytes", packed as f64)
            .figure("worst_rel_l2_error", worst);
        report.layers = layers;
        Ok(report)
    }
}

fn per(per_channel: bool) -> &'static str {
    if per_channel { " per-channel" } else { " per-tensor" }
}
