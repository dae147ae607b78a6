//! `shrink eval` and `shrink compare`: tract measures accuracy, agreement,
//! latency and size, for one model or two side by side (in one run, interleaved).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use shrink_data::{Dataset, FolderOptions, InMemoryDataset, Layout, Preprocess, Split};
use shrink_graph::Model;
use shrink_verify::{
    CompareReport, InputSpec, Judge, LatencyConfig, LatencyReport, VerifyReport, agreement_on_random, evaluate,
    latency, size_of_encoded,
};

use crate::info::group;

/// Where the data comes from and how it is measured; shared by `eval` and `compare`.
#[derive(Debug, Args)]
pub(crate) struct EvalArgs {
    /// Labelled data: a builtin dataset name (`mnist`, `fashion-mnist`, `cifar10`); an
    /// images file (IDX, IDX.gz or .npy, with --labels; or .npz, see --npz-keys),
    /// read as [N, C, H, W] (see --channels-last); or a folder of images,
    /// FOLDER/<class>/*.png|jpg|jpeg, whose sorted class names give labels 0, 1, ...
    /// (torchvision's ImageFolder; see --resize and --crop). Without it,
    /// agreement and latency are measured on seeded random inputs.
    #[arg(long, value_name = "NAME|PATH")]
    data: Option<String>,
    /// The labels file for an images file given to --data (IDX, IDX.gz or .npy).
    #[arg(long, value_name = "PATH")]
    labels: Option<PathBuf>,
    /// The images and labels arrays of an .npz given to --data.
    #[arg(long, value_name = "X,Y", default_value = "x,y")]
    npz_keys: String,
    /// The images array given to --data is channels last, [N, H, W, C]
    /// (numpy's CIFAR-10, Keras datasets).
    #[arg(long)]
    channels_last: bool,
    /// For an image folder: scale each image's shorter side to N pixels,
    /// bilinear (torchvision's Resize(N)).
    #[arg(long, value_name = "N")]
    resize: Option<u32>,
    /// For an image folder: then cut the centred NxN square (CenterCrop(N)).
    /// Without --resize and --crop all images must have one size.
    #[arg(long, value_name = "N")]
    crop: Option<u32>,
    /// Which split of a builtin dataset.
    #[arg(long, value_enum, default_value = "test")]
    split: SplitArg,
    /// Only the first N samples.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Do not divide raw values by 255 (for float data already scaled).
    #[arg(long)]
    no_scale: bool,
    /// Subtract these means after scaling (one value, or one per channel).
    #[arg(long, value_delimiter = ',', value_name = "M,...")]
    mean: Vec<f32>,
    /// Divide by these standard deviations after the mean (one, or one per channel).
    #[arg(long, value_delimiter = ',', value_name = "S,...")]
    std: Vec<f32>,
    /// The model's full input shape, batch first (overrides what the model declares).
    #[arg(long, value_delimiter = ',', value_name = "N,C,H,W")]
    input_shape: Option<Vec<usize>>,
    /// Give a symbolic input dimension a value (repeatable), e.g. `--set-dim height=224`.
    #[arg(long, value_name = "NAME=N")]
    set_dim: Vec<String>,
    /// Batch size of the accuracy pass and of the second latency measurement.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Batches (of --batch) of random inputs for agreement when there is no
    /// --data. Default: as many samples as fit about 5·10¹⁰ multiply-accumulates
    /// of the first model, between 16 and 8 batches (8 batches of 64 for an
    /// MNIST model, 27 samples for a ResNet-18 at 224×224, 16 for a
    /// ResNet-50), so that a data-free comparison of a large model stays short.
    #[arg(long, value_name = "N")]
    random_batches: Option<usize>,
    /// Skip the latency measurement.
    #[arg(long)]
    no_latency: bool,
    /// Seconds the latency measurement may take in all. Batch 1 is always
    /// measured; a configuration whose estimate (from batch 1: one warm-up
    /// and three timed rounds of every model) does not fit what is left is
    /// skipped, and the output says so. The longer the budget, the more runs
    /// each median takes (at least 30 and 1 s while it fits, at least 3).
    #[arg(long, value_name = "SECONDS", default_value_t = 15.0, value_parser = seconds)]
    latency_budget: f64,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SplitArg {
    Train,
    Test,
}

fn input_spec(args: &EvalArgs) -> anyhow::Result<InputSpec> {
    let mut dims = HashMap::new();
    for d in &args.set_dim {
        let (k, v) = d.split_once('=').with_context(|| format!("--set-dim `{d}`: expected NAME=N"))?;
        let v: usize = v.parse().with_context(|| format!("--set-dim `{d}`: `{v}` is not a number"))?;
        dims.insert(k.to_string(), v);
    }
    Ok(InputSpec { shape: args.input_shape.clone(), dims })
}

/// An ONNX file, or a `.shrink` file unpacked in memory.
fn load_model(path: &Path) -> anyhow::Result<Model> {
    crate::pack::load_model(path)
}

/// Loads the dataset laid out for a model whose samples have `sample` shape.
fn load_data(args: &EvalArgs, sample: &[usize]) -> anyhow::Result<Option<(String, InMemoryDataset)>> {
    let Some(data) = &args.data else { return Ok(None) };
    let pre = Preprocess {
        scale: !args.no_scale,
        mean: args.mean.clone(),
        std: args.std.clone(),
        layout: Layout::for_sample(sample),
    };
    let split = match args.split {
        SplitArg::Train => Split::Train,
        SplitArg::Test => Split::Test,
    };
    let path = Path::new(data);
    let folder = path.is_dir();
    if !folder && (args.resize.is_some() || args.crop.is_some()) {
        bail!("--resize and --crop are for a folder of images; --data {data} is not a folder");
    }
    if folder && args.channels_last {
        bail!("--channels-last is for an images array; --data {data} is a folder");
    }
    let ds = if shrink_data::BUILTIN.contains(&data.as_str()) && !path.exists() {
        let label = format!("{data} {}", if matches!(split, Split::Test) { "test" } else { "train" });
        return Ok(Some((label, shrink_data::load_builtin(data, split, &pre)?)));
    } else if folder {
        let options = FolderOptions { resize: args.resize, crop: args.crop };
        shrink_data::load_image_folder(path, &options, &pre)?
    } else {
        let (x, y) = if path.extension().is_some_and(|e| e == "npz") {
            let (x, y) = args.npz_keys.split_once(',').context("--npz-keys: expected X,Y")?;
            (shrink_data::read_npz_array(path, x)?, shrink_data::read_npz_array(path, y)?)
        } else {
            let Some(labels) = &args.labels else {
                bail!(
                    "--data {data}: not a builtin dataset ({}) nor a folder; an images file needs --labels",
                    shrink_data::BUILTIN.join(", ")
                )
            };
            (shrink_data::read_array(path)?, shrink_data::read_array(labels)?)
        };
        let x = if args.channels_last { x.nhwc_to_nchw()? } else { x };
        InMemoryDataset::new(x, y, None, &pre)?
    };
    Ok(Some((data.clone(), ds)))
}

fn bar(len: usize, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} samples ({per_sec}, eta {eta})")
            .expect("a valid template"),
    );
    pb.set_message(what.to_string());
    pb
}

/// A number of seconds: finite and not negative.
fn seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Ok(s),
        Ok(_) => Err(format!("{text} is not a number of seconds ≥ 0")),
        Err(e) => Err(e.to_string()),
    }
}

/// Multiply-accumulates one model may spend on random inputs by default.
const RANDOM_MACS_BUDGET: f64 = 5e10;

/// The default agreement run on random inputs for `model`: (batches, batch
/// size). As many samples as fit [`RANDOM_MACS_BUDGET`], at least 16 and at
/// most 8 batches of `batch` (8 batches when the MACs are unknown); fewer
/// than `batch` samples run as one smaller batch.
fn default_random_run(model: &Model, batch: usize) -> (usize, usize) {
    let batch = batch.max(1);
    let macs = shrink_graph::summarize(model).macs as f64;
    if macs <= 0.0 {
        return (8, batch);
    }
    let samples = ((RANDOM_MACS_BUDGET / macs).floor() as usize).clamp(16, 8 * batch);
    if samples < batch { (1, samples) } else { (samples / batch, batch) }
}

/// Measures one or two models; the first is the reference for agreement.
fn measure(paths: &[&Path], args: &EvalArgs) -> anyhow::Result<(Vec<VerifyReport>, Option<String>)> {
    let spec = input_spec(args)?;
    let models: Vec<Model> = paths.iter().map(|p| load_model(p)).collect::<anyhow::Result<_>>()?;
    // one export per model: its judge and its size read the same bytes
    let bytes: Vec<Vec<u8>> = models.iter().map(Model::to_bytes).collect();
    let mut judges: Vec<Judge> = paths
        .iter()
        .zip(&bytes)
        .map(|(p, b)| Judge::from_bytes(&p.display().to_string(), b, &spec))
        .collect::<Result<_, _>>()?;
    let data = load_data(args, judges[0].sample_shape())?;
    let mut refs: Vec<&mut Judge> = judges.iter_mut().collect();
    let mut reports: Vec<VerifyReport> = paths
        .iter()
        .zip(models.iter().zip(&bytes))
        .zip(refs.iter())
        .map(|((p, (m, b)), j)| VerifyReport {
            model: p.display().to_string(),
            input_shape: j.input_shape(args.batch),
            size: size_of_encoded(m, b),
            accuracy: None,
            agreement: None,
            latency: Vec::new(),
            latency_skipped: Vec::new(),
        })
        .collect();
    let mut data_label = None;
    match &data {
        Some((label, ds)) => {
            let total = args.limit.map_or(ds.len(), |l| l.min(ds.len()));
            let pb = bar(total, "accuracy");
            let res = evaluate(&mut refs, ds, args.batch, args.limit, &mut |done, _| pb.set_position(done as u64))?;
            pb.finish_and_clear();
            for (k, r) in reports.iter_mut().enumerate() {
                r.accuracy = Some(res.accuracy[k].clone());
                r.agreement = res.agreement[k].clone();
            }
            data_label = Some(label.clone());
        }
        None if refs.len() > 1 => {
            let (batches, batch) = match args.random_batches {
                Some(n) => (n, args.batch),
                None => default_random_run(&models[0], args.batch),
            };
            let pb = bar(batches * batch, "agreement on random inputs");
            let agree = agreement_on_random(&mut refs, batch, batches, 7, &mut |done, _| pb.set_position(done as u64))?;
            pb.finish_and_clear();
            for (r, a) in reports.iter_mut().zip(agree) {
                r.agreement = a;
            }
        }
        None => {}
    }
    if !args.no_latency {
        let mut configs = vec![(1, 1), (args.batch, 1)];
        let cores = latency::all_cores();
        if cores > 1 {
            configs.extend([(1, cores), (args.batch, cores)]);
        }
        configs.dedup();
        let pb = ProgressBar::new(configs.len() as u64);
        pb.set_style(ProgressStyle::with_template("latency {bar:40} {pos}/{len} {msg}").expect("a valid template"));
        let started = std::time::Instant::now();
        // Σ over the models of the batch-1 single-thread median, in seconds: the estimate's unit.
        let mut round_b1: Option<f64> = None;
        for (k, &(batch, threads)) in configs.iter().enumerate() {
            let left = args.latency_budget - started.elapsed().as_secs_f64();
            let plan = plan_latency(round_b1, batch, left, configs.len() - k);
            match plan {
                Err(reason) => {
                    let note = format!("batch {batch}, {threads} thread(s): not measured, {reason}");
                    for r in reports.iter_mut() {
                        r.latency_skipped.push(note.clone());
                    }
                }
                Ok(cfg) => {
                    pb.set_message(format!("batch {batch}, {threads} thread(s)"));
                    let lat = latency::measure(&mut refs, batch, threads, &cfg)?;
                    if (batch, threads) == (1, 1) {
                        round_b1 = Some(lat.iter().map(|l| l.median_ms / 1e3).sum());
                    }
                    for (r, l) in reports.iter_mut().zip(lat) {
                        r.latency.push(l);
                    }
                }
            }
            pb.inc(1);
        }
        pb.finish_and_clear();
    }
    Ok((reports, data_label))
}

/// Rounds a latency configuration costs at the least: one warm-up, three timed.
const LATENCY_MIN_ROUNDS: f64 = 4.0;

/// How to measure one latency configuration within `left` seconds of the
/// budget, with `remaining` configurations (this one included) still to go;
/// `round_b1` is one batch-1 round of every model (seconds), known after the
/// first configuration. The estimate of a round at `batch` is `batch ·
/// round_b1` (threads are not counted on to help). Batch 1 before anything
/// is known is always measured. `Err` says why a configuration is skipped.
fn plan_latency(round_b1: Option<f64>, batch: usize, left: f64, remaining: usize) -> Result<LatencyConfig, String> {
    let share = (left / remaining.max(1) as f64).max(0.0);
    let base = LatencyConfig::default();
    let Some(round) = round_b1 else {
        return Ok(LatencyConfig { max_seconds: share.min(base.max_seconds), ..base });
    };
    let est = round * batch as f64;
    let need = LATENCY_MIN_ROUNDS * est;
    if need > left.max(0.0) {
        return Err(format!(
            "one round of the models is estimated at {est:.1} s (from batch 1), so at least {need:.0} s, \
             more than the {:.0} s left of --latency-budget",
            left.max(0.0)
        ));
    }
    // Time for the warm-up round comes out of the share; at least 3 timed runs each.
    let max_seconds = (share - est).max(0.0).min(base.max_seconds);
    Ok(LatencyConfig { max_seconds, min_seconds: base.min_seconds.min(max_seconds), ..base })
}

pub(crate) fn run_eval(model: &Path, args: &EvalArgs) -> anyhow::Result<()> {
    let (mut reports, data) = measure(&[model], args)?;
    let r = reports.remove(0);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", render_eval(&r, data.as_deref()));
    }
    Ok(())
}

pub(crate) fn run_compare(a: &Path, b: &Path, args: &EvalArgs) -> anyhow::Result<()> {
    let (mut reports, data) = measure(&[a, b], args)?;
    let rb = reports.pop().expect("two reports");
    let ra = reports.pop().expect("two reports");
    let c = CompareReport::new(ra, rb);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&c)?);
    } else {
        print!("{}", render_compare(&c, data.as_deref()));
    }
    Ok(())
}

fn pct(x: f64) -> String {
    format!("{:.2} %", x * 100.0)
}

fn latency_label(l: &LatencyReport) -> String {
    format!("latency b{} t{}", l.batch, l.threads)
}

fn render_eval(r: &VerifyReport, data: Option<&str>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "model      {}", r.model);
    let _ = writeln!(out, "input      {:?}", r.input_shape);
    if let Some(a) = &r.accuracy {
        let top5 = a.top5.map(|t| format!(", top-5 {}", pct(t))).unwrap_or_default();
        let _ = writeln!(
            out,
            "accuracy   top-1 {} ({} / {}){top5}  on {}",
            pct(a.top1),
            a.top1_correct,
            a.samples,
            data.unwrap_or("?")
        );
    } else {
        let _ = writeln!(out, "accuracy   not measured (no --data)");
    }
    let s = &r.size;
    let _ = writeln!(
        out,
        "size       {} bytes ONNX, {} params ({} non-zero), {} bytes of weights",
        group(s.onnx_bytes),
        group(s.params),
        group(s.nonzero_params),
        group(s.weight_bytes)
    );
    for l in &r.latency {
        let _ = writeln!(
            out,
            "{:<18} median {:.3} ms, p90 {:.3} ms ({} runs)",
            latency_label(l),
            l.median_ms,
            l.p90_ms,
            l.runs
        );
    }
    for note in &r.latency_skipped {
        let _ = writeln!(out, "latency            {note}");
    }
    out
}

fn render_compare(c: &CompareReport, data: Option<&str>) -> String {
    let (a, b, r) = (&c.a, &c.b, &c.ratios);
    let mut rows: Vec<[String; 4]> = vec![["".into(), "A".into(), "B".into(), "B/A".into()]];
    let ratio = |x: f64| format!("{x:.2}x");
    rows.push(["ONNX bytes".into(), group(a.size.onnx_bytes), group(b.size.onnx_bytes), ratio(r.onnx_bytes)]);
    rows.push(["params".into(), group(a.size.params), group(b.size.params), ratio(r.params)]);
    rows.push([
        "non-zero params".into(),
        group(a.size.nonzero_params),
        group(b.size.nonzero_params),
        ratio(r.nonzero_params),
    ]);
    rows.push(["weight bytes".into(), group(a.size.weight_bytes), group(b.size.weight_bytes), ratio(r.weight_bytes)]);
    if let (Some(x), Some(y), Some(d)) = (&a.accuracy, &b.accuracy, r.top1_delta) {
        rows.push(["top-1 accuracy".into(), pct(x.top1), pct(y.top1), format!("{:+.2} pp", d * 100.0)]);
    }
    for (la, (batch, threads, q)) in a.latency.iter().zip(&r.latency) {
        let lb = b.latency.iter().find(|l| l.batch == *batch && l.threads == *threads);
        rows.push([
            latency_label(la),
            format!("{:.3} ms", la.median_ms),
            lb.map(|l| format!("{:.3} ms", l.median_ms)).unwrap_or_default(),
            ratio(*q),
        ]);
    }
    let widths: Vec<usize> = (0..4).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    let _ = writeln!(out, "A  {}\nB  {}", a.model, b.model);
    if let Some(d) = data {
        let _ = writeln!(out, "data  {d}");
    }
    out.push('\n');
    for row in &rows {
        let line = format!(
            "{:<w0$}  {:>w1$}  {:>w2$}  {:>w3$}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    for note in &a.latency_skipped {
        let _ = writeln!(out, "latency {note}");
    }
    if let Some(g) = &b.agreement {
        let _ = writeln!(
            out,
            "\nagreement of B with A: top-1 {} of {} samples{}, max |logit diff| {:.3e}, mean {:.3e}",
            pct(g.top1_agreement),
            g.samples,
            if data.is_none() { " (random inputs)" } else { "" },
            g.max_abs_diff,
            g.mean_abs_diff
        );
    }
    out
}

#[cfg(test)]
mod tests {
    /// 8 batches of 64 for an MNIST MLP; fewer as a sample's work grows, down
    /// to one smaller batch of at least 16 samples.
    #[test]
    fn random_run_default_follows_the_model_size() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models");
        let lenet = shrink_graph::Model::load(root.join("lenet-300-100.onnx")).unwrap();
        // 266,200 MACs a sample: 187,828 samples fit the budget
        assert_eq!(super::default_random_run(&lenet, 64), (8, 64));
        assert_eq!(super::default_random_run(&lenet, 50_000), (3, 50_000));
        assert_eq!(super::default_random_run(&lenet, 1_000_000), (1, 187_828));
        let resnet = shrink_graph::Model::load(root.join("resnet20-cifar.onnx")).unwrap();
        let macs = shrink_graph::summarize(&resnet).macs as f64;
        let fit = (5e10 / macs) as usize;
        // about 41M MACs a sample: more than 8 batches of 64 fit, fewer than 8 of 256
        assert!((512..2048).contains(&fit), "{fit}");
        assert_eq!(super::default_random_run(&resnet, 64), (8, 64));
        assert_eq!(super::default_random_run(&resnet, 256), (fit / 256, 256));
    }

    #[test]
    fn latency_budget_must_be_seconds() {
        assert_eq!(super::seconds("2.5"), Ok(2.5));
        assert!(super::seconds("-1").unwrap_err().contains("-1 is not a number of seconds ≥ 0"));
        assert!(super::seconds("nan").unwrap_err().contains("nan is not a number of seconds"));
        assert!(super::seconds("soon").is_err());
    }

    /// Batch 1 is measured first within its share; a configuration whose
    /// four rounds would not fit what is left is skipped with the reason; the
    /// timed part of a share leaves out one warm-up round.
    #[test]
    fn latency_budget_plans_and_skips() {
        use super::plan_latency;
        let first = plan_latency(None, 1, 15.0, 4).unwrap();
        assert_eq!(first.max_seconds, 3.75);
        // a ResNet-18 at 224: two models at ~0.1 s a batch-1 run, batch 64 ≈ 12.8 s a round
        let why = plan_latency(Some(0.2), 64, 12.0, 3).unwrap_err();
        assert!(why.contains("12.8 s") && why.contains("--latency-budget"), "{why}");
        // batch 1 again fits: 4 × 0.2 s ≤ 10 s left
        let again = plan_latency(Some(0.2), 1, 10.0, 2).unwrap();
        assert!((again.max_seconds - 4.8).abs() < 1e-9, "{}", again.max_seconds);
        // an MNIST model: everything fits, capped at the default 10 s
        let small = plan_latency(Some(0.0004), 64, 100.0, 3).unwrap();
        assert_eq!((small.max_seconds, small.min_seconds, small.min_runs), (10.0, 1.0, 30));
        // nothing left: even batch 1 of a fast model is skipped once the budget is spent
        assert!(plan_latency(Some(0.0004), 1, -1.0, 1).is_err());
    }
}
