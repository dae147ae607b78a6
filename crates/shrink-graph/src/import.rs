//! `ModelProto` → [`Model`]: names become edges.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::error::GraphError;
use crate::graph::{Edge, Graph, Model, NodeId, NodeKind, Op, Slot, ValueRef, Weight};
use crate::onnx::{GraphProto, ModelProto, TensorProto};
use crate::tensor::Tensor;

pub(crate) fn import(mut proto: ModelProto) -> Result<Model, GraphError> {
    let gp = proto.graph.take().ok_or(GraphError::NoGraph)?;
    let graph = import_graph(gp)?;
    Ok(Model { meta: proto, graph, source: None })
}

/// Value name → producer, refusing a second producer of the same name.
struct Producers(HashMap<String, ValueRef>);

impl Producers {
    fn add(&mut self, g: &Graph, name: &str, v: ValueRef) -> Result<(), GraphError> {
        if name.is_empty() {
            return Ok(());
        }
        if let Some(&first) = self.0.get(name) {
            return Err(GraphError::DuplicateValue {
                value: name.to_string(),
                first: g.label(first.0),
                second: g.label(v.0),
            });
        }
        self.0.insert(name.to_string(), v);
        Ok(())
    }
}

fn import_graph(gp: GraphProto) -> Result<Graph, GraphError> {
    let mut g = Graph::new(&gp.name);
    g.doc_string = gp.doc_string;
    g.value_info = gp.value_info;
    g.quantization_annotation = gp.quantization_annotation;
    g.metadata_props = gp.metadata_props;
    let mut producers = Producers(HashMap::new());

    // Initializers keep their order; those also listed as graph inputs become
    // weights with `input_info` at their place in `graph.input`.
    let mut inits: Vec<Option<TensorProto>> = gp.initializer.into_iter().map(Some).collect();
    let mut init_ids: Vec<Option<NodeId>> = vec![None; inits.len()];
    let mut init_index: HashMap<String, usize> = HashMap::new();
    for (k, t) in inits.iter().enumerate() {
        let name = &t.as_ref().unwrap().name;
        init_index.entry(name.clone()).or_insert(k);
    }
    for vi in gp.input {
        let k = init_index.get(&vi.name).copied().filter(|&k| inits[k].is_some());
        let id = match k {
            Some(k) => {
                let tensor = Tensor::from_proto(inits[k].take().unwrap());
                let id = g.g.add_node(NodeKind::Weight(Weight { tensor, input_info: Some(vi) }));
                init_ids[k] = Some(id);
                id
            }
            None => g.g.add_node(NodeKind::Input(vi)),
        };
        g.inputs.push(id);
        let name = g.value_name(ValueRef(id, 0)).to_string();
        producers.add(&g, &name, ValueRef(id, 0))?;
    }
    for (k, t) in inits.into_iter().enumerate() {
        if let Some(t) = t {
            let id = g.g.add_node(NodeKind::Weight(Weight { tensor: Tensor::from_proto(t), input_info: None }));
            init_ids[k] = Some(id);
            let name = g.value_name(ValueRef(id, 0)).to_string();
            producers.add(&g, &name, ValueRef(id, 0))?;
        }
    }
    g.initializers = init_ids.into_iter().map(|id| id.unwrap()).collect();
    for s in gp.sparse_initializer {
        let id = g.g.add_node(NodeKind::SparseWeight(s));
        g.sparse_initializers.push(id);
        let name = g.value_name(ValueRef(id, 0)).to_string();
        producers.add(&g, &name, ValueRef(id, 0))?;
    }

    // Ops: first every output, so that a file whose nodes are out of order still
    // loads (export writes a topological order); then every input.
    let mut pending = Vec::with_capacity(gp.node.len());
    for (pos, n) in gp.node.into_iter().enumerate() {
        let op = Op {
            name: n.name,
            op_type: n.op_type,
            domain: n.domain,
            overload: n.overload,
            attributes: n.attribute,
            doc_string: n.doc_string,
            metadata_props: n.metadata_props,
            device_configurations: n.device_configurations,
            outputs: n.output,
            n_inputs: n.input.len(),
            order: pos as u64,
        };
        let id = g.g.add_node(NodeKind::Op(op));
        let outs = g.op(id).unwrap().outputs.clone();
        for (slot, name) in outs.iter().enumerate() {
            producers.add(&g, name, ValueRef(id, slot))?;
        }
        pending.push((id, n.input));
    }
    g.next_order = pending.len() as u64;
    for (id, inputs) in pending {
        for (slot, name) in inputs.iter().enumerate() {
            if name.is_empty() {
                continue;
            }
            let v = resolve(&g, &producers, id, name)?;
            g.g.add_edge(v.0, id, Edge { from_slot: v.1, to: Slot::Input(slot) });
        }
        // Values read by name inside subgraphs (If/Loop/Scan bodies) are edges too,
        // so the topological order and dead-code removal see them.
        let mut free = BTreeSet::new();
        for a in &g.op(id).unwrap().attributes {
            for sub in a.g.iter().chain(a.graphs.iter()) {
                free_names(sub, &mut free);
            }
        }
        for name in free {
            let v = resolve(&g, &producers, id, &name)?;
            g.g.add_edge(v.0, id, Edge { from_slot: v.1, to: Slot::Implicit });
        }
    }

    for vi in gp.output {
        let v = *producers.0.get(&vi.name).ok_or_else(|| GraphError::DanglingOutput { value: vi.name.clone() })?;
        let id = g.g.add_node(NodeKind::Output(vi));
        g.g.add_edge(v.0, id, Edge { from_slot: v.1, to: Slot::Input(0) });
        g.outputs.push(id);
    }
    Ok(g)
}

fn resolve(g: &Graph, producers: &Producers, id: NodeId, name: &str) -> Result<ValueRef, GraphError> {
    producers.0.get(name).copied().ok_or_else(|| {
        let op = g.op(id).unwrap();
        GraphError::DanglingInput { node: op.label(), op: op.op_type.clone(), value: name.to_string() }
    })
}

/// Names a subgraph reads that it does not define itself (outer-scope values).
fn free_names(g: &GraphProto, out: &mut BTreeSet<String>) {
    let mut defined: HashSet<&str> = HashSet::new();
    defined.extend(g.input.iter().map(|v| v.name.as_str()));
    defined.extend(g.initializer.iter().map(|t| t.name.as_str()));
    defined.extend(g.sparse_initializer.iter().filter_map(|s| s.values.as_ref()).map(|t| t.name.as_str()));
    for n in &g.node {
        defined.extend(n.output.iter().map(String::as_str));
    }
    for n in &g.node {
        for i in &n.input {
            if !i.is_empty() && !defined.contains(i.as_str()) {
                out.insert(i.clone());
            }
        }
        for a in &n.attribute {
            for sub in a.g.iter().chain(a.graphs.iter()) {
                let mut inner = BTreeSet::new();
                free_names(sub, &mut inner);
                out.extend(inner.into_iter().filter(|x| !defined.contains(x.as_str())));
            }
        }
    }
    for o in &g.output {
        if !o.name.is_empty() && !defined.contains(o.name.as_str()) {
            out.insert(o.name.clone());
        }
    }
}
