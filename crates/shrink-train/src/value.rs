//! Run-time values: float tensors of rank 1..=5 behind an enum (burn's ranks
//! are const generics), integer tensors kept on the host (shape arithmetic),
//! and [`HostTensor`], the plain `Vec<f32>` form that crosses the API.

use burn::tensor::kind::BridgeTensor;
use burn::tensor::{Device, Shape, Tensor, TensorData};

/// The highest rank of a float value.
/// Five covers the channel shuffle of ShuffleNet (`[N, g, C/g, H, W]`).
pub const MAX_RANK: usize = 5;

/// A float tensor on the host: row-major values and dims. Rank 0 is `dims == []`.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub data: Vec<f32>,
    pub dims: Vec<usize>,
}

impl HostTensor {
    pub fn new(data: Vec<f32>, dims: Vec<usize>) -> HostTensor {
        HostTensor { data, dims }
    }
}

/// A float tensor of run-time rank.
#[derive(Debug, Clone)]
pub(crate) enum F {
    R1(Tensor<1>),
    R2(Tensor<2>),
    R3(Tensor<3>),
    R4(Tensor<4>),
    R5(Tensor<5>),
}

/// Applies a rank-generic expression to the tensor inside an [`F`], giving an `F` of the same rank.
macro_rules! map_f {
    ($v:expr, $t:ident => $e:expr) => {
        match $v {
            $crate::value::F::R1($t) => $crate::value::F::R1($e),
            $crate::value::F::R2($t) => $crate::value::F::R2($e),
            $crate::value::F::R3($t) => $crate::value::F::R3($e),
            $crate::value::F::R4($t) => $crate::value::F::R4($e),
            $crate::value::F::R5($t) => $crate::value::F::R5($e),
        }
    };
}

/// Evaluates a rank-generic expression on the tensor inside an [`F`].
macro_rules! with_f {
    ($v:expr, $t:ident => $e:expr) => {
        match $v {
            $crate::value::F::R1($t) => $e,
            $crate::value::F::R2($t) => $e,
            $crate::value::F::R3($t) => $e,
            $crate::value::F::R4($t) => $e,
            $crate::value::F::R5($t) => $e,
        }
    };
}

/// Applies a rank-generic binary expression to two `F` of the same rank.
macro_rules! zip_f {
    ($a:expr, $b:expr, $x:ident, $y:ident => $e:expr) => {
        match ($a, $b) {
            ($crate::value::F::R1($x), $crate::value::F::R1($y)) => Some($crate::value::F::R1($e)),
            ($crate::value::F::R2($x), $crate::value::F::R2($y)) => Some($crate::value::F::R2($e)),
            ($crate::value::F::R3($x), $crate::value::F::R3($y)) => Some($crate::value::F::R3($e)),
            ($crate::value::F::R4($x), $crate::value::F::R4($y)) => Some($crate::value::F::R4($e)),
            ($crate::value::F::R5($x), $crate::value::F::R5($y)) => Some($crate::value::F::R5($e)),
            _ => None,
        }
    };
}

#[allow(unused_imports)]
pub(crate) use {map_f, with_f, zip_f};

impl F {
    pub fn rank(&self) -> usize {
        match self {
            F::R1(_) => 1,
            F::R2(_) => 2,
            F::R3(_) => 3,
            F::R4(_) => 4,
            F::R5(_) => 5,
        }
    }

    pub fn dims(&self) -> Vec<usize> {
        with_f!(self, t => t.dims().to_vec())
    }

    /// A tensor from host values; rank 0 becomes shape `[1]`.
    pub fn from_host(data: Vec<f32>, dims: &[usize], device: &Device) -> Result<F, String> {
        let dims: Vec<usize> = if dims.is_empty() { vec![1] } else { dims.to_vec() };
        if dims.iter().product::<usize>() != data.len() {
            return Err(format!("{} values do not fill dims {dims:?}", data.len()));
        }
        let td = TensorData::new(data, Shape::from(dims.clone()));
        Ok(match dims.len() {
            1 => F::R1(Tensor::from_data(td, device)),
            2 => F::R2(Tensor::from_data(td, device)),
            3 => F::R3(Tensor::from_data(td, device)),
            4 => F::R4(Tensor::from_data(td, device)),
            5 => F::R5(Tensor::from_data(td, device)),
            r => return Err(format!("rank {r} is above the trainer's maximum of {MAX_RANK}")),
        })
    }

    /// The values and dims (reads through autodiff tensors without changing their graph).
    pub fn to_host(&self) -> HostTensor {
        let dims = self.dims();
        let data = with_f!(self, t => t.clone().into_data().try_into_vec::<f32>());
        HostTensor { data: data.unwrap_or_default(), dims }
    }

    /// The values as `TensorData`, without a copy when the tensor is the
    /// only owner of a row-major buffer (flex hands the buffer over).
    pub fn into_data(self) -> TensorData {
        with_f!(self, t => t.into_data())
    }

    /// A tensor of `rank` over `data` (flex adopts the buffer without a copy).
    pub fn from_data(rank: usize, data: TensorData, device: &Device) -> Option<F> {
        if data.shape().len() != rank {
            return None;
        }
        Some(match rank {
            1 => F::R1(Tensor::from_data(data, device)),
            2 => F::R2(Tensor::from_data(data, device)),
            3 => F::R3(Tensor::from_data(data, device)),
            4 => F::R4(Tensor::from_data(data, device)),
            5 => F::R5(Tensor::from_data(data, device)),
            _ => return None,
        })
    }

    /// Same values, new dims (element counts must agree).
    pub fn reshape(self, dims: &[usize]) -> Result<F, String> {
        let have = self.dims();
        if have.iter().product::<usize>() != dims.iter().product::<usize>() {
            return Err(format!("cannot reshape {have:?} to {dims:?}"));
        }
        let dims: Vec<usize> = if dims.is_empty() { vec![1] } else { dims.to_vec() };
        let s = Shape::from(dims.clone());
        macro_rules! go {
            ($t:expr) => {
                match dims.len() {
                    1 => F::R1($t.reshape(s)),
                    2 => F::R2($t.reshape(s)),
                    3 => F::R3($t.reshape(s)),
                    4 => F::R4($t.reshape(s)),
                    5 => F::R5($t.reshape(s)),
                    r => return Err(format!("rank {r} is above the trainer's maximum of {MAX_RANK}")),
                }
            };
        }
        Ok(with_f!(self, t => go!(t)))
    }

    /// Prepends size-1 dims up to `rank` (numpy broadcasting alignment).
    pub fn broadcast_rank(self, rank: usize) -> Result<F, String> {
        let d = self.dims();
        if d.len() >= rank {
            return Ok(self);
        }
        let mut nd = vec![1; rank - d.len()];
        nd.extend(d);
        self.reshape(&nd)
    }

    /// The same values in one row-major buffer. A strided view (the gradient
    /// of a transposed Gemm weight) is copied once by flex's tiled copy;
    /// otherwise every elementwise op of an optimizer would walk it index by
    /// index. Free for a tensor that is already contiguous.
    pub fn contiguous(self) -> F {
        let n: usize = self.dims().iter().product();
        match self {
            F::R1(t) => F::R1(t),
            F::R2(t) => F::R2({
                let d = t.dims();
                t.reshape([n]).reshape(d)
            }),
            F::R3(t) => F::R3({
                let d = t.dims();
                t.reshape([n]).reshape(d)
            }),
            F::R4(t) => F::R4({
                let d = t.dims();
                t.reshape([n]).reshape(d)
            }),
            F::R5(t) => F::R5({
                let d = t.dims();
                t.reshape([n]).reshape(d)
            }),
        }
    }

    pub fn autodiff(self) -> F {
        map_f!(self, t => t.autodiff())
    }

    pub fn require_grad(self) -> F {
        map_f!(self, t => t.require_grad())
    }

    pub fn into_bridge(self) -> (usize, BridgeTensor) {
        let r = self.rank();
        (r, with_f!(self, t => t.into_bridge()))
    }

    pub fn from_bridge(rank: usize, b: BridgeTensor) -> Option<F> {
        if b.rank() != rank {
            return None;
        }
        Some(match rank {
            1 => F::R1(Tensor::from_bridge(b)),
            2 => F::R2(Tensor::from_bridge(b)),
            3 => F::R3(Tensor::from_bridge(b)),
            4 => F::R4(Tensor::from_bridge(b)),
            5 => F::R5(Tensor::from_bridge(b)),
            _ => return None,
        })
    }

    pub fn mul(self, other: F) -> Option<F> {
        zip_f!(self, other, a, b => a * b)
    }

    pub fn add(self, other: F) -> Option<F> {
        zip_f!(self, other, a, b => a + b)
    }
}

/// An integer tensor evaluated on the host (shapes, axes, indices).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct IntT {
    pub data: Vec<i64>,
    pub dims: Vec<usize>,
}

/// A run-time value.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // short-lived, one per graph value
pub(crate) enum Value {
    F(F),
    I(IntT),
}

impl Value {
    /// The dims of either kind of value.
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Value::F(f) => f.dims(),
            Value::I(i) => i.dims.clone(),
        }
    }
}
