//! `shrink`: the command-line front end. Parses arguments (clap), installs the
//! tracing subscriber, and calls into the library crates. Errors print as
//! `error: ...` with their causes and exit with code 2.

mod eval;
mod finetune;
mod infer;
mod info;
mod pack;
mod run;
mod sensitivity;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// shrink: compress ONNX models (prune, distill, quantize, Huffman-pack, low-rank,
/// early exit) and prove in tract what was gained and what was lost.
#[derive(Debug, Parser)]
#[command(name = "shrink", version, propagate_version = true)]
struct Cli {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides it.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Describe a model: inputs and outputs with shapes and dtypes, opsets, an op
    /// histogram, and a per-layer table (weight shapes, parameters, MACs, bytes).
    ///
    /// MACs are multiply-accumulates of Conv, ConvTranspose, Gemm and MatMul per
    /// sample: symbolic batch dimensions count as 1. Parameters are elements of
    /// weights (initializers and Constant tensors) that are not int32/int64.
    Info {
        /// The ONNX model file (external data is read from beside it).
        model: PathBuf,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Measure one model in tract: accuracy on a dataset (top-1, top-5), size,
    /// and latency (median and p90 at batch 1 and --batch, 1 thread and all
    /// cores; warm-up first, see the latency method in shrink-verify's docs).
    ///
    /// Example: shrink eval fixtures/models/lenet-5.onnx --data mnist
    ///
    /// Your own images (FOLDER/<class>/*.jpg, ImageNet's transform):
    /// shrink eval model.onnx --data my-images/val --resize 256 --crop 224 --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225
    Eval {
        /// The ONNX model file.
        model: PathBuf,
        #[command(flatten)]
        args: eval::EvalArgs,
    },
    /// Train a model's weights on a builtin dataset with the trainer (burn,
    /// CPU), write them back into the ONNX model, and report test accuracy
    /// before and after, measured in tract. A validation split held out of the
    /// training set picks the best epoch.
    ///
    /// Example: shrink finetune fixtures/models/lenet-300-100.onnx --epochs 1 -o out/ft.onnx
    Finetune(finetune::FinetuneArgs),
    /// Run a TOML pipeline: each stage, then graph checks and tract
    /// verification (accuracy, agreement with the original, latency, size),
    /// a checkpoint in OUTPUT/stages/ and a report row. A rerun resumes after
    /// the last finished stage whose checkpoint matches.
    ///
    /// Writes OUTPUT/model.onnx, report.json, report.md, report.svg. The input
    /// model is never overwritten.
    Run {
        /// The pipeline file (see pipelines/ for examples).
        pipeline: PathBuf,
        /// Override a key, e.g. `--set stage.0.sparsity=0.9` or `--set pipeline.seed=3` (repeatable).
        #[arg(long, value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Rerun from this stage (1-based) even when its checkpoint matches.
        #[arg(long, value_name = "N")]
        from_stage: Option<usize>,
        /// Check the pipeline (files, data, stage parameters) without running it.
        #[arg(long)]
        dry_run: bool,
        /// Use an output folder that holds another pipeline's run or other files.
        #[arg(long)]
        force: bool,
    },
    /// Prune each layer alone by weight magnitude at 10 %, 20 %, ... 90 % (no
    /// fine-tuning), measure test accuracy in tract, print the table and write
    /// the curves as an SVG: which layers tolerate pruning, to choose per-layer
    /// sparsities for a `prune` stage.
    ///
    /// Example: shrink sensitivity fixtures/models/lenet-5.onnx --data mnist --limit 2000
    Sensitivity(sensitivity::SensitivityArgs),
    /// Run an early-exit model (the `early-exit` stage's OUTPUT/early-exit/
    /// folder) segment by segment in tract, batch 1, with its calibrated
    /// thresholds: accuracy, exit histogram, mean and p90 latency, and the full
    /// model's batch-1 latency measured in the same run (interleaved).
    ///
    /// Example: shrink infer out/early-exit-convnet-mix/early-exit --data mnist
    Infer(infer::InferArgs),
    /// List the stage kinds a plugin library offers (after checking its ABI).
    ///
    /// Use one in a pipeline as `kind = "plugin"`, `path = "..."`, `stage = "<kind>"`.
    Plugins {
        /// The plugin's shared library (e.g. target/plugins/libshrink_plugin_fold_bn.so).
        path: PathBuf,
    },
    /// Pack a model into a .shrink file: Deep Compression's storage (sparse
    /// relative indices and cluster ids, Huffman coded; see docs/format.md).
    ///
    /// A float tensor with few distinct non-zero values (pruned and clustered)
    /// is stored as a codebook and ids; dense tensors that gain nothing stay
    /// raw. Every choice is made per tensor by size. `shrink unpack` restores
    /// the ONNX model bit for bit; `eval` and `compare` read .shrink files directly.
    ///
    /// Example: shrink pack out/pruned.onnx -o out/pruned.shrink
    Pack(pack::PackArgs),
    /// Unpack a .shrink file into the ONNX model it was packed from (bit-exact).
    /// A corrupted or truncated file is an error naming what is wrong.
    ///
    /// Example: shrink unpack out/pruned.shrink -o out/unpacked.onnx
    Unpack {
        /// The .shrink file.
        model: PathBuf,
        /// The ONNX file to write (never the input).
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Measure two models in one run, interleaved, and print them side by
    /// side with ratios: size, latency, accuracy delta, and the agreement of B
    /// with A (top-1 agreement, logit differences). Without --data, agreement
    /// is measured on seeded random inputs of the model's input shape.
    ///
    /// Example: shrink compare original.onnx compressed.onnx --data mnist
    Compare {
        /// The reference model.
        a: PathBuf,
        /// The model measured against it.
        b: PathBuf,
        #[command(flatten)]
        args: eval::EvalArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let result = match cli.command {
        Command::Info { model, json } => info::run(&model, json),
        Command::Eval { model, args } => eval::run_eval(&model, &args),
        Command::Finetune(args) => finetune::run(&args),
        Command::Plugins { path } => plugins(&path),
        Command::Run { pipeline, set, from_stage, dry_run, force } => {
            run::run(&pipeline, &set, &shrink_pipeline::RunOptions { from_stage, dry_run, force })
        }
        Command::Compare { a, b, args } => eval::run_compare(&a, &b, &args),
        Command::Pack(args) => pack::run_pack(&args),
        Command::Sensitivity(args) => sensitivity::run(&args),
        Command::Infer(args) => infer::run(&args),
        Command::Unpack { model, output } => pack::run_unpack(&model, &output),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", message(&e));
            ExitCode::from(2)
        }
    }
}

fn plugins(path: &std::path::Path) -> anyhow::Result<()> {
    let plugin = shrink_pipeline::plugin::Plugin::load(path)?;
    println!("{} {} ({})", plugin.name(), plugin.version(), path.display());
    for k in plugin.kinds() {
        println!("  {k}");
    }
    Ok(())
}

/// The error and its causes, each cause added only when the text so far does
/// not already say it (library errors often print their source themselves).
fn message(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg = format!("{msg}: {c}");
        }
    }
    msg
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
