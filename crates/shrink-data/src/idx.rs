//! The IDX format of MNIST and its kin, raw or gzip-compressed.
//!
//! Layout (big-endian): two zero bytes, an element type code, the rank `r`,
//! `r` dimensions as `u32`, then the row-major data. Type codes: `0x08` u8,
//! `0x09` i8, `0x0B` i16, `0x0C` i32, `0x0D` f32, `0x0E` f64. A gzip file is
//! recognised by its magic bytes (`1f 8b`), whatever its name.
//!
//! The header's sizes are never trusted for allocation: data is read through
//! a `take(declared + 1)` limit into a growing buffer, so a lying header costs
//! no more memory than the file holds.

use std::io::Read;
use std::path::Path;

use flate2::read::GzDecoder;

use crate::{DataError, RawArray, Values};

/// Reads an IDX file (raw, or gzip-compressed) into a [`RawArray`].
///
/// Errors: [`DataError::MissingFile`] naming the path, [`DataError::BadMagic`]
/// for anything but an IDX header, [`DataError::Truncated`] when the header or
/// data is cut short, [`DataError::Format`] for bytes after the declared data.
pub fn read_idx(path: &Path) -> Result<RawArray, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let gzip = bytes.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read + '_> = if gzip { Box::new(GzDecoder::new(&bytes[..])) } else { Box::new(&bytes[..]) };
    let array = decode(reader, path)?;
    tracing::debug!(
        path = %path.display(),
        gzip,
        shape = ?array.shape,
        dtype = array.values.dtype(),
        "read idx"
    );
    Ok(array)
}

fn decode(mut r: impl Read, path: &Path) -> Result<RawArray, DataError> {
    let mut magic = [0u8; 4];
    read_part(&mut r, &mut magic, path, "header")?;
    if magic[0] != 0 || magic[1] != 0 {
        return Err(DataError::BadMagic {
            path: path.into(),
            reason: format!(
                "magic bytes {:02x} {:02x} {:02x} {:02x}, expected 00 00 <type> <rank>",
                magic[0], magic[1], magic[2], magic[3]
            ),
        });
    }
    let code = magic[2];
    let elem_size: u64 = match code {
        0x08 | 0x09 => 1,
        0x0B => 2,
        0x0C | 0x0D => 4,
        0x0E => 8,
        _ => {
            return Err(DataError::BadMagic {
                path: path.into(),
                reason: format!("unknown element type code 0x{code:02x}"),
            });
        }
    };
    let rank = usize::from(magic[3]);
    if rank == 0 {
        return Err(DataError::BadMagic { path: path.into(), reason: "rank 0 (no dimensions)".into() });
    }
    let mut dims_bytes = vec![0u8; 4 * rank];
    read_part(&mut r, &mut dims_bytes, path, "header")?;
    let shape: Vec<usize> =
        dims_bytes.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
    let too_big = || DataError::Shape {
        origin: path.display().to_string(),
        shape: shape.clone(),
        reason: "more elements than this machine can address".into(),
    };
    let count = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or_else(too_big)?;
    let expected = (count as u64).checked_mul(elem_size).ok_or_else(too_big)?;

    let mut data = Vec::new();
    let mut limited = r.take(expected.saturating_add(1));
    if let Err(e) = limited.read_to_end(&mut data) {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            // A gzip stream cut short: `data` holds what came out before the end.
            return Err(DataError::Truncated { path: path.into(), part: "data", expected, found: data.len() as u64 });
        }
        return Err(DataError::Io { path: path.into(), source: e });
    }
    let found = data.len() as u64;
    if found < expected {
        return Err(DataError::Truncated { path: path.into(), part: "data", expected, found });
    }
    if found > expected {
        return Err(DataError::Format {
            path: path.into(),
            reason: format!("more data than the header's {shape:?} of {expected} bytes declares"),
        });
    }

    let values = match code {
        0x08 => Values::U8(data),
        0x09 => Values::I64(data.iter().map(|&b| i64::from(b as i8)).collect()),
        0x0B => Values::I64(data.chunks_exact(2).map(|c| i64::from(i16::from_be_bytes([c[0], c[1]]))).collect()),
        0x0C => {
            Values::I64(data.chunks_exact(4).map(|c| i64::from(i32::from_be_bytes([c[0], c[1], c[2], c[3]]))).collect())
        }
        0x0D => Values::F32(data.chunks_exact(4).map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]])).collect()),
        // 0x0E, the only code left after the check above.
        _ => Values::F32(
            data.chunks_exact(8)
                .map(|c| f64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
                .collect(),
        ),
    };
    Ok(RawArray { origin: path.display().to_string(), shape, values })
}

/// Fills `buf` completely, or reports how much of this `part` was there.
fn read_part(r: &mut impl Read, buf: &mut [u8], path: &Path, part: &'static str) -> Result<(), DataError> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => {
                return Err(DataError::Io { path: path.into(), source: e });
            }
        }
    }
    if filled < buf.len() {
        return Err(DataError::Truncated { path: path.into(), part, expected: buf.len() as u64, found: filled as u64 });
    }
    Ok(())
}
