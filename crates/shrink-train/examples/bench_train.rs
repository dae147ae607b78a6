//! Trainer speed on a fixture model: SGD steps per second at a batch size,
//! on a real training set (MNIST for 28x28 grey inputs, CIFAR-10 for 3x32x32
//! ones), after a warm-up; and peak memory.
//!
//! `cargo run --release -p shrink-train --example bench_train -- MODEL [--batch 64] [--steps 200] [--warmup 20] [--batchnorm frozen|batch]`
//! Threads: burn's flex backend runs on rayon; set `RAYON_NUM_THREADS`.
//! Prints one line: `steps_per_s=<f> batch=<n> steps=<n> peak_rss_mb=<f> cpu_ms_per_step=<f>`;
//! the last is the process's CPU time (all threads, from `/proc/self/stat`) per
//! timed step, a figure that a machine loaded by other work disturbs less.
//! `cargo xtask bench train` runs it for each model and thread count.

use std::time::Instant;

use shrink_data::{Layout, Preprocess, Split};
use shrink_graph::Model;
use shrink_train::{BatchNormMode, Executor, FineTune, LrPlan, OptimizerKind, StepInfo};

struct Clock {
    warmup: usize,
    started: Option<(Instant, f64)>,
    last: usize,
}

/// CPU seconds (user + system, all threads) used by this process so far.
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th fields.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().skip(11).take(2).filter_map(|v| v.parse().ok()).collect();
    if f.len() == 2 { (f[0] + f[1]) / 100.0 } else { f64::NAN }
}

impl shrink_train::Progress for Clock {
    fn step(&mut self, info: &StepInfo) {
        if info.step == self.warmup {
            self.started = Some((Instant::now(), cpu_s()));
        }
        self.last = info.step;
    }
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model_path = args.first().ok_or("usage: bench_train MODEL [--batch N] [--steps N]")?;
    let opt = |name: &str, default: usize| -> Result<usize, Box<dyn std::error::Error>> {
        match args.iter().position(|a| a == name) {
            Some(i) => Ok(args.get(i + 1).ok_or(format!("{name} needs a value"))?.parse()?),
            None => Ok(default),
        }
    };
    let batch = opt("--batch", 64)?;
    let steps = opt("--steps", 200)?;
    let warmup = opt("--warmup", 20)?;
    let model = Model::load(model_path)?;
    let mut exec = Executor::new(&model)?;
    let input_shape = shrink_graph::summarize(&model).inputs.first().and_then(|i| i.shape.clone());
    let flat = model.graph.real_inputs().count() == 1 && input_shape.as_ref().is_some_and(|d| d.len() == 2);
    let colour = input_shape.as_ref().is_some_and(|d| d.len() == 4 && d[1] == "3");
    let batchnorm = match args.iter().position(|a| a == "--batchnorm").map(|i| args.get(i + 1).map(String::as_str)) {
        None | Some(Some("frozen")) => BatchNormMode::Frozen,
        Some(Some("batch")) => BatchNormMode::Batch,
        Some(other) => return Err(format!("--batchnorm: expected frozen or batch, got {other:?}").into()),
    };
    exec.set_batchnorm(batchnorm);
    let pre = Preprocess { layout: if flat { Layout::Flat } else { Layout::Nchw }, ..Preprocess::default() };
    let train = shrink_data::load_builtin(if colour { "cifar10" } else { "mnist" }, Split::Train, &pre)?;
    let ft = FineTune {
        epochs: 1,
        max_steps: Some(warmup + steps),
        batch_size: batch,
        lr: LrPlan::constant(0.01),
        optimizer: OptimizerKind::sgd(0.9, 0.0),
        restore_best: false,
        ..FineTune::default()
    };
    let mut clock = Clock { warmup, started: None, last: 0 };
    ft.run(&mut exec, &train, None, None, &mut clock)?;
    let (t0, cpu0) = clock.started.ok_or("fewer steps than the warm-up")?;
    let (elapsed, cpu) = (t0.elapsed().as_secs_f64(), cpu_s() - cpu0);
    let timed = clock.last - warmup;
    println!(
        "steps_per_s={:.2} batch={batch} steps={timed} peak_rss_mb={:.1} cpu_ms_per_step={:.2}",
        timed as f64 / elapsed,
        peak_rss_mb(),
        cpu * 1e3 / timed as f64
    );
    Ok(())
}
