//! Graph surgery shared by the methods: finding a layer's constant weight,
//! fresh names, swapping an op's weight for a new initializer, and the
//! attributes of the 1×1 (or 1×k) conv the original node becomes.
//!
//! Every rewrite keeps the original node as the *second* factor: its name,
//! its output value (so consumers, graph outputs and `value_info` need no
//! change) and its bias stay; a new node, the first factor, is put in front
//! of it.

use shrink_graph::builder::attr_ints;
use shrink_graph::onnx::AttributeProto;
use shrink_graph::op::{AutoPad, OpKind};
pub use shrink_graph::rewrite::fresh_name;
use shrink_graph::{Graph, NodeId, NodeKind, Op, Tensor, ValueRef};

/// Points input `slot` of `op` at a new initializer holding `data` (named
/// after `base`), and removes the old initializer when nobody reads it any more.
pub fn replace_weight(graph: &mut Graph, op: NodeId, slot: usize, base: &str, dims: &[i64], data: &[f32]) {
    let old = graph.input(op, slot);
    let name = fresh_name(graph, base);
    let id = graph.add_weight(Tensor::from_f32(&name, dims, data));
    graph.set_input(op, slot, Some(ValueRef(id, 0)));
    if let Some(v) = old {
        drop_if_unread(graph, v);
    }
}

/// Removes the initializer `v` (and its `value_info`) when nobody reads it.
pub fn drop_if_unread(graph: &mut Graph, v: ValueRef) {
    if matches!(graph.node(v.0), NodeKind::Weight(w) if w.input_info.is_none()) && graph.consumers(v).is_empty() {
        let name = graph.value_name(v).to_string();
        graph.remove_node(v.0);
        graph.value_info.retain(|vi| vi.name != name);
    }
}

/// Adds the first factor: an op of `op_type` named `{name}.lowrank` reading
/// `x` and a new weight, ordered just before the original op `before`.
/// Returns its output.
#[allow(clippy::too_many_arguments)]
pub fn add_first(
    graph: &mut Graph,
    before: NodeId,
    op_type: &str,
    name: &str,
    attributes: Vec<AttributeProto>,
    x: ValueRef,
    weight_base: &str,
    dims: &[i64],
    data: &[f32],
) -> ValueRef {
    add_named(graph, before, op_type, &format!("{name}.lowrank"), attributes, x, weight_base, dims, data)
}

/// Adds an op of `op_type` named `op_name` reading `x` and a new weight,
/// ordered just before `before`. Returns its output.
#[allow(clippy::too_many_arguments)]
pub fn add_named(
    graph: &mut Graph,
    before: NodeId,
    op_type: &str,
    op_name: &str,
    attributes: Vec<AttributeProto>,
    x: ValueRef,
    weight_base: &str,
    dims: &[i64],
    data: &[f32],
) -> ValueRef {
    let wname = fresh_name(graph, weight_base);
    let w = graph.add_weight(Tensor::from_f32(&wname, dims, data));
    let out = fresh_name(graph, &format!("{op_name}_output"));
    let mut op = Op::new(op_type, op_name, 2, vec![out]);
    op.attributes = attributes;
    op.order = graph.op(before).map_or(0, |o| o.order);
    let id = graph.add_op(op, &[Some(x), Some(ValueRef(w, 0))]);
    ValueRef(id, 0)
}

/// The spatial attributes of a Conv (`kernel_shape`, `strides`, `pads`,
/// `dilations`, `auto_pad`, `group`) removed, the rest kept.
pub fn without_spatial(attrs: &[AttributeProto]) -> Vec<AttributeProto> {
    attrs
        .iter()
        .filter(|a| {
            !matches!(a.name.as_str(), "kernel_shape" | "strides" | "pads" | "dilations" | "auto_pad" | "group")
        })
        .cloned()
        .collect()
}

/// The attributes of a plain conv with the given kernel, strides, pads and dilations.
pub fn conv_attrs(
    base: &[AttributeProto],
    kernel: [i64; 2],
    strides: [i64; 2],
    pads: [i64; 4],
    dilations: [i64; 2],
) -> Vec<AttributeProto> {
    let mut a = without_spatial(base);
    a.push(attr_ints("kernel_shape", &kernel));
    a.push(attr_ints("strides", &strides));
    a.push(attr_ints("pads", &pads));
    a.push(attr_ints("dilations", &dilations));
    a
}

/// A Conv's 2-D geometry, read from its attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeom {
    pub strides: [i64; 2],
    /// top, left, bottom, right
    pub pads: [i64; 4],
    pub dilations: [i64; 2],
    pub group: i64,
    /// `auto_pad` other than NOTSET
    pub auto_pad: bool,
}

/// Reads a 2-D Conv's geometry from its typed view; errs on a malformed attribute.
pub fn conv_geom(op: &Op) -> Result<ConvGeom, String> {
    let Some(OpKind::Conv(c)) = shrink_graph::op::parse(op).map_err(|e| e.to_string())? else {
        return Err(format!("op type {} is not a Conv", op.op_type));
    };
    let two = |v: Vec<u64>, name: &str| -> Result<[i64; 2], String> {
        match v[..] {
            [a, b] => Ok([a as i64, b as i64]),
            _ => Err(format!("`{name}` has {} values, expected 2", v.len())),
        }
    };
    let w = &c.window;
    let pads = match w.pads(2)[..] {
        [a, b, c, d] => [a as i64, b as i64, c as i64, d as i64],
        ref v => return Err(format!("`pads` has {} values, expected 4", v.len())),
    };
    Ok(ConvGeom {
        strides: two(w.strides(2), "strides")?,
        pads,
        dilations: two(w.dilations(2), "dilations")?,
        group: c.group as i64,
        auto_pad: w.auto_pad != AutoPad::NotSet,
    })
}
