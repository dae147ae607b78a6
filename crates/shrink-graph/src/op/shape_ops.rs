//! Ops that move data without arithmetic: `Flatten`, `Reshape`,
//! `Transpose`, `Squeeze`/`Unsqueeze`, `Concat`, `Split`, `Slice`, `Shape`,
//! `Gather` and `Constant`. Small integer results are propagated as constants, so the
//! `Shape → Gather → Unsqueeze → Concat → Reshape` chains PyTorch writes for
//! `flatten` resolve to known shapes.
//!
//! Channels: `Flatten` (and a `Reshape` that flattens the same way) turns
//! each channel into a block of H×W features; `Squeeze`/`Unsqueeze` of
//! trailing axes keep them; `Concat` and `Split` on the channel axis arrange
//! them; a `Slice` that leaves the channel axis whole keeps them; everything
//! else here blocks.

use super::{InferCx, Inferred, Rules, norm_axis};
use crate::error::GraphError;
use crate::graph::{NodeId, Op, ValueRef};
use crate::groups::{Layout, Rewrite, Role, Walk};
use crate::shape::{Dim, Shape, dim_product};

/// `Flatten`: `[d0, ..., dn] -> [d0 · ... · d(axis-1), d(axis) · ... · dn]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Flatten {
    pub axis: i64,
}

impl Flatten {
    pub const OP_TYPES: &[&str] = &["Flatten"];

    pub(crate) fn parse(op: &Op) -> Result<Flatten, GraphError> {
        Ok(Flatten { axis: op.attr_int("axis").unwrap_or(1) })
    }
}

impl Rules for Flatten {
    fn infer(&self, cx: &InferCx) -> Inferred {
        let Some(x) = cx.shape(0) else { return Inferred::default() };
        let r = x.len() as i64;
        let axis = if self.axis < 0 { self.axis + r } else { self.axis };
        if !(0..=r).contains(&axis) {
            return Inferred::default();
        }
        let (a, b) = x.split_at(axis as usize);
        Inferred::shape(Some(vec![dim_product(a), dim_product(b)]))
    }

    fn channels(&self, w: &mut Walk, id: NodeId, op: &Op) {
        let x = w.g.input(id, 0);
        let (Some(l), Some(x)) = (x.and_then(|x| w.lay.get(&x).cloned()), x) else { return w.unknown(id, "") };
        let axis = if self.axis < 0 { self.axis + l.rank as i64 } else { self.axis };
        if axis != 1 || l.axis != 1 {
            return w.unknown(id, &format!("flatten `{}` mixes the channel axis", op.label()));
        }
        let out = ValueRef(id, 0);
        let Some(spatial) = w.spatial(x, out, &l) else {
            return w.unknown(id, &format!("flatten `{}`: input shape unknown", op.label()));
        };
        w.lay.insert(out, Layout { inner: l.inner * spatial as usize, axis: 1, rank: 2, classes: l.classes });
    }
}

/// `Reshape` to the shape held by input 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Reshape {
    /// A 0 in the shape is a literal 0, not "copy this dim".
    pub allowzero: bool,
}

impl Reshape {
    pub const OP_TYPES: &[&str] = &["Reshape"];

    pub(crate) fn parse(op: &Op) -> Result<Reshape, GraphError> {
        Ok(Reshape { allowzero: op.attr_int("allowzero").unwrap_or(0) != 0 })
    }
}

impl Rules for Reshape {
    fn infer(&self, cx: &InferCx) -> Inferred {
        let (Some(target), x) = (cx.konst(1), cx.shape(0)) else { return Inferred::default() };
        Inferred::shape(reshape(x.as_deref(), &target, self.allowzero))
    }

    /// A `Reshape` that flattens `[N, C, ...]` to `[N, C·...]` (the flatten
    /// PyTorch's dynamo exporter writes): like `Flatten`; a literal feature
    /// count in the shape constant is rewritten. Any other reshape blocks.
    fn channels(&self, w: &mut Walk, id: NodeId, op: &Op) {
        let out = ValueRef(id, 0);
        let blocked = format!("reshape `{}` changes the channel layout", op.label());
        let (Some(x), Some(shape_v)) = (w.g.input(id, 0), w.g.input(id, 1)) else { return w.unknown(id, &blocked) };
        let Some(l) = w.lay.get(&x).cloned() else { return w.unknown(id, &blocked) };
        let Some(s) = w.const_ints(Some(shape_v)) else { return w.unknown(id, &blocked) };
        let literal_zero = self.allowzero && s.contains(&0);
        if l.axis != 1 || l.inner != 1 || l.rank < 2 || s.len() != 2 || literal_zero {
            return w.unknown(id, &blocked);
        }
        let c = l.classes.len() as i64;
        let d = w.dims_of(x);
        // elements per channel: from the shapes, else from a literal feature count, else from the reader
        let spatial = match (&d, s[1]) {
            (Some(d), _) => Some(d[2..].iter().product::<u64>()),
            (None, f) if f > 0 && c > 0 && f % c == 0 => Some((f / c) as u64),
            _ => w.spatial(x, out, &l),
        };
        let Some(spatial) = spatial else { return w.unknown(id, &blocked) };
        let features = c * spatial as i64;
        let batch_ok = |b: i64| b == 0 || d.as_ref().is_some_and(|d| b == d[0] as i64);
        let rewrite = match (s[0], s[1]) {
            (b, f) if f == features && (b == -1 || batch_ok(b)) => true,
            (b, -1) if batch_ok(b) => false,
            _ => return w.unknown(id, &blocked),
        };
        w.lay.insert(out, Layout { classes: l.classes, axis: 1, rank: 2, inner: spatial as usize });
        if rewrite {
            w.rewrites.push(Rewrite::ReshapeDim { op: id, index: 1, layout_of: out });
        }
    }
}

fn reshape(x: Option<&[Dim]>, target: &[i64], allowzero: bool) -> Option<Shape> {
    let mut out: Shape = Vec::with_capacity(target.len());
    let mut infer_at = None;
    for (i, &t) in target.iter().enumerate() {
        out.push(match t {
            0 if !allowzero => x.and_then(|x| x.get(i)).cloned().unwrap_or(Dim::Unknown),
            -1 => {
                if infer_at.replace(i).is_some() {
                    return None;
                }
                Dim::Unknown
            }
            t if t >= 0 => Dim::Known(t as u64),
            _ => return None,
        });
    }
    if let (Some(i), Some(x)) = (infer_at, x) {
        let total = dim_product(x).known();
        let rest: Vec<Dim> = out.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, d)| d.clone()).collect();
        if let (Some(total), Dim::Known(rest)) = (total, dim_product(&rest))
            && rest > 0
            && total % rest == 0
        {
            out[i] = Dim::Known(total / rest);
        }
    }
    Some(out)
}

/// `Transpose` (`perm` absent: reverse the axes).
#[derive(Debug, Clone, PartialEq)]
pub struct Transpose {
    pub perm: Option<Vec<i64>>,
}

impl Transpose {
    pub const OP_TYPES: &[&str] = &["Transpose"];

    pub(crate) fn parse(op: &Op) -> Result<Transpose, GraphError> {
        Ok(Transpose { perm: op.attr_ints("perm").map(<[i64]>::to_vec) })
    }
}

impl Rules for Transpose {
    fn infer(&self, cx: &InferCx) -> Inferred {
        let Some(x) = cx.shape(0) else { return Inferred::default() };
        let perm: Vec<i64> = self.perm.clone().unwrap_or_else(|| (0..x.len() as i64).rev().collect());
        if perm.len() != x.len() || perm.iter().any(|&p| p < 0 || p as usize >= x.len()) {
            return Inferred::default();
        }
        Inferred::shape(Some(perm.iter().map(|&p| x[p as usize].clone()).collect()))
    }
}

/// `Squeeze` and `Unsqueeze`; `axes` from the attribute (opset < 13) or input 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Squeeze {
    pub unsqueeze: bool,
    pub axes: Option<Vec<i64>>,
}

impl Squeeze {
    pub const OP_TYPES: &[&str] = &["Squeeze", "Unsqueeze"];

    pub(crate) fn parse(op: &Op) -> Result<Squeeze, GraphError> {
        Ok(Squeeze { unsqueeze: op.op_type == "Unsqueeze", axes: op.attr_ints("axes").map(<[i64]>::to_vec) })
    }
}

impl Rules for Squeeze {
    fn infer(&self, cx: &InferCx) -> Inferred {
        let axes = self.axes.clone().or_else(|| cx.konst(1));
        let shape = cx.shape(0).and_then(|x| squeeze(&x, axes.as_deref(), self.unsqueeze));
        let konst = if self.unsqueeze && axes.as_deref() == Some(&[0]) { cx.konst(0) } else { None };
        Inferred { shape, konst }
    }

    fn channels(&self, w: &mut Walk, id: NodeId, op: &Op) {
        let x = w.g.input(id, 0);
        let (Some(l), Some(_)) = (x.and_then(|x| w.lay.get(&x).cloned()), x) else { return w.unknown(id, "") };
        let axes = self.axes.clone().or_else(|| w.const_ints(w.g.input(id, 1)));
        let out = ValueRef(id, 0);
        let out_rank = w.rank_of(out);
        let after = |a: i64, r: usize| (if a < 0 { a + r as i64 } else { a }) > l.axis as i64;
        let ok_axes = match (&axes, out_rank) {
            (Some(a), Some(r)) if self.unsqueeze => a.iter().all(|&a| after(a, r)),
            (Some(a), Some(_)) => a.iter().all(|&a| after(a, l.rank)),
            _ => false,
        };
        if !ok_axes || l.inner != 1 {
            return w.unknown(id, &format!("{} `{}` moves the channel axis", op.op_type, op.label()));
        }
        w.lay.insert(out, Layout { rank: out_rank.unwrap_or(l.rank), ..l });
    }
}

fn squeeze(x: &Shape, axes: Option<&[i64]>, unsqueeze: bool) -> Option<Shape> {
    if unsqueeze {
        let axes = axes?;
        let r = x.len() + axes.len();
        let norm: Vec<usize> = axes.iter().map(|&a| norm_axis(a, r)).collect::<Option<_>>()?;
        let mut rest = x.iter();
        return (0..r).map(|i| if norm.contains(&i) { Some(Dim::Known(1)) } else { rest.next().cloned() }).collect();
    }
    match axes {
        Some(axes) => {
            let r = x.len() as i64;
            let norm: Vec<usize> = axes.iter().map(|&a| if a < 0 { a + r } else { a } as usize).collect();
            Some(x.iter().enumerate().filter(|(i, _)| !norm.contains(i)).map(|(_, d)| d.clone()).collect())
        }
        None if x.iter().all(|d| d.known().is_some()) => {
            Some(x.iter().filter(|d| **d != Dim::Known(1)).cloned().collect())
        }
        None => None,
    }
}

/// `Concat` along `axis`.
#[derive(Debug, Clone, PartialEq)]
pub struct Concat {
    /// Required by ONNX; `None` when the node lacks it.
    pub axis: Option<i64>,
}

impl Concat {
    pub const OP_TYPES: &[&str] = &["Concat"];

    pub(crate) fn parse(op: &Op) -> Result<Concat, GraphError> {
        Ok(Concat { axis: op.attr_int("axis") })
    }
}

impl Rules for Concat {
    fn infer(&self, cx: &InferCx) -> Inferred {
        let Some(shapes) = cx.all_shapes() else { return Inferred::default() };
        let konst = (0..cx.n_inputs).map(|i| cx.konst(i)).collect::<Option<Vec<Vec<i64>>>>().map(|v| v.concat());
        Inferred { shape: concat(&shapes, self.axis.unwrap_or(0)), konst }
    }

    fn channels(&self, w: &mut Walk, id: NodeId, _op: &Op) {
        let ins = w.g.op_inputs(id);
        let out = ValueRef(id, 0);
        let rank = w.rank_of(out).or_else(|| ins.iter().flatten().find_map(|v| w.lay.get(v).map(|l| l.rank)));
        let Some(rank) = rank else { return w.unknown(id, "concat of unknown rank") };
        let axis = self.axis.unwrap_or(1);
        let axis = if axis < 0 { axis + rank as i64 } else { axis } as usize;
        let mut classes = Vec::new();
        let mut inner = None;
        let mut along = true;
        let mut first: Option<Layout> = None;
        for v in ins.iter() {
            let Some(v) = *v else { continue };
            let l = match w.lay.get(&v).cloned() {
                Some(l) => l,
                None => {
                    // an untracked input (a constant, a graph input): its channels are blocked
                    let Some(c) = w.shapes.get(v).and_then(|d| d.get(axis)).and_then(Dim::known) else {
                        return w.unknown(id, "concat of an input of unknown size");
                    };
                    let classes = w.cls.fresh(c as usize, None, Some("concatenated with an untracked value".into()));
                    Layout { classes, axis, rank, inner: 1 }
                }
            };
            if l.axis != axis || l.rank != rank {
                along = false;
            }
            if *inner.get_or_insert(l.inner) != l.inner {
                return w.unknown(id, "concat of different feature blocks");
            }
            classes.extend(l.classes.iter().copied());
            match &first {
                None => first = Some(l),
                Some(f) if !along => {
                    if f.classes.len() != l.classes.len() {
                        return w.unknown(id, "concat of different channel counts");
                    }
                    for (a, b) in f.classes.clone().iter().zip(&l.classes) {
                        w.cls.union(*a, *b);
                    }
                }
                Some(_) => {}
            }
        }
        let Some(first) = first else { return w.unknown(id, "") };
        if along {
            w.lay.insert(out, Layout { classes, axis, rank, inner: inner.unwrap_or(1) });
        } else {
            w.lay.insert(out, first);
        }
    }
}

fn concat(shapes: &[Shape], axis: i64) -> Option<Shape> {
    let first = shapes.first()?;
    let a = norm_axis(axis, first.len())?;
    if shapes.iter().any(|s| s.len() != first.len()) {
        return None;
    }
    let total = shapes.iter().try_fold(0u64, |t, s| t.checked_add(s[a].known()?));
    let mut out = first.clone();
    out[a] = super::known(total);
    Some(out)
}

/// `Split` along `axis`: sizes from the `split` attribute (opset < 13),
/// input 1, or parts as equal as `num_outputs` (opset 18) or the number of
/// outputs allow (the last one smaller, as ONNX says).
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub axis: i64,
    pub split: Option<Vec<i64>>,
    /// The opset-18 attribute; the number of outputs when absent.
    pub num_outputs: Option<i64>,
}

impl Split {
    pub const OP_TYPES: &[&str] = &["Split"];

    pub(crate) fn parse(op: &Op) -> Result<Split, GraphError> {
        let num_outputs = op.attr_int("num_outputs");
        if num_outputs.is_some_and(|n| n < 1) {
            return Err(super::bad(op, format!("num_outputs {} is not positive", num_outputs.unwrap_or(0))));
        }
        Ok(Split {
            axis: op.attr_int("axis").unwrap_or(0),
            split: op.attr_ints("split").map(<[i64]>::to_vec),
            num_outputs,
        })
    }

    /// The size of each part of an axis of `len`: the `split` attribute,
    /// else `input` (input 1's value), else equal parts of
    /// `ceil(len / parts)` for `parts` outputs. `None` when they do not add
    /// up to `len` or one is negative.
    pub fn sizes(&self, len: u64, input: Option<Vec<i64>>, outputs: usize) -> Option<Vec<u64>> {
        let given = self.split.clone().or(input);
        let sizes: Vec<u64> = match given {
            Some(v) => v.iter().map(|&n| u64::try_from(n).ok()).collect::<Option<_>>()?,
            None => {
                let parts = self.num_outputs.map_or(outputs as u64, |n| n as u64);
                if parts == 0 {
                    return None;
                }
                let each = len.div_ceil(parts);
                (0..parts).map(|k| each.min(len.saturating_sub(k * each))).collect()
            }
        };
        (sizes.iter().sum::<u64>() == len).then_some(sizes)
    }

    fn part_shape(&self, slot: usize, cx: &InferCx, outputs: usize) -> Option<Shape> {
        let x = cx.shape(0)?;
        let a = norm_axis(self.axis, x.len())?;
        let mut out = x.clone();
        out[a] = match x[a].known() {
            Some(len) => Dim::Known(*self.sizes(len, cx.konst(1), outputs)?.get(slot)?),
            None => Dim::Unknown,
        };
        Some(out)
    }
}

impl Rules for Split {
    fn infer(&self, cx: &InferCx) -> Inferred {
        Inferred::shape(self.part_shape(0, cx, cx.n_outputs))
    }

    fn infer_extra(&self, slot: usize, cx: &InferCx) -> Option<Shape> {
        self.part_shape(slot, cx, cx.n_outputs)
    }

    fn channels(&self, w: &mut Walk, id: NodeId, op: &Op) {
        let x = w.g.input(id, 0);
        let Some((x, l)) = x.and_then(|x| w.lay.get(&x).cloned().map(|l| (x, l))) else {
            return w.unknown(id, "");
        };
        let axis = if self.axis < 0 { self.axis + l.rank as i64 } else { self.axis } as usize;
        if axis != l.axis {
            for slot in 0..op.outputs.len() {
                w.lay.insert(ValueRef(id, slot), l.clone());
            }
            return;
        }
        if l.inner != 1 {
            return w.unknown(id, "split of feature blocks");
        }
        let sizes = self.sizes(l.classes.len() as u64, w.const_ints(w.g.input(id, 1)), op.outputs.len());
        let Some(sizes) = sizes.filter(|s| s.len() == op.outputs.len()) else {
            return w.unknown(id, &format!("split `{}` with sizes that cannot be read", op.label()));
        };
        let mut off = 0usize;
        for (slot, &n) in sizes.iter().enumerate() {
            let part = l.classes[off..off + n as usize].to_vec();
            off += n as usize;
            w.lay.insert(ValueRef(id, slot), Layout { classes: part, ..l.clone() });
        }
        w.rewrites.push(Rewrite::SplitSizes { op: id, axis });
        w.member(id, Role::Split, x);
    }
}

/// `Slice`: starts, ends, axes and steps from inputs 1 to 4 (opset 10 on),
/// or the attributes `starts`, `ends`, `axes` (before).
#[derive(Debug, Clone, PartialEq)]
pub struct Slice {
    /// The attributes of opset < 10; `None` from opset 10 on.
    pub attrs: Option<SliceAttrs>,
}

/// The attribute form of `Slice` (opset < 10).
#[derive(Debug, Clone, PartialEq)]
pub struct SliceAttrs {
    pub starts: Vec<i64>,
    pub ends: Vec<i64>,
    pub axes: Option<Vec<i64>>,
}

/// One axis of a resolved `Slice`: the first index read, how many are read,
/// and the step between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SliceAxis {
    pub start: u64,
    pub len: u64,
    pub step: i64,
}

impl Slice {
    pub const OP_TYPES: &[&str] = &["Slice"];

    pub(crate) fn parse(op: &Op) -> Result<Slice, GraphError> {
        let attrs = match (op.attr_ints("starts"), op.attr_ints("ends")) {
            (Some(s), Some(e)) => Some(SliceAttrs {
                starts: s.to_vec(),
                ends: e.to_vec(),
                axes: op.attr_ints("axes").map(<[i64]>::to_vec),
            }),
            (None, None) => None,
            _ => return Err(super::bad(op, "has only one of the `starts` and `ends` attributes")),
        };
        Ok(Slice { attrs })
    }

    /// Every axis of an input of `dims` resolved by ONNX's rules (negative
    /// indices count from the end, then clamp; a negative step walks back),
    /// from the attributes or the values of inputs 1..=4. An error says what
    /// does not fit.
    pub fn resolve(
        &self,
        dims: &[u64],
        starts: Option<&[i64]>,
        ends: Option<&[i64]>,
        axes: Option<&[i64]>,
        steps: Option<&[i64]>,
    ) -> Result<Vec<SliceAxis>, String> {
        let (starts, ends, axes) = match &self.attrs {
            Some(a) => (a.starts.as_slice(), a.ends.as_slice(), a.axes.as_deref()),
            None => (starts.ok_or("starts are missing")?, ends.ok_or("ends are missing")?, axes),
        };
        let rank = dims.len();
        let all: Vec<i64> = (0..rank as i64).collect();
        let axes = axes.unwrap_or(&all[..starts.len().min(rank)]);
        if starts.len() != ends.len() || axes.len() != starts.len() || steps.is_some_and(|s| s.len() != starts.len()) {
            return Err(format!(
                "{} starts, {} ends, {} axes and {} steps do not pair up",
                starts.len(),
                ends.len(),
                axes.len(),
                steps.map_or(starts.len(), <[i64]>::len)
            ));
        }
        let mut out: Vec<SliceAxis> = dims.iter().map(|&d| SliceAxis { start: 0, len: d, step: 1 }).collect();
        let mut seen = vec![false; rank];
        for (k, &axis) in axes.iter().enumerate() {
            let a = norm_axis(axis, rank).ok_or_else(|| format!("axis {axis} is out of range for rank {rank}"))?;
            if std::mem::replace(&mut seen[a], true) {
                return Err(format!("axis {axis} is sliced twice"));
            }
            let step = steps.map_or(1, |s| s[k]);
            if step == 0 {
                return Err("a step is 0".into());
            }
            let d = i128::from(dims[a]);
            let norm = |v: i64| if v < 0 { i128::from(v) + d } else { i128::from(v) };
            let (s, e) = (norm(starts[k]), norm(ends[k]));
            // ceil(span / step) of a non-negative span and a positive step
            let parts = |span: i128, step: i128| (span.max(0) + step - 1) / step;
            let (start, len) = if step > 0 {
                let (s, e) = (s.clamp(0, d), e.clamp(0, d));
                (s, parts(e - s, i128::from(step)))
            } else {
                let (s, e) = (s.clamp(0, d - 1), e.clamp(-1, d - 1));
                (s, parts(s - e, -i128::from(step)))
            };
            out[a] = SliceAxis { start: start.max(0) as u64, len: len as u64, step };
        }
        Ok(out)
    }

    /// The resolved axes from what shape inference knows.
    fn resolve_cx(&self, cx: &InferCx) -> Option<(Shape, Vec<SliceAxis>)> {
        let x = cx.shape(0)?;
        let dims: Vec<u64> = x.iter().map(|d| d.known().unwrap_or(u64::MAX >> 2)).collect();
        let k = |i: usize| if i < cx.n_inputs { cx.konst(i) } else { None };
        let (s, e, a, st) = (k(1), k(2), k(3), k(4));
        if self.attrs.is_none()
            && (s.is_none()
                || e.is_none()
                || (3 < cx.n_inputs && cx.shape(3).is_some() && a.is_none())
                || (4 < cx.n_inputs && cx.shape(4).is_some() && st.is_none()))
        {
            return None;
        }
        let r = self.resolve(&dims, s.as_deref(), e.as_deref(), a.as_deref(), st.as_deref()).ok()?;
        Some((x, r))
    }
}

impl Rules for Slice {
    fn infer(&self, cx: &InferCx) -> Inferred {
        let Some((x, axes)) = self.resolve_cx(cx) else { return Inferred::default() };
        let shape: Shape = x
            .iter()
            .zip(&axes)
            .map(|(d, a)| match d {
                Dim::Known(_) => Dim::Known(a.len),
                // an axis of unknown length stays unknown unless it is not sliced
                _ if a.start == 0 && a.step == 1 && a.len == u64::MAX >> 2 => d.clone(),
                _ => Dim::Unknown,
            })
            .collect();
        let konst = match (cx.konst(0), axes.as_slice()) {
            (Some(v), [a]) => {
                (0..a.len).map(|i| v.get(usize::try_from(a.start as i64 + i as i64 * a.step).ok()?).copied()).collect()
            }
            _ => None,
        };
        Inferred { shape: Some(shape), konst }
    }

    fn channels(&self, w: &mut Walk, id: NodeId, op: &Op) {
        let x = w.g.input(id, 0);
        let Some((x, l)) = x.and_then(|x| w.lay.get(&x).cloned().map(|l| (x, l))) else {
            return w.unknown(id, "");
        };
        let dims: Option<Vec<u64>> = w.shapes.get(x).and_then(|s| s.iter().map(Dim::known).collect());
        let ints = |i: usize| w.const_ints(w.g.input(id, i));
        let axes = dims.and_then(|d| {
            self.resolve(&d, ints(1).as_deref(), ints(2).as_deref(), ints(3).as_deref(), ints(4).as_deref())
                .ok()
                .map(|r| (d, r))
        });
        let keeps =
            axes.is_some_and(|(d, r)| r.get(l.axis).is_some_and(|a| a.start == 0 && a.step == 1 && a.len == d[l.axis]));
        if !keeps || l.inner != 1 {
            return w
                .unknown(id, &format!("slice `{}` cuts the channel axis or its bounds are not constant", op.label()));
        }
        w.lay.insert(ValueRef(id, 0), l);
    }
}

/// `Shape` (with the opset-15 `start`/`end`).
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeOf {
    pub start: i64,
    pub end: Option<i64>,
}

impl ShapeOf {
    pub const OP_TYPES: &[&str] = &["Shape"];

    pub(crate) fn parse(op: &Op) -> Result<ShapeOf, GraphError> {
        Ok(ShapeOf { start: op.attr_int("start").unwrap_or(0), end: op.attr_int("end") })
    }
}

impl Rules for ShapeOf {
    fn infer(&self, cx: &InferCx) -> Inferred {
        let Some(x) = cx.shape(0) else { return Inferred::default() };
        let r = x.len() as i64;
        let clamp = |v: i64| (if v < 0 { v.saturating_add(r) } else { v }).clamp(0, r) as usize;
        let (start, end) = (clamp(self.start), clamp(self.end.unwrap_or(r)));
        let dims = if start < end { &x[start..end] } else { &x[0..0] };
        let konst = dims.iter().map(|d| d.known().map(|v| v as i64)).collect::<Option<Vec<i64>>>();
        Inferred { shape: Some(vec![Dim::Known(dims.len() as u64)]), konst }
    }
}

/// `Gather` along `axis`.
#[derive(Debug, Clone, PartialEq)]
pub struct Gather {
    pub axis: i64,
}

impl Gather {
    pub const OP_TYPES: &[&str] = &["Gather"];

    pub(crate) fn parse(op: &Op) -> Result<Gather, GraphError> {
        Ok(Gather { axis: op.attr_int("axis").unwrap_or(0) })
    }
}

impl Rules for Gather {
    fn infer(&self, cx: &InferCx) -> Inferred {
        let (Some(data), Some(idx)) = (cx.shape(0), cx.shape(1)) else { return Inferred::default() };
        let Some(a) = norm_axis(self.axis, data.len()) else { return Inferred::default() };
        let out: Shape = data[..a].iter().chain(idx.iter()).chain(data[a + 1..].iter()).cloned().collect();
        let konst = match (cx.konst(0), cx.konst(1)) {
            (Some(d), Some(i)) if a == 0 && data.len() == 1 => i
                .iter()
                .map(|&j| {
                    let j = if j < 0 { j + d.len() as i64 } else { j };
                    d.get(usize::try_from(j).ok()?).copied()
                })
                .collect(),
            _ => None,
        };
        Inferred { shape: Some(out), konst }
    }
}

/// `Constant`: a weight to analysis ([`crate::Graph::weight`]). Its
/// shape, and its value when it is a small integer tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Constant {
    pub dims: Option<Vec<u64>>,
    pub ints: Option<Vec<i64>>,
}

impl Constant {
    pub const OP_TYPES: &[&str] = &["Constant"];

    pub(crate) fn parse(op: &Op) -> Result<Constant, GraphError> {
        if let Some(t) = op.attr("value").and_then(|a| a.t.as_ref()) {
            let dims = t.dims.iter().map(|&d| d.max(0) as u64).collect();
            let small = t.dims.iter().try_fold(1i64, |a, &d| a.checked_mul(d.max(0))).is_some_and(|n| n <= 64);
            let ints = if small { crate::Tensor::from_proto_ref(t).to_i64().ok() } else { None };
            return Ok(Constant { dims: Some(dims), ints });
        }
        Ok(match (op.attr("value_ints"), op.attr("value_int")) {
            (Some(a), _) => Constant { dims: Some(vec![a.ints.len() as u64]), ints: Some(a.ints.clone()) },
            (None, Some(a)) => Constant { dims: Some(vec![]), ints: Some(vec![a.i]) },
            _ => Constant { dims: None, ints: None },
        })
    }
}

impl Rules for Constant {
    fn infer(&self, _cx: &InferCx) -> Inferred {
        let shape = self.dims.as_ref().map(|d| d.iter().map(|&v| Dim::Known(v)).collect());
        Inferred { shape, konst: self.ints.clone() }
    }
}
