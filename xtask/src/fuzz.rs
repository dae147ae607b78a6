//! `cargo xtask fuzz [--target load_model|unpack] [--seconds N]`: runs a
//! cargo-fuzz target: `load_model`, the ONNX loader (crates/shrink-graph/fuzz,
//! seeded with small models from the repo), or `unpack`, `.shrink` unpacking
//! (crates/stages/shrink-huffman/fuzz, seeded with the packed files in that
//! crate's test_data/).
//!
//! cargo-fuzz needs nightly flags; on a stable toolchain RUSTC_BOOTSTRAP=1
//! unlocks them. cargo-fuzz itself is installed with `cargo install` if missing.

use std::process::Command;

use anyhow::Context;

use crate::{project_root, run_cmd};

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let mut seconds = 60u64;
    let mut target = "load_model".to_string();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                let v = it.next().context("--seconds needs a value")?;
                seconds = v.parse().with_context(|| format!("--seconds: `{v}` is not a number"))?;
            }
            "--target" => target = it.next().context("--target needs a value (load_model or unpack)")?.clone(),
            other => anyhow::bail!("fuzz: unknown argument `{other}` (expected --target NAME, --seconds N)"),
        }
    }
    let have_fuzz = Command::new("cargo").args(["fuzz", "--version"]).output().is_ok_and(|o| o.status.success());
    if !have_fuzz {
        run_cmd(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    let dir = match target.as_str() {
        "load_model" => project_root().join("crates/shrink-graph/fuzz"),
        "unpack" => project_root().join("crates/stages/shrink-huffman/fuzz"),
        other => anyhow::bail!("fuzz: unknown target `{other}` (expected load_model or unpack)"),
    };
    let corpus = dir.join("corpus").join(&target);
    std::fs::create_dir_all(&corpus)?;
    if target == "load_model" {
        // Seed the corpus with every small .onnx in the repository, and the ONNX
        // backend-test models when `cargo xtask onnx-suite` has unpacked them.
        seed(&project_root().join("fixtures"), &corpus, "onnx")?;
        seed(&crate::cache_dir().join("onnx-1.22.0/onnx/backend/test/data/node"), &corpus, "onnx")?;
    } else {
        seed(&project_root().join("crates/stages/shrink-huffman/test_data"), &corpus, "shrink")?;
    }
    let started = std::time::Instant::now();
    run_cmd(
        Command::new("cargo")
            .current_dir(&dir)
            .env("RUSTC_BOOTSTRAP", "1")
            .args(["fuzz", "run", &target, "--"])
            .arg(format!("-max_total_time={seconds}"))
            .arg("-rss_limit_mb=2048")
            .arg("-max_len=1048576"),
    )?;
    println!(
        "fuzz: {target} fuzzed for {seconds} s with no crash ({:.0} s with the build)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn seed(dir: &std::path::Path, corpus: &std::path::Path, ext: &str) -> anyhow::Result<()> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Ok(()) };
    for e in rd {
        let p = e?.path();
        if p.is_dir() {
            seed(&p, corpus, ext)?;
        } else if p.extension().is_some_and(|x| x == ext) && std::fs::metadata(&p)?.len() < 1 << 20 {
            // node/test_abs/model.onnx → test_abs-model.onnx: names stay unique
            let parent = p.parent().and_then(|d| d.file_name()).map(|n| n.to_string_lossy().into_owned());
            let name = format!("{}-{}", parent.unwrap_or_default(), p.file_name().unwrap().to_string_lossy());
            std::fs::copy(&p, corpus.join(name))?;
        }
    }
    Ok(())
}
