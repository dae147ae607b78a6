//! [`Model`] → `ModelProto`: edges become names again.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::graph::{Graph, Model, NodeKind, ValueRef};
use crate::onnx::{GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto};

/// How many times this process has exported a [`Model`] to a `ModelProto`.
static EXPORTS: AtomicUsize = AtomicUsize::new(0);

/// The number of `Model` → `ModelProto` exports this process has made so far:
/// every [`Model::to_proto`], [`Model::to_bytes`] and [`Model::save`] counts one.
///
/// A test and diagnostic hook (callers that hold a model's bytes should not
/// export it again); it is process-wide, so a test that reads it must be the
/// only code exporting models while it measures.
pub fn model_exports() -> usize {
    EXPORTS.load(Ordering::Relaxed)
}

/// Builds the protobuf. `fix_tensor` sees every initializer copy (the writer
/// uses it to move external data out or inline it).
pub(crate) fn export(model: &Model, fix_tensor: &mut dyn FnMut(&mut TensorProto)) -> ModelProto {
    EXPORTS.fetch_add(1, Ordering::Relaxed);
    let mut m = model.meta.clone();
    m.graph = Some(export_graph(&model.graph, fix_tensor));
    m
}

fn export_graph(g: &Graph, fix_tensor: &mut dyn FnMut(&mut TensorProto)) -> GraphProto {
    let input = g
        .inputs
        .iter()
        .map(|&id| match g.node(id) {
            NodeKind::Input(vi) => vi.clone(),
            NodeKind::Weight(w) => {
                let mut vi = w.input_info.clone().unwrap_or_default();
                vi.name = w.tensor.proto.name.clone();
                vi
            }
            _ => ValueInfoProto { name: g.value_name(ValueRef(id, 0)).to_string(), ..Default::default() },
        })
        .collect();
    let initializer = g
        .initializers
        .iter()
        .filter_map(|&id| match g.node(id) {
            NodeKind::Weight(w) => {
                let mut t = w.tensor.proto.clone();
                fix_tensor(&mut t);
                Some(t)
            }
            _ => None,
        })
        .collect();
    let sparse_initializer = g
        .sparse_initializers
        .iter()
        .filter_map(|&id| match g.node(id) {
            NodeKind::SparseWeight(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    let node = g
        .ops()
        .into_iter()
        .map(|id| {
            let op = g.op(id).unwrap();
            let input = g
                .op_inputs(id)
                .into_iter()
                .map(|v| v.map(|v| g.value_name(v).to_string()).unwrap_or_default())
                .collect();
            NodeProto {
                input,
                output: op.outputs.clone(),
                name: op.name.clone(),
                op_type: op.op_type.clone(),
                domain: op.domain.clone(),
                overload: op.overload.clone(),
                attribute: op.attributes.clone(),
                doc_string: op.doc_string.clone(),
                metadata_props: op.metadata_props.clone(),
                device_configurations: op.device_configurations.clone(),
            }
        })
        .collect();
    let output = g
        .outputs
        .iter()
        .map(|&id| {
            let mut vi = match g.node(id) {
                NodeKind::Output(vi) => vi.clone(),
                _ => ValueInfoProto::default(),
            };
            if let Some(v) = g.input(id, 0) {
                vi.name = g.value_name(v).to_string();
            }
            vi
        })
        .collect();
    GraphProto {
        node,
        name: g.name.clone(),
        initializer,
        sparse_initializer,
        doc_string: g.doc_string.clone(),
        input,
        output,
        value_info: g.value_info.clone(),
        quantization_annotation: g.quantization_annotation.clone(),
        metadata_props: g.metadata_props.clone(),
    }
}
