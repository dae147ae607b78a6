//! Tensors: the `TensorProto` as loaded (dtype and bytes untouched, so saving
//! writes what was read) with typed views for the numeric code.

use crate::error::GraphError;
use crate::onnx::TensorProto;
use crate::onnx::tensor_proto::DataLocation;

pub use crate::onnx::tensor_proto::DataType;

/// A dense tensor. The protobuf is kept whole: raw bytes, typed fields,
/// metadata and doc string survive a round trip exactly.
#[derive(Debug, Clone, PartialEq)]
#[repr(transparent)]
pub struct Tensor {
    pub proto: TensorProto,
}

impl Tensor {
    pub fn from_proto(proto: TensorProto) -> Tensor {
        Tensor { proto }
    }

    /// Views a `TensorProto` as a `Tensor` without copying.
    pub fn from_proto_ref(proto: &TensorProto) -> &Tensor {
        // SAFETY: `Tensor` is `repr(transparent)` over `TensorProto`, so the two
        // references have the same layout and validity.
        unsafe { &*(proto as *const TensorProto as *const Tensor) }
    }

    /// A float tensor stored little-endian in `raw_data`.
    pub fn from_f32(name: &str, dims: &[i64], data: &[f32]) -> Tensor {
        let raw = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        Tensor::from_raw(name, DataType::Float, dims, raw)
    }

    /// An int64 tensor stored little-endian in `raw_data` (shapes, axes).
    pub fn from_i64(name: &str, dims: &[i64], data: &[i64]) -> Tensor {
        let raw = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        Tensor::from_raw(name, DataType::Int64, dims, raw)
    }

    /// A tensor of any fixed-size type from its little-endian bytes.
    pub fn from_raw(name: &str, dtype: DataType, dims: &[i64], raw: Vec<u8>) -> Tensor {
        Tensor {
            proto: TensorProto {
                name: name.into(),
                dims: dims.to_vec(),
                data_type: dtype as i32,
                raw_data: raw,
                ..TensorProto::default()
            },
        }
    }

    pub fn name(&self) -> &str {
        &self.proto.name
    }

    pub fn dims(&self) -> &[i64] {
        &self.proto.dims
    }

    /// The element type; `Undefined` for a code this schema does not know.
    pub fn dtype(&self) -> DataType {
        DataType::try_from(self.proto.data_type).unwrap_or(DataType::Undefined)
    }

    /// Number of elements, or an error for negative or overflowing dims.
    pub fn numel(&self) -> Result<u64, GraphError> {
        self.proto.dims.iter().try_fold(1u64, |acc, &d| {
            u64::try_from(d).ok().and_then(|d| acc.checked_mul(d)).ok_or_else(|| GraphError::Tensor {
                tensor: self.proto.name.clone(),
                reason: format!("bad dims {:?}", self.proto.dims),
            })
        })
    }

    /// Whether the data was stored outside the model file when loaded (it is
    /// held in `raw_data` in memory and written to a side file on save).
    pub fn is_external(&self) -> bool {
        self.proto.data_location == DataLocation::External as i32
    }

    /// Bytes the data occupies at its element type (packed, as `raw_data` would hold it).
    pub fn nbytes(&self) -> u64 {
        let n = self.numel().unwrap_or(0);
        match elem_bits(self.dtype()) {
            Some(bits) => (n * bits as u64).div_ceil(8),
            None => self.proto.string_data.iter().map(|s| s.len() as u64).sum(),
        }
    }

    /// The values as f32 (converted from any real numeric type).
    pub fn to_f32(&self) -> Result<Vec<f32>, GraphError> {
        let p = &self.proto;
        let n = self.numel()? as usize;
        let err = |reason: String| GraphError::Tensor { tensor: p.name.clone(), reason };
        let dt = self.dtype();
        let out: Vec<f32> = if !p.raw_data.is_empty() {
            let raw = &p.raw_data;
            let want = elem_bits(dt).map(|b| (n * b).div_ceil(8));
            if want != Some(raw.len()) || !matches!(elem_bits(dt), Some(8 | 16 | 32 | 64)) {
                return Err(err(format!("cannot read {} raw bytes as {} x {:?}", raw.len(), n, dt)));
            }
            match dt {
                DataType::Float => raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
                DataType::Double => {
                    raw.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect()
                }
                DataType::Int8 => raw.iter().map(|&b| b as i8 as f32).collect(),
                DataType::Uint8 | DataType::Bool => raw.iter().map(|&b| b as f32).collect(),
                DataType::Int16 => raw.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]]) as f32).collect(),
                DataType::Uint16 => raw.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as f32).collect(),
                DataType::Int32 => {
                    raw.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f32).collect()
                }
                DataType::Uint32 => {
                    raw.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap()) as f32).collect()
                }
                DataType::Int64 => {
                    raw.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32).collect()
                }
                DataType::Uint64 => {
                    raw.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap()) as f32).collect()
                }
                DataType::Float16 => {
                    raw.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect()
                }
                DataType::Bfloat16 => raw
                    .chunks_exact(2)
                    .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                    .collect(),
                other => return Err(err(format!("no f32 view of {other:?}"))),
            }
        } else {
            match dt {
                DataType::Float => p.float_data.clone(),
                DataType::Double => p.double_data.iter().map(|&x| x as f32).collect(),
                DataType::Int8
                | DataType::Uint8
                | DataType::Int16
                | DataType::Uint16
                | DataType::Int32
                | DataType::Bool => p.int32_data.iter().map(|&x| x as f32).collect(),
                DataType::Float16 => p.int32_data.iter().map(|&x| f16_to_f32(x as u16)).collect(),
                DataType::Bfloat16 => p.int32_data.iter().map(|&x| f32::from_bits((x as u32) << 16)).collect(),
                DataType::Int64 => p.int64_data.iter().map(|&x| x as f32).collect(),
                DataType::Uint32 | DataType::Uint64 => p.uint64_data.iter().map(|&x| x as f32).collect(),
                other => return Err(err(format!("no f32 view of {other:?}"))),
            }
        };
        if out.len() != n {
            return Err(err(format!("holds {} values, dims {:?} say {}", out.len(), p.dims, n)));
        }
        Ok(out)
    }

    /// The values as i64 (integer types only): shapes, axes, indices.
    pub fn to_i64(&self) -> Result<Vec<i64>, GraphError> {
        let p = &self.proto;
        let err = |reason: String| GraphError::Tensor { tensor: p.name.clone(), reason };
        let v: Vec<i64> = match self.dtype() {
            DataType::Int64 if !p.raw_data.is_empty() => {
                if !p.raw_data.len().is_multiple_of(8) {
                    return Err(err(format!("{} raw bytes is not a whole number of int64", p.raw_data.len())));
                }
                p.raw_data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()
            }
            DataType::Int64 => p.int64_data.clone(),
            DataType::Int32 if !p.raw_data.is_empty() => {
                if !p.raw_data.len().is_multiple_of(4) {
                    return Err(err(format!("{} raw bytes is not a whole number of int32", p.raw_data.len())));
                }
                p.raw_data.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64).collect()
            }
            DataType::Int32 => p.int32_data.iter().map(|&x| x as i64).collect(),
            other => return Err(err(format!("expected an integer tensor, found {other:?}"))),
        };
        if v.len() as u64 != self.numel()? {
            return Err(err(format!("holds {} values, dims {:?} say {}", v.len(), p.dims, self.numel()?)));
        }
        Ok(v)
    }

    /// Replaces the values of a float tensor (written to `raw_data`; dims,
    /// name, dtype and metadata kept).
    pub fn set_f32(&mut self, data: &[f32]) -> Result<(), GraphError> {
        let n = self.numel()?;
        if self.dtype() != DataType::Float || data.len() as u64 != n {
            return Err(GraphError::Tensor {
                tensor: self.proto.name.clone(),
                reason: format!(
                    "cannot store {} f32 values in a {:?} tensor of {} elements",
                    data.len(),
                    self.dtype(),
                    n
                ),
            });
        }
        self.proto.float_data.clear();
        self.proto.raw_data = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        Ok(())
    }

    /// Checks that the stored data matches dims and dtype. Returns a reason when not.
    pub(crate) fn check_data(&self) -> Result<(), String> {
        let p = &self.proto;
        if p.segment.is_some() {
            return Ok(()); // a segment of a larger tensor: nothing to check here
        }
        let n = self.numel().map_err(|_| format!("bad dims {:?}", p.dims))?;
        let dt = self.dtype();
        if !p.raw_data.is_empty() {
            if let Some(bits) = elem_bits(dt) {
                let want = (n * bits as u64).div_ceil(8);
                if p.raw_data.len() as u64 != want {
                    return Err(format!(
                        "dims {:?} of {:?} need {} bytes, raw_data holds {}",
                        p.dims,
                        dt,
                        want,
                        p.raw_data.len()
                    ));
                }
            }
            return Ok(());
        }
        if self.is_external() {
            return Ok(()); // loaded from bytes without its side file
        }
        let have = match dt {
            DataType::Float => p.float_data.len() as u64,
            DataType::Complex64 => p.float_data.len() as u64 / 2,
            DataType::Double => p.double_data.len() as u64,
            DataType::Complex128 => p.double_data.len() as u64 / 2,
            DataType::Int64 => p.int64_data.len() as u64,
            DataType::String => p.string_data.len() as u64,
            DataType::Int32
            | DataType::Int16
            | DataType::Int8
            | DataType::Uint16
            | DataType::Uint8
            | DataType::Bool => p.int32_data.len() as u64,
            DataType::Uint32 | DataType::Uint64 => p.uint64_data.len() as u64,
            _ => return Ok(()), // packed sub-byte and float8 layouts in int32_data: not checked
        };
        if have != n {
            return Err(format!("dims {:?} of {:?} need {} values, the tensor holds {}", p.dims, dt, n, have));
        }
        Ok(())
    }
}

/// Bits per element of a fixed-size type; `None` for strings and unknown codes.
pub fn elem_bits(dt: DataType) -> Option<usize> {
    use DataType::*;
    Some(match dt {
        Float | Int32 | Uint32 => 32,
        Double | Int64 | Uint64 | Complex64 => 64,
        Complex128 => 128,
        Uint8 | Int8 | Bool | Float8e4m3fn | Float8e4m3fnuz | Float8e5m2 | Float8e5m2fnuz | Float8e8m0 => 8,
        Uint16 | Int16 | Float16 | Bfloat16 => 16,
        Uint4 | Int4 | Float4e2m1 => 4,
        Uint2 | Int2 => 2,
        String | Undefined => return None,
    })
}

/// IEEE half → single, exact (every f16 is representable as f32).
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, m) => {
            // subnormal: normalise
            let shift = m.leading_zeros() - 21; // bits to bring the top set bit to position 10
            let m = (m << shift) & 0x3ff;
            sign | ((127 - 15 + 1 - shift) << 23) | (m << 13)
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}
