//! `cargo xtask onnx-suite [FILTER]`: the ONNX backend test data through the
//! IR, judged by tract.
//!
//! Downloads the onnx 1.22.0 wheel from PyPI with pip (once), unpacks only
//! its `onnx/backend/test/data/` folder into the cache (once), then runs the
//! `onnx-suite` driver of `tests/` in the dev profile, so that it shares the
//! test build. Without FILTER the run is recorded in `tests/onnx-suite.txt`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

const ONNX_VERSION: &str = "1.22.0";
const DATA_PREFIX: &str = "onnx/backend/test/data/";
const RECORD: &str = "tests/onnx-suite.txt";

pub(crate) fn run(rest: &[String]) -> anyhow::Result<()> {
    let filter = match rest {
        [] => None,
        [f] if !f.starts_with('-') => Some(f.as_str()),
        _ => bail!("usage: cargo xtask onnx-suite [FILTER]"),
    };
    let dir = crate::cache_dir().join(format!("onnx-{ONNX_VERSION}"));
    let data = dir.join(DATA_PREFIX.trim_end_matches('/'));
    if data.join("node").is_dir() {
        eprintln!("onnx-suite: test data already in {}", data.display());
    } else {
        let wheel = download_wheel(&dir.join("wheel"))?;
        unpack_data(&wheel, &dir)?;
    }

    let root = crate::project_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Build the driver exactly as `cargo test --workspace` does (it builds the
    // bins of shrink-tests for its integration tests): a plain `cargo run -p`
    // resolves features differently and would compile tract and burn again.
    crate::run_cmd(Command::new(&cargo).current_dir(&root).args(["test", "--workspace", "--no-run", "--quiet"]))?;
    let bin =
        crate::plugins::target_dir(&cargo)?.join("debug").join(format!("onnx-suite{}", std::env::consts::EXE_SUFFIX));
    anyhow::ensure!(bin.is_file(), "{} not found after `cargo test --workspace --no-run`", bin.display());
    let mut cmd = Command::new(bin);
    cmd.current_dir(&root).arg(&data);
    match filter {
        Some(f) => {
            cmd.args(["--filter", f]);
        }
        None => {
            cmd.arg("--record").arg(root.join(RECORD));
        }
    }
    crate::run_cmd(&mut cmd)
}

/// The onnx wheel in `dir`, downloaded with pip unless one is there already.
fn download_wheel(dir: &Path) -> anyhow::Result<PathBuf> {
    if let Some(w) = find_wheel(dir)? {
        return Ok(w);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    eprintln!("onnx-suite: downloading onnx=={ONNX_VERSION} from PyPI into {}", dir.display());
    // Only the test data is used, which every wheel carries: pin one wheel so
    // that any machine, whatever its Python, gets the same file.
    crate::run_cmd(
        Command::new("python3")
            .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
            .args(["--implementation", "cp", "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64"])
            .arg(format!("onnx=={ONNX_VERSION}"))
            .arg("-d")
            .arg(dir),
    )
    .context("downloading the onnx wheel (needs python3 with pip, and network access to PyPI)")?;
    find_wheel(dir)?.with_context(|| format!("pip left no onnx-{ONNX_VERSION} wheel in {}", dir.display()))
}

fn find_wheel(dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let prefix = format!("onnx-{ONNX_VERSION}-");
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(&prefix) && name.ends_with(".whl") {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// Unpacks `onnx/backend/test/data/` of the wheel into `dir`, through a
/// temporary folder so that an interrupted unpack is not taken for a done one.
fn unpack_data(wheel: &Path, dir: &Path) -> anyhow::Result<()> {
    let tmp = dir.join(".unpack");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    eprintln!("onnx-suite: unpacking {DATA_PREFIX} of {}", wheel.display());
    let has_unzip = Command::new("unzip").arg("-v").output().is_ok_and(|o| o.status.success());
    if has_unzip {
        crate::run_cmd(Command::new("unzip").arg("-q").arg(wheel).arg(format!("{DATA_PREFIX}*")).arg("-d").arg(&tmp))?;
    } else {
        const EXTRACT: &str = "import sys, zipfile\n\
            z = zipfile.ZipFile(sys.argv[1])\n\
            z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith(sys.argv[3])])";
        crate::run_cmd(Command::new("python3").args(["-c", EXTRACT]).arg(wheel).arg(&tmp).arg(DATA_PREFIX))?;
    }
    if !tmp.join(DATA_PREFIX).join("node").is_dir() {
        bail!("{} holds no {DATA_PREFIX}node folder", wheel.display());
    }
    let dest = dir.join("onnx");
    if dest.exists() {
        std::fs::remove_dir_all(&dest).with_context(|| format!("removing {}", dest.display()))?;
    }
    std::fs::rename(tmp.join("onnx"), &dest).with_context(|| format!("moving the data to {}", dest.display()))?;
    std::fs::remove_dir_all(&tmp).ok();
    Ok(())
}
