//! The `early-exit` stage: heads, training, calibration, export.

use std::fmt::Write as _;
use std::path::Path;

use shrink_data::{Batch, Dataset, Holdout, SplitMix64, SubsetRef, derive_seed, train_val_split};
use shrink_graph::{Model, NodeKind, ValueRef, summarize};
use shrink_stage::{LayerNote, Stage, StageCx, StageError, StageReport};
use shrink_train::{Executor, FineTuneConfig, HostTensor, Loss};
use tracing::{debug, info, instrument};

use crate::KIND;
use crate::graph::{self, Head};
use crate::manifest::{CalibrationEntry, InputPreprocess, MANIFEST, Manifest, SegmentEntry};
use crate::params::{Distill, Exits, Params};
use crate::policy::{Policy, SampleOutcome, calibrate};

/// The folder (inside the run's output folder) that holds the segmented model.
pub const DIR: &str = "early-exit";

/// A configured `early-exit` stage.
#[derive(Debug, Clone)]
pub struct EarlyExit {
    pub params: Params,
    pub policy: Policy,
    pub finetune: FineTuneConfig,
}

fn failed(reason: impl std::fmt::Display) -> StageError {
    StageError::failed(KIND, reason.to_string())
}

impl EarlyExit {
    /// Reads and checks the stage's table.
    pub fn from_table(table: &toml::Table) -> Result<EarlyExit, StageError> {
        let params: Params = serde::Deserialize::deserialize(toml::Value::Table(table.clone()))
            .map_err(|e| StageError::param(KIND, "table", e.to_string()))?;
        let policy = Policy::parse(&params.policy).ok_or_else(|| {
            StageError::param(KIND, "policy", format!("`{}` is not one of max_prob, entropy", params.policy))
        })?;
        if let Exits::Auto(s) = &params.exits
            && s != "auto"
        {
            return Err(StageError::param(KIND, "exits", format!("`{s}`: give \"auto\" or a list of tensor names")));
        }
        if let Exits::Named(v) = &params.exits
            && v.is_empty()
        {
            return Err(StageError::param(KIND, "exits", "the list is empty"));
        }
        if params.train != "heads" {
            return Err(StageError::param(
                KIND,
                "train",
                format!(
                    "`{}` is not available: the trainer takes a loss on output 0 only, so heads are trained one at a time with the backbone frozen (`heads`)",
                    params.train
                ),
            ));
        }
        if params.head.hidden.len() > 1 || params.head.hidden.contains(&0) {
            return Err(StageError::param(
                KIND,
                "head.hidden",
                "at most one positive width (a head has 1 or 2 Gemm layers)",
            ));
        }
        if !crate::params::POOLS.contains(&params.head.pool.as_str()) {
            return Err(StageError::param(
                KIND,
                "head.pool",
                format!("`{}` is not one of {}", params.head.pool, crate::params::POOLS.join(", ")),
            ));
        }
        if params.head.kernel == 0 {
            return Err(StageError::param(KIND, "head.kernel", "must be at least 1"));
        }
        if !(0.0..1.0).contains(&params.target_accuracy_drop) {
            return Err(StageError::param(KIND, "target_accuracy_drop", "must be in [0, 1)"));
        }
        if params.calibration == 0 {
            return Err(StageError::param(KIND, "calibration", "must hold out at least one sample"));
        }
        if let Some(Distill { alpha, temperature }) = params.self_distill
            && (!(0.0..=1.0).contains(&alpha) || temperature <= 0.0)
        {
            return Err(StageError::param(KIND, "self_distill", "needs alpha in [0, 1] and temperature > 0"));
        }
        let finetune = match &params.finetune {
            Some(t) => FineTuneConfig::from_toml(t).map_err(|e| StageError::param(KIND, "finetune", e.to_string()))?,
            None => FineTuneConfig { optimizer: "adam".into(), lr: 0.002, validation: 0, ..FineTuneConfig::default() },
        };
        finetune.to_finetune(0).map_err(|e| StageError::param(KIND, "finetune", e.to_string()))?;
        Ok(EarlyExit { params, policy, finetune })
    }
}

/// Per output, per sample: one row of values.
type Rows = Vec<Vec<Vec<f32>>>;

/// Runs `exec` over `data` and returns every output, per sample, as rows, and the labels.
fn outputs(exec: &Executor, data: &dyn Dataset, batch: usize) -> Result<(Rows, Vec<u32>), StageError> {
    let mut buf = Batch::default();
    let n = data.len();
    let mut rows: Vec<Vec<Vec<f32>>> = Vec::new();
    let mut labels = Vec::with_capacity(n);
    let mut start = 0;
    while start < n {
        let k = batch.min(n - start);
        let idx: Vec<usize> = (start..start + k).collect();
        data.batch_into(&idx, &mut buf).map_err(failed)?;
        let out =
            exec.forward(&[HostTensor::new(std::mem::take(&mut buf.inputs), buf.shape.clone())]).map_err(failed)?;
        if rows.is_empty() {
            rows = vec![Vec::with_capacity(n); out.len()];
        }
        for (o, t) in out.iter().enumerate() {
            let c = t.data.len() / k.max(1);
            rows[o].extend(t.data.chunks(c.max(1)).map(<[f32]>::to_vec));
        }
        labels.extend_from_slice(&buf.labels);
        start += k;
    }
    Ok((rows, labels))
}

fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold(0, |b, (i, &x)| if x > row[b] { i } else { b })
}

/// Sets initializer `name` of `model` to `data`.
fn set_weight(model: &mut Model, name: &str, data: &[f32]) -> Result<(), StageError> {
    let v = model.graph.find_value(name).ok_or_else(|| failed(format!("head weight `{name}` vanished")))?;
    shrink_graph::rewrite::set_weight_f32(&mut model.graph, v.0, data).map_err(|e| StageError::graph(KIND, e))
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StageError> {
    shrink_graph::save_file(&dir.join(name), bytes).map_err(|e| StageError::graph(KIND, e))
}

impl Stage for EarlyExit {
    fn kind(&self) -> &str {
        KIND
    }

    #[instrument(skip_all, fields(stage = KIND))]
    fn run(&self, model: &mut Model, cx: &mut StageCx<'_>) -> Result<StageReport, StageError> {
        let p = &self.params;
        let train = cx.require_train(KIND, "training the exit heads and calibrating the thresholds")?;
        if p.calibration >= train.len() {
            return Err(StageError::param(
                KIND,
                "calibration",
                format!("holds out {} samples but the training split has {}", p.calibration, train.len()),
            ));
        }
        let g = &model.graph;
        let (_, final_out) = graph::io(g)?;
        let shapes = graph::sample_shapes(g);
        let classes = match shapes.get(&final_out).map(Vec::as_slice) {
            Some([c]) | Some([c, 1, 1]) => *c,
            other => return Err(failed(format!("the output's shape {other:?} is not [batch, classes]"))),
        };
        let exits = match &p.exits {
            Exits::Auto(_) => graph::auto_exits(model)?,
            Exits::Named(names) => graph::named_exits(g, names)?,
        };
        let batch = graph::batch_dim(g);
        let out_info = match g.node(g.outputs()[0]) {
            NodeKind::Output(vi) => vi.clone(),
            _ => return Err(failed("the graph output is not an output node")),
        };

        // the multi-output model: final classifier first, then one head per exit
        let mut multi = model.clone();
        multi.source = None;
        let mut rng = SplitMix64::new(derive_seed(cx.seed, 0xEE));
        let mut heads: Vec<Head> = Vec::new();
        for (k, &e) in exits.iter().enumerate() {
            let shape = shapes.get(&e).ok_or_else(|| {
                StageError::param(KIND, "exits", format!("the shape of `{}` is unknown", g.value_name(e)))
            })?;
            heads.push(graph::add_head(&mut multi.graph, k, e, shape, &p.head, classes, &mut rng)?);
        }
        let head_info = |h: &Head, m: &Model| graph::float_info(m.graph.value_name(h.logits), &batch, &[classes]);
        let mut outs = vec![(final_out, out_info.clone())];
        outs.extend(heads.iter().map(|h| (h.logits, head_info(h, &multi))));
        graph::set_outputs(&mut multi.graph, &outs);
        multi.graph.verify().map_err(|e| StageError::graph(KIND, e))?;

        // calibration split: held out of the training split, never the test split
        let cal_seed = derive_seed(cx.seed, 0xCA1);
        let split = train_val_split(train.len(), Holdout::Count(p.calibration), cal_seed).map_err(failed)?;
        let fit = SubsetRef::new(train, split.train.clone()).map_err(failed)?;
        let cal = SubsetRef::new(train, split.validation.clone()).map_err(failed)?;

        // heads, one at a time, backbone frozen
        let teacher = match p.self_distill {
            Some(_) => Some(Executor::new(model).map_err(|e| failed(format!("teacher: {e}")))?),
            None => None,
        };
        let mut notes = Vec::new();
        for (k, h) in heads.iter().enumerate() {
            let mut hm = multi.clone();
            graph::set_outputs(&mut hm.graph, &[(h.logits, head_info(h, &multi))]);
            let mut exec = Executor::new(&hm).map_err(|e| failed(format!("head {k}: {e}")))?;
            for pi in exec.params() {
                let trainable = h.weights.contains(&pi.name);
                if trainable || pi.trainable {
                    exec.set_trainable(&pi.name, trainable).map_err(failed)?;
                }
            }
            let mut ft = self.finetune.to_finetune(derive_seed(cx.seed, 100 + k as u64)).map_err(failed)?;
            if let Some(d) = p.self_distill {
                ft.loss = Loss::Distill { alpha: d.alpha, temperature: d.temperature };
            }
            let steps = self.finetune.total_steps(fit.len());
            let phase = format!("head {k} ({})", graph::short(&multi.graph, h.exit));
            cx.progress.start(&phase, steps as u64);
            let progress = &mut *cx.progress;
            let report = self
                .finetune
                .run_reporting(&ft, &mut exec, &fit, teacher.as_ref(), &phase, &mut |done, m| progress.update(done, m))
                .map_err(|e| failed(format!("training head {k}: {e}")))?;
            cx.progress.finish();
            debug!(head = k, steps = report.steps, "head trained");
            for name in &h.weights {
                let t = exec.param(name).map_err(failed)?;
                set_weight(&mut multi, name, &t.data)?;
            }
        }

        // segments and their costs
        let full_macs = summarize(model).macs.max(1);
        let mut segments = Vec::new();
        for k in 0..=heads.len() {
            let from = if k == 0 {
                None
            } else {
                let e = exits[k - 1];
                Some((e, shapes[&e].as_slice()))
            };
            let outputs: Vec<(ValueRef, _)> = if k < heads.len() {
                let e = exits[k];
                vec![
                    (heads[k].logits, head_info(&heads[k], &multi)),
                    (e, graph::float_info(multi.graph.value_name(e), &batch, &shapes[&e])),
                ]
            } else {
                vec![(final_out, out_info.clone())]
            };
            segments.push(graph::segment(&multi, from, &outputs)?);
        }
        let seg_macs: Vec<u64> = segments.iter().map(|s| summarize(s).macs).collect();
        let cum: Vec<u64> = seg_macs
            .iter()
            .scan(0u64, |a, &m| {
                *a += m;
                Some(*a)
            })
            .collect();
        let costs: Vec<f64> = cum.iter().map(|&c| c as f64 / full_macs as f64).collect();

        // calibration on the held-out samples
        let exec = Executor::new(&multi).map_err(|e| failed(format!("multi-output model: {e}")))?;
        cx.progress.start("calibrating", 0);
        let (rows, labels) = outputs(&exec, &cal, 256)?;
        cx.progress.finish();
        let k_exits = heads.len() + 1;
        let samples: Vec<SampleOutcome> = (0..labels.len())
            .map(|i| {
                // rows[0] is the final classifier, rows[1 + k] head k
                let order: Vec<&[f32]> = (1..k_exits).chain([0]).map(|o| rows[o][i].as_slice()).collect();
                SampleOutcome {
                    scores: order[..k_exits - 1].iter().map(|r| self.policy.score(r)).collect(),
                    correct: order.iter().map(|r| argmax(r) == labels[i] as usize).collect(),
                }
            })
            .collect();
        let exit_accuracy: Vec<f64> = (0..k_exits)
            .map(|e| samples.iter().filter(|s| s.correct[e]).count() as f64 / samples.len().max(1) as f64)
            .collect();
        let calib = calibrate(self.policy, &samples, &costs, p.target_accuracy_drop);
        let chosen = &calib.chosen;

        // export: segments, full model, manifest, indices, curve
        let dir = cx.output_dir.join(DIR);
        std::fs::create_dir_all(&dir).map_err(|e| failed(format!("{}: {e}", dir.display())))?;
        let mut files = Vec::new();
        let mut entries = Vec::new();
        for (k, s) in segments.iter().enumerate() {
            let file = format!("segment-{k}.onnx");
            write(&dir, &file, &s.to_bytes())?;
            files.push(format!("{DIR}/{file}"));
            let early = k < heads.len();
            entries.push(SegmentEntry {
                file,
                logits: if early { multi.graph.value_name(heads[k].logits).to_string() } else { out_info.name.clone() },
                feature: early.then(|| multi.graph.value_name(exits[k]).to_string()),
                threshold: early.then(|| chosen.thresholds[k]),
                macs: seg_macs[k],
                cumulative_macs: cum[k],
                relative_cost: costs[k],
            });
        }
        write(&dir, "full.onnx", &model.to_bytes())?;
        files.push(format!("{DIR}/full.onnx"));
        let mut idx_text = String::new();
        for i in &split.validation {
            let _ = writeln!(idx_text, "{i}");
        }
        write(&dir, "calibration-indices.txt", idx_text.as_bytes())?;
        files.push(format!("{DIR}/calibration-indices.txt"));
        let manifest = Manifest {
            format: 1,
            policy: self.policy,
            classes,
            target_accuracy_drop: p.target_accuracy_drop,
            full: "full.onnx".into(),
            full_macs,
            calibration: CalibrationEntry {
                split: "train".into(),
                train_samples: train.len(),
                samples: split.validation.len(),
                seed: cal_seed,
                indices: "calibration-indices.txt".into(),
                final_accuracy: calib.final_accuracy,
                policy_accuracy: chosen.accuracy,
                mean_cost: chosen.mean_cost,
                exit_fractions: chosen.exit_fractions.clone(),
                exit_accuracy: exit_accuracy.clone(),
            },
            preprocess: train.preprocess().map(|p| InputPreprocess { scale: p.scale, mean: p.mean, std: p.std }),
            segments: entries,
        };
        write(&dir, MANIFEST, manifest.to_toml()?.as_bytes())?;
        files.push(format!("{DIR}/{MANIFEST}"));
        let mut csv = String::from("threshold,accuracy,mean_cost\n");
        for c in &calib.curve {
            let _ =
                writeln!(csv, "{},{},{}", c.thresholds.first().copied().unwrap_or(f64::NAN), c.accuracy, c.mean_cost);
        }
        write(&dir, "curve.csv", csv.as_bytes())?;
        files.push(format!("{DIR}/curve.csv"));
        let svg = crate::plot::curve_svg(&calib, self.policy.name()).map_err(|e| failed(format!("curve.svg: {e}")))?;
        write(&dir, "curve.svg", svg.as_bytes())?;
        files.push(format!("{DIR}/curve.svg"));

        for k in 0..k_exits {
            let name = if k < heads.len() { graph::short(&multi.graph, exits[k]) } else { "final".into() };
            let mut n = LayerNote {
                layer: name,
                note: if k < heads.len() {
                    format!("exit {k}: threshold {}", chosen.thresholds[k])
                } else {
                    "final classifier".into()
                },
                ..LayerNote::default()
            };
            n.figures.insert("relative_cost".into(), costs[k]);
            n.figures.insert("exit_fraction".into(), chosen.exit_fractions[k]);
            n.figures.insert("calibration_accuracy".into(), exit_accuracy[k]);
            n.figures.insert("macs_cumulative".into(), cum[k] as f64);
            notes.push(n);
        }
        let summary = format!(
            "{} early exits ({} head, {}): calibration accuracy {:.2} % vs {:.2} % (final exit), mean cost {:.3} of the full model's MACs; segmented model in {DIR}/",
            heads.len(),
            p.head.pool,
            self.policy.name(),
            chosen.accuracy * 100.0,
            calib.final_accuracy * 100.0,
            chosen.mean_cost,
        );
        info!("{summary}");
        *model = multi;
        let mut report = StageReport::new(summary)
            .figure("exits", heads.len() as f64)
            .figure("calibration_samples", split.validation.len() as f64)
            .figure("calibration_accuracy_final", calib.final_accuracy)
            .figure("calibration_accuracy_policy", chosen.accuracy)
            .figure("mean_relative_macs", chosen.mean_cost)
            .figure("macs_speedup", 1.0 / chosen.mean_cost.max(1e-9));
        report.layers = notes;
        report.files = files;
        Ok(report)
    }
}
