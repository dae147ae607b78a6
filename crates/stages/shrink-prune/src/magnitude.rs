//! `method = "magnitude"`: unstructured pruning by weight magnitude (Han et
//! al. 2015), one-shot or iterative with fine-tuning between steps.
//!
//! Each step ranks weights by `|w|` and prunes the smallest until the step's
//! target is reached, per layer or over all selected layers at once (one
//! global threshold). Ranking order is total and deterministic: weights
//! already pruned first (so masks only grow), then by magnitude, then by
//! layer order and position. Pruned weights are held at exactly zero during
//! fine-tuning by the trainer's masks and written back as zeros.

use std::collections::{BTreeMap, HashMap, HashSet};

use shrink_graph::rewrite::set_weight_f32;
use shrink_graph::{Model, NodeKind, summarize};
use shrink_stage::{LayerNote, Stage, StageCx, StageError, StageReport, WeightSite, select_weights};
use shrink_train::{Executor, FineTuneConfig, Loss};
use tracing::{debug, info, instrument};

use crate::params::{MagnitudeConfig, MagnitudeParams, STAGE, Sparsity};

/// Zeroes the `round(ratio · n)` entries of smallest magnitude (ties: lower
/// index first) and returns how many entries that was. Entries already zero
/// count among the smallest. `ratio` is clamped to [0, 1].
pub fn prune_to_ratio(values: &mut [f32], ratio: f64) -> usize {
    let k = prune_count(ratio, values.len());
    let keep = select_keep(&[values], &[None], &[k]);
    let mut zeroed = 0;
    for (v, &kp) in values.iter_mut().zip(&keep[0]) {
        if !kp {
            *v = 0.0;
            zeroed += 1;
        }
    }
    zeroed
}

/// How many of `n` entries a sparsity `ratio` prunes (rounded to nearest).
pub fn prune_count(ratio: f64, n: usize) -> usize {
    ((ratio.clamp(0.0, 1.0) * n as f64).round() as usize).min(n)
}

/// Ranks the entries of several tensors together and prunes `counts[i]` of
/// tensor `i` (per-layer), keeping everything pruned in `prev` pruned.
/// Returns the keep masks. Per-layer selection: each tensor ranked alone.
pub fn select_keep(values: &[&[f32]], prev: &[Option<&[bool]>], counts: &[usize]) -> Vec<Vec<bool>> {
    values
        .iter()
        .zip(prev)
        .zip(counts)
        .map(|((v, p), &k)| {
            let order = rank(&[v], &[*p]);
            let mut keep = vec![true; v.len()];
            apply(&mut [&mut keep], &order, k, p.map(|p| p.iter().filter(|&&x| !x).count()).unwrap_or(0));
            keep
        })
        .collect()
}

/// One threshold over all tensors: prunes the `count` smallest entries of
/// all of them together (previously pruned entries first). Returns the keep masks.
pub fn select_keep_global(values: &[&[f32]], prev: &[Option<&[bool]>], count: usize) -> Vec<Vec<bool>> {
    let order = rank(values, prev);
    let mut keeps: Vec<Vec<bool>> = values.iter().map(|v| vec![true; v.len()]).collect();
    let already: usize = prev.iter().flatten().map(|p| p.iter().filter(|&&x| !x).count()).sum();
    let mut refs: Vec<&mut Vec<bool>> = keeps.iter_mut().collect();
    apply(&mut refs, &order, count, already);
    keeps
}

/// (tensor, index) pairs in prune order: already pruned, then |w| ascending, then tensor, then index.
fn rank(values: &[&[f32]], prev: &[Option<&[bool]>]) -> Vec<(u32, u32)> {
    let mut all: Vec<(bool, f32, u32, u32)> = Vec::with_capacity(values.iter().map(|v| v.len()).sum());
    for (t, v) in values.iter().enumerate() {
        let p = prev.get(t).copied().flatten();
        for (i, x) in v.iter().enumerate() {
            let kept_before = p.is_none_or(|p| p.get(i).copied().unwrap_or(true));
            all.push((kept_before, x.abs(), t as u32, i as u32));
        }
    }
    all.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2)).then(a.3.cmp(&b.3)));
    all.into_iter().map(|(_, _, t, i)| (t, i)).collect()
}

/// Prunes the first `max(count, already)` entries of `order`: a mask never shrinks.
fn apply(keeps: &mut [&mut Vec<bool>], order: &[(u32, u32)], count: usize, already: usize) {
    for &(t, i) in order.iter().take(count.max(already)) {
        keeps[t as usize][i as usize] = false;
    }
}

/// The `prune` stage with `method = "magnitude"`.
#[derive(Debug, Clone)]
pub struct MagnitudePrune {
    pub cfg: MagnitudeConfig,
}

impl MagnitudePrune {
    /// Builds the stage from its whole `[[stage]]` table.
    pub fn from_table(table: &toml::Table) -> Result<MagnitudePrune, StageError> {
        Ok(MagnitudePrune { cfg: MagnitudeParams::from_table(table)? })
    }
}

/// A layer being pruned.
struct Site {
    site: WeightSite,
    /// Final per-layer target (per-layer mode) or the global target.
    target: f64,
    values: Vec<f32>,
    keep: Option<Vec<bool>>,
    nonzero_before: usize,
}

impl Site {
    fn label(&self) -> &str {
        if self.site.op_name.is_empty() { &self.site.weight_name } else { &self.site.op_name }
    }
}

/// The selected layers and their final targets; errors name the key.
fn select_sites(cfg: &MagnitudeConfig, model: &Model) -> Result<Vec<(WeightSite, f64)>, StageError> {
    let g = &model.graph;
    let mut out: Vec<(WeightSite, f64)> = Vec::new();
    match &cfg.sparsity {
        Sparsity::Global(s) => {
            for site in select_weights(STAGE, g, &cfg.ops, &cfg.layers, &cfg.exclude, "layers")? {
                out.push((site, *s));
            }
        }
        Sparsity::PerLayer(map) => {
            let mut owner: HashMap<shrink_graph::NodeId, String> = HashMap::new();
            for (glob, &s) in map {
                let one = [glob.clone()];
                let field = format!("sparsity.{glob}");
                for site in select_weights(STAGE, g, &cfg.ops, &one, &cfg.exclude, &field)? {
                    if let Some(prev) = owner.get(&site.weight) {
                        return Err(StageError::param(
                            STAGE,
                            &field,
                            format!("layer `{}` is also matched by `{prev}`", site.op_name),
                        ));
                    }
                    owner.insert(site.weight, glob.clone());
                    out.push((site, s));
                }
            }
            // graph order, as select_weights gives for one glob
            let order: HashMap<shrink_graph::NodeId, usize> =
                g.ops().into_iter().enumerate().map(|(i, id)| (id, i)).collect();
            out.sort_by_key(|(site, _)| order.get(&site.op).copied().unwrap_or(usize::MAX));
        }
    }
    // a weight shared by two ops is pruned once
    let mut seen = HashSet::new();
    out.retain(|(site, _)| seen.insert(site.weight));
    if out.is_empty() {
        return Err(StageError::param(STAGE, "layers", "no layer selected (check `layers`, `exclude` and `ops`)"));
    }
    Ok(out)
}

fn nonzero(v: &[f32]) -> usize {
    v.iter().filter(|&&x| x != 0.0).count()
}

/// Computes the masks of one step from the current values; masks only grow.
fn step_masks(cfg: &MagnitudeConfig, sites: &mut [Site], k: usize) {
    let (n, sched, s_i) = (cfg.steps, cfg.schedule, cfg.initial_sparsity);
    let values: Vec<&[f32]> = sites.iter().map(|s| s.values.as_slice()).collect();
    let prev: Vec<Option<&[bool]>> = sites.iter().map(|s| s.keep.as_deref()).collect();
    let keeps = match &cfg.sparsity {
        Sparsity::Global(s_f) => {
            let total: usize = values.iter().map(|v| v.len()).sum();
            let s = sched.sparsity_at(s_i, *s_f, k, n);
            debug!(step = k, sparsity = s, "global threshold");
            select_keep_global(&values, &prev, prune_count(s, total))
        }
        Sparsity::PerLayer(_) => {
            let counts: Vec<usize> = sites
                .iter()
                .map(|s| {
                    let t = sched.sparsity_at(s_i, s.target, k, n);
                    debug!(step = k, layer = s.label(), sparsity = t, "layer target");
                    prune_count(t, s.values.len())
                })
                .collect();
            select_keep(&values, &prev, &counts)
        }
    };
    for (s, keep) in sites.iter_mut().zip(keeps) {
        for (v, &kp) in s.values.iter_mut().zip(&keep) {
            if !kp {
                *v = 0.0;
            }
        }
        s.keep = Some(keep);
    }
}

/// Runs one fine-tune, reporting through `cx.progress`; returns the best validation accuracy.
fn finetune(
    ft_cfg: &FineTuneConfig,
    cfg: &MagnitudeConfig,
    exec: &mut Executor,
    teacher: Option<&Executor>,
    cx: &mut StageCx<'_>,
    phase: &str,
    seed: u64,
) -> Result<Option<f64>, StageError> {
    let train = cx.require_train(STAGE, "fine-tuning after pruning")?;
    let mut ft = ft_cfg.to_finetune(seed).map_err(|e| StageError::failed(STAGE, e.to_string()))?;
    if let Some(d) = cfg.distill {
        ft.loss = Loss::Distill { alpha: d.alpha, temperature: d.temperature };
    }
    let progress = &mut *cx.progress;
    progress.start(phase, ft_cfg.total_steps(train.len()) as u64);
    let report = ft_cfg
        .run_reporting(&ft, exec, train, teacher, phase, &mut |done, m| progress.update(done, m))
        .map_err(|e| StageError::failed(STAGE, format!("{phase}: {e}")))?;
    progress.finish();
    Ok(report.best_val_accuracy.or(report.epochs.last().and_then(|e| e.val_accuracy)))
}

impl Stage for MagnitudePrune {
    fn kind(&self) -> &str {
        STAGE
    }

    #[instrument(skip_all, fields(stage = STAGE, method = "magnitude"))]
    fn run(&self, model: &mut Model, cx: &mut StageCx<'_>) -> Result<StageReport, StageError> {
        let cfg = &self.cfg;
        let before = summarize(model);
        let mut sites: Vec<Site> = Vec::new();
        for (site, target) in select_sites(cfg, model)? {
            let NodeKind::Weight(w) = model.graph.node(site.weight) else {
                return Err(StageError::failed(STAGE, format!("`{}` is not an initializer", site.weight_name)));
            };
            let values = w.tensor.to_f32().map_err(|e| StageError::graph(STAGE, e))?;
            let nonzero_before = nonzero(&values);
            sites.push(Site { site, target, values, keep: None, nonzero_before });
        }
        let trains = cfg.finetune.is_some() || cfg.final_finetune.is_some();
        if trains {
            cx.require_train(STAGE, "fine-tuning after pruning")?;
        }
        let mut exec = if trains {
            Some(Executor::new(model).map_err(|e| StageError::failed(STAGE, format!("trainer: {e}")))?)
        } else {
            None
        };
        let teacher = match (&exec, cfg.distill) {
            (Some(_), Some(_)) => {
                Some(Executor::new(cx.original).map_err(|e| StageError::failed(STAGE, format!("teacher: {e}")))?)
            }
            _ => None,
        };
        let mut val_accuracy = None;
        let mut step_notes: Vec<(usize, f64, Option<f64>)> = Vec::new();
        let train_err = |e: shrink_train::TrainError| StageError::failed(STAGE, format!("trainer: {e}"));
        for k in 1..=cfg.steps {
            if let Some(exec) = &exec {
                for s in sites.iter_mut() {
                    s.values = exec.param(&s.site.weight_name).map_err(train_err)?.data;
                }
            }
            step_masks(cfg, &mut sites, k);
            let total: usize = sites.iter().map(|s| s.values.len()).sum();
            let pruned: usize =
                sites.iter().map(|s| s.keep.as_ref().map_or(0, |m| m.iter().filter(|&&x| !x).count())).sum();
            let sparsity = pruned as f64 / total.max(1) as f64;
            cx.progress
                .start(&format!("prune step {k}/{}: {:.1} % of selected weights zero", cfg.steps, sparsity * 100.0), 0);
            cx.progress.finish();
            info!(step = k, steps = cfg.steps, sparsity, "prune step");
            let mut val = None;
            if let Some(exec) = exec.as_mut() {
                for s in &sites {
                    exec.set_mask(&s.site.weight_name, s.keep.as_deref()).map_err(train_err)?;
                }
                if let Some(ft) = &cfg.finetune {
                    let phase = format!("fine-tune after prune step {k}/{}", cfg.steps);
                    let seed = shrink_data::derive_seed(cx.seed, k as u64);
                    val = finetune(ft, cfg, exec, teacher.as_ref(), cx, &phase, seed)?;
                    val_accuracy = val.or(val_accuracy);
                }
            }
            step_notes.push((k, sparsity, val));
        }
        if let (Some(exec), Some(ft)) = (exec.as_mut(), &cfg.final_finetune) {
            let seed = shrink_data::derive_seed(cx.seed, 1000);
            val_accuracy = finetune(ft, cfg, exec, teacher.as_ref(), cx, "final fine-tune", seed)?.or(val_accuracy);
        }
        // write the weights back: the trainer's (all parameters) or the pruned values
        if let Some(exec) = &exec {
            exec.write_back(&mut model.graph).map_err(train_err)?;
            // masked entries come back as w · 0, which is -0.0 for negative w: store +0.0
            for s in sites.iter_mut() {
                s.values = exec.param(&s.site.weight_name).map_err(train_err)?.data;
                for (v, &k) in s.values.iter_mut().zip(s.keep.as_deref().unwrap_or(&[])) {
                    if !k {
                        *v = 0.0;
                    }
                }
            }
        }
        for s in &sites {
            set_weight_f32(&mut model.graph, s.site.weight, &s.values).map_err(|e| StageError::graph(STAGE, e))?;
        }
        // check: every pruned weight is exactly zero in the graph that will be saved
        let mut layers = Vec::new();
        let macs: HashMap<&str, Option<u64>> = before.layers.iter().map(|l| (l.name.as_str(), l.macs)).collect();
        let (mut sel_params, mut sel_nonzero) = (0usize, 0usize);
        for s in &sites {
            let NodeKind::Weight(w) = model.graph.node(s.site.weight) else {
                return Err(StageError::failed(STAGE, format!("`{}` is gone after write-back", s.site.weight_name)));
            };
            let after = w.tensor.to_f32().map_err(|e| StageError::graph(STAGE, e))?;
            let keep = s.keep.as_deref().unwrap_or(&[]);
            if let Some(i) = keep.iter().zip(&after).position(|(&k, &x)| !k && x.to_bits() != 0) {
                return Err(StageError::failed(
                    STAGE,
                    format!("bug: pruned entry {i} of `{}` is {} after write-back", s.site.weight_name, after[i]),
                ));
            }
            let n = after.len();
            let nz = nonzero(&after);
            sel_params += n;
            sel_nonzero += nz;
            let kept = nz as f64 / n.max(1) as f64;
            let mut figures = BTreeMap::from([
                ("params".to_string(), n as f64),
                ("nonzero_before".to_string(), s.nonzero_before as f64),
                ("nonzero_after".to_string(), nz as f64),
                ("kept".to_string(), kept),
                ("target_sparsity".to_string(), s.target),
            ]);
            let mac_text = match macs.get(s.site.op_name.as_str()).copied().flatten() {
                Some(m) => {
                    let sparse = (m as f64 * kept).round();
                    figures.insert("macs_before".into(), m as f64);
                    figures.insert("macs_after".into(), m as f64);
                    figures.insert("macs_nonzero".into(), sparse);
                    format!(
                        "; MACs {m} before and after (dense kernels do not skip zeros; {sparse} with non-zero weights)"
                    )
                }
                None => String::new(),
            };
            layers.push(LayerNote {
                layer: s.label().to_string(),
                note: format!(
                    "kept {:.2} % of {n} weights (non-zero {} → {nz}){mac_text}",
                    kept * 100.0,
                    s.nonzero_before
                ),
                figures,
            });
        }
        let after_summary = summarize(model);
        let total = after_summary.params.max(1) as f64;
        let ratio = after_summary.nonzero_params as f64 / total;
        let mut report = StageReport::new(format!(
            "magnitude pruning ({} sparsity, {} schedule, {} step{}{}): {:.2} % of all parameters non-zero ({:.1}× fewer), {:.2} % of the {} pruned layers' weights",
            match &cfg.sparsity {
                Sparsity::Global(s) => format!("global {s}"),
                Sparsity::PerLayer(_) => "per-layer".into(),
            },
            cfg.schedule.name(),
            cfg.steps,
            if cfg.steps == 1 { "" } else { "s" },
            if cfg.finetune.is_some() || cfg.final_finetune.is_some() { ", fine-tuned" } else { "" },
            ratio * 100.0,
            1.0 / ratio.max(f64::MIN_POSITIVE),
            sel_nonzero as f64 * 100.0 / sel_params.max(1) as f64,
            sites.len(),
        ))
        .figure("params", after_summary.params as f64)
        .figure("nonzero_before", before.nonzero_params as f64)
        .figure("nonzero_after", after_summary.nonzero_params as f64)
        .figure("nonzero_ratio", ratio)
        .figure("compression", after_summary.params as f64 / after_summary.nonzero_params.max(1) as f64)
        .figure("pruned_layer_params", sel_params as f64)
        .figure("pruned_layer_nonzero", sel_nonzero as f64)
        .figure("macs_dense", after_summary.macs as f64)
        .figure("steps", cfg.steps as f64);
        if let Some(v) = val_accuracy {
            report = report.figure("val_accuracy", v);
        }
        for (k, s, v) in &step_notes {
            report = report.figure(&format!("step{k}_sparsity"), *s);
            if let Some(v) = v {
                report = report.figure(&format!("step{k}_val_accuracy"), *v);
            }
        }
        report.layers = layers;
        info!(
            layers = sites.len(),
            nonzero = after_summary.nonzero_params,
            params = after_summary.params,
            "magnitude pruning done"
        );
        Ok(report)
    }
}
