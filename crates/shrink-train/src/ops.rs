//! The op set: attributes parsed once at build time ([`Kind::parse`]), and the
//! run-time evaluation of one op on [`Value`]s ([`eval`]). Float values run on
//! burn (and are differentiable); integer values (shape arithmetic such as the
//! `Shape → Gather → Unsqueeze → Concat → Reshape` chains PyTorch writes for
//! `flatten`) are computed on the host.

use burn::tensor::activation as act;
use burn::tensor::module as m;
use burn::tensor::ops::{AvgPoolOptions, ConvOptions, MaxPoolOptions};
use burn::tensor::{Device, Int, Tensor, TensorData};
use shrink_graph::Op;
use shrink_graph::op::{self, Act, BinFn, OpKind, PoolKind, ReduceFn};

use crate::error::TrainError;
use crate::value::{F, IntT, Value, map_f, zip_f};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

pub(crate) use shrink_graph::op::AutoPad;

/// Window attributes shared by Conv and the pools (2-d only).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Window {
    pub kernel: Option<[usize; 2]>,
    pub strides: [usize; 2],
    pub dilations: [usize; 2],
    /// ONNX order: top, left, bottom, right.
    pub pads: [usize; 4],
    pub auto_pad: AutoPad,
    pub ceil_mode: bool,
}

/// One op, its attributes parsed. `Conv`'s `x_const` says that its input X
/// never needs a gradient (it is computed from graph inputs and constants
/// only); the executor sets it after parsing.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Gemm {
        alpha: f32,
        beta: f32,
        trans_a: bool,
        trans_b: bool,
    },
    MatMul,
    Bin(BinOp),
    Conv {
        w: Window,
        group: usize,
        x_const: bool,
    },
    MaxPool(Window),
    AvgPool {
        w: Window,
        count_include_pad: bool,
    },
    GlobalAvgPool,
    /// `momentum` as ONNX means it: running = running · momentum + batch · (1 − momentum).
    BatchNorm {
        eps: f32,
        momentum: f32,
    },
    Relu,
    LeakyRelu(f32),
    Sigmoid,
    Tanh,
    HardSigmoid(f32, f32),
    HardSwish,
    Clip {
        min: Option<f32>,
        max: Option<f32>,
    },
    Softmax {
        axis: i64,
        legacy: bool,
        log: bool,
    },
    Flatten {
        axis: i64,
    },
    Reshape {
        allowzero: bool,
    },
    Transpose {
        perm: Option<Vec<i64>>,
    },
    Concat {
        axis: i64,
    },
    Split {
        op: op::Split,
        outputs: usize,
    },
    Slice(op::Slice),
    Squeeze {
        axes: Option<Vec<i64>>,
    },
    Unsqueeze {
        axes: Option<Vec<i64>>,
    },
    Identity,
    Shape {
        start: i64,
        end: Option<i64>,
    },
    Gather {
        axis: i64,
    },
    Cast {
        to: i32,
    },
    Reduce {
        mean: bool,
        axes: Option<Vec<i64>>,
        keepdims: bool,
        noop_empty: bool,
    },
}

/// The 2-d window the burn ops take, from the typed view's `w`.
fn window(op: &Op, w: &op::Window, need_kernel: bool) -> Result<Window, TrainError> {
    let err = |r: String| TrainError::op(&op.label(), &op.op_type, r);
    let two = |v: &Option<Vec<u64>>, name: &str, default: usize| -> Result<[usize; 2], TrainError> {
        match v.as_deref() {
            None => Ok([default; 2]),
            Some(&[a, b]) => Ok([a as usize, b as usize]),
            Some(v) => Err(err(format!("{name} {v:?}: only 2-d windows are supported"))),
        }
    };
    let kernel = match &w.kernel {
        None if need_kernel => return Err(err("kernel_shape is missing".into())),
        None => None,
        k => Some(two(k, "kernel_shape", 1)?),
    };
    let pads = match w.pads.as_deref() {
        None => [0; 4],
        Some(&[a, b, c, d]) => [a as usize, b as usize, c as usize, d as usize],
        Some(p) => return Err(err(format!("pads {p:?}: expected four non-negative values"))),
    };
    Ok(Window {
        kernel,
        strides: two(&w.strides, "strides", 1)?,
        dilations: two(&w.dilations, "dilations", 1)?,
        pads,
        auto_pad: w.auto_pad,
        ceil_mode: w.ceil_mode,
    })
}

impl Kind {
    /// The trainer's form of an op, from its typed view
    /// ([`shrink_graph::op::parse`]); an op type the trainer does not run,
    /// or attributes it cannot honour, is an error here (build time).
    pub fn parse(op: &Op, opset: i64) -> Result<Kind, TrainError> {
        let err = |r: &str| TrainError::op(&op.label(), &op.op_type, r);
        let unsupported = || TrainError::Unsupported {
            node: op.label(),
            op: if op.is_onnx() { op.op_type.clone() } else { format!("{}::{}", op.domain, op.op_type) },
        };
        let typed = op::parse(op).map_err(|e| err(&e.to_string()))?.ok_or_else(unsupported)?;
        Ok(match typed {
            OpKind::Gemm(g) => Kind::Gemm { alpha: g.alpha, beta: g.beta, trans_a: g.trans_a, trans_b: g.trans_b },
            OpKind::MatMul(_) => Kind::MatMul,
            OpKind::Binary(b) => Kind::Bin(match b.f {
                BinFn::Add => BinOp::Add,
                BinFn::Sub => BinOp::Sub,
                BinFn::Mul => BinOp::Mul,
                BinFn::Div => BinOp::Div,
                _ => return Err(unsupported()),
            }),
            OpKind::Conv(c) => Kind::Conv { w: window(op, &c.window, false)?, group: c.group as usize, x_const: false },
            OpKind::Pool(p) => match p.kind {
                _ if p.indices => return Err(err("the Indices output is not supported")),
                PoolKind::Max => Kind::MaxPool(window(op, &p.window, true)?),
                PoolKind::Average => {
                    let w = window(op, &p.window, true)?;
                    if w.dilations != [1, 1] {
                        return Err(err("dilated average pooling is not supported"));
                    }
                    Kind::AvgPool { w, count_include_pad: p.count_include_pad }
                }
                PoolKind::Lp => return Err(unsupported()),
            },
            OpKind::GlobalPool(g) if g.kind == PoolKind::Average => Kind::GlobalAvgPool,
            OpKind::BatchNorm(b) => {
                if !b.is_inference() {
                    return Err(err("only the inference form (one output, training_mode 0) is supported"));
                }
                Kind::BatchNorm { eps: b.epsilon, momentum: b.momentum }
            }
            OpKind::Activation(a) => match a.f {
                Act::Relu => Kind::Relu,
                Act::LeakyRelu { alpha } => Kind::LeakyRelu(alpha),
                Act::Sigmoid => Kind::Sigmoid,
                Act::Tanh => Kind::Tanh,
                Act::HardSigmoid { alpha, beta } => Kind::HardSigmoid(alpha, beta),
                Act::HardSwish => Kind::HardSwish,
                Act::Clip { min, max } => Kind::Clip { min, max },
                _ => return Err(unsupported()),
            },
            OpKind::Softmax(s) => {
                Kind::Softmax { axis: s.axis(opset), legacy: op::Softmax::is_legacy(opset), log: s.log }
            }
            OpKind::Flatten(f) => Kind::Flatten { axis: f.axis },
            OpKind::Reshape(r) => Kind::Reshape { allowzero: r.allowzero },
            OpKind::Transpose(t) => Kind::Transpose { perm: t.perm },
            OpKind::Concat(c) => Kind::Concat { axis: c.axis.ok_or_else(|| err("axis is missing"))? },
            OpKind::Split(s) => Kind::Split { op: s, outputs: op.outputs.len() },
            OpKind::Slice(s) => Kind::Slice(s),
            OpKind::Squeeze(s) if s.unsqueeze => Kind::Unsqueeze { axes: s.axes },
            OpKind::Squeeze(s) => Kind::Squeeze { axes: s.axes },
            OpKind::Passthrough(p) => match p {
                op::Passthrough::Identity => Kind::Identity,
                op::Passthrough::Dropout { mask: true } => return Err(err("the mask output is not supported")),
                op::Passthrough::Dropout { mask: false } => Kind::Identity,
                op::Passthrough::Cast { to } => Kind::Cast { to: to.ok_or_else(|| err("to is missing"))? as i32 },
            },
            OpKind::ShapeOf(s) => Kind::Shape { start: s.start, end: s.end },
            OpKind::Gather(g) => Kind::Gather { axis: g.axis },
            OpKind::Reduce(r) => match r.f {
                ReduceFn::Mean | ReduceFn::Sum => Kind::Reduce {
                    mean: r.f == ReduceFn::Mean,
                    axes: r.axes,
                    keepdims: r.keepdims,
                    noop_empty: r.noop_with_empty_axes,
                },
                _ => return Err(unsupported()),
            },
            _ => return Err(unsupported()),
        })
    }
}

type R<T> = Result<T, String>;

fn norm_axis(axis: i64, rank: usize) -> R<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a >= rank.max(1) as i64 {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(a as usize)
}

fn float(v: Option<Value>, what: &str) -> R<F> {
    match v {
        Some(Value::F(f)) => Ok(f),
        Some(Value::I(_)) => Err(format!("{what} is an integer tensor; a float tensor is needed")),
        None => Err(format!("{what} is missing")),
    }
}

fn ints(v: Option<Value>, what: &str) -> R<IntT> {
    match v {
        Some(Value::I(i)) => Ok(i),
        Some(Value::F(_)) => {
            Err(format!("{what} is a float tensor computed at run time; integers known on the host are needed"))
        }
        None => Err(format!("{what} is missing")),
    }
}

fn scalar(v: Option<Value>) -> Option<f32> {
    match v? {
        Value::F(f) => f.to_host().data.first().copied(),
        Value::I(i) => i.data.first().map(|&x| x as f32),
    }
}

/// Broadcast shape of two dims lists (numpy rules).
fn broadcast(a: &[usize], b: &[usize]) -> R<Vec<usize>> {
    let r = a.len().max(b.len());
    let get = |d: &[usize], i: usize| if i + d.len() >= r { d[i + d.len() - r] } else { 1 };
    (0..r)
        .map(|i| match (get(a, i), get(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(format!("shapes {a:?} and {b:?} do not broadcast")),
        })
        .collect()
}

pub(crate) fn bin_float(op: BinOp, a: F, b: F) -> R<F> {
    broadcast(&a.dims(), &b.dims())?;
    let r = a.rank().max(b.rank());
    let (a, b) = (a.broadcast_rank(r)?, b.broadcast_rank(r)?);
    let out = match op {
        BinOp::Add => zip_f!(a, b, x, y => x + y),
        BinOp::Sub => zip_f!(a, b, x, y => x - y),
        BinOp::Mul => zip_f!(a, b, x, y => x * y),
        BinOp::Div => zip_f!(a, b, x, y => x / y),
    };
    out.ok_or_else(|| "rank mismatch".to_string())
}

fn bin_int(op: BinOp, a: IntT, b: IntT) -> R<IntT> {
    let dims = broadcast(&a.dims, &b.dims)?;
    let n: usize = dims.iter().product();
    if !(a.data.len() == n || a.data.len() == 1) || !(b.data.len() == n || b.data.len() == 1) {
        return Err("integer broadcasting beyond scalars is not supported".into());
    }
    let at = |v: &IntT, i: usize| if v.data.len() == 1 { v.data[0] } else { v.data[i] };
    let data = (0..n)
        .map(|i| {
            let (x, y) = (at(&a, i), at(&b, i));
            match op {
                BinOp::Add => Ok(x.wrapping_add(y)),
                BinOp::Sub => Ok(x.wrapping_sub(y)),
                BinOp::Mul => Ok(x.wrapping_mul(y)),
                BinOp::Div if y == 0 => Err("integer division by zero".to_string()),
                BinOp::Div => Ok(x.div_euclid(y)),
            }
        })
        .collect::<R<Vec<i64>>>()?;
    Ok(IntT { data, dims })
}

fn to_float(i: IntT, dev: &Device) -> R<F> {
    F::from_host(i.data.iter().map(|&x| x as f32).collect(), &i.dims, dev)
}

fn matmul(a: F, b: F) -> R<F> {
    let (ra, rb) = (a.rank(), b.rank());
    let a = if ra == 1 { a.broadcast_rank(2)? } else { a };
    let b = if rb == 1 {
        let k = b.dims()[0];
        b.reshape(&[k, 1])?
    } else {
        b
    };
    let (da, db) = (a.dims(), b.dims());
    if da[da.len() - 1] != db[db.len() - 2] {
        return Err(format!("cannot multiply {da:?} by {db:?}"));
    }
    let batch = broadcast(&da[..da.len() - 2], &db[..db.len() - 2])?;
    let r = da.len().max(db.len());
    let (a, b) = (a.broadcast_rank(r)?, b.broadcast_rank(r)?);
    let out = zip_f!(a, b, x, y => x.matmul(y)).ok_or("rank mismatch")?;
    let mut dims = batch;
    if ra != 1 {
        dims.push(da[da.len() - 2]);
    }
    if rb != 1 {
        dims.push(db[db.len() - 1]);
    }
    out.reshape(&dims)
}

/// Pads `(begin, end)` per spatial dim for a window over `input`.
fn resolve_pads(w: &Window, kernel: [usize; 2], input: [usize; 2]) -> [(usize, usize); 2] {
    let mut out = [(w.pads[0], w.pads[2]), (w.pads[1], w.pads[3])];
    match w.auto_pad {
        AutoPad::NotSet => {}
        AutoPad::Valid => out = [(0, 0); 2],
        AutoPad::SameUpper | AutoPad::SameLower => {
            for i in 0..2 {
                let eff = (kernel[i] - 1) * w.dilations[i] + 1;
                let want = input[i].div_ceil(w.strides[i]);
                let total = ((want.saturating_sub(1)) * w.strides[i] + eff).saturating_sub(input[i]);
                let small = total / 2;
                out[i] = if w.auto_pad == AutoPad::SameUpper { (small, total - small) } else { (total - small, small) };
            }
        }
    }
    out
}

fn check_window(kernel: [usize; 2], dil: [usize; 2], pads: [(usize, usize); 2], input: [usize; 2]) -> R<()> {
    for i in 0..2 {
        let eff = (kernel[i] - 1) * dil[i] + 1;
        if input[i] + pads[i].0 + pads[i].1 < eff {
            return Err(format!("window {kernel:?} does not fit the padded input {input:?}"));
        }
    }
    Ok(())
}

/// The most im2col entries [`conv_im2col`] builds on the host (256 MiB of f32).
const IM2COL_MAX: usize = 1 << 26;

/// Conv (one group) of an input that needs no gradient, as an im2col built on
/// the host and one batched matmul: `[1, O, C·kh·kw] × [N, C·kh·kw, Ho·Wo]`.
/// The gradients of W and B come from the matmul's backward (one GEMM), which
/// is several times faster on flex than its conv weight-gradient (a conv over
/// the batch). `None` (use burn's conv) when the values cannot be read or the
/// im2col would be too large.
pub(crate) fn conv_im2col(
    x: &Tensor<4>,
    wt: &Tensor<4>,
    bias: &Option<Tensor<1>>,
    win: &Window,
    pads: [(usize, usize); 2],
) -> Option<Tensor<4>> {
    let [n, c, h, w] = x.dims();
    let [o, _, kh, kw] = wt.dims();
    let ([sh, sw], [dh, dw]) = (win.strides, win.dilations);
    let (eh, ew) = ((kh - 1) * dh + 1, (kw - 1) * dw + 1);
    let (ph, pw) = (h + pads[0].0 + pads[0].1, w + pads[1].0 + pads[1].1);
    if ph < eh || pw < ew {
        return None;
    }
    let (oh, ow) = ((ph - eh) / sh + 1, (pw - ew) / sw + 1);
    let (k, l) = (c * kh * kw, oh * ow);
    if n * k * l > IM2COL_MAX {
        return None;
    }
    let data = x.clone().into_data();
    let xs = data.as_slice::<f32>().ok()?;
    // For each kernel column j: the output columns that read inside the input, and where they start reading.
    let col_span = |j: usize| {
        let off = j * dw;
        let first = (0..ow).find(|&q| q * sw + off >= pads[1].0)?;
        let last = (0..ow).rev().find(|&q| q * sw + off < pads[1].0 + w)?;
        (first <= last).then(|| (first, last + 1, first * sw + off - pads[1].0))
    };
    let spans: Vec<Option<(usize, usize, usize)>> = (0..kw).map(col_span).collect();
    let mut cols = vec![0f32; n * k * l];
    for (b, dst_b) in cols.chunks_exact_mut(k * l).enumerate() {
        for ci in 0..c {
            let src = &xs[(b * c + ci) * h * w..(b * c + ci + 1) * h * w];
            for i in 0..kh {
                for (j, span) in spans.iter().enumerate() {
                    let row = (ci * kh + i) * kw + j;
                    let dst = &mut dst_b[row * l..(row + 1) * l];
                    let Some((q0, q1, x0)) = *span else { continue };
                    for oy in 0..oh {
                        let Some(iy) = (oy * sh + i * dh).checked_sub(pads[0].0).filter(|&y| y < h) else { continue };
                        let s_row = &src[iy * w..(iy + 1) * w];
                        let d_row = &mut dst[oy * ow + q0..oy * ow + q1];
                        if sw == 1 {
                            d_row.copy_from_slice(&s_row[x0..x0 + (q1 - q0)]);
                        } else {
                            for (d, s) in d_row.iter_mut().zip(s_row[x0..].iter().step_by(sw)) {
                                *d = *s;
                            }
                        }
                    }
                }
            }
        }
    }
    let cols = Tensor::<3>::from_data(TensorData::new(cols, [n, k, l]), &x.device());
    let mut y = wt.clone().reshape([1, o, k]).matmul(cols);
    if let Some(b) = bias {
        y = y + b.clone().reshape([1, o, 1]);
    }
    Some(y.reshape([n, o, oh, ow]))
}

/// The input positions (along one axis) each output position's window reads, padding left out.
fn window_taps(
    input: usize,
    out: usize,
    kernel: usize,
    stride: usize,
    dil: usize,
    pad_begin: usize,
) -> Vec<Vec<usize>> {
    (0..out)
        .map(|o| {
            (0..kernel).filter_map(|k| (o * stride + k * dil).checked_sub(pad_begin).filter(|&p| p < input)).collect()
        })
        .collect()
}

/// The 2x2 windows of two input rows (`r0`, `r1`, even length): their maxima
/// into `m` and, into `at`, which entry (0..4 in scan order) is the first equal
/// to the maximum (burn's tie rule). Both passes vectorise. Returns how many
/// NaNs the rows hold (then `at` is meaningless: burn lets NaN win).
fn argmax_2x2_row(r0: &[f32], r1: &[f32], m: &mut [f32], at: &mut [u32]) -> u32 {
    let mut nans = 0u32;
    for ((a, c), mv) in r0.chunks_exact(2).zip(r1.chunks_exact(2)).zip(m.iter_mut()) {
        *mv = a[0].max(a[1]).max(c[0].max(c[1]));
        nans +=
            u32::from(a[0].is_nan()) + u32::from(a[1].is_nan()) + u32::from(c[0].is_nan()) + u32::from(c[1].is_nan());
    }
    for (((a, c), mv), o) in r0.chunks_exact(2).zip(r1.chunks_exact(2)).zip(m.iter()).zip(at.iter_mut()) {
        let na = u32::from(a[0] != *mv);
        let nb = na & u32::from(a[1] != *mv);
        let nc = nb & u32::from(c[0] != *mv);
        *o = na + nb + nc;
    }
    nans
}

/// Max pooling (floor mode) as a host argmax per window and a `select` of those
/// entries. The values and the gradient routing are burn's (the first maximum
/// in scan order wins, NaN always wins); flex's own kernel does integer
/// divisions per output and is several times slower. `None` (use burn's) when a
/// window holds only padding or the values cannot be read.
pub(crate) fn max_pool_select(
    x: &Tensor<4>,
    kernel: [usize; 2],
    strides: [usize; 2],
    pads: [(usize, usize); 2],
    dil: [usize; 2],
) -> Option<Tensor<4>> {
    let [n, c, h, w] = x.dims();
    let eff = |i: usize| (kernel[i] - 1) * dil[i] + 1;
    let (ph, pw) = (h + pads[0].0 + pads[0].1, w + pads[1].0 + pads[1].1);
    if ph < eff(0) || pw < eff(1) {
        return None;
    }
    let (oh, ow) = ((ph - eff(0)) / strides[0] + 1, (pw - eff(1)) / strides[1] + 1);
    let rows = window_taps(h, oh, kernel[0], strides[0], dil[0], pads[0].0);
    let cols = window_taps(w, ow, kernel[1], strides[1], dil[1], pads[1].0);
    if rows.iter().chain(&cols).any(Vec::is_empty) {
        return None;
    }
    let data = x.clone().into_data();
    let xs = data.as_slice::<f32>().ok()?;
    let plane = h * w;
    let mut idx: Vec<i64> = Vec::with_capacity(n * c * oh * ow);
    // Windows that lie wholly inside the input read fixed offsets from their corner.
    let inner = |taps: &[Vec<usize>], k: usize, d: usize| {
        taps.iter().map(|t| t.len() == k && t.windows(2).all(|p| p[1] - p[0] == d)).collect::<Vec<bool>>()
    };
    let (full_r, full_c) = (inner(&rows, kernel[0], dil[0]), inner(&cols, kernel[1], dil[1]));
    let offsets: Vec<usize> =
        (0..kernel[0]).flat_map(|i| (0..kernel[1]).map(move |j| i * dil[0] * w + j * dil[1])).collect();
    // Output columns whose windows lie wholly inside the input form one range.
    let full: Vec<usize> = (0..ow).filter(|&o| full_c[o]).collect();
    let (c_lo, c_hi) = (full.first().copied().unwrap_or(0), full.last().map_or(0, |l| l + 1));
    if full.len() != c_hi - c_lo || plane > u32::MAX as usize {
        return None;
    }
    let pair = kernel == [2, 2] && strides == [2, 2] && dil == [1, 1];
    // Per output row: the best entry of each window (index into the plane, value).
    let (mut best, mut best_v) = (vec![0u32; ow], vec![0f32; ow]);
    for (p, vals) in xs.chunks_exact(plane).enumerate() {
        let base = (p * plane) as i64;
        for (r, &fr) in rows.iter().zip(&full_r) {
            // Rows of whole windows take the fast paths below for the whole-window columns, if any.
            let fr = fr && c_lo < c_hi;
            for (ox, cs) in cols.iter().enumerate() {
                if fr && (c_lo..c_hi).contains(&ox) {
                    continue;
                }
                let (mut bi, mut bv) = (usize::MAX, f32::NEG_INFINITY);
                for &y in r {
                    for &x in cs {
                        let i = y * w + x;
                        let v = vals[i];
                        if bi == usize::MAX || v > bv || v.is_nan() {
                            (bi, bv) = (i, v);
                        }
                    }
                }
                best[ox] = bi as u32;
                best_v[ox] = bv;
            }
            if fr && pair {
                // 2x2 windows at stride 2: the maxima (vectorised), then the first entry equal to each.
                let x0 = c_lo * 2 - pads[1].0;
                let (top, len) = (r[0] * w + x0, 2 * (c_hi - c_lo));
                let (r0, r1) = (&vals[top..top + len], &vals[top + w..top + w + len]);
                if argmax_2x2_row(r0, r1, &mut best_v[c_lo..c_hi], &mut best[c_lo..c_hi]) > 0 {
                    return None;
                }
                let off = [0, 1, w as u32, w as u32 + 1];
                for (q, b) in best[c_lo..c_hi].iter_mut().enumerate() {
                    *b = (top + 2 * q) as u32 + off[*b as usize & 3];
                }
            } else if fr {
                // One kernel offset at a time across the row, without branches
                // (the comparisons are data-dependent and mispredict).
                let corner = |ox: usize| r[0] * w + ox * strides[1] - pads[1].0;
                for ox in c_lo..c_hi {
                    best[ox] = corner(ox) as u32;
                    best_v[ox] = vals[corner(ox)];
                }
                for &o in &offsets[1..] {
                    for ox in c_lo..c_hi {
                        let i = corner(ox) + o;
                        let v = vals[i];
                        let take = (u32::from(v > best_v[ox]) | u32::from(v.is_nan())).wrapping_neg();
                        best[ox] = (best[ox] & !take) | (i as u32 & take);
                        best_v[ox] = f32::from_bits((best_v[ox].to_bits() & !take) | (v.to_bits() & take));
                    }
                }
            }
            idx.extend(best.iter().map(|&b| base + i64::from(b)));
        }
    }
    let len = idx.len();
    let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [len]), &x.device());
    Some(x.clone().reshape([n * c * plane]).select(0, idx).reshape([n, c, oh, ow]))
}

fn four(f: F, what: &str) -> R<Tensor<4>> {
    match f {
        F::R4(t) => Ok(t),
        other => Err(format!("{what} has rank {}; only 2-d (NCHW) is supported", other.rank())),
    }
}

fn perm_apply(f: F, perm: &[isize]) -> R<F> {
    let bad = || format!("permutation {perm:?} does not fit rank");
    Ok(match f {
        F::R1(t) => F::R1(t.permute(<[isize; 1]>::try_from(perm).map_err(|_| bad())?)),
        F::R2(t) => F::R2(t.permute(<[isize; 2]>::try_from(perm).map_err(|_| bad())?)),
        F::R3(t) => F::R3(t.permute(<[isize; 3]>::try_from(perm).map_err(|_| bad())?)),
        F::R4(t) => F::R4(t.permute(<[isize; 4]>::try_from(perm).map_err(|_| bad())?)),
        F::R5(t) => F::R5(t.permute(<[isize; 5]>::try_from(perm).map_err(|_| bad())?)),
    })
}

fn cat(fs: Vec<F>, axis: usize) -> R<F> {
    macro_rules! go {
        ($var:ident) => {{
            let mut ts = Vec::with_capacity(fs.len());
            for f in fs {
                match f {
                    F::$var(t) => ts.push(t),
                    _ => return Err("inputs differ in rank".into()),
                }
            }
            F::$var(Tensor::cat(ts, axis))
        }};
    }
    Ok(match fs.first().map(F::rank) {
        Some(1) => go!(R1),
        Some(2) => go!(R2),
        Some(3) => go!(R3),
        Some(4) => go!(R4),
        Some(5) => go!(R5),
        _ => return Err("no inputs".into()),
    })
}

fn squeeze_dims(dims: &[usize], axes: Option<&[i64]>) -> R<Vec<usize>> {
    let r = dims.len();
    let drop: Vec<usize> = match axes {
        None => (0..r).filter(|&i| dims[i] == 1).collect(),
        Some(ax) => ax.iter().map(|&a| norm_axis(a, r)).collect::<R<_>>()?,
    };
    for &a in &drop {
        if dims[a] != 1 {
            return Err(format!("cannot squeeze axis {a} of size {}", dims[a]));
        }
    }
    Ok((0..r).filter(|i| !drop.contains(i)).map(|i| dims[i]).collect())
}

fn unsqueeze_dims(dims: &[usize], axes: &[i64]) -> R<Vec<usize>> {
    let out_rank = dims.len() + axes.len();
    let mut ax: Vec<usize> = axes.iter().map(|&a| norm_axis(a, out_rank)).collect::<R<_>>()?;
    ax.sort_unstable();
    ax.dedup();
    if ax.len() != axes.len() {
        return Err(format!("repeated axes {axes:?}"));
    }
    let mut it = dims.iter();
    Ok((0..out_rank).map(|i| if ax.contains(&i) { 1 } else { *it.next().unwrap_or(&1) }).collect())
}

fn reshape_target(dims: &[usize], shape: &[i64], allowzero: bool) -> R<Vec<usize>> {
    let n: usize = dims.iter().product();
    let mut out = Vec::with_capacity(shape.len());
    let mut infer = None;
    for (i, &s) in shape.iter().enumerate() {
        match s {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => {
                out.push(*dims.get(i).ok_or_else(|| format!("shape {shape:?}: 0 beyond the input rank"))?)
            }
            s if s >= 0 => out.push(s as usize),
            _ => return Err(format!("bad target shape {shape:?}")),
        }
    }
    if let Some(i) = infer {
        let known: usize = out.iter().product();
        if known == 0 || !n.is_multiple_of(known) {
            return Err(format!("cannot reshape {dims:?} to {shape:?}"));
        }
        out[i] = n / known;
    }
    if out.iter().product::<usize>() != n {
        return Err(format!("cannot reshape {dims:?} to {shape:?}"));
    }
    Ok(out)
}

fn flatten_dims(dims: &[usize], axis: i64) -> R<Vec<usize>> {
    let r = dims.len() as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a > r {
        return Err(format!("axis {axis} is out of range for rank {r}"));
    }
    let a = a as usize;
    Ok(vec![dims[..a].iter().product(), dims[a..].iter().product()])
}

fn gather_int(data: IntT, idx: IntT, axis: i64) -> R<IntT> {
    let r = data.dims.len().max(1);
    let dims = if data.dims.is_empty() { vec![1] } else { data.dims.clone() };
    let a = norm_axis(axis, r)?;
    let outer: usize = dims[..a].iter().product();
    let inner: usize = dims[a + 1..].iter().product();
    let len = dims[a] as i64;
    let mut out = Vec::new();
    for o in 0..outer {
        for &i in &idx.data {
            let i = if i < 0 { i + len } else { i };
            if i < 0 || i >= len {
                return Err(format!("index {i} is out of range for axis of size {len}"));
            }
            let base = (o * dims[a] + i as usize) * inner;
            out.extend_from_slice(&data.data[base..base + inner]);
        }
    }
    let mut od: Vec<usize> = dims[..a].to_vec();
    od.extend(&idx.dims);
    od.extend(&dims[a + 1..]);
    Ok(IntT { data: out, dims: od })
}

/// `x` sliced on `axes` as `parts` says (one [`op::SliceAxis`] per axis).
/// Float tensors take burn's slice (a step other than 1 is refused: no
/// exported CNN writes one on a float tensor); integer ones are sliced on the host.
fn slice_value(x: Value, axes: &[usize], parts: &[op::SliceAxis]) -> R<Value> {
    match x {
        Value::F(f) => {
            let dims = f.dims();
            let mut ranges: Vec<std::ops::Range<usize>> = dims.iter().map(|&d| 0..d).collect();
            for (&a, p) in axes.iter().zip(parts) {
                if p.step != 1 && p.len > 1 {
                    return Err(format!("a step of {} on a float tensor is not supported", p.step));
                }
                let s = p.start as usize;
                ranges[a] = s..s + p.len as usize;
            }
            if ranges.iter().any(|r| r.is_empty()) {
                return Err(format!("slice {ranges:?} of dims {dims:?} is empty"));
            }
            macro_rules! go {
                ($t:expr, $n:literal) => {{
                    let r: [std::ops::Range<usize>; $n] = ranges.clone().try_into().map_err(|_| "rank")?;
                    $t.slice(r)
                }};
            }
            Ok(Value::F(match f {
                F::R1(t) => F::R1(go!(t, 1)),
                F::R2(t) => F::R2(go!(t, 2)),
                F::R3(t) => F::R3(go!(t, 3)),
                F::R4(t) => F::R4(go!(t, 4)),
                F::R5(t) => F::R5(go!(t, 5)),
            }))
        }
        Value::I(i) => {
            let dims = if i.dims.is_empty() { vec![1] } else { i.dims.clone() };
            let mut per: Vec<op::SliceAxis> =
                dims.iter().map(|&d| op::SliceAxis { start: 0, len: d as u64, step: 1 }).collect();
            for (&a, p) in axes.iter().zip(parts) {
                per[a] = *p;
            }
            let out_dims: Vec<usize> = per.iter().map(|p| p.len as usize).collect();
            let n: usize = out_dims.iter().product();
            let mut data = Vec::with_capacity(n);
            let mut idx = vec![0usize; dims.len()];
            for _ in 0..n {
                let mut flat = 0usize;
                for (k, p) in per.iter().enumerate() {
                    let at = p.start as i64 + idx[k] as i64 * p.step;
                    flat = flat * dims[k] + at as usize;
                }
                data.push(i.data[flat]);
                for k in (0..idx.len()).rev() {
                    idx[k] += 1;
                    if idx[k] < out_dims[k] {
                        break;
                    }
                    idx[k] = 0;
                }
            }
            Ok(Value::I(IntT { data, dims: out_dims }))
        }
    }
}

fn reduce(f: F, axes: &[usize], mean: bool, keepdims: bool) -> R<F> {
    let dims = f.dims();
    let mut f = f;
    let mut sorted = axes.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.dedup();
    for &a in &sorted {
        f = if mean { map_f!(f, t => t.mean_dim(a)) } else { map_f!(f, t => t.sum_dim(a)) };
    }
    if keepdims {
        return Ok(f);
    }
    let out: Vec<usize> = (0..dims.len()).filter(|i| !sorted.contains(i)).map(|i| dims[i]).collect();
    f.reshape(&out)
}

/// Evaluates one op. `inputs` are per slot (`None` for an empty optional slot).
/// With `batch_stats`, BatchNormalization normalises by the batch's
/// statistics (training mode) and also returns the batch mean and biased
/// variance as outputs 1 and 2.
pub(crate) fn eval(kind: &Kind, mut inputs: Vec<Option<Value>>, dev: &Device, batch_stats: bool) -> R<Vec<Value>> {
    let all_int = inputs.iter().flatten().all(|x| matches!(x, Value::I(_)));
    let mut take = |i: usize| inputs.get_mut(i).and_then(Option::take);
    let out = match kind {
        Kind::Gemm { alpha, beta, trans_a, trans_b } => {
            let (a, b) = (float(take(0), "A")?, float(take(1), "B")?);
            let (F::R2(mut a), F::R2(mut b)) = (a, b) else { return Err("A and B must be matrices".into()) };
            if *trans_a {
                a = a.transpose();
            }
            if *trans_b {
                b = b.transpose();
            }
            if a.dims()[1] != b.dims()[0] {
                return Err(format!("cannot multiply {:?} by {:?}", a.dims(), b.dims()));
            }
            let mut y = a.matmul(b);
            if *alpha != 1.0 {
                y = y.mul_scalar(*alpha);
            }
            let mut y = F::R2(y);
            if let Some(c) = take(2) {
                let c = float(Some(c), "C")?;
                let c = if *beta != 1.0 { map_f!(c, t => t.mul_scalar(*beta)) } else { c };
                y = bin_float(BinOp::Add, y, c)?;
            }
            Value::F(y)
        }
        Kind::MatMul => Value::F(matmul(float(take(0), "A")?, float(take(1), "B")?)?),
        Kind::Bin(op) => {
            if all_int {
                Value::I(bin_int(*op, ints(take(0), "A")?, ints(take(1), "B")?)?)
            } else {
                let a = match take(0) {
                    Some(Value::I(i)) => to_float(i, dev)?,
                    v => float(v, "A")?,
                };
                let b = match take(1) {
                    Some(Value::I(i)) => to_float(i, dev)?,
                    v => float(v, "B")?,
                };
                Value::F(bin_float(*op, a, b)?)
            }
        }
        Kind::Conv { w, group, x_const } => {
            let x = four(float(take(0), "X")?, "X")?;
            let wt = four(float(take(1), "W")?, "W")?;
            let bias = match take(2) {
                Some(v) => match float(Some(v), "B")? {
                    F::R1(b) => Some(b),
                    _ => return Err("B must be a vector".into()),
                },
                None => None,
            };
            let [n, c, h, wd] = x.dims();
            let [o, ci, kh, kw] = wt.dims();
            let _ = n;
            if ci * group != c || o % group != 0 {
                return Err(format!("input has {c} channels, weight {:?} with group {group} does not fit", wt.dims()));
            }
            if let Some(k) = w.kernel
                && k != [kh, kw]
            {
                return Err(format!("kernel_shape {k:?} differs from the weight's {:?}", [kh, kw]));
            }
            if let Some(b) = &bias
                && b.dims()[0] != o
            {
                return Err(format!("bias has {} values for {o} output channels", b.dims()[0]));
            }
            let pads = resolve_pads(w, [kh, kw], [h, wd]);
            check_window([kh, kw], w.dilations, pads, [h, wd])?;
            let fast = if *x_const && *group == 1 { conv_im2col(&x, &wt, &bias, w, pads) } else { None };
            Value::F(F::R4(match fast {
                Some(y) => y,
                None => m::conv2d(x, wt, bias, ConvOptions::new_with_padding(w.strides, pads, w.dilations, *group)),
            }))
        }
        Kind::MaxPool(w) => {
            let x = four(float(take(0), "X")?, "X")?;
            let [_, _, h, wd] = x.dims();
            let k = w.kernel.unwrap_or([1, 1]);
            let pads = resolve_pads(w, k, [h, wd]);
            check_window(k, w.dilations, pads, [h, wd])?;
            let fast = if w.ceil_mode { None } else { max_pool_select(&x, k, w.strides, pads, w.dilations) };
            Value::F(F::R4(match fast {
                Some(y) => y,
                None => {
                    let o = MaxPoolOptions::new(k)
                        .with_stride(w.strides)
                        .with_padding_pairs(pads)
                        .with_dilation(w.dilations)
                        .with_ceil_mode(w.ceil_mode);
                    m::max_pool2d(x, o)
                }
            }))
        }
        Kind::AvgPool { w, count_include_pad } => {
            let x = four(float(take(0), "X")?, "X")?;
            let [_, _, h, wd] = x.dims();
            let k = w.kernel.unwrap_or([1, 1]);
            let pads = resolve_pads(w, k, [h, wd]);
            check_window(k, w.dilations, pads, [h, wd])?;
            let o = AvgPoolOptions::new(k)
                .with_stride(w.strides)
                .with_padding_pairs(pads)
                .with_count_include_pad(*count_include_pad)
                .with_ceil_mode(w.ceil_mode);
            Value::F(F::R4(m::avg_pool2d(x, o)))
        }
        Kind::GlobalAvgPool => {
            let x = float(take(0), "X")?;
            let r = x.rank();
            if r < 3 {
                return Err(format!("input of rank {r} has no spatial dims"));
            }
            let axes: Vec<usize> = (2..r).collect();
            Value::F(reduce(x, &axes, true, true)?)
        }
        Kind::BatchNorm { eps, .. } => {
            let x = float(take(0), "X")?;
            let (scale, b, mean, var) =
                (float(take(1), "scale")?, float(take(2), "B")?, float(take(3), "mean")?, float(take(4), "var")?);
            let dims = x.dims();
            if dims.len() < 2 {
                return Err("input needs a channel dimension".into());
            }
            let c = dims[1];
            for (name, p) in [("scale", &scale), ("B", &b), ("mean", &mean), ("var", &var)] {
                if p.dims() != [c] {
                    return Err(format!("{name} has dims {:?}, the input has {c} channels", p.dims()));
                }
            }
            let eps = *eps;
            if batch_stats {
                // Training mode: normalise by the batch's statistics (gradients flow
                // through them); the biased batch mean and variance come back as
                // outputs 1 and 2 for the executor's running-statistics update.
                let (F::R1(gamma), F::R1(beta)) = (scale, b) else { return Err("scale and B must be vectors".into()) };
                if dims.iter().enumerate().filter(|&(i, _)| i != 1).map(|(_, &d)| d).product::<usize>() < 2 {
                    return Err(format!("batch statistics need more than one value per channel; dims {dims:?}"));
                }
                macro_rules! train {
                    ($t:expr) => {{
                        let o = m::batch_norm_train($t, gamma, beta, eps as f64);
                        (o.output, o.mean, o.variance)
                    }};
                }
                let (y, bm, bv) = match x {
                    F::R1(_) => return Err("input needs a channel dimension".into()),
                    F::R2(t) => {
                        let (y, m, v) = train!(t);
                        (F::R2(y), m, v)
                    }
                    F::R3(t) => {
                        let (y, m, v) = train!(t);
                        (F::R3(y), m, v)
                    }
                    F::R4(t) => {
                        let (y, m, v) = train!(t);
                        (F::R4(y), m, v)
                    }
                    F::R5(t) => {
                        let (y, m, v) = train!(t);
                        (F::R5(y), m, v)
                    }
                };
                return Ok(vec![Value::F(y), Value::F(F::R1(bm)), Value::F(F::R1(bv))]);
            }
            let inv = map_f!(var, t => t.add_scalar(eps).sqrt().recip());
            let k = scale.mul(inv).ok_or("rank mismatch")?;
            let mut bshape = vec![1; dims.len()];
            bshape[1] = c;
            let y = bin_float(BinOp::Sub, x, mean.reshape(&bshape)?)?;
            let y = bin_float(BinOp::Mul, y, k.reshape(&bshape)?)?;
            Value::F(bin_float(BinOp::Add, y, b.reshape(&bshape)?)?)
        }
        Kind::Relu => Value::F(map_f!(float(take(0), "X")?, t => act::relu(t))),
        Kind::LeakyRelu(a) => Value::F(map_f!(float(take(0), "X")?, t => act::leaky_relu(t, *a as f64))),
        Kind::Sigmoid => Value::F(map_f!(float(take(0), "X")?, t => act::sigmoid(t))),
        Kind::Tanh => Value::F(map_f!(float(take(0), "X")?, t => t.tanh())),
        Kind::HardSigmoid(a, b) => {
            Value::F(map_f!(float(take(0), "X")?, t => act::hard_sigmoid(t, *a as f64, *b as f64)))
        }
        Kind::HardSwish => {
            Value::F(map_f!(float(take(0), "X")?, t => t.clone() * act::hard_sigmoid(t, 1.0 / 6.0, 0.5)))
        }
        Kind::Clip { min, max } => {
            let x = float(take(0), "X")?;
            let lo = scalar(take(1)).or(*min);
            let hi = scalar(take(2)).or(*max);
            let x = match lo {
                Some(lo) => map_f!(x, t => t.clamp_min(lo)),
                None => x,
            };
            Value::F(match hi {
                Some(hi) => map_f!(x, t => t.clamp_max(hi)),
                None => x,
            })
        }
        Kind::Softmax { axis, legacy, log } => {
            let x = float(take(0), "X")?;
            let dims = x.dims();
            let a = norm_axis(*axis, dims.len())?;
            let (x, back) = if *legacy && a + 1 != dims.len() {
                (x.reshape(&flatten_dims(&dims, a as i64)?)?, true)
            } else {
                (x, false)
            };
            let a = if back { 1 } else { a };
            let y = if *log { map_f!(x, t => act::log_softmax(t, a)) } else { map_f!(x, t => act::softmax(t, a)) };
            Value::F(if back { y.reshape(&dims)? } else { y })
        }
        Kind::Flatten { axis } => match take(0) {
            Some(Value::I(i)) => {
                let dims = flatten_dims(&i.dims, *axis)?;
                Value::I(IntT { data: i.data, dims })
            }
            v => {
                let x = float(v, "X")?;
                let d = flatten_dims(&x.dims(), *axis)?;
                Value::F(x.reshape(&d)?)
            }
        },
        Kind::Reshape { allowzero } => {
            let shape = ints(take(1), "shape")?;
            match take(0) {
                Some(Value::I(i)) => {
                    let dims = reshape_target(&i.dims, &shape.data, *allowzero)?;
                    Value::I(IntT { data: i.data, dims })
                }
                v => {
                    let x = float(v, "data")?;
                    let d = reshape_target(&x.dims(), &shape.data, *allowzero)?;
                    Value::F(x.reshape(&d)?)
                }
            }
        }
        Kind::Transpose { perm } => {
            let x = float(take(0), "X")?;
            let r = x.rank();
            let p: Vec<isize> = match perm {
                Some(p) => p.iter().map(|&a| norm_axis(a, r).map(|a| a as isize)).collect::<R<_>>()?,
                None => (0..r as isize).rev().collect(),
            };
            let mut check = p.clone();
            check.sort_unstable();
            if check != (0..r as isize).collect::<Vec<_>>() {
                return Err(format!("perm {p:?} is not a permutation of rank {r}"));
            }
            Value::F(perm_apply(x, &p)?)
        }
        Kind::Concat { axis } => {
            let vals: Vec<Value> = inputs.into_iter().flatten().collect();
            if vals.is_empty() {
                return Err("no inputs".into());
            }
            if vals.iter().all(|v| matches!(v, Value::I(_))) {
                let is: Vec<IntT> =
                    vals.into_iter().map(|v| if let Value::I(i) = v { i } else { unreachable!() }).collect();
                let r = is[0].dims.len();
                if r != 1 || is.iter().any(|i| i.dims.len() != 1) {
                    return Err("integer concat of non-vectors is not supported".into());
                }
                norm_axis(*axis, 1)?;
                let data: Vec<i64> = is.into_iter().flat_map(|i| i.data).collect();
                let n = data.len();
                Value::I(IntT { data, dims: vec![n] })
            } else {
                let fs: Vec<F> = vals
                    .into_iter()
                    .map(|v| match v {
                        Value::F(f) => Ok(f),
                        Value::I(i) => to_float(i, dev),
                    })
                    .collect::<R<_>>()?;
                let d0 = fs[0].dims();
                let a = norm_axis(*axis, d0.len())?;
                for f in &fs {
                    let d = f.dims();
                    if d.len() != d0.len() || (0..d.len()).any(|i| i != a && d[i] != d0[i]) {
                        return Err(format!("inputs {d0:?} and {d:?} cannot be concatenated on axis {a}"));
                    }
                }
                Value::F(cat(fs, a)?)
            }
        }
        Kind::Split { op: sp, outputs } => {
            let x = take(0).ok_or("input is missing")?;
            let given = match take(1) {
                Some(v) => Some(ints(Some(v), "split")?.data),
                None => None,
            };
            let dims = x.dims();
            let a = norm_axis(sp.axis, dims.len())?;
            let sizes = sp
                .sizes(dims[a] as u64, given, *outputs)
                .filter(|s| s.len() == *outputs)
                .ok_or_else(|| format!("cannot split an axis of {} into {outputs} parts as asked", dims[a]))?;
            let mut start = 0;
            let mut outs = Vec::with_capacity(sizes.len());
            for &n in &sizes {
                let part = [op::SliceAxis { start: start as u64, len: n, step: 1 }];
                outs.push(slice_value(x.clone(), &[a], &part)?);
                start += n as usize;
            }
            return Ok(outs);
        }
        Kind::Slice(sl) => {
            let x = take(0).ok_or("input is missing")?;
            let mut arg = |i: usize, what: &str| -> R<Option<Vec<i64>>> {
                match take(i) {
                    Some(v) => Ok(Some(ints(Some(v), what)?.data)),
                    None => Ok(None),
                }
            };
            let (st, en, ax, sp) = (arg(1, "starts")?, arg(2, "ends")?, arg(3, "axes")?, arg(4, "steps")?);
            let dims: Vec<u64> = x.dims().iter().map(|&d| d as u64).collect();
            let r = sl.resolve(&dims, st.as_deref(), en.as_deref(), ax.as_deref(), sp.as_deref())?;
            let axes: Vec<usize> = (0..r.len()).collect();
            slice_value(x, &axes, &r)?
        }
        Kind::Squeeze { axes } | Kind::Unsqueeze { axes } => {
            let squeeze = matches!(kind, Kind::Squeeze { .. });
            let x = take(0);
            let axes: Option<Vec<i64>> = match (axes, take(1)) {
                (Some(a), _) => Some(a.clone()),
                (None, Some(v)) => Some(ints(Some(v), "axes")?.data),
                (None, None) => None,
            };
            let dims_of = |v: &Option<Value>| match v {
                Some(Value::I(i)) => Ok(i.dims.clone()),
                Some(Value::F(f)) => Ok(f.dims()),
                None => Err("data is missing".to_string()),
            };
            let d = dims_of(&x)?;
            let nd = if squeeze {
                squeeze_dims(&d, axes.as_deref())?
            } else {
                unsqueeze_dims(&d, axes.as_deref().ok_or("axes are missing")?)?
            };
            match x {
                Some(Value::I(i)) => Value::I(IntT { data: i.data, dims: nd }),
                v => Value::F(float(v, "data")?.reshape(&nd)?),
            }
        }
        Kind::Identity => take(0).ok_or("input is missing")?,
        Kind::Shape { start, end } => {
            let d: Vec<i64> = match take(0) {
                Some(Value::F(f)) => f.dims().iter().map(|&x| x as i64).collect(),
                Some(Value::I(i)) => i.dims.iter().map(|&x| x as i64).collect(),
                None => return Err("data is missing".into()),
            };
            let r = d.len() as i64;
            let clampi = |x: i64| (if x < 0 { x + r } else { x }).clamp(0, r) as usize;
            let (s, e) = (clampi(*start), clampi(end.unwrap_or(r)));
            let data: Vec<i64> = if s < e { d[s..e].to_vec() } else { Vec::new() };
            let n = data.len();
            Value::I(IntT { data, dims: vec![n] })
        }
        Kind::Gather { axis } => {
            let data = ints(take(0), "data (gather on float tensors is not supported)")?;
            let idx = ints(take(1), "indices")?;
            Value::I(gather_int(data, idx, *axis)?)
        }
        Kind::Cast { to } => {
            const FLOATS: [i32; 4] = [1, 10, 11, 16];
            const INTS: [i32; 6] = [2, 3, 4, 5, 6, 7];
            match take(0) {
                Some(Value::I(i)) if FLOATS.contains(to) => Value::F(to_float(i, dev)?),
                Some(Value::I(i)) if INTS.contains(to) => Value::I(i),
                Some(Value::F(f)) if FLOATS.contains(to) => Value::F(f),
                Some(Value::F(f)) if INTS.contains(to) => {
                    let h = f.to_host();
                    Value::I(IntT { data: h.data.iter().map(|&x| x as i64).collect(), dims: h.dims })
                }
                Some(_) => return Err(format!("cast to type {to} is not supported")),
                None => return Err("input is missing".into()),
            }
        }
        Kind::Reduce { mean, axes, keepdims, noop_empty } => {
            let x = float(take(0), "data")?;
            let axes: Vec<i64> = match (axes, take(1)) {
                (Some(a), _) => a.clone(),
                (None, Some(v)) => ints(Some(v), "axes")?.data,
                (None, None) => Vec::new(),
            };
            let r = x.rank();
            if axes.is_empty() && *noop_empty {
                Value::F(x)
            } else {
                let ax: Vec<usize> = if axes.is_empty() {
                    (0..r).collect()
                } else {
                    axes.iter().map(|&a| norm_axis(a, r)).collect::<R<_>>()?
                };
                Value::F(reduce(x, &ax, *mean, *keepdims)?)
            }
        }
    };
    Ok(vec![out])
}

/// Output rank check used by callers that need a matrix.
pub(crate) fn as_matrix(f: F) -> R<Tensor<2>> {
    match f {
        F::R2(t) => Ok(t),
        other => Err(format!("expected a [batch, classes] matrix, found dims {:?}", other.dims())),
    }
}
