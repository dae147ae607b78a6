//! The `scale` benchmark's program: load, `info`, int8 weight-only quantise
//! and save of one ONNX model, with the wall time and the peak resident memory
//! of each step. `cargo xtask bench scale` runs it (release build) on the
//! ResNet-50 fixture of `cargo xtask fixtures --large`.
//!
//! ```text
//! cargo run --release -p shrink-quantize --example scale -- MODEL.onnx [OUT_DIR]
//! ```
//!
//! Steps, each timed alone:
//! - `load`: `Model::load` (read the file, decode the protobuf, import into the
//!   IR, `verify()`);
//! - `info`: `summarize` (what `shrink info` prints: op histogram, per-layer
//!   weights/params/MACs/bytes, totals) and its text table;
//! - `quantize`: the `quantize` stage, `method = "int8"`, `form = "weight-only"`,
//!   built through the stage registry and run with no data (the weight-only
//!   form needs no calibration), then `verify()` as the pipeline runner does;
//! - `save`: `Model::save` (export to a `ModelProto`, encode, atomic write)
//!   into OUT_DIR (default: a fresh folder in the system temp folder, removed
//!   at the end).
//!
//! Peak memory per step (Linux): writing `5` to `/proc/self/clear_refs` resets
//! the process's high-water mark (`VmHWM`) to its current RSS before the step;
//! `VmHWM` read after it is the step's peak. Where the reset fails the line
//! says `hwm_reset=no` and the figure is the process's peak so far.
//!
//! Output: one line per step, `step=NAME secs=S peak_rss_mb=M rss_after_mb=R
//! hwm_reset=yes|no`, then `total weights_bytes=B load_save_secs=S
//! peak_rss_mb=M peak_over_weights=X` (the peak of all steps over the bytes of
//! the float initializers of the loaded model).
//!
//! The stage context's `original` is an empty model: the int8 stage does not
//! read it, and a pipeline run (which keeps the original loaded for its
//! judge) is not what this measures.

use std::path::{Path, PathBuf};
use std::time::Instant;

use shrink_graph::onnx::ModelProto;
use shrink_graph::{DataType, Graph, Model, summarize};
use shrink_stage::{NoProgress, Registry, StageCx};

type Error = Box<dyn std::error::Error>;

/// `VmHWM` and `VmRSS` of this process in bytes (0 where unreadable).
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (kb("VmHWM:"), kb("VmRSS:"))
}

/// Resets the high-water mark to the current RSS; false where the kernel refuses.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

struct Step {
    secs: f64,
    peak: u64,
}

fn step<T>(name: &str, f: impl FnOnce() -> Result<T, Error>) -> Result<(T, Step), Error> {
    let reset = reset_peak();
    let started = Instant::now();
    let out = f().map_err(|e| format!("step {name}: {e}"))?;
    let secs = started.elapsed().as_secs_f64();
    let (peak, rss) = memory();
    println!(
        "step={name} secs={secs:.4} peak_rss_mb={:.1} rss_after_mb={:.1} hwm_reset={}",
        mb(peak),
        mb(rss),
        if reset { "yes" } else { "no" }
    );
    Ok((out, Step { secs, peak }))
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// Bytes of the float initializers (the weights a float model carries).
fn float_weight_bytes(g: &Graph) -> u64 {
    g.weights().filter(|(_, t)| t.dtype() == DataType::Float).map(|(_, t)| t.numel().unwrap_or(0) * 4).sum()
}

/// The `shrink info` tables, as text: ops, then one row per layer.
fn info_text(model: &Model) -> (String, usize) {
    let s = summarize(model);
    let mut out = String::new();
    let hist: Vec<String> = s.op_histogram.iter().map(|(op, n)| format!("{op} {n}")).collect();
    out.push_str(&format!("ops ({} nodes): {}\n", s.nodes, hist.join(", ")));
    for l in &s.layers {
        let shapes: Vec<String> =
            l.weight_shapes.iter().map(|d| d.iter().map(ToString::to_string).collect::<Vec<_>>().join("x")).collect();
        let macs = l.macs.map(|m| m.to_string()).unwrap_or_else(|| "-".into());
        out.push_str(&format!("{} {} {} {} {macs} {}\n", l.name, l.op, shapes.join(" + "), l.params, l.bytes));
    }
    out.push_str(&format!(
        "parameters {} ({} non-zero), weights {} bytes, MACs per sample {}\n",
        s.params, s.nonzero_params, s.weight_bytes, s.macs
    ));
    (out, s.layers.len())
}

fn run(input: &Path, out_dir: &Path) -> Result<(), Error> {
    let (mut model, load) = step("load", || Ok(Model::load(input)?))?;
    let weights = float_weight_bytes(&model.graph);
    println!("model {} weights_bytes={weights}", input.display());

    let ((text, layers), info) = step("info", || Ok(info_text(&model)))?;
    println!("info: {layers} layers; {}", text.lines().last().unwrap_or_default());

    let mut reg = Registry::new();
    shrink_quantize::register(&mut reg);
    let params: toml::Table = "method = \"int8\"\nform = \"weight-only\"\n".parse()?;
    let stage = reg.build("quantize", &params)?;
    let original = Model { meta: ModelProto::default(), graph: Graph::new("original"), source: None };
    let mut progress = NoProgress;
    let mut cx = StageCx {
        pipeline: "scale".into(),
        index: 0,
        train: None,
        test: None,
        original: &original,
        seed: 0,
        progress: &mut progress,
        scratch: out_dir.to_path_buf(),
        output_dir: out_dir.to_path_buf(),
        encoded: Default::default(),
    };
    let (report, quantize) = step("quantize", || {
        let report = stage.run(&mut model, &mut cx)?;
        model.graph.verify()?;
        Ok(report)
    })?;
    println!("quantize: {}", report.summary);

    let out = out_dir.join(format!("{}.int8.onnx", input.file_stem().and_then(|s| s.to_str()).unwrap_or("model")));
    let ((), save) = step("save", || Ok(model.save(&out)?))?;
    let bytes = std::fs::metadata(&out)?.len();
    println!("saved {} ({bytes} bytes)", out.display());

    let peak = [&load, &info, &quantize, &save].iter().map(|s| s.peak).max().unwrap_or(0);
    println!(
        "total weights_bytes={weights} load_save_secs={:.4} peak_rss_mb={:.1} peak_over_weights={:.3} \
         saved_bytes={bytes}",
        load.secs + save.secs,
        mb(peak),
        peak as f64 / weights.max(1) as f64
    );
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (input, out_dir) = match args.as_slice() {
        [m] => (PathBuf::from(m), None),
        [m, o] => (PathBuf::from(m), Some(PathBuf::from(o))),
        _ => {
            eprintln!("usage: scale MODEL.onnx [OUT_DIR]");
            std::process::exit(2);
        }
    };
    let temp = out_dir.is_none();
    let dir = out_dir.unwrap_or_else(|| std::env::temp_dir().join(format!("shrink-scale-{}", std::process::id())));
    let result = std::fs::create_dir_all(&dir).map_err(Error::from).and_then(|()| run(&input, &dir));
    if temp {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}
