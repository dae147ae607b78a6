//! numpy's `.npy` arrays and `.npz` archives of them.
//!
//! Crate choice: `npyz` (without its `npz` feature) parses `.npy`, and `zip`
//! (deflate only) opens `.npz`. Both candidates read the header dict with
//! `py_literal` (pest); beyond that `ndarray-npy` would bring all of
//! `ndarray` for arrays we flatten at once, while `npyz` adds only
//! `byteorder` and `num-bigint`. `npyz`'s own `npz` feature is left off: it
//! pins zip 0.6 with every codec (zstd and bzip2 in C, aes), and numpy only
//! ever writes stored (`savez`) or deflated (`savez_compressed`) members.
//!
//! Supported element types: bool, u8/i8/i16/i32/i64/u16/u32/u64 (widened to
//! `i64`; u8 stays u8), f32/f64 (narrowed to f32). C order only.

use std::io::Read;
use std::path::Path;

use npyz::{DType, NpyFile, Order, TypeChar};

use crate::{DataError, RawArray, Values};

/// Reads one `.npy` file.
pub fn read_npy(path: &Path) -> Result<RawArray, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let array = decode(&bytes, path, path.display().to_string())?;
    tracing::debug!(path = %path.display(), shape = ?array.shape, dtype = array.values.dtype(), "read npy");
    Ok(array)
}

/// The names of the arrays in an `.npz` archive (member names without `.npy`), sorted.
pub fn npz_names(path: &Path) -> Result<Vec<String>, DataError> {
    let archive = open_npz(path)?;
    Ok(member_names(&archive))
}

/// Reads the array `name` (as given to `numpy.savez`) from an `.npz` archive.
pub fn read_npz_array(path: &Path, name: &str) -> Result<RawArray, DataError> {
    let mut archive = open_npz(path)?;
    let member = format!("{name}.npy");
    let Some(index) = archive.index_for_name(&member) else {
        return Err(DataError::NpzMember { path: path.into(), name: name.into(), available: member_names(&archive) });
    };
    let mut file = archive
        .by_index(index)
        .map_err(|e| DataError::Format { path: path.into(), reason: format!("member {member}: {e}") })?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| DataError::Format { path: path.into(), reason: format!("member {member}: {e}") })?;
    let array = decode(&bytes, path, format!("{}:{name}", path.display()))?;
    tracing::debug!(origin = %array.origin, shape = ?array.shape, dtype = array.values.dtype(), "read npz array");
    Ok(array)
}

fn open_npz(path: &Path) -> Result<zip::ZipArchive<std::fs::File>, DataError> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    zip::ZipArchive::new(file)
        .map_err(|e| DataError::Format { path: path.into(), reason: format!("not an .npz (zip) archive: {e}") })
}

fn member_names(archive: &zip::ZipArchive<std::fs::File>) -> Vec<String> {
    let mut names: Vec<String> =
        archive.file_names().filter_map(Result::ok).map(|n| n.strip_suffix(".npy").unwrap_or(&n).to_owned()).collect();
    names.sort();
    names
}

/// Decodes `.npy` bytes; `path` and `origin` only name them in errors.
fn decode(bytes: &[u8], path: &Path, origin: String) -> Result<RawArray, DataError> {
    let format = |reason: String| DataError::Format { path: path.into(), reason };
    let header = check_preheader(bytes).map_err(|r| format(format!("not a .npy array: {r}")))?;
    // npyz multiplies the header's dimensions unchecked (a panic in debug
    // builds on a hostile header): refuse such shapes first, and keep any
    // other panic of the parser an error too.
    if shape_overflows(header) {
        return Err(format("shape does not fit in memory".into()));
    }
    let parsed = std::panic::catch_unwind(|| NpyFile::new(bytes));
    let npy = match parsed {
        Ok(Ok(npy)) => npy,
        Ok(Err(e)) => return Err(format(format!("not a .npy array: {e}"))),
        Err(_) => return Err(format("not a .npy array: the header does not parse".into())),
    };
    let shape: Vec<usize> = npy
        .shape()
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<_, _>>()
        .map_err(|_| format(format!("shape {:?} does not fit in memory", npy.shape())))?;
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format(format!("shape {shape:?} does not fit in memory")))?;
    if npy.order() == Order::Fortran && shape.iter().filter(|&&d| d > 1).count() > 1 {
        return Err(format("fortran-order arrays are not supported (save numpy.ascontiguousarray(a))".into()));
    }
    let dtype = npy.dtype();
    let unsupported = || DataError::DType {
        origin: origin.clone(),
        dtype: dtype.descr().trim_matches('\'').to_owned(),
        expected: "bool, integers, f32 or f64",
    };
    let DType::Plain(ts) = &dtype else {
        return Err(unsupported());
    };
    let data_err = |e: std::io::Error| format(format!("reading the data: {e}"));
    let values = match (ts.type_char(), ts.size_field()) {
        (TypeChar::Uint, 1) => Values::U8(npy.into_vec::<u8>().map_err(data_err)?),
        (TypeChar::Bool, 1) => {
            Values::U8(npy.into_vec::<bool>().map_err(data_err)?.into_iter().map(u8::from).collect())
        }
        (TypeChar::Int, 1) => widen(npy.into_vec::<i8>().map_err(data_err)?),
        (TypeChar::Int, 2) => widen(npy.into_vec::<i16>().map_err(data_err)?),
        (TypeChar::Int, 4) => widen(npy.into_vec::<i32>().map_err(data_err)?),
        (TypeChar::Int, 8) => Values::I64(npy.into_vec::<i64>().map_err(data_err)?),
        (TypeChar::Uint, 2) => widen(npy.into_vec::<u16>().map_err(data_err)?),
        (TypeChar::Uint, 4) => widen(npy.into_vec::<u32>().map_err(data_err)?),
        (TypeChar::Uint, 8) => Values::I64(
            npy.into_vec::<u64>()
                .map_err(data_err)?
                .into_iter()
                .map(|v| i64::try_from(v).unwrap_or(i64::MAX))
                .collect(),
        ),
        (TypeChar::Float, 4) => Values::F32(npy.into_vec::<f32>().map_err(data_err)?),
        (TypeChar::Float, 8) => {
            Values::F32(npy.into_vec::<f64>().map_err(data_err)?.into_iter().map(|v| v as f32).collect())
        }
        _ => return Err(unsupported()),
    };
    if values.len() != count {
        return Err(format(format!("shape {shape:?} declares {count} values, the data holds {}", values.len())));
    }
    Ok(RawArray { origin, shape, values })
}

fn widen<T: Into<i64>>(v: Vec<T>) -> Values {
    Values::I64(v.into_iter().map(Into::into).collect())
}

/// Checks magic, version and that the header length fits in the bytes, so
/// that npyz never allocates a header the file does not hold; returns the
/// header text.
fn check_preheader(bytes: &[u8]) -> Result<&[u8], String> {
    if !bytes.starts_with(b"\x93NUMPY") || bytes.len() < 10 {
        return Err("magic bytes \\x93NUMPY not found".into());
    }
    let (len, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(format!("unknown format version {v}")),
    };
    let rest = &bytes[start..];
    if rest.len() < len {
        return Err(format!("truncated header: {len} bytes declared, {} present", rest.len()));
    }
    Ok(&rest[..len])
}

/// Whether the `'shape': (a, b, ...)` of a header multiplies past `u64`.
/// Anything this scan does not understand is left to npyz to judge.
fn shape_overflows(header: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(header) else {
        return false;
    };
    let Some(tuple) = text
        .split_once("'shape'")
        .and_then(|(_, r)| r.split_once('('))
        .and_then(|(_, r)| r.split_once(')'))
        .map(|(t, _)| t)
    else {
        return false;
    };
    let mut product: u64 = 1;
    for dim in tuple.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let Ok(d) = dim.trim_end_matches('L').parse::<u64>() else {
            return false;
        };
        match product.checked_mul(d) {
            Some(p) => product = p,
            None => return true,
        }
    }
    false
}
