//! `shrink infer DIR --data NAME`: runs an early-exit model segment by
//! segment in tract, one sample at a time (batch 1), with the thresholds of
//! DIR/early-exit.toml; reports accuracy, the exit histogram and the latency
//! (mean, p90) against the full model measured in the same run, interleaved
//! sample by sample (order alternating), after a warm-up of both. With
//! `--repeat R` each sample is timed R times per model and the fastest kept.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use serde::Serialize;
use shrink_data::{Dataset, Layout, Preprocess, Split};
use shrink_early_exit::{Manifest, Policy};
use shrink_graph::Model;
use shrink_verify::{InputSpec, Judge, Segmented};

#[derive(Debug, clap::Args)]
pub(crate) struct InferArgs {
    /// The segmented model's folder (a pipeline's OUTPUT/early-exit/, holding early-exit.toml).
    dir: PathBuf,
    /// A builtin dataset (mnist, fashion-mnist, cifar10); its test split is used.
    #[arg(long)]
    data: String,
    /// Only the first N test samples.
    #[arg(long)]
    limit: Option<usize>,
    /// Subtract these means after scaling (one value, or one per channel),
    /// instead of those the manifest recorded from the pipeline's
    /// `[data.preprocess]`.
    #[arg(long, value_delimiter = ',', value_name = "M,...")]
    mean: Option<Vec<f32>>,
    /// Divide by these standard deviations (one, or one per channel), instead
    /// of the manifest's.
    #[arg(long, value_delimiter = ',', value_name = "S,...")]
    std: Option<Vec<f32>>,
    /// Time each sample this many times (both models, order alternating) and
    /// keep each model's fastest: robust to other work on the machine (a
    /// preempted call counts as the fastest of its repeats, not as itself).
    /// 1 times each sample once, as a single user call would see it.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    repeat: u32,
    /// Write the results as JSON to this file too.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// What `shrink infer` measured.
#[derive(Debug, Serialize)]
struct InferReport {
    /// The builtin dataset whose test split was used.
    data: String,
    /// The profile `shrink` was built with: `dev` (debug assertions on; the
    /// workspace's own crates mostly unoptimised, tract optimised) or `release`.
    build: &'static str,
    samples: usize,
    /// Timings per sample and model; each latency figure is the fastest of them.
    repeat: u32,
    policy: Policy,
    thresholds: Vec<f64>,
    /// The input normalisation applied (the manifest's, or the flags').
    mean: Vec<f32>,
    std: Vec<f32>,
    accuracy: f64,
    full_accuracy: f64,
    exit_counts: Vec<usize>,
    mean_ms: f64,
    median_ms: f64,
    p90_ms: f64,
    full_mean_ms: f64,
    full_median_ms: f64,
    full_p90_ms: f64,
    /// mean latency of the segmented model / the full model's.
    latency_ratio: f64,
    /// mean relative MACs of the exits taken (the stage's cost model) on these samples.
    mean_relative_macs: f64,
}

/// Nearest-rank percentile.
fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p * s.len() as f64).ceil() as usize).clamp(1, s.len().max(1));
    s.get(rank - 1).copied().unwrap_or(0.0)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn load(dir: &Path, file: &str) -> anyhow::Result<Model> {
    Model::load(dir.join(file)).with_context(|| format!("{}", dir.join(file).display()))
}

pub(crate) fn run(args: &InferArgs) -> anyhow::Result<()> {
    let m = Manifest::load(&args.dir)?;
    let segs: Vec<Model> = m.segments.iter().map(|s| load(&args.dir, &s.file)).collect::<anyhow::Result<_>>()?;
    let named: Vec<(&str, &Model)> = m.segments.iter().map(|s| s.file.as_str()).zip(segs.iter()).collect();
    let mut segmented = Segmented::new(&named)?;
    let full_model = load(&args.dir, &m.full)?;
    let mut full = Judge::new(&m.full, &full_model, &InputSpec::default())?;
    full.prepare(1)?;
    let sample = segmented.input_shape()[1..].to_vec();
    if sample != full.sample_shape() {
        bail!("the segments take samples of shape {sample:?}, the full model {:?}", full.sample_shape());
    }
    if !shrink_data::BUILTIN.contains(&args.data.as_str()) {
        bail!("--data {}: not a builtin dataset ({})", args.data, shrink_data::BUILTIN.join(", "));
    }
    let recorded = m.preprocess.clone();
    let pre = Preprocess {
        scale: recorded.as_ref().is_none_or(|p| p.scale),
        mean: args.mean.clone().or(recorded.as_ref().map(|p| p.mean.clone())).unwrap_or_default(),
        std: args.std.clone().or(recorded.as_ref().map(|p| p.std.clone())).unwrap_or_default(),
        layout: Layout::for_sample(&sample),
    };
    let data = shrink_data::load_builtin(&args.data, Split::Test, &pre)?;
    let n = args.limit.map_or(data.len(), |l| l.min(data.len()));
    let thresholds = m.thresholds();
    let policy = m.policy;
    let mut leave = |k: usize, logits: &[f32]| policy.exits(logits, thresholds[k]);
    // warm-up: both, 20 samples
    for i in 0..n.min(20) {
        let b = data.batch(&[i])?;
        segmented.run(&b.inputs, &mut leave)?;
        full.logits(&b.inputs, 1)?;
    }
    let (mut seg_ms, mut full_ms) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut counts = vec![0usize; m.segments.len()];
    let (mut correct, mut full_correct, mut macs) = (0usize, 0usize, 0.0f64);
    for i in 0..n {
        let b = data.batch(&[i])?;
        let label = b.labels[0] as usize;
        let mut time_seg = || -> anyhow::Result<(f64, usize, usize)> {
            let t = Instant::now();
            let r = segmented.run(&b.inputs, &mut leave)?;
            let pred = r.argmax();
            Ok((t.elapsed().as_secs_f64() * 1e3, r.exit, pred))
        };
        let mut time_full = || -> anyhow::Result<(f64, usize)> {
            let t = Instant::now();
            let l = full.logits(&b.inputs, 1)?;
            let pred = l.argmax(0);
            Ok((t.elapsed().as_secs_f64() * 1e3, pred))
        };
        let (mut ts, mut tf) = (f64::INFINITY, f64::INFINITY);
        let (mut exit, mut pred, mut fpred) = (0, 0, 0);
        for rep in 0..args.repeat as usize {
            // the order alternates over samples and repeats, so neither model
            // always runs on the caches the other has just warmed
            let ((s, e, p), (f, fp)) = if (i + rep) % 2 == 0 {
                let s = time_seg()?;
                (s, time_full()?)
            } else {
                let f = time_full()?;
                (time_seg()?, f)
            };
            (ts, tf) = (ts.min(s), tf.min(f));
            (exit, pred, fpred) = (e, p, fp);
        }
        seg_ms.push(ts);
        full_ms.push(tf);
        counts[exit] += 1;
        correct += usize::from(pred == label);
        full_correct += usize::from(fpred == label);
        macs += m.segments[exit].relative_cost;
    }
    let r = InferReport {
        data: args.data.clone(),
        build: if cfg!(debug_assertions) { "dev" } else { "release" },
        samples: n,
        repeat: args.repeat,
        policy,
        thresholds: thresholds.clone(),
        mean: pre.mean.clone(),
        std: pre.std.clone(),
        accuracy: correct as f64 / n.max(1) as f64,
        full_accuracy: full_correct as f64 / n.max(1) as f64,
        exit_counts: counts,
        mean_ms: mean(&seg_ms),
        median_ms: pct(&seg_ms, 0.5),
        p90_ms: pct(&seg_ms, 0.9),
        full_mean_ms: mean(&full_ms),
        full_median_ms: pct(&full_ms, 0.5),
        full_p90_ms: pct(&full_ms, 0.9),
        latency_ratio: mean(&seg_ms) / mean(&full_ms).max(1e-12),
        mean_relative_macs: macs / n.max(1) as f64,
    };
    println!(
        "early exit: {} ({} segments, policy {}), {} {} test samples, batch 1, 1 thread{}",
        args.dir.display(),
        m.segments.len(),
        policy.name(),
        n,
        args.data,
        if args.repeat > 1 { format!(", fastest of {} timings per sample", args.repeat) } else { String::new() }
    );
    if !(pre.mean.is_empty() && pre.std.is_empty()) {
        println!(
            "inputs    mean {:?}  std {:?}{}",
            pre.mean,
            pre.std,
            if recorded.is_some() && args.mean.is_none() && args.std.is_none() {
                " (recorded by the stage)"
            } else {
                ""
            }
        );
    }
    println!(
        "accuracy  {:.2} %   full model {:.2} %   drop {:+.2} pp",
        r.accuracy * 100.0,
        r.full_accuracy * 100.0,
        (r.full_accuracy - r.accuracy) * 100.0
    );
    println!("exits     (segment: threshold, count, share, relative MACs)");
    for (k, s) in m.segments.iter().enumerate() {
        let th = s.threshold.map_or("final".to_string(), |t| format!("{t}"));
        println!(
            "  {k}: {th:>10}  {:>6}  {:>6.2} %  {:.3}",
            r.exit_counts[k],
            r.exit_counts[k] as f64 * 100.0 / n.max(1) as f64,
            s.relative_cost
        );
    }
    println!("latency   mean {:.4} ms  median {:.4} ms  p90 {:.4} ms", r.mean_ms, r.median_ms, r.p90_ms);
    println!("full      mean {:.4} ms  median {:.4} ms  p90 {:.4} ms", r.full_mean_ms, r.full_median_ms, r.full_p90_ms);
    println!(
        "ratio     {:.3} (segmented / full, mean); {:.2}x faster; mean relative MACs {:.3}",
        r.latency_ratio,
        1.0 / r.latency_ratio.max(1e-12),
        r.mean_relative_macs
    );
    if let Some(p) = &args.json {
        // temp + rename: a reader never sees half a file
        let tmp = p.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(&r)? + "\n")
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, p).with_context(|| format!("renaming {} to {}", tmp.display(), p.display()))?;
    }
    Ok(())
}
