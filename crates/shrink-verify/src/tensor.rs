//! ONNX `TensorProto` → tract `Tensor`, for every element type tract knows.
//!
//! Written here rather than borrowed from tract-onnx so that each typed field
//! is read where the ONNX schema puts it (`uint64_data` for UINT32 and
//! UINT64, `int32_data` for the small integer types, BOOL and FLOAT16) and so
//! that a malformed tensor is an error, never a panic.

use prost::Message;
use shrink_graph::onnx::TensorProto;
use shrink_graph::onnx::tensor_proto::{DataLocation, DataType};
use tract_onnx::prelude::{Datum, DatumType, Tensor, f16, tract_ndarray};

use crate::error::VerifyError;

/// The tract element type of an ONNX `TensorProto.DataType` code.
pub fn datum_type(onnx_data_type: i32) -> Result<DatumType, VerifyError> {
    let dt = DataType::try_from(onnx_data_type)
        .map_err(|_| VerifyError::UnsupportedType(format!("code {onnx_data_type}")))?;
    Ok(match dt {
        DataType::Float => DatumType::F32,
        DataType::Uint8 => DatumType::U8,
        DataType::Int8 => DatumType::I8,
        DataType::Uint16 => DatumType::U16,
        DataType::Int16 => DatumType::I16,
        DataType::Int32 => DatumType::I32,
        DataType::Int64 => DatumType::I64,
        DataType::String => DatumType::String,
        DataType::Bool => DatumType::Bool,
        DataType::Float16 => DatumType::F16,
        DataType::Double => DatumType::F64,
        DataType::Uint32 => DatumType::U32,
        DataType::Uint64 => DatumType::U64,
        other => return Err(VerifyError::UnsupportedType(other.as_str_name().into())),
    })
}

/// A tensor of zeros (empty strings, `false`) of an ONNX element type.
pub fn zero_tensor(onnx_data_type: i32, shape: &[usize]) -> Result<Tensor, VerifyError> {
    let dt = datum_type(onnx_data_type)?;
    if dt == DatumType::String {
        let volume = shape.iter().product();
        return array(shape, vec![String::new(); volume], "zeros");
    }
    Tensor::zero_dt(dt, shape).map_err(|e| VerifyError::Tensor { tensor: "zeros".into(), reason: format!("{e:#}") })
}

/// Decodes a serialized `TensorProto` (an `input_0.pb` file) into a tract tensor.
pub fn tensor_from_proto_bytes(bytes: &[u8]) -> Result<Tensor, VerifyError> {
    let proto = TensorProto::decode(bytes)?;
    tensor_from_proto(&proto)
}

/// Converts a decoded `TensorProto` with inline data into a tract tensor.
pub fn tensor_from_proto(t: &TensorProto) -> Result<Tensor, VerifyError> {
    let err = |reason: String| VerifyError::Tensor { tensor: t.name.clone(), reason };
    let dt = datum_type(t.data_type).map_err(|e| err(e.to_string()))?;
    if t.data_location == DataLocation::External as i32 {
        return Err(err("external data is not supported here".into()));
    }
    let shape = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| err(format!("negative dimension in {:?}", t.dims))))
        .collect::<Result<Vec<usize>, _>>()?;
    let volume = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| err(format!("dims {:?} overflow", t.dims)))?;
    let name = t.name.as_str();

    if dt == DatumType::String {
        let strings = t
            .string_data
            .iter()
            .map(|s| String::from_utf8(s.clone()).map_err(|_| err("a string element is not UTF-8".into())))
            .collect::<Result<Vec<_>, _>>()?;
        return array(&shape, strings, name);
    }

    if !t.raw_data.is_empty() || no_typed_data(t) {
        return from_raw(dt, &shape, volume, &t.raw_data, name);
    }

    // Typed fields: the ONNX schema says which field holds which type.
    let i32s = || t.int32_data.iter().copied();
    match dt {
        DatumType::F32 => array(&shape, t.float_data.clone(), name),
        DatumType::F64 => array(&shape, t.double_data.clone(), name),
        DatumType::I64 => array(&shape, t.int64_data.clone(), name),
        DatumType::I32 => array(&shape, t.int32_data.clone(), name),
        DatumType::I16 => array(&shape, i32s().map(|x| x as i16).collect(), name),
        DatumType::I8 => array(&shape, i32s().map(|x| x as i8).collect(), name),
        DatumType::U16 => array(&shape, i32s().map(|x| x as u16).collect(), name),
        DatumType::U8 => array(&shape, i32s().map(|x| x as u8).collect(), name),
        DatumType::Bool => array(&shape, i32s().map(|x| x != 0).collect(), name),
        DatumType::F16 => array(&shape, i32s().map(|x| f16::from_bits(x as u16)).collect(), name),
        DatumType::U32 => array(&shape, t.uint64_data.iter().map(|&x| x as u32).collect(), name),
        DatumType::U64 => array(&shape, t.uint64_data.clone(), name),
        other => Err(err(format!("element type {other:?} is not supported"))),
    }
}

fn no_typed_data(t: &TensorProto) -> bool {
    t.float_data.is_empty()
        && t.int32_data.is_empty()
        && t.int64_data.is_empty()
        && t.double_data.is_empty()
        && t.uint64_data.is_empty()
}

/// Builds a tensor from little-endian bytes, element by element.
fn from_raw(dt: DatumType, shape: &[usize], volume: usize, raw: &[u8], name: &str) -> Result<Tensor, VerifyError> {
    let size = dt.size_of();
    if Some(raw.len()) != volume.checked_mul(size) {
        return Err(VerifyError::Tensor {
            tensor: name.into(),
            reason: format!("{} bytes of data for {volume} elements of {dt:?}", raw.len()),
        });
    }
    fn le<T, const N: usize>(raw: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
        raw.chunks_exact(N).map(|c| f(c.try_into().expect("chunks_exact yields N bytes"))).collect()
    }
    match dt {
        DatumType::F32 => array(shape, le(raw, f32::from_le_bytes), name),
        DatumType::F64 => array(shape, le(raw, f64::from_le_bytes), name),
        DatumType::F16 => array(shape, le(raw, |b| f16::from_bits(u16::from_le_bytes(b))), name),
        DatumType::I64 => array(shape, le(raw, i64::from_le_bytes), name),
        DatumType::I32 => array(shape, le(raw, i32::from_le_bytes), name),
        DatumType::I16 => array(shape, le(raw, i16::from_le_bytes), name),
        DatumType::I8 => array(shape, le(raw, i8::from_le_bytes), name),
        DatumType::U64 => array(shape, le(raw, u64::from_le_bytes), name),
        DatumType::U32 => array(shape, le(raw, u32::from_le_bytes), name),
        DatumType::U16 => array(shape, le(raw, u16::from_le_bytes), name),
        DatumType::U8 => array(shape, raw.to_vec(), name),
        DatumType::Bool => array(shape, raw.iter().map(|&b| b != 0).collect(), name),
        other => Err(VerifyError::Tensor { tensor: name.into(), reason: format!("no raw layout for {other:?}") }),
    }
}

fn array<T: Datum>(shape: &[usize], data: Vec<T>, name: &str) -> Result<Tensor, VerifyError> {
    let len = data.len();
    tract_ndarray::ArrayD::from_shape_vec(tract_ndarray::IxDyn(shape), data).map(Tensor::from).map_err(|_| {
        VerifyError::Tensor { tensor: name.into(), reason: format!("{len} elements do not fill shape {shape:?}") }
    })
}
