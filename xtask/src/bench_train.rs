//! `cargo xtask bench train`: trainer speed (steps/s, 1 and 2 threads, peak
//! memory) for LeNet-300-100 and LeNet-5 at batch 64 and for the CIFAR-10
//! ResNet-20 at batch 128 with BatchNorm in training mode (the seconds of one
//! epoch beside it), with PyTorch's speed measured in the same invocation when
//! `import torch` works (the fixtures venv, or the system python). Writes its
//! section of BENCHMARKS.md.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::{cache_dir, project_root};

/// One timed configuration of a fixture model.
struct Case {
    model: &'static str,
    batch: usize,
    steps: usize,
    warmup: usize,
    /// The trainer's `--batchnorm` (PyTorch trains in `train()` mode either way;
    /// the LeNets have no BatchNorm).
    batchnorm: &'static str,
    /// Training samples in one epoch.
    epoch: usize,
}

const CASES: &[Case] = &[
    Case { model: "lenet-300-100", batch: 64, steps: 200, warmup: 20, batchnorm: "frozen", epoch: 60_000 },
    Case { model: "lenet-5", batch: 64, steps: 200, warmup: 20, batchnorm: "frozen", epoch: 60_000 },
    Case { model: "resnet20-cifar", batch: 128, steps: 20, warmup: 3, batchnorm: "batch", epoch: 50_000 },
];
const THREADS: &[usize] = &[1, 2];

fn output_line(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    anyhow::ensure!(out.status.success(), "{cmd:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines().rev().find(|l| l.contains("steps_per_s=")).map(str::to_string).context("no steps_per_s line")
}

fn torch_python() -> Option<PathBuf> {
    let venv = cache_dir().join("venv-fixtures/bin/python");
    [venv, PathBuf::from("python3")]
        .into_iter()
        .find(|py| Command::new(py).args(["-c", "import torch"]).output().is_ok_and(|o| o.status.success()))
}

pub(crate) fn train() -> anyhow::Result<()> {
    let root = project_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    crate::run_cmd(Command::new(&cargo).current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "shrink-train",
        "--example",
        "bench_train",
    ]))?;
    let bin = crate::plugins::target_dir(&cargo)?.join("release/examples/bench_train");
    let python = torch_python();
    let script = root.join("xtask/scripts/bench_train_torch.py");
    let mut rows = Vec::new();
    for case in CASES {
        let model = case.model;
        let file = root.join(format!("fixtures/models/{model}.onnx"));
        let sizes = [
            "--batch",
            &case.batch.to_string(),
            "--steps",
            &case.steps.to_string(),
            "--warmup",
            &case.warmup.to_string(),
        ]
        .map(String::from);
        for &threads in THREADS {
            let line = output_line(
                Command::new(&bin)
                    .current_dir(&root)
                    .arg(&file)
                    .args(&sizes)
                    .args(["--batchnorm", case.batchnorm])
                    .env("RAYON_NUM_THREADS", threads.to_string()),
            )?;
            let ours = crate::num(&line, "steps_per_s").context("steps_per_s")?;
            let rss = crate::num(&line, "peak_rss_mb").unwrap_or(f64::NAN);
            let torch = match &python {
                Some(py) => {
                    let l = output_line(
                        Command::new(py)
                            .arg(&script)
                            .args(["--model", model, "--threads", &threads.to_string()])
                            .args(&sizes),
                    )?;
                    crate::num(&l, "steps_per_s")
                }
                None => None,
            };
            println!(
                "{model:<14} threads {threads}: shrink-train {ours:8.2} steps/s, peak {rss:6.1} MB{}",
                torch.map(|t| format!(", PyTorch {t:8.2} steps/s, ratio {:.2}", ours / t)).unwrap_or_default()
            );
            rows.push(Row { case, threads, ours, rss, torch });
        }
    }
    write_markdown(&root.join("BENCHMARKS.md"), &rows, python.is_some())
}

struct Row {
    case: &'static Case,
    threads: usize,
    ours: f64,
    rss: f64,
    torch: Option<f64>,
}

fn write_markdown(path: &Path, rows: &[Row], torch: bool) -> anyhow::Result<()> {
    let mut md = String::from("## Trainer speed\n\n`cargo xtask bench train`\n\n");
    md.push_str(&format!("{}. SGD (momentum 0.9); the LeNets at batch 64 on the MNIST training set, 200 timed steps after 20 warm-up steps; ResNet-20 at batch 128 on the CIFAR-10 training set with BatchNorm in training mode (`finetune.batchnorm = \"batch\"`), 20 timed steps after 3; an epoch's seconds are its steps at the measured rate. shrink-train is burn 0.22 (flex CPU backend, autodiff) over the fixture ONNX models, release build.{}\n\n",
        crate::bench::machine_line(),
        if torch { " PyTorch: the same networks, same optimizer and batch, in the same invocation (xtask/scripts/bench_train_torch.py)." } else { " PyTorch was not importable, so its columns are empty." }));
    md.push_str("| model | batch | threads | shrink-train steps/s | epoch s | peak RSS MB | PyTorch steps/s | PyTorch epoch s | ratio |\n|---|---|---|---|---|---|---|---|---|\n");
    let epoch_s = |c: &Case, rate: f64| c.epoch.div_ceil(c.batch) as f64 / rate;
    for r in rows {
        let c = r.case;
        md.push_str(&format!(
            "| {} | {} | {} | {:.2} | {:.0} | {:.0} | {} | {} | {} |\n",
            c.model,
            c.batch,
            r.threads,
            r.ours,
            epoch_s(c, r.ours),
            r.rss,
            r.torch.map(|t| format!("{t:.2}")).unwrap_or_else(|| "-".into()),
            r.torch.map(|t| format!("{:.0}", epoch_s(c, t))).unwrap_or_else(|| "-".into()),
            r.torch.map(|t| format!("{:.2}", r.ours / t)).unwrap_or_else(|| "-".into())
        ));
    }
    md.push_str("\nratio: shrink-train's steps/s over PyTorch's (1 = as fast; below 1 slower).\n");
    crate::bench::write_section(path, "train", &md)
}
