//! `cargo xtask bench svd`: the SVD speed of nalgebra (what stage `lowrank`
//! called before this measurement moved it to faer) against faer, on seeded random matrices: the layer shapes our
//! models factorise (64×576, 300×784) and 512² to 4096², in f64 (the stage's
//! precision) and f32. Builds and runs the release build of
//! crates/stages/shrink-lowrank/svd-bench, a crate outside the workspace (so
//! the workspace never compiles nalgebra), and writes its section of
//! BENCHMARKS.md. nalgebra at 4096² runs for minutes, so this bench runs only
//! when named.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context;

use crate::{field, num, project_root};

const MANIFEST: &str = "crates/stages/shrink-lowrank/svd-bench/Cargo.toml";
/// A nalgebra SVD predicted (by n³ from the previous shape) to run longer is skipped.
const CAP_SECS: u32 = 900;
/// Shapes per precision; the stage's f64 up to 4096², f32 up to 2048².
const SETS: &[(&str, &[&str])] = &[
    ("f64", &["64x576", "300x784", "512", "1024", "2048", "4096"]),
    ("f32", &["64x576", "300x784", "512", "1024", "2048"]),
];

/// Runs `bin` with `args`, echoing its output, and returns its `svd ` lines.
fn run_bench(bin: &Path, args: &[String]) -> anyhow::Result<Vec<String>> {
    let mut child = Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.with_context(|| format!("reading the output of {}", bin.display()))?;
        println!("{line}");
        if line.starts_with("svd ") {
            lines.push(line);
        }
    }
    let status = child.wait().with_context(|| format!("waiting for {}", bin.display()))?;
    anyhow::ensure!(status.success(), "{} {} failed: {status}", bin.display(), args.join(" "));
    Ok(lines)
}

pub(crate) fn svd() -> anyhow::Result<()> {
    let root = project_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target: PathBuf = crate::plugins::target_dir(&cargo)?.join("svd-bench");
    crate::run_cmd(
        Command::new(&cargo)
            .current_dir(&root)
            .arg("build")
            .arg("--release")
            .arg("--manifest-path")
            .arg(root.join(MANIFEST))
            .arg("--target-dir")
            .arg(&target),
    )?;
    let bin = target.join("release/shrink-lowrank-svd-bench");
    let mut sets = Vec::new();
    for (dtype, shapes) in SETS {
        let mut args = vec!["--dtype".to_string(), dtype.to_string(), "--cap-secs".into(), CAP_SECS.to_string()];
        args.extend(shapes.iter().map(|s| s.to_string()));
        let lines = run_bench(&bin, &args)?;
        anyhow::ensure!(
            lines.len() == shapes.len(),
            "svd-bench printed {} rows for {} shapes",
            lines.len(),
            shapes.len()
        );
        sets.push((*dtype, lines));
    }
    write_markdown(&root.join("BENCHMARKS.md"), &sets)
}

fn secs(s: f64) -> String {
    if s < 1.0 { format!("{:.1} ms", s * 1e3) } else { format!("{s:.2} s") }
}

fn write_markdown(path: &Path, sets: &[(&str, Vec<String>)]) -> anyhow::Result<()> {
    let threads = sets.iter().flat_map(|(_, l)| l).find_map(|l| field(l, "faer_threads")).unwrap_or("?").to_string();
    let mut md = String::from("## SVD: nalgebra vs faer\n\n`cargo xtask bench svd`\n\n");
    md.push_str(&format!(
        "{}. A full thin SVD (U, Σ, Vᵀ: what stage `lowrank` needs) of a seeded uniform [-1, 1) matrix: \
         nalgebra 0.34 (`try_svd(true, true, ε, 10_000)`, as the stage called it before it moved to faer; single-threaded) and faer 0.24 \
         (`thin_svd`, sequential and on {threads} rayon threads), release build of \
         crates/stages/shrink-lowrank/svd-bench. Each time is the median of 3 runs (1 run at 4096²). A nalgebra \
         SVD that the previous shape extrapolates (by rows·cols·min) past {CAP_SECS} s is skipped. Agreement: \
         singular values within a relative 1e-3 of each other (floored at √ε·σ₁), and both reconstructions \
         ‖A − UΣVᵀ‖/‖A‖ under 1e-10 (f64) or 1e-4 (f32).\n",
        crate::bench::machine_line()
    ));
    for (dtype, lines) in sets {
        md.push_str(&format!(
            "\n{dtype}{}:\n\n| shape | runs | nalgebra | faer 1 thread | faer {threads} threads | nalgebra / faer 1 thread \
             | max σ rel. diff | recon. nalgebra | recon. faer | agree |\n|---|---|---|---|---|---|---|---|---|---|\n",
            if *dtype == "f64" { " (the stage's precision)" } else { "" }
        ));
        for l in lines {
            let get = |k: &str| num(l, k).with_context(|| format!("svd-bench line without {k}: {l}"));
            let (rows, cols, faer_seq) = (get("rows")?, get("cols")?, get("faer_seq_secs")?);
            let (na, ratio) = match num(l, "nalgebra_secs") {
                Some(s) => (secs(s), format!("{:.1}×", s / faer_seq)),
                None => (
                    format!("over {CAP_SECS} s (≈ {} s)", field(l, "nalgebra_predicted_secs").unwrap_or("?")),
                    "-".into(),
                ),
            };
            md.push_str(&format!(
                "| {rows}×{cols} | {} | {na} | {} | {} | {ratio} | {} | {} | {} | {} |\n",
                field(l, "runs").unwrap_or("?"),
                secs(faer_seq),
                secs(get("faer_par_secs")?),
                field(l, "sv_rel_diff").unwrap_or("-"),
                field(l, "nalgebra_recon").unwrap_or("-"),
                field(l, "faer_recon").unwrap_or("-"),
                field(l, "agree").unwrap_or("?"),
            ));
        }
    }
    crate::bench::write_section(path, "svd", &md)
}
