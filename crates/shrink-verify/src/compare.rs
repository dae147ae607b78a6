//! Comparing two output lists: bit for bit, or within a tolerance.

use tract_onnx::prelude::{Datum, DatumType, Tensor, f16};
use tract_onnx::tract_core::internal::Approximation;

use crate::error::VerifyError;

/// Checks that two output lists are identical: same count, and per output
/// the same datum type, the same shape and the same bytes. Floats compare by
/// bit pattern (a NaN equals the same NaN, `-0.0` differs from `0.0`);
/// strings compare by value.
pub fn compare_exact(expected: &[Tensor], actual: &[Tensor]) -> Result<(), VerifyError> {
    compare_lists(expected, actual, exact)
}

/// Checks that two output lists agree within a tolerance: floats with
/// |a - e| <= 1e-4 + 1e-3 |e| (NaN matches NaN, infinities match by sign),
/// other types exactly. The datum types and shapes must be equal.
pub fn compare_close(expected: &[Tensor], actual: &[Tensor]) -> Result<(), VerifyError> {
    compare_lists(expected, actual, |e, a| {
        if !e.datum_type().is_float() {
            return exact(e, a);
        }
        header(e, a)?;
        a.close_enough(e, Approximation::Custom(1e-4, 1e-3, 0.0)).map_err(|err| format!("{err:#}"))
    })
}

fn compare_lists(
    expected: &[Tensor],
    actual: &[Tensor],
    cmp: impl Fn(&Tensor, &Tensor) -> Result<(), String>,
) -> Result<(), VerifyError> {
    if expected.len() != actual.len() {
        return Err(VerifyError::OutputCount { expected: expected.len(), actual: actual.len() });
    }
    for (index, (e, a)) in expected.iter().zip(actual).enumerate() {
        cmp(e, a).map_err(|reason| VerifyError::Mismatch { index, reason })?;
    }
    Ok(())
}

fn header(e: &Tensor, a: &Tensor) -> Result<(), String> {
    if e.datum_type() != a.datum_type() {
        return Err(format!("datum type {:?} != {:?}", e.datum_type(), a.datum_type()));
    }
    if e.shape() != a.shape() {
        return Err(format!("shape {:?} != {:?}", e.shape(), a.shape()));
    }
    Ok(())
}

fn exact(e: &Tensor, a: &Tensor) -> Result<(), String> {
    header(e, a)?;
    match e.datum_type() {
        DatumType::String => elementwise::<String>(e, a),
        DatumType::TDim => elementwise::<tract_onnx::prelude::TDim>(e, a),
        DatumType::Blob => elementwise::<tract_onnx::prelude::Blob>(e, a),
        dt => {
            let (eb, ab) = (e.as_bytes(), a.as_bytes());
            if eb == ab {
                return Ok(());
            }
            let size = dt.size_of().max(1);
            let differing = eb.chunks(size).zip(ab.chunks(size)).filter(|(x, y)| x != y).count();
            let first = eb.iter().zip(ab).position(|(x, y)| x != y).unwrap_or(0) / size;
            Err(format!(
                "{differing} of {} elements differ; first at flat index {first}: {} != {}",
                e.len(),
                element(e, first),
                element(a, first)
            ))
        }
    }
}

fn elementwise<T: Datum + PartialEq + std::fmt::Debug>(e: &Tensor, a: &Tensor) -> Result<(), String> {
    let (ev, av) = match (e.to_plain_array_view::<T>(), a.to_plain_array_view::<T>()) {
        (Ok(ev), Ok(av)) => (ev, av),
        (Err(err), _) | (_, Err(err)) => return Err(format!("cannot read elements: {err:#}")),
    };
    let differing = ev.iter().zip(av.iter()).filter(|(x, y)| x != y).count();
    match ev.iter().zip(av.iter()).position(|(x, y)| x != y) {
        None => Ok(()),
        Some(i) => Err(format!(
            "{differing} of {} elements differ; first at flat index {i}: {:?} != {:?}",
            e.len(),
            ev.iter().nth(i),
            av.iter().nth(i)
        )),
    }
}

/// One element, with its bit pattern for floats.
fn element(t: &Tensor, i: usize) -> String {
    fn nth<T: Datum + Copy>(t: &Tensor, i: usize) -> Option<T> {
        t.to_plain_array_view::<T>().ok()?.iter().nth(i).copied()
    }
    let shown = match t.datum_type() {
        DatumType::F32 => nth::<f32>(t, i).map(|v| format!("{v:?} (0x{:08x})", v.to_bits())),
        DatumType::F64 => nth::<f64>(t, i).map(|v| format!("{v:?} (0x{:016x})", v.to_bits())),
        DatumType::F16 => nth::<f16>(t, i).map(|v| format!("{v:?} (0x{:04x})", v.to_bits())),
        _ => t.nth(i).ok().and_then(|s| {
            let s = s.cast_to::<String>().ok()?.into_owned();
            s.to_plain_array_view::<String>().ok()?.iter().next().cloned()
        }),
    };
    shown.unwrap_or_else(|| "?".into())
}
