//! `cargo xtask bench compare`: how long a data-free `shrink compare` of a
//! 224×224 model takes with its defaults (release build): ResNet-50, the
//! untrained fixture of `cargo xtask fixtures --large` (exported first when
//! missing), against a byte-for-byte copy of itself, so that only the tool's
//! own work is timed. The target is under `MAX_SECONDS`; the section lists
//! what the run measured (random samples for agreement, latency
//! configurations) and what it skipped for its time budget, read from
//! `--json`, and says pass or fail.

use std::process::Command;

use anyhow::Context;

use crate::project_root;

/// The target for a data-free comparison of a 224×224 model, by default.
const MAX_SECONDS: f64 = 30.0;

pub(crate) fn compare() -> anyhow::Result<()> {
    let model = crate::fixtures::large_model(false)?;
    let copy = model.with_file_name("resnet50-copy.onnx");
    std::fs::copy(&model, &copy).with_context(|| format!("copying {}", model.display()))?;
    let shrink = crate::bench::build_shrink(false)?;
    let mut cmd = Command::new(&shrink);
    cmd.arg("compare").arg(&model).arg(&copy).arg("--json");
    println!("bench compare: {cmd:?}");
    let t0 = std::time::Instant::now();
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    let secs = t0.elapsed().as_secs_f64();
    anyhow::ensure!(out.status.success(), "{cmd:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).context("parsing the --json report")?;
    let a = &report["a"];
    let samples = report["b"]["agreement"]["samples"].as_u64().unwrap_or(0);
    let measured: Vec<String> = a["latency"]
        .as_array()
        .map(|ls| {
            ls.iter()
                .map(|l| {
                    format!(
                        "batch {} × {} thread(s): {:.1} ms ({} runs)",
                        l["batch"],
                        l["threads"],
                        l["median_ms"].as_f64().unwrap_or(f64::NAN),
                        l["runs"]
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let skipped: Vec<String> = a["latency_skipped"]
        .as_array()
        .map(|s| s.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let pass = secs < MAX_SECONDS;
    println!("bench compare: {secs:.1} s ({})", if pass { "pass" } else { "FAIL" });
    let mut md = String::from("## Data-free `compare` of a 224×224 model\n\n`cargo xtask bench compare`\n\n");
    md.push_str(&format!(
        "{}. `shrink compare resnet50.onnx resnet50-copy.onnx` with its defaults, no `--data` (release build): ResNet-50 \
         at 3×224×224 (`cargo xtask fixtures --large`, untrained, {} bytes) against a copy of itself. Target: under \
         {MAX_SECONDS:.0} s.\n\n",
        crate::bench::machine_line(),
        std::fs::metadata(&model).map(|m| m.len()).unwrap_or(0)
    ));
    md.push_str(&format!(
        "- wall time: **{secs:.1} s** ({})\n- agreement: {samples} seeded random samples\n",
        if pass { "pass" } else { "FAIL" }
    ));
    for m in &measured {
        md.push_str(&format!("- latency {m}\n"));
    }
    for s in &skipped {
        md.push_str(&format!("- latency {s}\n"));
    }
    crate::bench::write_section(&project_root().join("BENCHMARKS.md"), "compare", &md)?;
    anyhow::ensure!(pass, "data-free compare took {secs:.1} s, over the {MAX_SECONDS} s target");
    Ok(())
}
