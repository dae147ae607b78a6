//! `method = "binary"`: BinaryConnect (Courbariaux et al. 2015) with a
//! per-output-channel scale: the forward pass uses `sign(w) · α_c`, `α_c` the
//! mean |w| of channel `c`; the backward pass is the straight-through
//! identity, so the real-valued shadow weights `w` accumulate the updates.
//! The first and last layers stay in float by default. Export: the
//! de-quantised ±α weights (f32); the report gives the 1-bit storage size.

use std::sync::Arc;

use shrink_graph::Model;
use shrink_stage::{LayerNote, Stage, StageCx, StageError, StageReport, glob_match, select_weights};
use shrink_train::{Executor, FineTuneConfig, Ste};
use tracing::{debug, info, instrument};

use crate::KIND;
use crate::common::{
    Channels, binarize, channel_axis, dedup_sites, dims_of, error_stats, finetune, finetune_note, set_weight_values,
    train_err, weight_values,
};
use crate::params::{BinaryParams, from_table};

/// The `binary` method with its parsed parameters.
#[derive(Debug)]
pub struct BinaryStage {
    p: BinaryParams,
    ft: Option<FineTuneConfig>,
}

/// Builds the stage from its `[[stage]]` table.
pub fn build(table: &toml::Table) -> Result<Box<dyn Stage>, StageError> {
    let p: BinaryParams = from_table(table, "binary")?;
    let ft = crate::params::finetune(&p.finetune)?;
    Ok(Box::new(BinaryStage { p, ft }))
}

impl Stage for BinaryStage {
    fn kind(&self) -> &str {
        KIND
    }

    #[instrument(skip_all, fields(stage = KIND, method = "binary"))]
    fn run(&self, model: &mut Model, cx: &mut StageCx<'_>) -> Result<StageReport, StageError> {
        let p = &self.p;
        let all = dedup_sites(select_weights(KIND, &model.graph, &p.ops, &p.layers, &p.exclude, "layers")?);
        let last = all.len().saturating_sub(1);
        let mut used = vec![false; p.keep_float.len()];
        let mut sites = Vec::new();
        let mut kept = Vec::new();
        for (i, s) in all.into_iter().enumerate() {
            let mut keep = false;
            for (k, pat) in p.keep_float.iter().enumerate() {
                let hit = match pat.as_str() {
                    "first" => i == 0,
                    "last" => i == last,
                    g => glob_match(g, &s.op_name) || glob_match(g, &s.weight_name),
                };
                used[k] |= hit;
                keep |= hit;
            }
            if keep { kept.push(s) } else { sites.push(s) }
        }
        if let Some(k) = used.iter().position(|u| !u) {
            return Err(StageError::param(
                KIND,
                "keep_float",
                format!("`{}` matches no selected layer", p.keep_float[k]),
            ));
        }
        if sites.is_empty() {
            return Err(StageError::failed(KIND, "no layer is left to binarise (see `layers` and `keep_float`)"));
        }
        let axes: Vec<usize> = sites.iter().map(|s| channel_axis(&model.graph, s)).collect();
        let mut note = String::new();
        if let Some(cfg) = &self.ft {
            let mut exec = Executor::new(model).map_err(train_err)?;
            for (site, &axis) in sites.iter().zip(&axes) {
                let f = move |w: &[f32], dims: &[usize]| binarize(w, Channels::new(dims, axis));
                exec.set_ste(&site.weight_name, Some(Ste::Custom(Arc::new(f)))).map_err(train_err)?;
            }
            let r = finetune(cfg, &mut exec, cx, "quantize: BinaryConnect training")?;
            for site in &sites {
                exec.set_ste(&site.weight_name, None).map_err(train_err)?;
            }
            // the shadow weights go back; they are binarised below exactly as the forward pass did
            exec.write_back(&mut model.graph).map_err(train_err)?;
            note = format!("; {}", finetune_note(&r));
        }
        let mut layers = Vec::new();
        let (mut bin_weights, mut alphas) = (0usize, 0usize);
        for (site, &axis) in sites.iter().zip(&axes) {
            let w = weight_values(&model.graph, site)?;
            let ch = Channels::new(&dims_of(site), axis);
            let b = binarize(&w, ch);
            let err = error_stats(&w, &b);
            debug!(layer = %site.op_name, rel_l2 = err.rel_l2, "binarised");
            set_weight_values(&mut model.graph, site, &b)?;
            bin_weights += w.len();
            alphas += ch.count;
            // BinaryConnect clips the shadow weights to [-1, 1]; the trainer cannot, so say how far they went
            let shadow_max = w.iter().fold(0f32, |a, &x| a.max(x.abs()));
            let mut n = LayerNote {
                layer: site.op_name.clone(),
                note: format!(
                    "binary ±α ({} channel scale(s)); shadow → binary relative L2 {:.3e}, max |shadow w| {:.3}",
                    ch.count, err.rel_l2, shadow_max
                ),
                ..LayerNote::default()
            };
            n.figures.insert("bits".into(), 1.0);
            n.figures.insert("rel_l2_error".into(), err.rel_l2);
            n.figures.insert("max_abs_shadow".into(), shadow_max as f64);
            layers.push(n);
        }
        for s in &kept {
            layers.push(LayerNote { layer: s.op_name.clone(), note: "kept in float".into(), ..LayerNote::default() });
        }
        // 1 bit per binarised weight + an f32 α per channel; every other float initializer at 32 bits
        let float_bytes: u64 = model
            .graph
            .initializers()
            .iter()
            .filter_map(|&id| match model.graph.node(id) {
                shrink_graph::NodeKind::Weight(w) => Some(w.tensor.nbytes()),
                _ => None,
            })
            .sum();
        let binary_bytes = float_bytes as usize - bin_weights * 4 + bin_weights.div_ceil(8) + alphas * 4;
        let summary = format!(
            "binarised {} layer(s) ({} weights, {} kept in float); 1-bit storage {} bytes vs {} in f32{note}",
            sites.len(),
            bin_weights,
            kept.len(),
            binary_bytes,
            float_bytes
        );
        info!("{summary}");
        let mut report = StageReport::new(summary)
            .figure("layers_binarized", sites.len() as f64)
            .figure("weights_binarized", bin_weights as f64)
            .figure("binary_storage_bytes", binary_bytes as f64)
            .figure("float_weight_bytes", float_bytes as f64);
        report.layers = layers;
        Ok(report)
    }
}
