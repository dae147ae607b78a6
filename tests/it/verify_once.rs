//! Verification without back-and-forth: a pipeline run exports each model it
//! holds to ONNX once and builds each tract plan once.
//!
//! The counters (`shrink_graph::model_exports`, `shrink_verify::plans_built`)
//! are process-wide and the other tests of this binary run in parallel, so
//! the test reruns itself in a child process that runs only it, and the child
//! measures.

use std::process::Command;

use shrink_pipeline::{Pipeline, RunOptions};
use shrink_stage::NoProgress;

use crate::util::root;

const CHILD: &str = "SHRINK_VERIFY_ONCE_CHILD";
const CASE: &str = "deep-compression-lenet-300-100";

/// The quick Deep Compression run (prune, quantize, huffman) of
/// `tests/golden.toml`, with latency on: each of the 4 models the run holds
/// (the original and each stage's result) is exported once, and each gets
/// one tract plan per batch size used: 100 (accuracy; the 2,000 test samples
/// make 20 full batches), 1 and 64 (latency). The original's plans are built
/// once for the whole run, not once per row.
#[test]
fn a_pipeline_run_exports_each_model_once_and_plans_each_batch_once() {
    if std::env::var_os(CHILD).is_some() {
        measure();
        return;
    }
    let name = "verify_once::a_pipeline_run_exports_each_model_once_and_plans_each_batch_once";
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the measuring child failed:\n{text}");
    assert!(text.contains("1 passed"), "the child ran no test:\n{text}");
}

fn measure() {
    let out = tempfile::tempdir().unwrap();
    let path = root().join("pipelines").join(format!("{CASE}.toml"));
    let text: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    let model = root().join(text["pipeline"]["model"].as_str().unwrap());
    let mut sets = crate::golden::quick_overrides(CASE);
    sets.extend([
        format!("pipeline.output=\"{}\"", out.path().display()),
        format!("pipeline.model=\"{}\"", model.display()),
        "verify.latency=true".to_string(),
        "verify.batch_sizes=[1, 64]".to_string(),
    ]);
    let p = Pipeline::load(&path, &sets).unwrap();
    let registry = shrink_pipeline::builtin();
    let (exports0, plans0) = (shrink_graph::model_exports(), shrink_verify::plans_built());
    let outcome = shrink_pipeline::run(&p, &registry, &RunOptions::default(), &mut NoProgress).unwrap();
    let exports = shrink_graph::model_exports() - exports0;
    let plans = shrink_verify::plans_built() - plans0;
    let rows = &outcome.report.rows;
    eprintln!(
        "{CASE} (quick, latency at batch 1 and 64): {} models, {exports} exports, {plans} tract plans",
        rows.len()
    );
    let kinds: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(kinds, ["original", "prune", "quantize", "huffman"]);
    assert!(rows.iter().all(|r| r.samples == Some(2000)), "the quick run judges 2,000 test samples");
    assert!(rows.iter().all(|r| r.latency.len() == 2), "latency at batch 1 and 64 in every row");
    // The original, and the model after each stage: one export each (checkpoints,
    // model.onnx, sizes, judges and the huffman stage reuse the bytes).
    assert_eq!(exports, rows.len(), "ModelProto exports in a run holding {} models", rows.len());
    // Batch sizes 100, 1 and 64, one plan each per model: the original's
    // plans serve every row.
    assert_eq!(plans, 3 * rows.len(), "tract plans for {} models at 3 batch sizes", rows.len());
}
