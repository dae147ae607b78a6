//! `cargo xtask fixtures`: trains the MNIST fixture models with PyTorch and
//! exports them to ONNX (fixtures/models/), see fixtures/README.md.
//!
//! Makes a Python venv in the cache folder (`<cache>/venv-fixtures`), installs
//! the pinned fixtures/gen/requirements.txt into it (again only when that file
//! changed), then runs each generator script in fixtures/gen/, which trains,
//! exports with both torch exporters, checks the onnxruntime accuracy against
//! torch's and writes `NAME.onnx`, `NAME.dynamo.onnx` and `NAME.json`.
//!
//! `--large` instead exports the large fixture models, untrained and never
//! committed, into `<cache>/fixtures-large/`: today `resnet50.onnx` (the
//! torchvision ResNet-50 architecture with seeded random weights, written by
//! fixtures/gen/resnet50_large.py), which `cargo xtask bench scale` measures.
//!
//! `--archs` exports the torchvision families with seeded random weights, by
//! both exporters, into `<cache>/fixtures-archs/` (fixtures/gen/torchvision_archs.py):
//! what `cargo xtask bench archs` and the trainer's family test
//! (`SHRINK_ARCHS_DIR`) run on.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The generators: model name and script (under fixtures/gen/), in run order.
const GENERATORS: &[(&str, &str)] =
    &[("lenet-300-100", "lenet_300_100.py"), ("lenet-5", "lenet_5.py"), ("convnet-mix", "convnet_mix.py")];

/// The CIFAR-10 generators: model name and script, trained on the set
/// `cargo xtask data cifar10` installs (installed first when missing).
const CIFAR_GENERATORS: &[(&str, &str)] =
    &[("resnet20-cifar", "cifar_resnet20.py"), ("mobilenetv2-cifar", "cifar_mobilenetv2.py")];

/// The large fixture: file name under `<cache>/fixtures-large/` and script (under fixtures/gen/).
const LARGE: (&str, &str) = ("resnet50.onnx", "resnet50_large.py");

const USAGE: &str = "\
cargo xtask fixtures [--data DIR] [MODEL...]
cargo xtask fixtures resnet20-cifar|mobilenetv2-cifar
cargo xtask fixtures --large [--force]
cargo xtask fixtures --archs [--size S]

    MODEL       only these models (default: all of lenet-300-100, lenet-5, convnet-mix);
                resnet20-cifar and mobilenetv2-cifar (CIFAR-10, about 30 and 60 minutes on 2 cores)
                run only when named
    --data DIR  folder of the MNIST IDX files (default: fixtures/data/mnist)
    --large     instead, export the large untrained fixture, ResNet-50 (torchvision's architecture,
                seeded random weights, ~25.6M parameters, ~100 MB) to
                <cache>/fixtures-large/resnet50.onnx; never into fixtures/models
    --force     with --large: export again even when the file exists
    --archs     instead, export the torchvision families (ResNet-18, MobileNetV2, MobileNetV3-Small,
                EfficientNet-B0, ShuffleNetV2, SqueezeNet, RegNetY-400MF, DenseNet-121) with
                seeded random weights, by both exporters, to <cache>/fixtures-archs/ (~300 MB)
    --size S    with --archs: input height and width (default 64)
";

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let mut data: Option<PathBuf> = None;
    let mut models: Vec<&str> = Vec::new();
    let (mut large, mut force, mut archs) = (false, false, false);
    let mut size: Option<String> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--large" => large = true,
            "--archs" => archs = true,
            "--size" => size = Some(it.next().context("--size needs a number")?.clone()),
            "--force" => force = true,
            "--data" => {
                let dir = it.next().context("--data needs a folder")?;
                data = Some(PathBuf::from(dir));
            }
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(());
            }
            name => match GENERATORS.iter().chain(CIFAR_GENERATORS).find(|(n, _)| *n == name) {
                Some((n, _)) => models.push(n),
                None => bail!("unknown model or option `{name}`\n\n{USAGE}"),
            },
        }
    }

    if archs {
        if large || force || data.is_some() || !models.is_empty() {
            bail!("--archs takes only --size\n\n{USAGE}");
        }
        archs_models(size.as_deref().unwrap_or("64"))?;
        return Ok(());
    }
    if size.is_some() {
        bail!("--size goes with --archs\n\n{USAGE}");
    }
    if large {
        if data.is_some() || !models.is_empty() {
            bail!("--large takes no MODEL and no --data\n\n{USAGE}");
        }
        large_model(force)?;
        return Ok(());
    }
    if force {
        bail!("--force goes with --large (the MNIST models are always trained again)\n\n{USAGE}");
    }

    let root = crate::project_root();
    let gen_dir = root.join("fixtures/gen");
    let out_dir = root.join("fixtures/models");
    let cifar: Vec<&str> = models.iter().copied().filter(|m| CIFAR_GENERATORS.iter().any(|(n, _)| n == m)).collect();
    if !cifar.is_empty() {
        if models.len() != cifar.len() || data.is_some() {
            bail!(
                "a CIFAR-10 model goes alone, without --data (it reads `cargo xtask data cifar10`'s files)\n\n{USAGE}"
            );
        }
        let dir = crate::cache_dir().join("data").join("cifar10");
        if !dir.join("test-labels-idx1-ubyte").is_file() {
            crate::data::run(&["cifar10".to_string()])?;
        }
        let python = venv(&gen_dir.join("requirements.txt"))?;
        for (name, script) in CIFAR_GENERATORS.iter().filter(|(n, _)| cifar.contains(n)) {
            generate(&python, name, script, &dir, &out_dir)?;
        }
        return Ok(());
    }
    let data = data.unwrap_or_else(|| root.join("fixtures/data/mnist"));
    check_data(&data)?;

    let python = venv(&gen_dir.join("requirements.txt"))?;
    for (name, script) in GENERATORS {
        if !models.is_empty() && !models.contains(name) {
            continue;
        }
        generate(&python, name, script, &data, &out_dir)?;
    }
    Ok(())
}

/// Runs the generator `script` (under fixtures/gen/) of fixture `name` on
/// the data folder `data`, writing into `out_dir`.
fn generate(python: &Path, name: &str, script: &str, data: &Path, out_dir: &Path) -> anyhow::Result<()> {
    let root = crate::project_root();
    eprintln!("fixtures: {name} (fixtures/gen/{script})");
    let started = std::time::Instant::now();
    crate::run_cmd(
        Command::new(python)
            .arg(root.join("fixtures/gen").join(script))
            .arg("--data")
            .arg(data)
            .arg("--out")
            .arg(out_dir)
            .current_dir(&root)
            .env("PYTHONHASHSEED", "0")
            // no __pycache__ folder in fixtures/gen
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("OMP_NUM_THREADS", "2"),
    )?;
    eprintln!("fixtures: {name} done in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The path of the large fixture, `<cache>/fixtures-large/resnet50.onnx`.
pub(crate) fn large_model_path() -> PathBuf {
    crate::cache_dir().join("fixtures-large").join(LARGE.0)
}

/// Exports the large fixture unless it is there already (or `force`), and
/// prints its parameter count and size (the script prints them as it exports).
/// Returns its path.
pub(crate) fn large_model(force: bool) -> anyhow::Result<PathBuf> {
    let path = large_model_path();
    let (file, script) = LARGE;
    if path.is_file() && !force {
        let bytes = std::fs::metadata(&path)?.len();
        eprintln!("fixtures: {} exists ({bytes} bytes; --force exports it again), skipped", path.display());
        return Ok(path);
    }
    let root = crate::project_root();
    let gen_dir = root.join("fixtures/gen");
    let python = venv(&gen_dir.join("requirements.txt"))?;
    eprintln!("fixtures: {file} (fixtures/gen/{script})");
    let started = std::time::Instant::now();
    crate::run_cmd(
        Command::new(&python)
            .arg(gen_dir.join(script))
            .arg("--out")
            .arg(&path)
            .current_dir(&root)
            .env("PYTHONHASHSEED", "0")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("OMP_NUM_THREADS", "2"),
    )?;
    anyhow::ensure!(path.is_file(), "{} did not write {}", script, path.display());
    eprintln!("fixtures: {file} done in {:.0} s: {}", started.elapsed().as_secs_f64(), path.display());
    Ok(path)
}

/// The folder of the torchvision family exports, `<cache>/fixtures-archs/`.
pub(crate) fn archs_dir() -> PathBuf {
    crate::cache_dir().join("fixtures-archs")
}

/// Exports the torchvision families into [`archs_dir`] (all of them, each
/// time: about a minute and a half on 2 cores).
pub(crate) fn archs_models(size: &str) -> anyhow::Result<PathBuf> {
    let dir = archs_dir();
    let root = crate::project_root();
    let gen_dir = root.join("fixtures/gen");
    let python = venv(&gen_dir.join("requirements.txt"))?;
    eprintln!("fixtures: torchvision families (fixtures/gen/torchvision_archs.py) into {}", dir.display());
    let started = std::time::Instant::now();
    crate::run_cmd(
        Command::new(&python)
            .arg(gen_dir.join("torchvision_archs.py"))
            .arg("--out")
            .arg(&dir)
            .arg("--size")
            .arg(size)
            .current_dir(&root)
            .env("PYTHONHASHSEED", "0")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("OMP_NUM_THREADS", "2"),
    )?;
    eprintln!("fixtures: torchvision families done in {:.0} s", started.elapsed().as_secs_f64());
    Ok(dir)
}

/// Fails early, with a hint, when an MNIST IDX file is missing.
fn check_data(dir: &Path) -> anyhow::Result<()> {
    for split in ["train", "t10k"] {
        for kind in ["images-idx3", "labels-idx1"] {
            let stem = format!("{split}-{kind}-ubyte");
            if !dir.join(format!("{stem}.gz")).is_file() && !dir.join(&stem).is_file() {
                bail!(
                    "MNIST file {stem}[.gz] not found in {}; see fixtures/README.md for where \
                     to get it, or pass --data DIR",
                    dir.display()
                );
            }
        }
    }
    Ok(())
}

/// Makes `<cache>/venv-fixtures` and installs the requirements into it, unless
/// the copy of requirements.txt left there by the last install is identical.
/// Returns the venv's python.
fn venv(requirements: &Path) -> anyhow::Result<PathBuf> {
    let dir = crate::cache_dir().join("venv-fixtures");
    let python = if cfg!(windows) { dir.join("Scripts").join("python.exe") } else { dir.join("bin").join("python") };
    if !python.is_file() {
        eprintln!("fixtures: creating venv {}", dir.display());
        std::fs::create_dir_all(crate::cache_dir())?;
        let host = if cfg!(windows) { "python" } else { "python3" };
        crate::run_cmd(Command::new(host).args(["-m", "venv"]).arg(&dir))?;
    }
    let wanted =
        std::fs::read_to_string(requirements).with_context(|| format!("reading {}", requirements.display()))?;
    let stamp = dir.join("installed-requirements.txt");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        eprintln!("fixtures: installing {} (torch pulls several GB of CUDA wheels)", requirements.display());
        crate::run_cmd(
            Command::new(&python).args(["-m", "pip", "install", "--disable-pip-version-check", "-r"]).arg(requirements),
        )?;
        std::fs::write(&stamp, &wanted)?;
    }
    Ok(python)
}
