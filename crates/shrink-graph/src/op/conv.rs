//! Convolutions and pooling: `Conv`, `ConvTranspose`, `MaxPool`,
//! `AveragePool`, `LpPool` and the global pools. Their window attributes
//! (`kernel_shape`, `strides`, `dilations`, `pads`, `auto_pad`,
//! `ceil_mode`) are parsed once into a [`Window`]; output sizes are computed
//! in `i128`, so no crafted attribute can overflow.

use super::{InferCx, Inferred, MacCx, Rules, bad, input, ints_at_least, product};
use crate::error::GraphError;
use crate::graph::{NodeId, Op, ValueRef};
use crate::groups::{Layout, Rewrite, Role, Walk};
use crate::shape::{Dim, Shape};

/// `auto_pad`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoPad {
    NotSet,
    Valid,
    SameUpper,
    SameLower,
}

/// The window attributes shared by convolutions and pools, as stored
/// (absent lists stay `None`; the accessors give the ONNX defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub kernel: Option<Vec<u64>>,
    pub strides: Option<Vec<u64>>,
    pub dilations: Option<Vec<u64>>,
    /// ONNX order: the begin of every spatial axis, then the end of each.
    pub pads: Option<Vec<u64>>,
    pub auto_pad: AutoPad,
    pub ceil_mode: bool,
}

impl Window {
    fn parse(op: &Op) -> Result<Window, GraphError> {
        let auto_pad = match op.attr_str("auto_pad").unwrap_or("NOTSET") {
            "NOTSET" | "" => AutoPad::NotSet,
            "VALID" => AutoPad::Valid,
            "SAME_UPPER" => AutoPad::SameUpper,
            "SAME_LOWER" => AutoPad::SameLower,
            other => return Err(bad(op, format!("unknown auto_pad `{other}`"))),
        };
        let w = Window {
            kernel: ints_at_least(op, "kernel_shape", 1)?,
            strides: ints_at_least(op, "strides", 1)?,
            dilations: ints_at_least(op, "dilations", 1)?,
            pads: ints_at_least(op, "pads", 0)?,
            auto_pad,
            ceil_mode: op.attr_int("ceil_mode").unwrap_or(0) != 0,
        };
        let n = w.kernel.as_ref().map(Vec::len);
        let lens = [w.strides.as_ref().map(Vec::len), w.dilations.as_ref().map(Vec::len)];
        if let Some(n) = n
            && (lens.iter().flatten().any(|&l| l != n) || w.pads.as_ref().is_some_and(|p| p.len() != 2 * n))
        {
            return Err(bad(op, format!("kernel_shape has {n} axes but strides, dilations or pads do not match")));
        }
        Ok(w)
    }

    /// Strides for `n` spatial axes (default 1).
    pub fn strides(&self, n: usize) -> Vec<u64> {
        self.strides.clone().unwrap_or_else(|| vec![1; n])
    }

    /// Dilations for `n` spatial axes (default 1).
    pub fn dilations(&self, n: usize) -> Vec<u64> {
        self.dilations.clone().unwrap_or_else(|| vec![1; n])
    }

    /// Pads for `n` spatial axes (default 0), begins then ends.
    pub fn pads(&self, n: usize) -> Vec<u64> {
        self.pads.clone().unwrap_or_else(|| vec![0; 2 * n])
    }

    /// Output size of each spatial axis of `x` (`[N, C, spatial...]`) for
    /// `kernel`; unknown input sizes stay unknown. `None` when the lists do
    /// not fit the rank or a window does not fit its input.
    fn output(&self, x: &Shape, kernel: &[u64]) -> Option<Vec<Dim>> {
        let nsp = x.len().checked_sub(2)?;
        let (s, d, p) = (self.strides(nsp), self.dilations(nsp), self.pads(nsp));
        if kernel.len() != nsp || s.len() != nsp || d.len() != nsp || p.len() != 2 * nsp {
            return None;
        }
        let mut out = Vec::with_capacity(nsp);
        for i in 0..nsp {
            let Some(n) = x[2 + i].known() else {
                out.push(Dim::Unknown);
                continue;
            };
            let (n, s, ek) = (n as i128, s[i].max(1) as i128, d[i] as i128 * (kernel[i] as i128 - 1) + 1);
            let v = match self.auto_pad {
                AutoPad::SameUpper | AutoPad::SameLower => (n + s - 1) / s,
                AutoPad::Valid => (n - ek) / s + 1,
                AutoPad::NotSet => {
                    let num = n + p[i] as i128 + p[i + nsp] as i128 - ek;
                    if self.ceil_mode {
                        let mut o = (num + s - 1).div_euclid(s) + 1;
                        // the last window must start inside the (left-padded) input
                        if (o - 1) * s >= n + p[i] as i128 {
                            o -= 1;
                        }
                        o
                    } else {
                        num.div_euclid(s) + 1
                    }
                }
            };
            out.push(Dim::Known(u64::try_from(v).ok()?));
        }
        Some(out)
    }
}

/// `Conv`: `[N, C, ...] * [M, C/group, k...] (+ [M]) -> [N, M, ...]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv {
    pub window: Window,
    pub group: u64,
}

impl Conv {
    pub const OP_TYPES: &[&str] = &["Conv"];

    pub(crate) fn parse(op: &Op) -> Result<Conv, GraphError> {
        let group = op.attr_int("group").unwrap_or(1);
        if group < 1 {
            return Err(bad(op, format!("group {group} must be positive")));
        }
        Ok(Conv { window: Window::parse(op)?, group: group as u64 })
    }

    /// The kernel: `kernel_shape`, else the weight's trailing dims.
    fn kernel(&self, w: &Shape) -> Option<Vec<u64>> {
        match &self.window.kernel {
            Some(k) => Some(k.clone()),
            None => w.get(2..)?.iter().map(Dim::known).collect(),
        }
    }
}

impl Rules for Conv {
    fn infer(&self, cx: &InferCx) -> Inferred {
        let out = (|| {
            let (x, w) = (cx.shape(0)?, cx.shape(1)?);
            if x.len() < 3 || w.len() != x.len() {
                return None;
            }
            let mut out = vec![x[0].clone(), w[0].clone()];
            out.extend(self.window.output(&x, &self.kernel(&w)?)?);
            Some(out)
        })();
        Inferred::shape(out)
    }

    /// `N * C_out * spatial_out * (C_in / group) * kernel` = output elements × `prod(W.dims[1..])`.
    fn macs(&self, cx: &MacCx) -> Option<u64> {
        product(cx.output.as_ref()?)?.checked_mul(product((cx.input)(1)?.get(1..)?)?)
    }

    fn channels(&self, w: &mut Walk, id: NodeId, op: &Op) {
        let ins = w.g.op_inputs(id);
        let x = input(&ins, 0);
        let xl = x.and_then(|x| w.lay.get(&x).cloned());
        let out = ValueRef(id, 0);
        let Some(wd) = input(&ins, 1).and_then(|v| w.const_dims(v)) else {
            return w.unknown(id, &format!("conv `{}` has a computed weight", op.label()));
        };
        let bias = input(&ins, 2);
        let cout = wd.first().copied().unwrap_or(0) as usize;
        let rank = wd.len();
        if bias.is_some_and(|b| !w.is_const(Some(b))) || rank < 3 {
            return w.unknown(id, &format!("conv `{}` has a computed bias", op.label()));
        }
        if let (Some(l), Some(x)) = (&xl, x)
            && (l.axis != 1 || l.inner != 1)
        {
            w.block_value(x, &format!("conv `{}` reads an unexpected layout", op.label()));
        }
        let xl = xl.filter(|l| l.axis == 1 && l.inner == 1);
        let slice_out = |w: &mut Walk| {
            w.rewrites.push(Rewrite::Slice { op: id, slot: 1, axis: 0, layout_of: out });
            if bias.is_some() {
                w.rewrites.push(Rewrite::Slice { op: id, slot: 2, axis: 0, layout_of: out });
            }
        };
        if self.group == 1 {
            if let (Some(l), Some(x)) = (&xl, x) {
                if l.classes.len() as i64 == wd[1] {
                    w.rewrites.push(Rewrite::Slice { op: id, slot: 1, axis: 1, layout_of: x });
                    w.member(id, Role::Consumer, x);
                } else {
                    w.block_value(x, "conv input channels do not match its weight");
                }
            }
            w.producer(id, out, cout, 1, rank);
            slice_out(w);
        } else if let (Some(l), Some(_)) = (&xl, x)
            && self.group as usize == l.classes.len()
            && cout == l.classes.len()
            && wd[1] == 1
        {
            // depthwise: channel c in, channel c out
            w.lay.insert(out, Layout { classes: l.classes.clone(), axis: 1, rank, inner: 1 });
            w.member(id, Role::Depthwise, out);
            slice_out(w);
            w.rewrites.push(Rewrite::Group { op: id, layout_of: out });
        } else {
            w.unknown(id, &format!("grouped conv `{}` (group {}) is not depthwise", op.label(), self.group));
        }
    }
}

/// `ConvTranspose`: `[N, C, ...] * [C, M/group, k...] -> [N, M, ...]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvTranspose {
    pub window: Window,
    pub group: u64,
    pub output_padding: Option<Vec<u64>>,
    pub output_shape: Option<Vec<u64>>,
}

impl ConvTranspose {
    pub const OP_TYPES: &[&str] = &["ConvTranspose"];

    pub(crate) fn parse(op: &Op) -> Result<ConvTranspose, GraphError> {
        let group = op.attr_int("group").unwrap_or(1);
        if group < 1 {
            return Err(bad(op, format!("group {group} must be positive")));
        }
        Ok(ConvTranspose {
            window: Window::parse(op)?,
            group: group as u64,
            output_padding: ints_at_least(op, "output_padding", 0)?,
            output_shape: ints_at_least(op, "output_shape", 0)?,
        })
    }
}

impl Rules for ConvTranspose {
    fn infer(&self, cx: &InferCx) -> Inferred {
        let out = (|| {
            let (x, w) = (cx.shape(0)?, cx.shape(1)?);
            if x.len() < 3 || w.len() != x.len() {
                return None;
            }
            let nsp = x.len() - 2;
            let c_out = super::known(w[1].known().and_then(|m| m.checked_mul(self.group)));
            let mut out = vec![x[0].clone(), c_out];
            if let Some(os) = &self.output_shape {
                out.extend(os[os.len().saturating_sub(nsp)..].iter().map(|&v| Dim::Known(v)));
                return Some(out);
            }
            let kernel: Vec<u64> = match &self.window.kernel {
                Some(k) => k.clone(),
                None => w[2..].iter().map(Dim::known).collect::<Option<_>>()?,
            };
            let win = &self.window;
            let (s, d, p) = (win.strides(nsp), win.dilations(nsp), win.pads(nsp));
            let opad = self.output_padding.clone().unwrap_or_else(|| vec![0; nsp]);
            if kernel.len() != nsp || s.len() != nsp || d.len() != nsp || p.len() != 2 * nsp || opad.len() != nsp {
                return None;
            }
            for i in 0..nsp {
                out.push(match x[2 + i].known() {
                    None => Dim::Unknown,
                    Some(n) => {
                        let (n, s) = (n as i128, s[i] as i128);
                        let v = match win.auto_pad {
                            AutoPad::SameUpper | AutoPad::SameLower => n * s,
                            _ => {
                                s * (n - 1) + opad[i] as i128 + d[i] as i128 * (kernel[i] as i128 - 1) + 1
                                    - p[i] as i128
                                    - p[i + nsp] as i128
                            }
                        };
                        Dim::Known(u64::try_from(v).ok()?)
                    }
                });
            }
            Some(out)
        })();
        Inferred::shape(out)
    }

    /// Every input element is scattered through the whole kernel: input elements × `prod(W.dims[1..])`.
    fn macs(&self, cx: &MacCx) -> Option<u64> {
        product(&(cx.input)(0)?)?.checked_mul(product((cx.input)(1)?.get(1..)?)?)
    }
}

/// Which pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Average,
    Lp,
}

/// `MaxPool`, `AveragePool`, `LpPool`: a window over each channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    pub kind: PoolKind,
    pub window: Window,
    pub count_include_pad: bool,
    /// `MaxPool` writes its `Indices` output.
    pub indices: bool,
}

impl Pool {
    pub const OP_TYPES: &[&str] = &["MaxPool", "AveragePool", "LpPool"];

    pub(crate) fn parse(op: &Op) -> Result<Pool, GraphError> {
        let kind = match op.op_type.as_str() {
            "MaxPool" => PoolKind::Max,
            "AveragePool" => PoolKind::Average,
            _ => PoolKind::Lp,
        };
        Ok(Pool {
            kind,
            window: Window::parse(op)?,
            count_include_pad: op.attr_int("count_include_pad").unwrap_or(0) != 0,
            indices: op.outputs.get(1).is_some_and(|o| !o.is_empty()),
        })
    }
}

impl Rules for Pool {
    fn infer(&self, cx: &InferCx) -> Inferred {
        let out = (|| {
            let x = cx.shape(0)?;
            if x.len() < 3 {
                return None;
            }
            let mut out = vec![x[0].clone(), x[1].clone()];
            out.extend(self.window.output(&x, self.window.kernel.as_ref()?)?);
            Some(out)
        })();
        Inferred::shape(out)
    }

    fn channels(&self, w: &mut Walk, id: NodeId, op: &Op) {
        pool_channels(w, id, op)
    }
}

/// `GlobalAveragePool`, `GlobalMaxPool`, `GlobalLpPool`: `[N, C, ...] -> [N, C, 1...]`.
#[derive(Debug, Clone, PartialEq)]
pub struct GlobalPool {
    pub kind: PoolKind,
}

impl GlobalPool {
    pub const OP_TYPES: &[&str] = &["GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"];

    pub(crate) fn parse(op: &Op) -> Result<GlobalPool, GraphError> {
        let kind = match op.op_type.as_str() {
            "GlobalMaxPool" => PoolKind::Max,
            "GlobalAveragePool" => PoolKind::Average,
            _ => PoolKind::Lp,
        };
        Ok(GlobalPool { kind })
    }
}

impl Rules for GlobalPool {
    fn infer(&self, cx: &InferCx) -> Inferred {
        let x = cx.shape(0);
        Inferred::shape(
            x.map(|x| x.iter().enumerate().map(|(i, d)| if i < 2 { d.clone() } else { Dim::Known(1) }).collect()),
        )
    }

    fn channels(&self, w: &mut Walk, id: NodeId, op: &Op) {
        pool_channels(w, id, op)
    }
}

/// Pools keep each channel where it is.
fn pool_channels(w: &mut Walk, id: NodeId, op: &Op) {
    let x = w.g.input(id, 0);
    let Some(l) = x.and_then(|x| w.lay.get(&x).cloned()) else { return w.unknown(id, "") };
    if l.axis != 1 || l.inner != 1 || op.outputs.len() > 1 {
        return w.unknown(id, &format!("pool `{}` on an unexpected layout", op.label()));
    }
    w.lay.insert(ValueRef(id, 0), l);
}
