//! `cargo xtask plugins [--dev]`: builds the stage plugins under `plugins/`
//! (release profile, or dev with `--dev`) and prints the path of each shared
//! library, ready for a pipeline's `[[stage]] kind = "plugin", path = ...`.
//!
//! Test fixture plugins (`plugins/shrink-plugin-test-*`) are skipped: the
//! integration tests build those themselves.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;

use crate::{project_root, run_cmd};

/// Folder names under `plugins/` that are test fixtures, not plugins.
const TEST_FIXTURE_PREFIX: &str = "shrink-plugin-test-";

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let mut release = true;
    for a in args {
        match a.as_str() {
            "--dev" => release = false,
            "--release" => release = true,
            other => anyhow::bail!("plugins: unknown argument `{other}` (expected --dev or --release)"),
        }
    }
    let root = project_root();
    let dir = root.join("plugins");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with(TEST_FIXTURE_PREFIX))
        .collect();
    names.sort();
    anyhow::ensure!(!names.is_empty(), "no plugin crates under {}", dir.display());

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&root).arg("build");
    if release {
        cmd.arg("--release");
    }
    for n in &names {
        cmd.args(["-p", n]);
    }
    run_cmd(&mut cmd)?;

    let profile = if release { "release" } else { "debug" };
    let target = target_dir(&cargo)?;
    for n in &names {
        let file = format!("{}{}{}", std::env::consts::DLL_PREFIX, n.replace('-', "_"), std::env::consts::DLL_SUFFIX);
        let lib = target.join(profile).join(file);
        anyhow::ensure!(lib.is_file(), "{n}: {} not found after building (is it a cdylib?)", lib.display());
        // A fixed place inside the repository (ignored by git), whatever
        // CARGO_TARGET_DIR says, so that pipelines can name it.
        let dest_dir = root.join("target").join("plugins");
        std::fs::create_dir_all(&dest_dir)?;
        let dest = dest_dir.join(lib.file_name().expect("a file name"));
        std::fs::copy(&lib, &dest).with_context(|| format!("copying {} to {}", lib.display(), dest.display()))?;
        println!("{} (built as {})", dest.strip_prefix(&root).unwrap_or(&dest).display(), lib.display());
    }
    Ok(())
}

/// Cargo's target folder, as `cargo metadata` reports it (honours
/// `CARGO_TARGET_DIR` and `.cargo/config.toml`).
pub(crate) fn target_dir(cargo: &str) -> anyhow::Result<PathBuf> {
    let out = Command::new(cargo)
        .current_dir(project_root())
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("running cargo metadata")?;
    anyhow::ensure!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let json = String::from_utf8(out.stdout).context("cargo metadata printed non-UTF-8")?;
    // A JSON string field, read without a JSON parser (xtask keeps dependencies few).
    let key = "\"target_directory\":\"";
    let start = json.find(key).context("cargo metadata: no target_directory")? + key.len();
    let end = json[start..].find('"').context("cargo metadata: unterminated target_directory")? + start;
    Ok(PathBuf::from(json[start..end].replace("\\\\", "\\")))
}
