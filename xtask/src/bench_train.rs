//! `cargo xtask bench train`: trainer speed (steps/s at batch 64, 1 and 2
//! threads, peak memory) for LeNet-300-100 and LeNet-5, with PyTorch's speed
//! measured in the same invocation when `import torch` works (the fixtures
//! venv, or the system python). Writes its section of BENCHMARKS.md.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::{cache_dir, project_root};

const MODELS: &[&str] = &["lenet-300-100", "lenet-5"];
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
    for model in MODELS {
        for &threads in THREADS {
            let file = root.join(format!("fixtures/models/{model}.onnx"));
            let line = output_line(
                Command::new(&bin).current_dir(&root).arg(&file).env("RAYON_NUM_THREADS", threads.to_string()),
            )?;
            let ours = crate::num(&line, "steps_per_s").context("steps_per_s")?;
            let rss = crate::num(&line, "peak_rss_mb").unwrap_or(f64::NAN);
            let torch = match &python {
                Some(py) => {
                    let l = output_line(Command::new(py).arg(&script).args([
                        "--model",
                        model,
                        "--threads",
                        &threads.to_string(),
                    ]))?;
                    crate::num(&l, "steps_per_s")
                }
                None => None,
            };
            println!(
                "{model:<14} threads {threads}: shrink-train {ours:8.1} steps/s, peak {rss:6.1} MB{}",
                torch.map(|t| format!(", PyTorch {t:8.1} steps/s, ratio {:.2}", ours / t)).unwrap_or_default()
            );
            rows.push((model, threads, ours, rss, torch));
        }
    }
    write_markdown(&root.join("BENCHMARKS.md"), &rows, python.is_some())
}

type Row<'a> = (&'a &'a str, usize, f64, f64, Option<f64>);

fn write_markdown(path: &Path, rows: &[Row<'_>], torch: bool) -> anyhow::Result<()> {
    let mut md = String::from("## Trainer speed\n\n`cargo xtask bench train`\n\n");
    md.push_str(&format!("{}. SGD (momentum 0.9), batch 64, MNIST training set, 200 timed steps after 20 warm-up steps; shrink-train is burn 0.22 (flex CPU backend, autodiff) over the fixture ONNX models, release build.{}\n\n",
        crate::bench::machine_line(),
        if torch { " PyTorch: the same networks, same optimizer and batch, in the same invocation (xtask/scripts/bench_train_torch.py)." } else { " PyTorch was not importable, so its column is empty." }));
    md.push_str("| model | threads | shrink-train steps/s | peak RSS MB | PyTorch steps/s | ratio |\n|---|---|---|---|---|---|\n");
    for (model, threads, ours, rss, t) in rows {
        md.push_str(&format!(
            "| {model} | {threads} | {ours:.1} | {rss:.0} | {} | {} |\n",
            t.map(|t| format!("{t:.1}")).unwrap_or_else(|| "-".into()),
            t.map(|t| format!("{:.2}", ours / t)).unwrap_or_else(|| "-".into())
        ));
    }
    crate::bench::write_section(path, "train", &md)
}
