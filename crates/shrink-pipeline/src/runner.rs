//! The runner: straight-line code (cranelift's `Context::optimize` habit).
//!
//! For each stage: a tracing span, `run`, `graph.verify()` (a failure is a bug
//! in that stage), tract verification (accuracy and agreement with the
//! original on the test data, or agreement on seeded random inputs; latency
//! interleaved with the original; size), a report row, a checkpoint.
//!
//! Each model the run holds (the original, and the result of each stage run)
//! is exported to ONNX bytes once: the checkpoint is written from them, the
//! size measured from them, tract judges them, and the next stage receives
//! them (`StageCx::encoded`). The original is run over the test data (or the
//! random inputs) once; its logits are kept and every stage's model is
//! compared with them. Its judge, with one tract plan per batch size, lives
//! for the whole run, so its latency plans are built once and it is timed
//! interleaved with each stage's model; the original's own row times it alone
//! (its latency ratio is 1).
//!
//! Checkpoints: `stages/NN-kind.onnx` then `stages/NN-kind.json` (the row,
//! with the hash), each written atomically; the JSON is written last, so a
//! stage counts as finished only when both exist. The hash of stage N chains
//! the hash of stage N-1 with stage N's table; the chain starts from the
//! input model's bytes, the `[pipeline]`, `[data]` and `[verify]` tables,
//! [`CODE_VERSION`] and the running executable's identity (size and
//! modification time: a rebuilt `shrink` may compute differently, so it
//! never reuses checkpoints of another build). A rerun resumes after the last finished stage of an
//! unbroken prefix whose hashes match, and says so; a changed stage
//! invalidates itself and every stage after it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};
use shrink_data::{Dataset, FolderOptions, InMemoryDataset, Layout, Preprocess, Split};
use shrink_graph::onnx::tensor_proto::DataLocation;
use shrink_graph::{Model, save_file};
use shrink_stage::{Encoded, Progress, Registry, Stage, StageCx};
use shrink_verify::{
    AgreementReport, InputSpec, Judge, LatencyConfig, LatencyReport, Reference, latency, size_of_encoded,
};
use tracing::{info, info_span, warn};

use crate::config::{DataSource, Pipeline};
use crate::error::PipelineError;
use crate::report::{Report, Row};

/// Part of every checkpoint hash: bump when a change makes old checkpoints wrong.
pub const CODE_VERSION: &str = concat!("shrink-pipeline ", env!("CARGO_PKG_VERSION"), " checkpoints v1");

/// The running executable's size and modification time: checkpoints made
/// by another build are not reused. Empty when the platform cannot say.
fn build_identity() -> String {
    let meta = std::env::current_exe().and_then(std::fs::metadata);
    match meta {
        Ok(m) => {
            let mtime = m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
            format!("{} {:?}", m.len(), mtime)
        }
        Err(_) => String::new(),
    }
}

/// The marker that says an output folder holds a run of a pipeline.
const MARKER: &str = "shrink-run.json";

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Rerun from this 1-based stage even when its checkpoint matches.
    pub from_stage: Option<usize>,
    /// Check the pipeline, build every stage, and stop before running.
    pub dry_run: bool,
    /// Use an output folder that holds something else.
    pub force: bool,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub output: PathBuf,
    pub report: Report,
    /// Stages taken from checkpoints instead of run.
    pub resumed: usize,
}

struct Data {
    label: String,
    train: Option<InMemoryDataset>,
    test: Option<InMemoryDataset>,
}

fn load_source(p: &Pipeline, key: &str, src: &DataSource, pre: &Preprocess) -> Result<InMemoryDataset, PipelineError> {
    let err = |source| PipelineError::Data { key: key.into(), source };
    let toml = |message: String| PipelineError::Toml { path: p.path.clone(), message };
    let only_with = |set: bool, name: &str, with: &str| -> Result<(), PipelineError> {
        if set { Err(toml(format!("`{key}.{name}` is only for `{with}`"))) } else { Ok(()) }
    };
    only_with(src.resize.is_some() && src.folder.is_none(), "resize", "folder")?;
    only_with(src.crop.is_some() && src.folder.is_none(), "crop", "folder")?;
    only_with(src.channels_last && src.images.is_none(), "channels_last", "images")?;
    let mut ds = match (&src.builtin, &src.images, &src.folder) {
        (Some(name), None, None) => {
            let split = match src.split.as_deref().unwrap_or(if key.ends_with("train") { "train" } else { "test" }) {
                "train" => Split::Train,
                "test" => Split::Test,
                other => return Err(toml(format!("`{key}.split` is `{other}`; expected `train` or `test`"))),
            };
            shrink_data::load_builtin(name, split, pre).map_err(err)?
        }
        (None, Some(images), None) => {
            if !images.exists() {
                return Err(missing(p, &format!("{key}.images"), images));
            }
            let (x, y) = if images.extension().is_some_and(|e| e == "npz") {
                (
                    shrink_data::read_npz_array(images, "x").map_err(err)?,
                    shrink_data::read_npz_array(images, "y").map_err(err)?,
                )
            } else {
                let labels =
                    src.labels.as_ref().ok_or_else(|| toml(format!("`{key}` has `images` but no `labels`")))?;
                if !labels.exists() {
                    return Err(missing(p, &format!("{key}.labels"), labels));
                }
                (shrink_data::read_array(images).map_err(err)?, shrink_data::read_array(labels).map_err(err)?)
            };
            let x = if src.channels_last { x.nhwc_to_nchw().map_err(err)? } else { x };
            InMemoryDataset::new(x, y, None, pre).map_err(err)?
        }
        (None, None, Some(folder)) => {
            if !folder.exists() {
                return Err(missing(p, &format!("{key}.folder"), folder));
            }
            let options = FolderOptions { resize: src.resize, crop: src.crop };
            shrink_data::load_image_folder(folder, &options, pre).map_err(err)?
        }
        _ => return Err(toml(format!("`{key}` needs exactly one of `builtin`, `images` or `folder`"))),
    };
    if let Some(limit) = src.limit {
        ds = ds.truncated(limit).map_err(err)?;
    }
    Ok(ds)
}

fn load_data(p: &Pipeline, sample: &[usize]) -> Result<Option<Data>, PipelineError> {
    let Some(d) = &p.file.data else { return Ok(None) };
    let pre = Preprocess {
        scale: d.preprocess.as_ref().is_none_or(|x| x.scale),
        mean: d.preprocess.as_ref().map(|x| x.mean.clone()).unwrap_or_default(),
        std: d.preprocess.as_ref().map(|x| x.std.clone()).unwrap_or_default(),
        layout: Layout::for_sample(sample),
    };
    let train = d.train.as_ref().map(|s| load_source(p, "data.train", s, &pre)).transpose()?;
    let test = d.test.as_ref().map(|s| load_source(p, "data.test", s, &pre)).transpose()?;
    let label = d
        .test
        .as_ref()
        .map(|s| match (&s.builtin, &s.images, &s.folder) {
            (Some(b), _, _) => format!("{b} {}", s.split.as_deref().unwrap_or("test")),
            (_, Some(i), _) => i.display().to_string(),
            (_, _, Some(f)) => f.display().to_string(),
            _ => "?".into(),
        })
        .map(|l| match d.test.as_ref().and_then(|s| s.limit) {
            Some(n) => format!("{l} (first {n})"),
            None => l,
        })
        .unwrap_or_default();
    Ok(Some(Data { label, train, test }))
}

fn missing(p: &Pipeline, key: &str, path: &Path) -> PipelineError {
    PipelineError::Missing {
        pipeline: p.path.clone(),
        location: p.key_location(key),
        key: key.to_string(),
        path: path.to_path_buf(),
    }
}

fn sha(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), PipelineError> {
    save_file(path, bytes).map_err(|e| PipelineError::Graph(e.in_file(path)))
}

/// Writes `model`, whose inline encoding is `bytes`, to `path`: the bytes
/// themselves, unless tensors of the model were loaded from external data;
/// [`Model::save`] then writes those to a side file again (exporting anew).
fn write_model(path: &Path, model: &Model, bytes: &[u8]) -> Result<(), PipelineError> {
    let external = model.graph.weights().any(|(_, t)| t.proto.data_location == DataLocation::External as i32);
    if external {
        let mut m = model.clone();
        m.source = None;
        Ok(m.save(path)?)
    } else {
        write(path, bytes)
    }
}

fn checkpoint_name(step: usize, kind: &str) -> String {
    let safe: String = kind.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    format!("{step:02}-{safe}")
}

/// Refuses an output folder that holds something other than this pipeline's run.
fn claim_output(p: &Pipeline, out: &Path, force: bool) -> Result<(), PipelineError> {
    let marker = out.join(MARKER);
    if out.exists() {
        let entries = std::fs::read_dir(out).map_err(|e| PipelineError::io(out, e))?.count();
        if entries > 0 && !force {
            match std::fs::read_to_string(&marker) {
                Ok(text) => {
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                    if v["pipeline"] != p.file.pipeline.name.as_str() {
                        return Err(PipelineError::OutputInUse {
                            path: out.to_path_buf(),
                            reason: format!("holds a run of pipeline {}", v["pipeline"]),
                        });
                    }
                }
                Err(_) => {
                    return Err(PipelineError::OutputInUse {
                        path: out.to_path_buf(),
                        reason: "is not empty and holds no shrink run".into(),
                    });
                }
            }
        }
    }
    std::fs::create_dir_all(out.join("stages")).map_err(|e| PipelineError::io(out, e))?;
    let text = serde_json::json!({ "pipeline": p.file.pipeline.name, "file": p.path.display().to_string() });
    write(&marker, format!("{text:#}\n").as_bytes())
}

/// The original and the current model measured by tract.
struct Verifier<'d> {
    /// The original's judge: its tract plans live for the whole run.
    original: Judge,
    /// The original's logits over the test data or the random inputs, from
    /// the first row on.
    reference: Option<Reference<'d>>,
    data: Option<&'d Data>,
    spec: InputSpec,
    cfg: LatencyConfig,
    batch_sizes: Vec<usize>,
    random_batches: usize,
    seed: u64,
}

/// The batch size accuracy and agreement are computed at.
const EVAL_BATCH: usize = 100;
/// The batch size of agreement on random inputs.
const RANDOM_BATCH: usize = 16;

impl<'d> Verifier<'d> {
    /// Measures the original (`model`, encoded as `bytes`) into row 0 and
    /// keeps its logits.
    fn original_row(&mut self, model: &Model, bytes: &[u8], progress: &mut dyn Progress) -> Result<Row, PipelineError> {
        let name = "original";
        let (reference, accuracy, samples) = match self.data.and_then(|d| d.test.as_ref()) {
            Some(test) => {
                progress.start(&format!("verify {name}: accuracy"), test.len() as u64);
                let r = Reference::on_data(&mut self.original, test, EVAL_BATCH, None, &mut |done, _| {
                    progress.update(done as u64, "")
                })?;
                let acc = r.accuracy().map(|a| (a.top1, a.samples));
                (r, acc.map(|a| a.0), acc.map(|a| a.1))
            }
            None => {
                let total = (self.random_batches * RANDOM_BATCH) as u64;
                progress.start(&format!("verify {name}: agreement on random inputs"), total);
                let r = Reference::on_random(
                    &mut self.original,
                    RANDOM_BATCH,
                    self.random_batches,
                    self.seed,
                    &mut |done, _| progress.update(done as u64, ""),
                )?;
                (r, None, None)
            }
        };
        let agreement = Some(reference.self_agreement());
        self.reference = Some(reference);
        let mut lat = Vec::new();
        let mut ratio = Vec::new();
        for &b in &self.batch_sizes {
            progress.start(&format!("verify {name}: latency at batch {b}"), 0);
            let l = latency::measure(&mut [&mut self.original], b, 1, &self.cfg)?;
            ratio.push((b, 1.0));
            lat.push(l[0].clone());
        }
        progress.finish();
        Ok(measured_row(0, name, model, bytes, (accuracy, samples, agreement), lat, ratio))
    }

    /// Measures `model` (encoded as `bytes`) against the original into a row.
    fn row(
        &mut self,
        step: usize,
        kind: &str,
        model: &Model,
        bytes: &[u8],
        progress: &mut dyn Progress,
    ) -> Result<Row, PipelineError> {
        let name = format!("step {step} ({kind})");
        let reference =
            self.reference.as_ref().ok_or_else(|| PipelineError::Other("the original's row comes first".into()))?;
        let mut judge = Judge::from_bytes(&name, bytes, &self.spec)?;
        let phase = match self.data.and_then(|d| d.test.as_ref()) {
            Some(test) => (format!("verify {name}: accuracy"), test.len() as u64),
            None => (format!("verify {name}: agreement on random inputs"), (self.random_batches * RANDOM_BATCH) as u64),
        };
        progress.start(&phase.0, phase.1);
        let (acc, agreement) = reference.compare(&mut judge, &mut |done, _| progress.update(done as u64, ""))?;
        let mut lat = Vec::new();
        let mut ratio = Vec::new();
        for &b in &self.batch_sizes {
            progress.start(&format!("verify {name}: latency at batch {b}"), 0);
            let l = latency::measure(&mut [&mut self.original, &mut judge], b, 1, &self.cfg)?;
            ratio.push((b, l[1].median_ms / l[0].median_ms));
            lat.push(l[1].clone());
        }
        progress.finish();
        let figures = (acc.as_ref().map(|a| a.top1), acc.as_ref().map(|a| a.samples), Some(agreement));
        Ok(measured_row(step, kind, model, bytes, figures, lat, ratio))
    }
}

/// Runs a pipeline. Stages come from `registry`.
pub fn run(
    p: &Pipeline,
    registry: &Registry,
    opts: &RunOptions,
    progress: &mut dyn Progress,
) -> Result<RunOutcome, PipelineError> {
    let f = &p.file;
    let model_path = &f.pipeline.model;
    if !model_path.exists() {
        return Err(missing(p, "pipeline.model", model_path));
    }
    // Build every stage before anything runs: unknown kinds and bad parameters fail now.
    let mut stages: Vec<Box<dyn Stage>> = Vec::new();
    for i in 0..f.stage.len() {
        let built =
            if p.kind(i) == "plugin" { plugin_stage(&p.params(i)) } else { registry.build(p.kind(i), &p.params(i)) };
        let stage = built.map_err(|source| PipelineError::Stage {
            pipeline: p.path.clone(),
            index: i + 1,
            kind: p.kind(i).to_string(),
            location: p.stage_location(i),
            source: Box::new(source),
        })?;
        stages.push(stage);
    }
    let input_bytes = std::fs::read(model_path).map_err(|e| PipelineError::io(model_path, e))?;
    let original = Model::load(model_path)?;
    // The original's one export: its judge, its size and the stages use these bytes.
    let original_bytes = original.to_bytes();
    let spec = InputSpec { shape: f.verify.input_shape.clone(), ..InputSpec::default() };
    let original_judge = Judge::from_bytes("original", &original_bytes, &spec)?;
    let data = load_data(p, original_judge.sample_shape())?;
    if opts.dry_run {
        info!(stages = stages.len(), "dry run: the pipeline is valid");
        return Ok(RunOutcome {
            output: f.pipeline.output.clone(),
            report: Report {
                pipeline: f.pipeline.name.clone(),
                model: model_path.display().to_string(),
                seed: f.pipeline.seed,
                data: data.as_ref().map(|d| d.label.clone()),
                rows: Vec::new(),
            },
            resumed: 0,
        });
    }
    let out = &f.pipeline.output;
    claim_output(p, out, opts.force)?;

    let mut verifier = Verifier {
        original: original_judge,
        reference: None,
        data: data.as_ref(),
        spec,
        cfg: LatencyConfig { min_runs: 20, max_runs: 2000, min_seconds: 0.5, max_seconds: 5.0 },
        batch_sizes: if f.verify.latency { f.verify.batch_sizes.clone() } else { Vec::new() },
        random_batches: f.verify.random_batches.max(1),
        seed: f.pipeline.seed,
    };
    let mut report = Report {
        pipeline: f.pipeline.name.clone(),
        model: model_path.display().to_string(),
        seed: f.pipeline.seed,
        data: data.as_ref().filter(|d| d.test.is_some()).map(|d| d.label.clone()),
        rows: Vec::new(),
    };
    // Canonical text of the tables (JSON: keys sorted, no formatting of the file's own).
    let head =
        serde_json::to_string(&(&f.pipeline, &f.data, &f.verify)).map_err(|e| PipelineError::Other(e.to_string()))?;
    let mut hash = sha(&[&input_bytes, head.as_bytes(), CODE_VERSION.as_bytes(), build_identity().as_bytes()]);
    let mut base = verifier.original_row(&original, &original_bytes, progress)?;
    base.hash = hash.clone();
    report.rows.push(base);

    let mut model = original.clone();
    // The encoding of `model`, when the run holds it (not after resuming from a checkpoint).
    let mut model_bytes: Option<Vec<u8>> = None;
    let mut model_is_original = true;
    let mut resumed = 0;
    let mut resuming = true;
    for (i, stage) in stages.iter().enumerate() {
        let step = i + 1;
        // a plugin's stage shows its own kind (`fold-batchnorm`), not `plugin`
        let kind = stage.kind().to_string();
        let table = serde_json::to_string(&f.stage[i]).map_err(|e| PipelineError::Other(e.to_string()))?;
        hash = sha(&[hash.as_bytes(), table.as_bytes()]);
        let name = checkpoint_name(step, &kind);
        let onnx_path = out.join("stages").join(format!("{name}.onnx"));
        let json_path = out.join("stages").join(format!("{name}.json"));
        resuming &= opts.from_stage.is_none_or(|from| step < from);
        if resuming {
            let done = std::fs::read_to_string(&json_path).ok().and_then(|t| serde_json::from_str::<Row>(&t).ok());
            match done {
                Some(row) if row.hash == hash && onnx_path.exists() => {
                    model = Model::load(&onnx_path)?;
                    (model_bytes, model_is_original) = (None, false);
                    info!(step, kind = %kind, "resumed from checkpoint {}", onnx_path.display());
                    progress.start(&format!("stage {step}/{}: {kind} (resumed from checkpoint)", stages.len()), 0);
                    progress.finish();
                    report.rows.push(row);
                    resumed += 1;
                    continue;
                }
                Some(_) => warn!(step, kind = %kind, "checkpoint is from a different pipeline or input: rerunning"),
                None => {}
            }
            resuming = false;
        }
        let span = info_span!("stage", step, kind = %kind);
        let _enter = span.enter();
        progress.start(&format!("stage {step}/{}: {kind}", stages.len()), 0);
        let scratch = out.join("scratch");
        std::fs::create_dir_all(&scratch).map_err(|e| PipelineError::io(&scratch, e))?;
        let started = Instant::now();
        let mut cx = StageCx {
            pipeline: f.pipeline.name.clone(),
            index: i,
            train: data.as_ref().and_then(|d| d.train.as_ref()).map(|d| d as &dyn Dataset),
            test: data.as_ref().and_then(|d| d.test.as_ref()).map(|d| d as &dyn Dataset),
            original: &original,
            seed: shrink_data::derive_seed(f.pipeline.seed, step as u64),
            progress,
            scratch: scratch.clone(),
            output_dir: out.clone(),
            encoded: Encoded {
                original: Some(&original_bytes),
                model: if model_is_original { Some(&original_bytes) } else { model_bytes.as_deref() },
            },
        };
        let stage_report = stage.run(&mut model, &mut cx).map_err(|source| PipelineError::Stage {
            pipeline: p.path.clone(),
            index: step,
            kind: kind.clone(),
            location: String::new(),
            source: Box::new(source),
        })?;
        let seconds = started.elapsed().as_secs_f64();
        for w in &stage_report.warnings {
            warn!(step, kind = %kind, "{w}");
        }
        let _ = std::fs::remove_dir_all(&scratch);
        model.graph.verify().map_err(|source| PipelineError::StageBug {
            index: step,
            kind: kind.clone(),
            source: Box::new(source),
        })?;
        model.source = None;
        // This model's one export: checkpoint, judge and size use these bytes.
        let bytes = model.to_bytes();
        write_model(&onnx_path, &model, &bytes)?;
        let mut row = verifier.row(step, &kind, &model, &bytes, progress)?;
        row.stage = Some(stage_report);
        row.seconds = seconds;
        row.hash = hash.clone();
        info!(step, kind = %kind, accuracy = ?row.accuracy, bytes = row.size.onnx_bytes, "stage done");
        write(
            &json_path,
            serde_json::to_string_pretty(&row).map_err(|e| PipelineError::Other(e.to_string()))?.as_bytes(),
        )?;
        report.rows.push(row);
        write_reports(out, &report, false)?;
        (model_bytes, model_is_original) = (Some(bytes), false);
    }
    let final_path = out.join("model.onnx");
    match (model_is_original, &model_bytes) {
        (true, _) => write_model(&final_path, &model, &original_bytes)?,
        (false, Some(bytes)) => write_model(&final_path, &model, bytes)?,
        (false, None) => {
            model.source = None;
            model.save(&final_path)?;
        }
    }
    write_reports(out, &report, true)?;
    if let (Some(limit), Some(before), Some(after)) =
        (f.verify.max_accuracy_drop, report.rows[0].accuracy, report.rows.last().and_then(|r| r.accuracy))
        && before - after > limit
    {
        return Err(PipelineError::AccuracyDrop { before, after, drop: before - after, limit, output: out.clone() });
    }
    Ok(RunOutcome { output: out.clone(), report, resumed })
}

/// `kind = "plugin"`: `path` (the shared library), `stage` (one of its kinds),
/// `params` (a table handed to the plugin as TOML text).
fn plugin_stage(params: &toml::Table) -> Result<Box<dyn Stage>, shrink_stage::StageError> {
    use shrink_stage::StageError;
    for k in params.keys() {
        if !matches!(k.as_str(), "path" | "stage" | "params") {
            return Err(StageError::param("plugin", k, "unknown parameter (expected path, stage, params)"));
        }
    }
    let get = |k: &str| -> Result<&str, StageError> {
        params.get(k).and_then(|v| v.as_str()).ok_or_else(|| StageError::param("plugin", k, "missing (a string)"))
    };
    let path = Path::new(get("path")?);
    let kind = get("stage")?;
    let inner = match params.get("params") {
        None => toml::Table::new(),
        Some(toml::Value::Table(t)) => t.clone(),
        Some(_) => return Err(StageError::param("plugin", "params", "must be a table")),
    };
    let plugin = crate::plugin::Plugin::load(path).map_err(|e| StageError::param("plugin", "path", e.to_string()))?;
    plugin.stage(kind, &inner)
}

fn write_reports(out: &Path, report: &Report, svg: bool) -> Result<(), PipelineError> {
    let json = serde_json::to_string_pretty(report).map_err(|e| PipelineError::Other(e.to_string()))?;
    write(&out.join("report.json"), json.as_bytes())?;
    write(&out.join("report.md"), report.markdown().as_bytes())?;
    if svg {
        let svg = report.svg().map_err(|e| PipelineError::Other(format!("drawing report.svg: {e}")))?;
        write(&out.join("report.svg"), svg.as_bytes())?;
    }
    Ok(())
}

/// A report row of what tract measured for `model` (encoded as `bytes`):
/// `(accuracy, samples, agreement)`, latencies and their ratios to the original's.
fn measured_row(
    step: usize,
    kind: &str,
    model: &Model,
    bytes: &[u8],
    (accuracy, samples, agreement): (Option<f64>, Option<u64>, Option<AgreementReport>),
    latency: Vec<LatencyReport>,
    latency_ratio: Vec<(usize, f64)>,
) -> Row {
    Row {
        step,
        kind: kind.to_string(),
        accuracy,
        samples,
        agreement,
        nodes: model.graph.ops().len(),
        size: size_of_encoded(model, bytes),
        latency,
        latency_ratio,
        stage: None,
        seconds: 0.0,
        hash: String::new(),
    }
}
