//! Physical removal of channels: slices every constant the channel analysis
//! names, sets depthwise `group` attributes, `Split` sizes and flattening
//! `Reshape` shapes, and drops the stale `value_info` of values whose channel
//! count changed.

use std::collections::HashSet;

use shrink_graph::builder::{attr_ints, tensor_info};
use shrink_graph::groups::{ChannelGroups, Rewrite};
use shrink_graph::rewrite::fresh_name;
use shrink_graph::{DataType, Dim, Graph, GraphError, NodeId, NodeKind, Tensor, ValueRef};
use tracing::debug;

/// Keeps, along `axis`, the positions `keep` of a tensor of `dims`.
pub fn slice_axis(data: &[f32], dims: &[i64], axis: usize, keep: &[usize]) -> Vec<f32> {
    let d: Vec<usize> = dims.iter().map(|&x| x as usize).collect();
    let outer: usize = d[..axis].iter().product();
    let inner: usize = d[axis + 1..].iter().product();
    let mut out = Vec::with_capacity(outer * keep.len() * inner);
    for o in 0..outer {
        for &p in keep {
            let start = (o * d[axis] + p) * inner;
            out.extend_from_slice(&data[start..start + inner]);
        }
    }
    out
}

fn invalid(graph: &Graph, op: NodeId, reason: String) -> GraphError {
    GraphError::Invalid { node: graph.label(op), reason }
}

/// Stores `tensor` as the constant read by input `slot` of `op`: in place
/// when that initializer has no other reader, else as a new initializer.
fn store_input(graph: &mut Graph, op: NodeId, slot: usize, v: ValueRef, mut tensor: Tensor) {
    let private = matches!(graph.node(v.0), NodeKind::Weight(_)) && graph.consumers(v).len() == 1;
    if private {
        let name = graph.value_name(v).to_string();
        if let NodeKind::Weight(w) = graph.node_mut(v.0) {
            tensor.proto.name = name.clone();
            // an initializer also listed in graph.input declares its shape there
            if w.input_info.is_some() {
                let dims: Vec<Dim> = tensor.dims().iter().map(|&d| Dim::Known(d as u64)).collect();
                w.input_info = Some(tensor_info(&name, tensor.dtype(), &dims));
            }
            w.tensor = tensor;
        }
        // and exporters may declare it in value_info too
        graph.value_info.retain(|vi| vi.name != name);
    } else {
        let base = format!("{}.pruned", graph.value_name(v));
        tensor.proto.name = fresh_name(graph, &base);
        let id = graph.add_weight(tensor);
        graph.set_input(op, slot, Some(ValueRef(id, 0)));
    }
}

/// Applies the analysis' rewrites for the classes `keep` says survive.
/// Returns how many tensors were sliced.
pub fn remove_channels(
    graph: &mut Graph,
    a: &ChannelGroups,
    keep: &dyn Fn(usize) -> bool,
    opset: i64,
) -> Result<usize, GraphError> {
    let mut sliced = 0;
    for rw in &a.rewrites {
        match *rw {
            Rewrite::Slice { op, slot, axis, layout_of } => {
                let Some(pos) = a.kept_positions(layout_of, keep) else { continue };
                let full = a.layout(layout_of).map(|l| l.classes.len() * l.inner).unwrap_or(0);
                if pos.len() == full {
                    continue;
                }
                let v = graph.input(op, slot).ok_or_else(|| invalid(graph, op, format!("input {slot} is empty")))?;
                let t = graph
                    .weight(v)
                    .ok_or_else(|| invalid(graph, op, format!("input {slot} is not a constant")))?
                    .clone();
                let dims = t.dims().to_vec();
                if dims.get(axis).copied() != Some(full as i64) {
                    return Err(invalid(
                        graph,
                        op,
                        format!("`{}` has dims {dims:?}, expected {full} along axis {axis}", t.name()),
                    ));
                }
                if t.dtype() != DataType::Float {
                    return Err(GraphError::Tensor {
                        tensor: t.name().to_string(),
                        reason: format!("structured pruning slices float32 tensors only, this one is {:?}", t.dtype()),
                    });
                }
                let data = slice_axis(&t.to_f32()?, &dims, axis, &pos);
                let mut nd = dims.clone();
                nd[axis] = pos.len() as i64;
                let mut nt = t.clone();
                nt.proto.dims = nd;
                nt.proto.float_data.clear();
                nt.proto.raw_data.clear();
                nt.proto.external_data.clear();
                nt.proto.data_location = 0;
                nt.set_f32(&data)?;
                debug!(tensor = t.name(), axis, from = full, to = pos.len(), "sliced");
                store_input(graph, op, slot, v, nt);
                sliced += 1;
            }
            Rewrite::Group { op, layout_of } => {
                let Some(pos) = a.kept_positions(layout_of, keep) else { continue };
                if let Some(o) = graph.op_mut(op) {
                    o.attributes.retain(|x| x.name != "group");
                    o.attributes.push(shrink_graph::builder::attr_int("group", pos.len() as i64));
                }
            }
            Rewrite::ReshapeDim { op, index, layout_of } => {
                let Some(pos) = a.kept_positions(layout_of, keep) else { continue };
                let v = graph.input(op, 1).ok_or_else(|| invalid(graph, op, "reshape has no shape".into()))?;
                let t = graph.weight(v).ok_or_else(|| invalid(graph, op, "reshape shape is not a constant".into()))?;
                let mut shape = t.to_i64()?;
                if index >= shape.len() {
                    return Err(invalid(graph, op, format!("shape {shape:?} has no entry {index}")));
                }
                shape[index] = pos.len() as i64;
                let nt = Tensor::from_i64(t.name(), t.dims(), &shape);
                store_input(graph, op, 1, v, nt);
            }
            Rewrite::SplitSizes { op, axis: _ } => {
                let n_out = graph.op(op).map(|o| o.outputs.len()).unwrap_or(0);
                let mut sizes = Vec::with_capacity(n_out);
                for slot in 0..n_out {
                    let pos = a
                        .kept_positions(ValueRef(op, slot), keep)
                        .ok_or_else(|| invalid(graph, op, format!("output {slot} has no channel layout")))?;
                    if pos.is_empty() {
                        return Err(invalid(graph, op, format!("output {slot} would keep no channel")));
                    }
                    sizes.push(pos.len() as i64);
                }
                let has_attr = graph.op(op).is_some_and(|o| o.attr("split").is_some());
                if has_attr || opset < 13 {
                    if let Some(o) = graph.op_mut(op) {
                        o.attributes.retain(|x| x.name != "split");
                        o.attributes.push(attr_ints("split", &sizes));
                    }
                } else {
                    let base = format!("{}.split", graph.op(op).map(|o| o.label()).unwrap_or_default());
                    let name = fresh_name(graph, &base);
                    let id = graph.add_weight(Tensor::from_i64(&name, &[sizes.len() as i64], &sizes));
                    graph.set_input(op, 1, Some(ValueRef(id, 0)));
                    if let Some(o) = graph.op_mut(op) {
                        o.attributes.retain(|x| x.name != "num_outputs");
                    }
                }
            }
        }
    }
    // value_info of a value whose channels changed is stale: drop it (tract infers it again)
    let mut changed: HashSet<String> = HashSet::new();
    for (&v, l) in &a.layouts {
        if l.classes.iter().any(|&c| !keep(c)) {
            changed.insert(graph.value_name(v).to_string());
        }
    }
    graph.value_info.retain(|vi| !changed.contains(&vi.name));
    graph.remove_dead();
    Ok(sliced)
}
