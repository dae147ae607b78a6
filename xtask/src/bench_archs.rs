//! `cargo xtask bench archs`: the coverage table. For every torchvision
//! family export of `cargo xtask fixtures --archs` (8 families × 2
//! exporters, seeded random weights; exported first when missing), four
//! data-free stages each run by `shrink run` on a pipeline of its own:
//!
//! - `prune`: structured, 30 % of each group's channels (l1); works when the
//!   run exits 0, tract verifies the result (its output shape is the
//!   original's: the runner refuses anything else) and parameters went down.
//!   At ratio 0 the outputs must be identical (max |diff| 0).
//! - `int8`: weight-only int8 of every layer (`keep_float = []`; by default
//!   the first and last stay float, and an ImageNet classifier's last layer
//!   holds up to 40 % of a MobileNet's weights); works when the run exits 0
//!   and the file is at most 0.3× the original.
//! - `lowrank`: SVD of every Gemm and Conv keeping 90 % of Σσ²; works when
//!   the run exits 0 and parameters went down. At energy 1 (full rank) the
//!   outputs must agree within 1e-3 of the largest logit.
//! - `pack`: the huffman stage's `.shrink` file; works when `shrink unpack`
//!   gives back, bit for bit, the ONNX bytes it packed (the run's
//!   `model.onnx`: the huffman stage does not change the model). Whether
//!   those bytes are the input file's is shown beside it: prost writes no
//!   field that holds its default value, so a file that spells out a zero
//!   (`training_mode: 0`) comes back a few bytes shorter, the same model.
//!
//! A cell fails with the reason (the error's first line, or the check that
//! did not hold). Writes the table into BENCHMARKS.md (section `archs`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::Context;

use crate::project_root;

const STAGES: &[&str] = &["prune", "int8", "lowrank", "pack"];

/// What one `shrink run` gave: the error's line when it failed, else the
/// first (original) and last rows of report.json.
struct Outcome {
    error: Option<String>,
    rows: Option<(serde_json::Value, serde_json::Value)>,
}

fn pipeline(name: &str, model: &Path, out: &Path, stage: &str) -> String {
    format!(
        "[pipeline]\nname = \"{name}\"\nmodel = \"{}\"\noutput = \"{}\"\nseed = 7\n\n\
         [verify]\nbatch_sizes = [1]\nlatency = false\nrandom_batches = 1\n\n[[stage]]\n{stage}\n",
        model.display().to_string().replace('\\', "/"),
        out.display().to_string().replace('\\', "/"),
    )
}

fn run(shrink: &Path, dir: &Path, name: &str, model: &Path, stage: &str) -> anyhow::Result<Outcome> {
    let out = dir.join(name);
    let _ = std::fs::remove_dir_all(&out);
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, pipeline(name, model, &out, stage))?;
    let o = Command::new(shrink)
        .args(["run", "--force"])
        .arg(&file)
        .env("RUST_LOG", "error")
        .output()
        .with_context(|| format!("starting {}", shrink.display()))?;
    if !o.status.success() {
        let err = String::from_utf8_lossy(&o.stderr);
        let line = err
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with("error"))
            .or_else(|| err.lines().last())
            .unwrap_or("failed without a message");
        let line: String = line.chars().take(220).collect();
        return Ok(Outcome { error: Some(line), rows: None });
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).context("report.json")?)?;
    let rows = report["rows"].as_array().and_then(|r| Some((r.first()?.clone(), r.last()?.clone())));
    Ok(Outcome { error: None, rows })
}

fn fig(row: &serde_json::Value, key: &str) -> Option<f64> {
    row["stage"]["figures"][key].as_f64()
}

/// One cell: `Ok(what it did)` or `Err(why it fails)`.
fn cell(shrink: &Path, dir: &Path, stem: &str, model: &Path, stage: &str) -> Result<String, String> {
    let go2 = |tag: &str, text: &str| -> Result<(serde_json::Value, serde_json::Value), String> {
        let o = run(shrink, dir, &format!("{stem}-{tag}"), model, text).map_err(|e| format!("{e:#}"))?;
        match (o.error, o.rows) {
            (Some(e), _) => Err(e),
            (None, Some(r)) => Ok(r),
            (None, None) => Err("report.json has no row".into()),
        }
    };
    let go = |tag: &str, text: &str| go2(tag, text).map(|r| r.1);
    let original_bytes = std::fs::metadata(model).map_err(|e| e.to_string())?.len() as f64;
    match stage {
        "prune" => {
            let r = go("prune", "kind = \"prune\"\nmethod = \"structured\"\nratio = 0.3\nrecalibrate_bn = 0")?;
            let (b, a) = (fig(&r, "params_before").unwrap_or(0.0), fig(&r, "params_after").unwrap_or(0.0));
            if a >= b {
                let w = r["stage"]["warnings"][0].as_str().unwrap_or("no warning").to_string();
                return Err(format!("removed nothing ({w})"));
            }
            let z = go("prune0", "kind = \"prune\"\nmethod = \"structured\"\nratio = 0.0\nrecalibrate_bn = 0")?;
            let diff = z["agreement"]["max_abs_diff"].as_f64().unwrap_or(f64::NAN);
            if diff != 0.0 {
                return Err(format!("ratio 0 changed the outputs (max |diff| {diff:e})"));
            }
            Ok(format!(
                "params {:.2}×, MACs {:.2}×",
                a / b,
                fig(&r, "macs_after").unwrap_or(0.0) / fig(&r, "macs_before").unwrap_or(1.0)
            ))
        }
        "int8" => {
            let r = go("int8", "kind = \"quantize\"\nmethod = \"int8\"\nform = \"weight-only\"\nkeep_float = []")?;
            let bytes = r["size"]["onnx_bytes"].as_f64().unwrap_or(f64::NAN);
            let ratio = bytes / original_bytes;
            let warning = r["stage"]["warnings"][0].as_str().map(|w| format!("; {}", w.split(';').next().unwrap_or(w)));
            if ratio.is_nan() || ratio > 0.3 {
                return Err(format!("file {ratio:.3}× the original{}", warning.unwrap_or_default()));
            }
            let float = fig(&r, "float_weight_fraction").unwrap_or(f64::NAN);
            Ok(format!("{ratio:.3}× bytes, {:.0} % of weights float", 100.0 * float))
        }
        "lowrank" => {
            let (o, r) = go2("lowrank", "kind = \"lowrank\"\nops = [\"Gemm\", \"Conv\"]\nenergy = 0.9")?;
            let (params0, pb) =
                (o["size"]["params"].as_f64().unwrap_or(f64::NAN), r["size"]["params"].as_f64().unwrap_or(f64::NAN));
            if pb.is_nan() || params0.is_nan() || pb >= params0 {
                return Err(format!("params {pb} not below the original's {params0}"));
            }
            let full = go("lowrank1", "kind = \"lowrank\"\nops = [\"Gemm\", \"Conv\"]\nenergy = 1.0")?;
            let diff = full["agreement"]["max_abs_diff"].as_f64().unwrap_or(f64::NAN);
            if diff.is_nan() || diff > 1e-3 {
                return Err(format!("full rank changed the outputs (max |diff| {diff:e})"));
            }
            Ok(format!("params {:.2}×, full rank max |diff| {diff:.1e}", pb / params0))
        }
        "pack" => {
            go("pack", "kind = \"huffman\"")?;
            let out = dir.join(format!("{stem}-pack"));
            let packed = out.join("model.shrink");
            let back = out.join("unpacked.onnx");
            let o = Command::new(shrink)
                .arg("unpack")
                .arg(&packed)
                .arg("-o")
                .arg(&back)
                .output()
                .map_err(|e| e.to_string())?;
            if !o.status.success() {
                return Err(String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("unpack failed").to_string());
            }
            let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
            let (packed_in, back_bytes, file) = (read(&out.join("model.onnx"))?, read(&back)?, read(model)?);
            if packed_in != back_bytes {
                return Err(format!("unpacked {} bytes differ from the {} packed", back_bytes.len(), packed_in.len()));
            }
            let size = std::fs::metadata(&packed).map_err(|e| e.to_string())?.len() as f64;
            let same = if file == packed_in {
                "the input file's bytes".to_string()
            } else {
                format!("re-encoded {:+} bytes", packed_in.len() as i64 - file.len() as i64)
            };
            Ok(format!("bit-exact ({same}), {:.3}× bytes", size / original_bytes))
        }
        other => Err(format!("unknown stage {other}")),
    }
}

pub(crate) fn archs(quick: bool) -> anyhow::Result<()> {
    let root = project_root();
    let dir = crate::fixtures::archs_dir();
    if !dir.join("archs.json").is_file() {
        crate::fixtures::archs_models("64")?;
    }
    let mut models: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    models.sort();
    anyhow::ensure!(!models.is_empty(), "no .onnx file in {}", dir.display());
    let shrink = crate::bench::build_shrink(quick)?;
    let work = root.join("target").join("bench-archs");
    std::fs::create_dir_all(&work)?;
    let started = Instant::now();
    let mut rows = Vec::new();
    let (mut ok, mut total) = (0, 0);
    for m in &models {
        let stem = m.file_name().unwrap_or_default().to_string_lossy().trim_end_matches(".onnx").to_string();
        let mut cells = Vec::new();
        for s in STAGES {
            let t0 = Instant::now();
            let c = cell(&shrink, &work, &stem, m, s);
            total += 1;
            ok += usize::from(c.is_ok());
            println!(
                "archs: {stem} {s}: {} ({:.1} s)",
                match &c {
                    Ok(t) => format!("ok, {t}"),
                    Err(e) => format!("FAIL: {e}"),
                },
                t0.elapsed().as_secs_f64()
            );
            cells.push(c);
        }
        rows.push((stem, cells));
    }
    let mut md = String::from("## Coverage: torchvision families, data-free stages\n\n`cargo xtask bench archs`\n\n");
    md.push_str(&format!(
        "{}. The models: `cargo xtask fixtures --archs` (torchvision's constructors, seeded random weights, \
         input 3×64×64, 1000 classes; `NAME.onnx` by the TorchScript exporter, `NAME.dynamo.onnx` by the \
         dynamo exporter). Each cell is a `shrink run` of one stage without data (`{}` build), verified by tract \
         on seeded random inputs; the checks are in the module doc of xtask/src/bench_archs.rs: `prune` = \
         structured 30 % (and ratio 0 leaves the outputs identical), `int8` = weight-only, every layer, file ≤ 0.3×, \
         `lowrank` = SVD at 90 % energy (and full rank agrees within 1e-3), `pack` = huffman `.shrink` unpacks \
         bit-exactly. {ok} of {total} cells work ({:.0} %); {:.0} s in all.\n\n",
        crate::bench::machine_line(),
        if quick { "debug" } else { "release" },
        100.0 * ok as f64 / total.max(1) as f64,
        started.elapsed().as_secs_f64()
    ));
    md.push_str("| model | prune 30 % | int8 | lowrank | pack |\n|---|---|---|---|---|\n");
    let mut failures = Vec::new();
    for (stem, cells) in &rows {
        let text: Vec<String> = cells
            .iter()
            .zip(STAGES)
            .map(|(c, s)| match c {
                Ok(t) => format!("ok ({t})"),
                Err(e) => {
                    failures.push(format!("- {stem} `{s}`: {}", e.replace('|', "/")));
                    "**fail**".to_string()
                }
            })
            .collect();
        md.push_str(&format!("| {stem} | {} |\n", text.join(" | ")));
    }
    if !failures.is_empty() {
        md.push_str("\nFailing cells and their causes:\n\n");
        md.push_str(&failures.join("\n"));
        md.push('\n');
    }
    println!("archs: {ok} of {total} cells work");
    crate::bench::write_section(&root.join("BENCHMARKS.md"), "archs", &md)
}
