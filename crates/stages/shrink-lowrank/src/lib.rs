//! `shrink-lowrank`: low-rank factorisation: truncated SVD of fully connected layers, channel/spatial decomposition and depthwise-separable replacement of convolutions, with fine-tuning.
//!
//! Stage `lowrank` ([`params`] documents every key):
//!
//! - `method = "svd"` (default, [`factor`]): Gemm/MatMul weights become two
//!   layers by truncated SVD, `W ≈ U_k Σ_k V_kᵀ` (Σ folded into the first
//!   factor by default, `sigma`); a k×k Conv C → N becomes a k×k conv C → R
//!   then a 1×1 conv R → N (channel decomposition: SVD of the N × (C·k·k)
//!   reshaped weight). The bias stays on the second layer. `form = "input"`
//!   splits a conv the other way, a 1×1 conv C → R then the k×k conv R → N
//!   (SVD of the (N·k·k) × C weight: the k×k conv, and tract's im2col of
//!   it, reads R channels instead of C); `form = "tucker2"` ([`tucker`])
//!   gives 1×1 C → R₁, k×k R₁ → R₂, 1×1 R₂ → N.
//! - `method = "spatial"`: a k×k Conv becomes k×1 then 1×k (Jaderberg et al. 2014).
//! - `method = "depthwise-separable"` ([`depthwise`]): a k×k Conv becomes a
//!   depthwise k×k conv then a pointwise 1×1 conv, initialised by rank-1 fits
//!   and a least-squares fit to the original's outputs (or randomly).
//!
//! The rank per layer is `rank = 32`, `energy = 0.95` (fraction of Σσ²
//! kept) or `params_ratio = 0.3` (factors hold at most that fraction of the
//! layer's weights); each a number or `{ "glob" = value }`. A layer whose
//! factorisation would not store fewer weights is left alone and reported.
//! `[stage.finetune]` (shrink_train::FineTuneConfig) fine-tunes the whole
//! model afterwards, on the first `finetune_samples` training samples if set.
//!
//! **Invariants:** the original node stays as the second factor (its name,
//! output value and bias kept), so consumers and graph outputs are
//! untouched; at full rank the factorised layer computes the original (up to
//! float rounding: a property test runs both in tract); the SVD runs in f64.
//!
//! The SVD is faer's, sequential, with fixed signs; `svd.rs` says why (its
//! speed against nalgebra, `cargo xtask bench svd`).
//!
//! Report: per layer, rank (and the full rank), params and MACs before and
//! after, the reconstruction error ‖W − W_k‖/‖W‖ of the factorisation before
//! fine-tuning; figures `params_before/after`, `macs_before/after`,
//! `layers_factorised`, `layers_left`, and the fine-tune's
//! `finetune_val_accuracy` and `finetune_steps`.

pub mod depthwise;
pub mod factor;
pub mod params;
pub mod rewrite;
pub mod svd;
pub mod tucker;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};

use shrink_data::{Dataset, SubsetRef};
use shrink_graph::{Model, summarize};
use shrink_stage::{LayerNote, Registry, Stage, StageCx, StageError, StageFactory, StageReport, glob_match};
use shrink_train::Executor;
use tracing::{debug, info, instrument};

pub use params::{Form, LowRankConfig, LowRankParams, Method, Policy, STAGE, Sigma};

/// Adds this crate's stage kinds to `reg`.
pub fn register(reg: &mut Registry) {
    reg.register(StageFactory {
        kind: STAGE,
        summary: "low-rank factorisation: method = \"svd\" (Gemm/MatMul SVD, conv channel decomposition), \"spatial\" or \"depthwise-separable\"",
        build,
    });
}

/// Builds a `lowrank` stage from its TOML table.
pub fn build(table: &toml::Table) -> Result<Box<dyn Stage>, StageError> {
    Ok(Box::new(LowRank { cfg: LowRankParams::from_table(table)? }))
}

/// The `lowrank` stage.
#[derive(Debug, Clone)]
pub struct LowRank {
    pub cfg: LowRankConfig,
}

/// What happened to one layer.
struct Decision {
    name: String,
    /// The new ops' names, when factorised (empty when left alone).
    parts: Vec<String>,
    note: String,
    figures: BTreeMap<String, f64>,
}

impl LowRank {
    /// The ops this stage considers, in graph order, with the names they match by.
    fn selected(&self, model: &Model) -> Vec<shrink_graph::NodeId> {
        let g = &model.graph;
        g.ops()
            .into_iter()
            .filter(|&id| {
                let Some(o) = g.op(id) else { return false };
                if !self.cfg.ops.contains(&o.op_type) {
                    return false;
                }
                let names = layer_names(model, id);
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                let included = self.cfg.layers.is_empty()
                    || self.cfg.layers.iter().any(|p| names.iter().any(|n| glob_match(p, n)));
                let excluded = self.cfg.exclude.iter().any(|p| names.iter().any(|n| glob_match(p, n)));
                included && !excluded
            })
            .collect()
    }

    fn run_factor(&self, model: &mut Model) -> Result<Vec<Decision>, StageError> {
        let Some((kind, values)) = &self.cfg.policy else {
            return Err(StageError::failed(STAGE, "no rank policy"));
        };
        let mut out = Vec::new();
        for op in self.selected(model) {
            let names = layer_names(model, op);
            let name = names[0].clone();
            let c = match factor::candidate(&model.graph, op, self.cfg.method, self.cfg.form) {
                Ok(c) => c,
                Err(why) => {
                    debug!(layer = %name, reason = %why, "left alone");
                    out.push(left(name, format!("left alone: {why}")));
                    continue;
                }
            };
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let Some(v) = values.get(&refs) else {
                debug!(layer = %name, key = kind.key(), "left alone: no key matches");
                out.push(left(name, format!("left alone: no `{}` key matches", kind.key())));
                continue;
            };
            if matches!(c.layout, factor::Layout::ConvTucker2 { .. }) {
                out.push(tucker2(model, &c, name, kind.policy(v))?);
                continue;
            }
            let d = svd::svd(c.rows, c.cols, &c.matrix)
                .map_err(|e| StageError::failed(STAGE, format!("layer `{name}`: {e}")))?;
            let k = svd::choose_rank(kind.policy(v), &d.s, c.rows, c.cols);
            let full = c.rows * c.cols;
            let factored = k * (c.rows + c.cols);
            let err = svd::rel_error(&d.s, k);
            let mut figs = BTreeMap::new();
            figs.insert("rank".to_string(), k as f64);
            figs.insert("rank_max".to_string(), d.s.len() as f64);
            figs.insert("rel_error".to_string(), err);
            if !svd::pays(k, c.rows, c.cols) {
                debug!(layer = %name, rank = k, factored, full, "left alone: factorisation saves nothing");
                let mut l =
                    left(name, format!("left alone: rank {k} of {} needs {factored} weights ≥ {full}", d.s.len()));
                l.figures = figs;
                out.push(l);
                continue;
            }
            factor::apply(&mut model.graph, &c, &d, k, self.cfg.sigma)
                .map_err(|e| StageError::failed(STAGE, format!("layer `{name}`: {e}")))?;
            debug!(layer = %name, rank = k, rel_error = err, "factorised");
            out.push(Decision {
                parts: vec![format!("{name}.lowrank")],
                note: format!("rank {k} of {}, ‖W − W_k‖/‖W‖ = {err:.4}", d.s.len()),
                name,
                figures: figs,
            });
        }
        Ok(out)
    }

    fn run_depthwise(&self, model: &mut Model, cx: &StageCx<'_>) -> Result<Vec<Decision>, StageError> {
        let mut out = Vec::new();
        for op in self.selected(model) {
            let name = layer_names(model, op)[0].clone();
            let c = match depthwise::candidate(&model.graph, op) {
                Ok(c) => c,
                Err(why) => {
                    out.push(left(name, format!("left alone: {why}")));
                    continue;
                }
            };
            let before = c.weight.len() + c.n;
            if depthwise::params_after(&c) >= before {
                out.push(left(name, format!("left alone: {} weights ≥ {before}", depthwise::params_after(&c))));
                continue;
            }
            let fail = |e: String| StageError::failed(STAGE, format!("layer `{name}`: {e}"));
            let f = if self.cfg.lstsq {
                let (d, p0) = depthwise::rank1_init(&c).map_err(fail)?;
                match cx.train {
                    Some(train) => {
                        let (p, bias) = depthwise::fit_pointwise(model, &c, &d, train, self.cfg.calibration)
                            .map_err(|e| StageError::failed(STAGE, format!("layer `{name}`: least squares: {e}")))?;
                        let n = self.cfg.calibration.min(train.len());
                        depthwise::DwFactors {
                            d,
                            p,
                            bias,
                            how: format!("rank-1 depthwise, pointwise fitted on {n} samples"),
                        }
                    }
                    None => depthwise::DwFactors {
                        d,
                        p: p0,
                        bias: c.bias.clone(),
                        how: "rank-1 per input channel (no training data for the output fit)".into(),
                    },
                }
            } else {
                let (d, p) = depthwise::random_init(&c, cx.seed);
                depthwise::DwFactors { d, p, bias: c.bias.clone(), how: "random".into() }
            };
            let err = depthwise::rel_error(&c, &f.d, &f.p);
            depthwise::apply(&mut model.graph, &c, &f).map_err(fail)?;
            let mut figs = BTreeMap::new();
            figs.insert("rel_error".to_string(), err);
            debug!(layer = %name, rel_error = err, init = %f.how, "depthwise-separable");
            out.push(Decision {
                parts: vec![format!("{name}.lowrank")],
                note: format!(
                    "depthwise {}×{} + pointwise {}→{} ({}), ‖W − P·D‖/‖W‖ = {err:.4}",
                    c.kh, c.kw, c.c, c.n, f.how
                ),
                name,
                figures: figs,
            });
        }
        Ok(out)
    }

    fn finetune(&self, model: &mut Model, cx: &mut StageCx<'_>) -> Result<BTreeMap<String, f64>, StageError> {
        let mut figs = BTreeMap::new();
        let Some(cfg) = &self.cfg.finetune else { return Ok(figs) };
        let full = cx.require_train(STAGE, "[stage.finetune]")?;
        let subset;
        let train: &dyn Dataset = match self.cfg.finetune_samples {
            Some(n) if n < full.len() => {
                subset = SubsetRef::new(full, (0..n).collect())
                    .map_err(|e| StageError::param(STAGE, "finetune_samples", e.to_string()))?;
                &subset
            }
            _ => full,
        };
        let fail = |e: String| StageError::failed(STAGE, format!("finetune: {e}"));
        let ft = cfg.to_finetune(cx.seed).map_err(|e| fail(e.to_string()))?;
        let mut exec = Executor::new(model).map_err(|e| fail(e.to_string()))?;
        cx.progress.start("lowrank: fine-tune", cfg.total_steps(train.len()) as u64);
        let progress = &mut *cx.progress;
        let rep = cfg
            .run_reporting(&ft, &mut exec, train, None, "lowrank: fine-tune", &mut |done, m| progress.update(done, m))
            .map_err(|e| fail(e.to_string()))?;
        cx.progress.finish();
        exec.write_back(&mut model.graph).map_err(|e| fail(e.to_string()))?;
        if let Some(v) = rep.best_val_accuracy {
            figs.insert("finetune_val_accuracy".into(), v);
        }
        figs.insert("finetune_steps".into(), rep.steps as f64);
        figs.insert("finetune_samples".into(), train.len() as f64);
        Ok(figs)
    }
}

/// A layer's names for globs: the op's label, then its weight's name.
fn layer_names(model: &Model, op: shrink_graph::NodeId) -> Vec<String> {
    let g = &model.graph;
    let mut v = vec![g.op(op).map(|o| o.label()).unwrap_or_else(|| g.label(op))];
    if let Some(w) = g.input(op, 1).filter(|w| g.weight(*w).is_some()) {
        v.push(g.value_name(w).to_string());
    }
    v
}

fn left(name: String, note: String) -> Decision {
    Decision { name, parts: Vec::new(), note, figures: BTreeMap::new() }
}

/// Splits one conv into its Tucker-2 form at the ranks `policy` picks, or leaves it alone.
fn tucker2(model: &mut Model, c: &factor::Candidate, name: String, policy: Policy) -> Result<Decision, StageError> {
    let fail = |e: String| StageError::failed(STAGE, format!("layer `{name}`: {e}"));
    let t = tucker::decompose(c).map_err(fail)?;
    let (r1, r2) = t.ranks(policy);
    let (q1, q2) = t.full();
    let full = c.rows * c.cols;
    let after = tucker::params(t.n, t.c, t.kh * t.kw, r1, r2);
    let f = t.factors(r1, r2);
    let mut figs = BTreeMap::new();
    figs.insert("rank".to_string(), r1 as f64);
    figs.insert("rank_out".to_string(), r2 as f64);
    figs.insert("rank_max".to_string(), q1 as f64);
    figs.insert("rank_out_max".to_string(), q2 as f64);
    figs.insert("rel_error".to_string(), f.rel_error);
    if after >= full {
        debug!(layer = %name, r1, r2, after, full, "left alone: factorisation saves nothing");
        let mut l = left(name, format!("left alone: ranks {r1}, {r2} need {after} weights ≥ {full}"));
        l.figures = figs;
        return Ok(l);
    }
    tucker::apply(&mut model.graph, c, &f).map_err(fail)?;
    debug!(layer = %name, r1, r2, rel_error = f.rel_error, "tucker-2");
    Ok(Decision {
        parts: vec![format!("{name}.lowrank"), format!("{name}.lowrank_core")],
        note: format!("tucker-2 ranks {r1} of {q1}, {r2} of {q2}, ‖W − Ŵ‖/‖W‖ = {:.4}", f.rel_error),
        name,
        figures: figs,
    })
}

impl Stage for LowRank {
    fn kind(&self) -> &str {
        STAGE
    }

    #[instrument(skip_all, fields(stage = STAGE))]
    fn run(&self, model: &mut Model, cx: &mut StageCx<'_>) -> Result<StageReport, StageError> {
        let before = summarize(model);
        cx.progress.start("lowrank: factorising", 0);
        let decisions = match self.cfg.method {
            Method::Svd | Method::Spatial => self.run_factor(model)?,
            Method::DepthwiseSeparable => self.run_depthwise(model, cx)?,
        };
        cx.progress.finish();
        model.graph.verify().map_err(|e| StageError::graph(STAGE, e))?;
        let done = decisions.iter().filter(|d| !d.parts.is_empty()).count();
        let ft = if done > 0 { self.finetune(model, cx)? } else { BTreeMap::new() };
        let after = summarize(model);
        let b: HashMap<&str, &shrink_graph::LayerInfo> = before.layers.iter().map(|l| (l.name.as_str(), l)).collect();
        let a: HashMap<&str, &shrink_graph::LayerInfo> = after.layers.iter().map(|l| (l.name.as_str(), l)).collect();
        let mut layers = Vec::new();
        for d in decisions {
            let mut figs = d.figures;
            let mut note = d.note;
            if let Some(lb) = b.get(d.name.as_str()).filter(|_| !d.parts.is_empty()) {
                let parts: Vec<_> = std::iter::once(&d.name).chain(&d.parts).map(|p| a.get(p.as_str())).collect();
                let pa: u64 = parts.iter().flatten().map(|l| l.params).sum();
                let ma: Option<u64> = parts.iter().flatten().map(|l| l.macs).sum();
                figs.insert("params_before".into(), lb.params as f64);
                figs.insert("params_after".into(), pa as f64);
                note = format!("{note}, params {} → {pa}", lb.params);
                if let (Some(mb), Some(ma)) = (lb.macs, ma) {
                    figs.insert("macs_before".into(), mb as f64);
                    figs.insert("macs_after".into(), ma as f64);
                    note = format!("{note}, MACs {mb} → {ma}");
                }
            }
            layers.push(LayerNote { layer: d.name, note, figures: figs });
        }
        let summary = format!(
            "{}: {done} of {} layers factorised, params {} → {} ({:.3}×), MACs {} → {} ({:.3}×)",
            match (self.cfg.method, self.cfg.form) {
                (Method::Svd, Form::Output) => "svd",
                (Method::Svd, Form::Input) => "svd (input form)",
                (Method::Svd, Form::Tucker2) => "svd (tucker2 form)",
                (Method::Spatial, _) => "spatial",
                (Method::DepthwiseSeparable, _) => "depthwise-separable",
            },
            layers.len(),
            before.params,
            after.params,
            after.params as f64 / before.params.max(1) as f64,
            before.macs,
            after.macs,
            after.macs as f64 / before.macs.max(1) as f64,
        );
        info!("{summary}");
        let mut r = StageReport::new(summary)
            .figure("params_before", before.params as f64)
            .figure("params_after", after.params as f64)
            .figure("macs_before", before.macs as f64)
            .figure("macs_after", after.macs as f64)
            .figure("layers_factorised", done as f64)
            .figure("layers_left", (layers.len() - done) as f64);
        r.figures.extend(ft);
        r.layers = layers;
        Ok(r)
    }
}
