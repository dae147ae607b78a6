//! `prune` with `method = "structured"`: removes whole output channels of
//! Conv layers and output features of Gemm/MatMul layers, physically.
//!
//! Channels are chosen per channel-dependency group
//! ([`shrink_graph::groups::channel_groups`]): channels coupled by a residual
//! `Add`, a `Concat`/`Split`, a depthwise conv, an SE-style `Mul`, a
//! BatchNormalization or a `Flatten` → `Gemm` go together, with one score per
//! coupled channel (the `mean` or `sum` of its members' scores). Groups whose
//! channels reach a graph output or pass an op the analysis cannot follow are
//! skipped (the reason is logged at `debug`). Every producer, consumer, BN,
//! per-channel constant, depthwise `group` and `Split` size is rewritten, so
//! the layers get smaller and tract runs the result as is.
//!
//! With `steps = N` the target ratio is reached in N equal steps (of the
//! original channel counts). After each surgery the BatchNormalization
//! statistics are re-estimated on `recalibrate_bn` training samples (when the
//! pipeline has training data), then the model is fine-tuned when a
//! `[stage.finetune]` table is given (a new executor after each surgery);
//! with `distill = { alpha, temperature }` the fine-tune also learns the
//! unpruned original's soft targets (knowledge distillation, Hinton et al. 2015).
//!
//! Criteria (`criterion`): `l1`/`l2` (weight norms of the producers' and
//! depthwise convs' output channels), `bn-scale` (|γ|), `apoz` (1 − average
//! percentage of zeros after each ReLU, via the trainer's activation taps),
//! `taylor` (|Σ θ·∂L/∂θ| per channel, see [`score::taylor`]). A group the
//! criterion measures nowhere (no BN for `bn-scale`, no ReLU for `apoz`) is
//! skipped with a `debug!` reason.
//!
//! Report: one layer note per layer (channels for Conv/Gemm/MatMul, params
//! and MACs, before and after), figures `params_before/after`,
//! `macs_before/after`, `channels_removed`, `groups`, `groups_prunable`,
//! `groups_pruned`, and per step `finetune_steps_stepN` and
//! `finetune_val_accuracy_stepN`.

mod params;
mod recalib;
pub mod score;
mod surgery;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};

use shrink_graph::groups::{ChannelGroup, ChannelGroups, channel_groups};
use shrink_graph::op::{self, OpKind};
use shrink_graph::{Graph, Model, NodeId, ValueRef, rewrite, summarize};
use shrink_stage::{LayerNote, Stage, StageCx, StageError, StageReport, glob_match};
use shrink_train::{Executor, FineTuneConfig, Loss};
use tracing::{debug, info, instrument};

pub use params::{CRITERIA, Ratio, StructuredParams};
pub use surgery::{remove_channels, slice_axis};

pub(crate) const STAGE: &str = "prune";

/// The structured pruning stage.
#[derive(Debug, Clone)]
pub struct StructuredPrune {
    pub params: StructuredParams,
    pub finetune: Option<FineTuneConfig>,
}

impl StructuredPrune {
    /// Builds the stage from its TOML table (`kind` and `method` included or not).
    pub fn from_table(table: &toml::Table) -> Result<StructuredPrune, StageError> {
        let params = StructuredParams::deserialize_table(table)?;
        if params.method != "structured" {
            return Err(StageError::param(STAGE, "method", format!("`{}` is not `structured`", params.method)));
        }
        match params.criterion.as_str() {
            c if CRITERIA.contains(&c) => {}
            other => {
                return Err(StageError::param(
                    STAGE,
                    "criterion",
                    format!("`{other}` is not one of {}", CRITERIA.join(", ")),
                ));
            }
        }
        if !matches!(params.reduce.as_str(), "mean" | "sum") {
            return Err(StageError::param(STAGE, "reduce", format!("`{}` is not one of mean, sum", params.reduce)));
        }
        if params.steps == 0 {
            return Err(StageError::param(STAGE, "steps", "must be at least 1"));
        }
        if params.round_to == 0 {
            return Err(StageError::param(STAGE, "round_to", "must be at least 1"));
        }
        let check = |key: &str, r: f64| {
            if (0.0..1.0).contains(&r) {
                Ok(())
            } else {
                Err(StageError::param(STAGE, key, format!("{r} is not in [0, 1)")))
            }
        };
        match &params.ratio {
            Ratio::Global(r) => check("ratio", *r)?,
            Ratio::PerLayer(m) => {
                for (k, &r) in m {
                    check(&format!("ratio.\"{k}\""), r)?;
                }
            }
        }
        let finetune = match &params.finetune {
            Some(t) => {
                let cfg =
                    FineTuneConfig::from_toml(t).map_err(|e| StageError::param(STAGE, "finetune", e.to_string()))?;
                cfg.to_finetune(0).map_err(|e| StageError::param(STAGE, "finetune", e.to_string()))?;
                Some(cfg)
            }
            None => None,
        };
        if let Some(d) = &params.distill {
            d.check(finetune.is_some(), "`finetune`")?;
        }
        Ok(StructuredPrune { params, finetune })
    }

    /// The fraction asked for `layer`: an exact key, else the longest matching glob.
    fn layer_ratio(&self, layer: &str) -> Option<f64> {
        match &self.params.ratio {
            Ratio::Global(r) => Some(*r),
            Ratio::PerLayer(m) => m.get(layer).copied().or_else(|| {
                m.iter().filter(|(k, _)| glob_match(k, layer)).max_by_key(|(k, _)| k.len()).map(|(_, &r)| r)
            }),
        }
    }

    fn group_ratio(&self, graph: &Graph, g: &ChannelGroup) -> Result<f64, String> {
        let names: Vec<String> = g.producers.iter().map(|&p| op_name(graph, p)).collect();
        if let Some(n) = names.iter().find(|n| self.params.exclude.iter().any(|e| glob_match(e, n))) {
            return Err(format!("layer `{n}` is excluded"));
        }
        names
            .iter()
            .filter_map(|n| self.layer_ratio(n))
            .min_by(|a, b| a.total_cmp(b))
            .ok_or_else(|| "no ratio key matches its layers".to_string())
    }
}

impl StructuredParams {
    fn deserialize_table(table: &toml::Table) -> Result<StructuredParams, StageError> {
        use serde::Deserialize;
        StructuredParams::deserialize(toml::Value::Table(table.clone()))
            .map_err(|e| StageError::param(STAGE, "structured", e.to_string()))
    }
}

fn op_name(graph: &Graph, id: NodeId) -> String {
    graph.op(id).map(|o| o.label()).unwrap_or_else(|| graph.label(id))
}

/// Channels kept out of `orig` when removing `ratio` of them, rounded to a
/// multiple of `round_to` (at least `round_to`, at least 1, at most `orig`).
pub fn kept_channels(orig: usize, ratio: f64, round_to: usize) -> usize {
    let want = (orig as f64 * (1.0 - ratio)).round().max(1.0) as usize;
    if round_to <= 1 {
        return want.clamp(1, orig);
    }
    if orig <= round_to {
        return orig;
    }
    let r = ((want as f64 / round_to as f64).round() as usize).max(1) * round_to;
    r.min(orig)
}

/// A group's identity across steps: its producers' names.
fn group_key(graph: &Graph, g: &ChannelGroup) -> Vec<String> {
    let mut k: Vec<String> = g.producers.iter().map(|&p| op_name(graph, p)).collect();
    k.sort();
    k
}

/// Output channels of a producer op (its output layout), if tracked.
fn out_channels(a: &ChannelGroups, op: NodeId) -> Option<usize> {
    a.layout(ValueRef(op, 0)).map(|l| l.classes.len())
}

impl Stage for StructuredPrune {
    fn kind(&self) -> &str {
        STAGE
    }

    #[instrument(skip_all, fields(stage = STAGE))]
    fn run(&self, model: &mut Model, cx: &mut StageCx<'_>) -> Result<StageReport, StageError> {
        let p = &self.params;
        let train = if matches!(p.criterion.as_str(), "apoz" | "taylor") || self.finetune.is_some() {
            Some(cx.require_train(STAGE, "structured pruning with apoz, taylor or finetune")?)
        } else {
            cx.train
        };
        // the unpruned original, as the teacher of `distill`
        let teacher = match (&self.finetune, p.distill) {
            (Some(_), Some(_)) => {
                Some(Executor::new(cx.original).map_err(|e| StageError::failed(STAGE, format!("teacher: {e}")))?)
            }
            _ => None,
        };
        let unshared = rewrite::unshare_identity_weights(&mut model.graph).map_err(|e| StageError::graph(STAGE, e))?;
        let before = summarize(model);
        let a0 = channel_groups(&model.graph);
        let mut orig: HashMap<Vec<String>, usize> = HashMap::new();
        for g in &a0.groups {
            orig.insert(group_key(&model.graph, g), g.channels());
        }
        // output channels of every layer the analysis follows (producers and depthwise convs)
        let producers_before: Vec<(NodeId, usize)> = model
            .graph
            .ops()
            .into_iter()
            .filter(|&id| {
                model
                    .graph
                    .op(id)
                    .and_then(op::kind)
                    .is_some_and(|k| matches!(k, OpKind::Conv(_) | OpKind::Gemm(_) | OpKind::MatMul(_)))
            })
            .filter_map(|op| out_channels(&a0, op).map(|c| (op, c)))
            .collect();
        let opset = model.opset("").unwrap_or(13);
        let mut pruned_groups: HashSet<Vec<String>> = HashSet::new();
        // groups left whole, with the reason (from the last step that looked at them)
        let mut left_whole: BTreeMap<String, String> = BTreeMap::new();
        let mut finetune_figures: BTreeMap<String, f64> = BTreeMap::new();
        for step in 1..=p.steps {
            cx.progress.start(&format!("structured prune step {step}/{}: scoring", p.steps), 0);
            let a = channel_groups(&model.graph);
            let scores = match p.criterion.as_str() {
                "l1" => score::weight_norms(&model.graph, &a, false)?,
                "l2" => score::weight_norms(&model.graph, &a, true)?,
                "bn-scale" => score::bn_scales(&model.graph, &a)?,
                "apoz" => {
                    score::apoz(model, &a, train.ok_or_else(|| StageError::failed(STAGE, "no data"))?, p.samples)?
                }
                "taylor" => {
                    score::taylor(model, &a, train.ok_or_else(|| StageError::failed(STAGE, "no data"))?, p.samples)?
                }
                other => return Err(StageError::param(STAGE, "criterion", format!("`{other}` is not available"))),
            };
            let mut drop: HashSet<usize> = HashSet::new();
            for g in &a.groups {
                let label = g.label(&model.graph);
                if let Some(r) = &g.blocked {
                    debug!(group = %label, reason = %r, "group skipped");
                    left_whole.insert(label, r.clone());
                    continue;
                }
                let ratio = match self.group_ratio(&model.graph, g) {
                    Ok(r) => r,
                    Err(why) => {
                        debug!(group = %label, reason = %why, "group skipped");
                        left_whole.insert(label, why.to_string());
                        continue;
                    }
                };
                let key = group_key(&model.graph, g);
                let o = orig.get(&key).copied().unwrap_or(g.channels());
                let target = kept_channels(o, ratio * step as f64 / p.steps as f64, p.round_to);
                let cur = g.channels();
                if target >= cur {
                    debug!(group = %label, channels = cur, "nothing to remove at this step");
                    if !pruned_groups.contains(&key) {
                        left_whole.insert(label, format!("keeping {target} of its {o} channels removes none"));
                    }
                    continue;
                }
                let mut ranked: Vec<(usize, f64)> = Vec::with_capacity(cur);
                for &c in &g.classes {
                    let Some(s) = scores.get(&c).filter(|s| !s.is_empty()) else {
                        ranked.clear();
                        break;
                    };
                    let total: f64 = s.iter().sum();
                    ranked.push((c, if p.reduce == "sum" { total } else { total / s.len() as f64 }));
                }
                if ranked.is_empty() {
                    debug!(group = %label, criterion = %p.criterion, "group skipped: the criterion measures none of its channels");
                    left_whole.insert(label, format!("criterion `{}` measures none of its channels", p.criterion));
                    continue;
                }
                // lowest scores go; ties keep the earlier channel
                ranked.sort_by(|x, y| x.1.total_cmp(&y.1).then(y.0.cmp(&x.0)));
                for &(c, _) in &ranked[..cur - target] {
                    drop.insert(c);
                }
                debug!(group = %label, from = cur, to = target, ratio, "pruning group");
                left_whole.remove(&label);
                pruned_groups.insert(key);
            }
            if drop.is_empty() {
                info!(step, "structured prune: no group to prune at this step");
            } else {
                remove_channels(&mut model.graph, &a, &|c| !drop.contains(&c), opset)
                    .map_err(|e| StageError::graph(STAGE, e))?;
                model.graph.verify().map_err(|e| StageError::graph(STAGE, e))?;
                if let Some(train) = train.filter(|_| p.recalibrate_bn > 0) {
                    let n = recalib::recalibrate_bn(model, train, p.recalibrate_bn)?;
                    debug!(batchnorms = n, "recalibrated BatchNormalization statistics");
                }
            }
            if let (Some(cfg), Some(train)) = (&self.finetune, train) {
                let mut ft = cfg
                    .to_finetune(cx.seed.wrapping_add(step as u64))
                    .map_err(|e| StageError::failed(STAGE, e.to_string()))?;
                if let Some(d) = p.distill {
                    ft.loss = Loss::Distill { alpha: d.alpha, temperature: d.temperature };
                }
                let mut exec = Executor::new(model).map_err(|e| StageError::failed(STAGE, format!("finetune: {e}")))?;
                let phase = format!("structured prune step {step}/{}: fine-tune", p.steps);
                cx.progress.start(&phase, cfg.total_steps(train.len()) as u64);
                let progress = &mut *cx.progress;
                let rep = cfg
                    .run_reporting(&ft, &mut exec, train, teacher.as_ref(), &phase, &mut |done, m| {
                        progress.update(done, m)
                    })
                    .map_err(|e| StageError::failed(STAGE, format!("finetune: {e}")))?;
                exec.write_back(&mut model.graph).map_err(|e| StageError::failed(STAGE, format!("finetune: {e}")))?;
                if let Some(v) = rep.best_val_accuracy {
                    finetune_figures.insert(format!("finetune_val_accuracy_step{step}"), v);
                }
                finetune_figures.insert(format!("finetune_steps_step{step}"), rep.steps as f64);
            }
            cx.progress.finish();
        }
        let after = summarize(model);
        let a1 = channel_groups(&model.graph);
        let mut r = report(model, &before, &after, &producers_before, &a1, &a0, pruned_groups.len(), finetune_figures);
        r = r.figure("weights_unshared", unshared as f64);
        if unshared > 0 {
            r.layers.push(LayerNote {
                layer: "(graph)".into(),
                note: format!("{unshared} weights shared through Identity nodes copied per layer first"),
                figures: BTreeMap::new(),
            });
        }
        for (label, why) in &left_whole {
            r.layers.push(LayerNote {
                layer: format!("group {label}"),
                note: format!("left whole: {why}"),
                figures: BTreeMap::new(),
            });
        }
        if pruned_groups.is_empty() {
            let mut reasons: Vec<String> = left_whole.iter().take(6).map(|(l, w)| format!("{l}: {w}")).collect();
            if left_whole.len() > 6 {
                reasons.push(format!("and {} more (see the report)", left_whole.len() - 6));
            }
            let why = if left_whole.is_empty() {
                "the channel analysis found no group of channels to remove".to_string()
            } else {
                format!("every one of the {} channel groups was left whole: {}", left_whole.len(), reasons.join("; "))
            };
            r = r.warn(format!("structured pruning removed nothing: {why}"));
        }
        Ok(r)
    }
}

#[allow(clippy::too_many_arguments)]
fn report(
    model: &Model,
    before: &shrink_graph::ModelSummary,
    after: &shrink_graph::ModelSummary,
    producers_before: &[(NodeId, usize)],
    a1: &ChannelGroups,
    a0: &ChannelGroups,
    groups_pruned: usize,
    figures: BTreeMap<String, f64>,
) -> StageReport {
    let g = &model.graph;
    let after_by_name: HashMap<&str, &shrink_graph::LayerInfo> =
        after.layers.iter().map(|l| (l.name.as_str(), l)).collect();
    let ch_before: HashMap<String, usize> = producers_before.iter().map(|&(op, c)| (op_name(g, op), c)).collect();
    let mut layers = Vec::new();
    let mut removed = 0usize;
    for lb in &before.layers {
        let Some(la) = after_by_name.get(lb.name.as_str()) else { continue };
        let id = g.find_op(&lb.name);
        let cb = ch_before.get(&lb.name).copied();
        let ca = id.and_then(|id| out_channels(a1, id));
        let mut figs = BTreeMap::new();
        figs.insert("params_before".to_string(), lb.params as f64);
        figs.insert("params_after".to_string(), la.params as f64);
        if let (Some(mb), Some(ma)) = (lb.macs, la.macs) {
            figs.insert("macs_before".to_string(), mb as f64);
            figs.insert("macs_after".to_string(), ma as f64);
        }
        let mut note = format!("params {} → {}", lb.params, la.params);
        if let (Some(cb), Some(ca)) = (cb, ca) {
            figs.insert("channels_before".to_string(), cb as f64);
            figs.insert("channels_after".to_string(), ca as f64);
            note = format!("channels {cb} → {ca}, {note}");
            removed += cb.saturating_sub(ca);
        }
        if let (Some(mb), Some(ma)) = (lb.macs, la.macs) {
            note = format!("{note}, MACs {mb} → {ma}");
        }
        layers.push(LayerNote { layer: lb.name.clone(), note, figures: figs });
    }
    let summary = format!(
        "structured: {groups_pruned} of {} channel groups pruned, params {} → {}, MACs {} → {}",
        a0.prunable().count(),
        before.params,
        after.params,
        before.macs,
        after.macs
    );
    info!("{summary}");
    let mut r = StageReport::new(summary)
        .figure("params_before", before.params as f64)
        .figure("params_after", after.params as f64)
        .figure("macs_before", before.macs as f64)
        .figure("macs_after", after.macs as f64)
        .figure("channels_removed", removed as f64)
        .figure("groups", a0.groups.len() as f64)
        .figure("groups_prunable", a0.prunable().count() as f64)
        .figure("groups_pruned", groups_pruned as f64);
    r.figures.extend(figures);
    r.layers = layers;
    r
}
