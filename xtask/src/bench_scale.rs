//! `cargo xtask bench scale`: load, `info`, int8 weight-only quantise and
//! save of a ResNet-50-sized model (the untrained fixture of
//! `cargo xtask fixtures --large`, exported first when missing): the wall
//! time and peak RSS of each step, the median of `RUNS` runs of the release
//! build of shrink-quantize's `scale` example. Writes its section of
//! BENCHMARKS.md, with the targets (load + save under 2 s, peak RSS under 3×
//! the float weights' bytes) marked pass or fail.

use std::path::Path;
use std::process::Command;

use anyhow::Context;

use crate::project_root;

const RUNS: usize = 3;
const STEPS: &[&str] = &["load", "info", "quantize", "save"];
/// Targets: load + save seconds, and the peak RSS over the float weights' bytes.
const MAX_LOAD_SAVE_SECS: f64 = 2.0;
const MAX_PEAK_OVER_WEIGHTS: f64 = 3.0;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// One run's figures: per step (secs, peak MB), and the totals line.
struct Run {
    steps: Vec<(f64, f64)>,
    load_save: f64,
    peak_over_weights: f64,
    weights_bytes: f64,
    saved_bytes: f64,
    hwm_reset: bool,
}

fn parse(stdout: &str) -> anyhow::Result<Run> {
    let mut steps = Vec::new();
    let mut hwm_reset = true;
    for name in STEPS {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("step={name} ")))
            .with_context(|| format!("no `step={name}` line in the output of the scale example"))?;
        let secs = crate::num(line, "secs").with_context(|| format!("step {name}: no secs"))?;
        let peak = crate::num(line, "peak_rss_mb").with_context(|| format!("step {name}: no peak_rss_mb"))?;
        hwm_reset &= line.contains("hwm_reset=yes");
        steps.push((secs, peak));
    }
    let total = stdout.lines().find(|l| l.starts_with("total ")).context("no `total` line")?;
    let get = |k: &str| crate::num(total, k).with_context(|| format!("total line: no {k}"));
    Ok(Run {
        steps,
        load_save: get("load_save_secs")?,
        peak_over_weights: get("peak_over_weights")?,
        weights_bytes: get("weights_bytes")?,
        saved_bytes: get("saved_bytes")?,
        hwm_reset,
    })
}

pub(crate) fn scale() -> anyhow::Result<()> {
    let root = project_root();
    let model = crate::fixtures::large_model(false)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    crate::run_cmd(Command::new(&cargo).current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "shrink-quantize",
        "--example",
        "scale",
    ]))?;
    let bin = crate::plugins::target_dir(&cargo)?.join("release/examples/scale");
    let model_bytes = std::fs::metadata(&model).with_context(|| format!("reading {}", model.display()))?.len();
    let mut runs = Vec::new();
    for i in 0..RUNS {
        let out = Command::new(&bin).arg(&model).output().with_context(|| format!("starting {}", bin.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        anyhow::ensure!(
            out.status.success(),
            "{} {} failed: {}\n{stdout}{}",
            bin.display(),
            model.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let run = parse(&stdout)?;
        let steps: Vec<String> =
            STEPS.iter().zip(&run.steps).map(|(n, (s, m))| format!("{n} {s:.3} s / {m:.0} MB")).collect();
        println!("scale run {}/{RUNS}: {}", i + 1, steps.join(", "));
        runs.push(run);
    }
    write_markdown(&root.join("BENCHMARKS.md"), &runs, model_bytes)
}

fn write_markdown(path: &Path, runs: &[Run], model_bytes: u64) -> anyhow::Result<()> {
    let first = runs.first().context("no run")?;
    let step_median =
        |i: usize, secs: bool| median(runs.iter().map(|r| if secs { r.steps[i].0 } else { r.steps[i].1 }).collect());
    let load_save = median(runs.iter().map(|r| r.load_save).collect());
    let ratio = median(runs.iter().map(|r| r.peak_over_weights).collect());
    let peak = median(runs.iter().map(|r| r.steps.iter().map(|s| s.1).fold(0.0, f64::max)).collect());
    let mb = |b: f64| b / (1 << 20) as f64;
    let verdict = |ok: bool| if ok { "pass" } else { "**fail**" };

    let mut md = String::from("## Scale: a ResNet-50-sized model\n\n`cargo xtask bench scale`\n\n");
    md.push_str(&format!(
        "{}. The model: torchvision's ResNet-50 architecture with seeded random weights (BatchNorm kept), \
         exported by `cargo xtask fixtures --large` (fixtures/gen/resnet50_large.py), {model_bytes} bytes, \
         float weights {:.0} bytes ({:.1} MB). The program: `cargo build --release -p shrink-quantize \
         --example scale`, run {RUNS} times; each figure is the median over the runs. Steps: `load` \
         (`Model::load`: read, decode, import, verify), `info` (`summarize`, what `shrink info` prints), \
         `quantize` (stage `quantize`, `method = \"int8\"`, `form = \"weight-only\"`, no data; BatchNorm folded, \
         first and last layer kept float; then verify), `save` (`Model::save`, atomic write of the \
         quantised model, {:.0} bytes). Peak RSS per step: `VmHWM` after the step, reset to the current RSS \
         before it (`/proc/self/clear_refs`){}.\n\n",
        crate::bench::machine_line(),
        first.weights_bytes,
        mb(first.weights_bytes),
        first.saved_bytes,
        if runs.iter().all(|r| r.hwm_reset) {
            ""
        } else {
            "; **the reset failed here, so a step's figure is the process's peak so far**"
        },
    ));
    md.push_str("| step | wall s | peak RSS MB |\n|---|---|---|\n");
    for (i, name) in STEPS.iter().enumerate() {
        md.push_str(&format!("| {name} | {:.3} | {:.0} |\n", step_median(i, true), step_median(i, false)));
    }
    md.push_str(&format!(
        "\nTargets: load + save {load_save:.3} s (< {MAX_LOAD_SAVE_SECS} s): {}; \
         peak RSS {peak:.0} MB = {ratio:.2}× the float weights (< {MAX_PEAK_OVER_WEIGHTS}×): {}.\n",
        verdict(load_save < MAX_LOAD_SAVE_SECS),
        verdict(ratio < MAX_PEAK_OVER_WEIGHTS),
    ));
    crate::bench::write_section(path, "scale", &md)
}
