//! Image folders: `root/<class>/<image>.png|.jpg|.jpeg`, as torchvision's
//! `ImageFolder` reads them.
//!
//! - Classes are the sub-folders of `root`, sorted by name: the first is
//!   label 0. Images are the files directly inside a class folder, sorted by
//!   name; a file with another extension (or a nested folder) is skipped, and
//!   the number skipped is reported once with `tracing::warn!`. Files directly
//!   inside `root` are ignored, as torchvision ignores them.
//! - Channels: every image becomes RGB (grey is repeated into three channels,
//!   alpha is dropped), except that a folder whose images are all grey keeps
//!   one channel (MNIST saved as PNG stays `[1, H, W]` for a grey model).
//! - [`FolderOptions::resize`] scales the shorter side to N pixels with a
//!   triangle (bilinear) filter, the longer side to `N * long / short`
//!   (truncated), as torchvision's `Resize(N)` does; [`FolderOptions::crop`]
//!   then cuts the centred N×N square, with `CenterCrop(N)`'s offsets
//!   (`round((h - N) / 2)`, halves to even). After them every image must have
//!   the same size; without them all images must share one size as stored.
//!   EXIF orientation is not applied (nor is it by torchvision's loader).
//! - Pixels are kept as u8 `[N, C, H, W]` in an [`InMemoryDataset`], so the
//!   [`Preprocess`] (scale, mean/std per channel) and [`crate::Augment`]
//!   apply as to any other source.
//!
//! Files are decoded in parallel (rayon); a folder of more than
//! [`PROGRESS_MIN`] images logs its progress at info level every tenth.
//! Errors name the file or folder, in file order whatever the thread that met
//! them first; a decoder that panics on a hostile file is an error too.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use image::imageops::{self, FilterType};
use image::{DynamicImage, GenericImageView};
use rayon::prelude::*;
use serde::Deserialize;

use crate::{DataError, InMemoryDataset, Preprocess, RawArray, Values};

/// Extensions read as images (compared without regard to case).
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg"];

/// Folders with more images than this log their decoding progress.
pub const PROGRESS_MIN: usize = 1000;

/// How the images of a folder are brought to one size, e.g.
/// `{ resize = 256, crop = 224 }` (ImageNet's evaluation transform).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FolderOptions {
    /// Scale each image so that its shorter side is this many pixels
    /// (torchvision's `Resize(N)`, bilinear).
    pub resize: Option<u32>,
    /// Then cut the centred `crop`×`crop` square (torchvision's `CenterCrop(N)`);
    /// an image smaller than that is an error.
    pub crop: Option<u32>,
}

/// One image after decoding, resizing and cropping: interleaved pixels,
/// one byte per channel, `grey` telling whether that is one channel or three.
struct Decoded {
    grey: bool,
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

/// Loads `root/<class>/<image>` as a labelled dataset: see the module doc.
pub fn load_image_folder(
    root: &Path,
    options: &FolderOptions,
    preprocess: &Preprocess,
) -> Result<InMemoryDataset, DataError> {
    for (field, value) in [("resize", options.resize), ("crop", options.crop)] {
        if value == Some(0) {
            return Err(DataError::Parameter { field, reason: "must be at least 1 pixel".into() });
        }
    }
    let Scan { classes, files } = scan(root)?;
    let total = files.len();
    tracing::info!(root = %root.display(), classes = classes.len(), images = total, "decoding image folder");
    let done = AtomicUsize::new(0);
    let step = total.div_ceil(10).max(1);
    let decoded: Vec<Result<Decoded, DataError>> = files
        .par_iter()
        .map(|(path, _)| {
            let r = decode_guarded(path, options);
            let d = done.fetch_add(1, Ordering::Relaxed) + 1;
            if total > PROGRESS_MIN && (d.is_multiple_of(step) || d == total) {
                tracing::info!("decoded {d}/{total} images ({}%)", d * 100 / total);
            }
            r
        })
        .collect();
    let mut images = Vec::with_capacity(total);
    for r in decoded {
        images.push(r?);
    }
    let (width, height) = (images[0].width, images[0].height);
    if let Some(k) = images.iter().position(|d| (d.width, d.height) != (width, height)) {
        let (w, h) = (images[k].width, images[k].height);
        let how = match (options.resize, options.crop) {
            (_, Some(_)) => "", // not met: every crop is crop x crop
            (Some(_), None) => "after resize; add crop to cut them to one size",
            (None, None) => "; give resize and crop to bring them to one size",
        };
        return Err(DataError::Image {
            path: files[k].0.clone(),
            reason: format!("image is {w}x{h} but {} is {width}x{height}{how}", files[0].0.display()),
        });
    }
    let channels = if images.iter().all(|d| d.grey) { 1 } else { 3 };
    let plane = width as usize * height as usize;
    let mut pixels = Vec::with_capacity(total * channels * plane);
    for d in &images {
        for c in 0..channels {
            if d.grey {
                pixels.extend_from_slice(&d.pixels);
            } else {
                pixels.extend(d.pixels.iter().skip(c).step_by(3));
            }
        }
    }
    drop(images);
    let origin = root.display().to_string();
    let images = RawArray {
        origin: origin.clone(),
        shape: vec![total, channels, height as usize, width as usize],
        values: Values::U8(pixels),
    };
    let labels = RawArray {
        origin,
        shape: vec![total],
        values: Values::I64(files.iter().map(|&(_, label)| label as i64).collect()),
    };
    let data = InMemoryDataset::new(images, labels, Some(classes.len()), preprocess)?;
    tracing::info!(
        root = %root.display(),
        images = total,
        shape = ?[channels, height as usize, width as usize],
        classes = %classes.join(", "),
        "loaded image folder"
    );
    Ok(data)
}

/// What a folder holds: class names (sorted) and every image with its label, in order.
struct Scan {
    classes: Vec<String>,
    files: Vec<(PathBuf, usize)>,
}

fn scan(root: &Path) -> Result<Scan, DataError> {
    let mut class_dirs: Vec<(OsString, PathBuf)> = Vec::new();
    let mut loose_images = 0usize;
    for entry in read_dir(root)? {
        let path = entry.path();
        if path.is_dir() {
            class_dirs.push((entry.file_name(), path));
        } else if is_image(&path) {
            loose_images += 1;
        }
    }
    if class_dirs.is_empty() {
        let hint = if loose_images > 0 {
            format!(" ({loose_images} image(s) lie directly in it: put each class's images in a folder of its own)")
        } else {
            String::new()
        };
        return Err(DataError::Folder {
            path: root.into(),
            reason: format!("no class folders: expected <root>/<class>/<image>.png|jpg|jpeg{hint}"),
        });
    }
    class_dirs.sort();
    let mut files = Vec::new();
    let mut skipped = 0usize;
    let mut first_skipped: Option<PathBuf> = None;
    for (label, (_, dir)) in class_dirs.iter().enumerate() {
        let mut images: Vec<(OsString, PathBuf)> = Vec::new();
        for entry in read_dir(dir)? {
            let path = entry.path();
            if path.is_file() && is_image(&path) {
                images.push((entry.file_name(), path));
            } else {
                skipped += 1;
                first_skipped.get_or_insert(path);
            }
        }
        if images.is_empty() {
            return Err(DataError::Folder {
                path: dir.clone(),
                reason: format!("class folder holds no image ({})", IMAGE_EXTENSIONS.join(", ")),
            });
        }
        images.sort();
        files.extend(images.into_iter().map(|(_, p)| (p, label)));
    }
    if let Some(first) = first_skipped {
        tracing::warn!(
            "{}: skipped {skipped} entr{} that are not .png/.jpg/.jpeg files, e.g. {}",
            root.display(),
            if skipped == 1 { "y" } else { "ies" },
            first.display()
        );
    }
    let classes = class_dirs.into_iter().map(|(name, _)| name.to_string_lossy().into_owned()).collect();
    Ok(Scan { classes, files })
}

fn read_dir(dir: &Path) -> Result<Vec<std::fs::DirEntry>, DataError> {
    std::fs::read_dir(dir).and_then(|it| it.collect::<Result<Vec<_>, _>>()).map_err(|e| DataError::io(dir, e))
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// [`decode`], with a panicking decoder turned into an error naming the file.
fn decode_guarded(path: &Path, options: &FolderOptions) -> Result<Decoded, DataError> {
    std::panic::catch_unwind(|| decode(path, options)).unwrap_or_else(|_| {
        Err(DataError::Image { path: path.into(), reason: "cannot decode the image: the decoder panicked".into() })
    })
}

fn decode(path: &Path, options: &FolderOptions) -> Result<Decoded, DataError> {
    let bad = |reason: String| DataError::Image { path: path.into(), reason };
    let reader = image::ImageReader::open(path)
        .map_err(|e| DataError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| DataError::io(path, e))?;
    let img = reader.decode().map_err(|e| bad(format!("cannot decode the image: {e}")))?;
    let grey = !img.color().has_color();
    let img = if grey { DynamicImage::ImageLuma8(img.into_luma8()) } else { DynamicImage::ImageRgb8(img.into_rgb8()) };
    let img = match options.resize {
        Some(n) => {
            let (w, h) = img.dimensions();
            let (nw, nh) = resized(w, h, n);
            if (nw, nh) == (w, h) { img } else { resize(&img, nw, nh) }
        }
        None => img,
    };
    let img = match options.crop {
        Some(n) => {
            let (w, h) = img.dimensions();
            if w < n || h < n {
                let after = if options.resize.is_some() { " after resize" } else { "" };
                return Err(bad(format!("image is {w}x{h}{after}, smaller than the {n}x{n} crop")));
            }
            img.crop_imm(centre_offset(w, n), centre_offset(h, n), n, n)
        }
        None => img,
    };
    let (width, height) = img.dimensions();
    let pixels = if grey { img.into_luma8().into_raw() } else { img.into_rgb8().into_raw() };
    Ok(Decoded { grey, width, height, pixels })
}

fn resize(img: &DynamicImage, width: u32, height: u32) -> DynamicImage {
    match img {
        DynamicImage::ImageLuma8(b) => {
            DynamicImage::ImageLuma8(imageops::resize(b, width, height, FilterType::Triangle))
        }
        other => DynamicImage::ImageRgb8(imageops::resize(&other.to_rgb8(), width, height, FilterType::Triangle)),
    }
}

/// torchvision's `Resize(n)` size: the shorter side `n`, the longer
/// `floor(n * long / short)`; returns `(width, height)`.
pub(crate) fn resized(width: u32, height: u32, n: u32) -> (u32, u32) {
    let (short, long) = (width.min(height), width.max(height));
    let new_long = (u64::from(n) * u64::from(long) / u64::from(short.max(1))).min(u64::from(u32::MAX)) as u32;
    if width <= height { (n, new_long) } else { (new_long, n) }
}

/// torchvision's `CenterCrop` offset: `round((size - n) / 2)` with halves to even.
pub(crate) fn centre_offset(size: u32, n: u32) -> u32 {
    let d = size - n;
    let half = d / 2;
    if d % 2 == 1 && half % 2 == 1 { half + 1 } else { half }
}
