//! The IR: a [`Model`] holds the model-level protobuf fields and a [`Graph`].

use petgraph::Direction;
use petgraph::stable_graph::{EdgeIndex, StableGraph};
use petgraph::visit::EdgeRef;

use crate::onnx::{
    AttributeProto, ModelProto, NodeDeviceConfigurationProto, SparseTensorProto, StringStringEntryProto,
    TensorAnnotation, ValueInfoProto,
};
use crate::tensor::Tensor;

/// Index of a node. Stays valid when other nodes are removed.
pub type NodeId = petgraph::stable_graph::NodeIndex<u32>;

/// A loaded ONNX model: the graph, and every model-level field as it was.
#[derive(Debug, Clone)]
pub struct Model {
    /// Model-level fields (ir_version, opset_import, producer, metadata_props,
    /// functions, training_info, ...). Its `graph` field is always `None`: the
    /// graph lives in [`Model::graph`].
    pub meta: ModelProto,
    pub graph: Graph,
    /// The file this model was loaded from. [`Model::save`] refuses to write
    /// over it: an input model is never overwritten.
    pub source: Option<std::path::PathBuf>,
}

impl Model {
    /// The opset version imported for `domain` ("" or "ai.onnx" for the default domain).
    pub fn opset(&self, domain: &str) -> Option<i64> {
        let norm = |d: &str| if d == "ai.onnx" { String::new() } else { d.to_string() };
        let want = norm(domain);
        self.meta.opset_import.iter().find(|o| norm(&o.domain) == want).map(|o| o.version)
    }
}

/// One node of the graph.
#[derive(Debug, Clone)]
pub enum NodeKind {
    /// A graph input that is not an initializer. Produces one value.
    Input(ValueInfoProto),
    /// A dense initializer. Produces one value named like the tensor.
    Weight(Weight),
    /// A sparse initializer, passed through untouched. Produces one value.
    SparseWeight(SparseTensorProto),
    /// An operator. Produces `outputs.len()` values.
    Op(Op),
    /// A graph output. Consumes one value; its name is that value's name.
    Output(ValueInfoProto),
}

/// Alias kept for readability at call sites that talk about "nodes".
pub type Node = NodeKind;

/// A dense initializer.
#[derive(Debug, Clone)]
pub struct Weight {
    pub tensor: Tensor,
    /// Set when the initializer is also listed in `graph.input` (older exporters
    /// did this; the input then has a default value).
    pub input_info: Option<ValueInfoProto>,
}

/// An operator node: everything of the `NodeProto` except its input names,
/// which are the graph's edges.
#[derive(Debug, Clone, Default)]
pub struct Op {
    pub name: String,
    pub op_type: String,
    pub domain: String,
    pub overload: String,
    pub attributes: Vec<AttributeProto>,
    pub doc_string: String,
    pub metadata_props: Vec<StringStringEntryProto>,
    pub device_configurations: Vec<NodeDeviceConfigurationProto>,
    /// Names of the values this op produces; "" for an optional output it does not produce.
    pub outputs: Vec<String>,
    /// Number of input slots, including empty optional ones.
    pub n_inputs: usize,
    /// Position hint for export: ops are written in topological order, ties
    /// broken by (order, node index). Import sets the file position.
    pub order: u64,
}

impl Op {
    /// A new op with `n_inputs` input slots and the given output names.
    pub fn new(op_type: &str, name: &str, n_inputs: usize, outputs: Vec<String>) -> Op {
        Op { op_type: op_type.into(), name: name.into(), n_inputs, outputs, ..Op::default() }
    }

    pub fn attr(&self, name: &str) -> Option<&AttributeProto> {
        self.attributes.iter().find(|a| a.name == name)
    }

    pub fn attr_int(&self, name: &str) -> Option<i64> {
        self.attr(name).map(|a| a.i)
    }

    pub fn attr_ints(&self, name: &str) -> Option<&[i64]> {
        self.attr(name).map(|a| a.ints.as_slice())
    }

    pub fn attr_float(&self, name: &str) -> Option<f32> {
        self.attr(name).map(|a| a.f)
    }

    pub fn attr_str(&self, name: &str) -> Option<&str> {
        self.attr(name).and_then(|a| std::str::from_utf8(&a.s).ok())
    }

    /// True for ops in the default ONNX domain.
    pub fn is_onnx(&self) -> bool {
        self.domain.is_empty() || self.domain == "ai.onnx"
    }

    /// A short label for messages: the name, or the op type when unnamed.
    pub fn label(&self) -> String {
        if self.name.is_empty() { format!("<unnamed {}>", self.op_type) } else { self.name.clone() }
    }
}

/// Where an edge lands on its consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    /// Input slot `i` of an op, or slot 0 of an output node.
    Input(usize),
    /// The value is read by a subgraph (`If`/`Loop`/`Scan` body) of the op, by name.
    Implicit,
}

/// An edge: value `from_slot` of the source flows into `to` of the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    pub from_slot: usize,
    pub to: Slot,
}

/// A value: output slot `1` of node `0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueRef(pub NodeId, pub usize);

/// The graph: petgraph topology plus the `GraphProto` fields that are not nodes.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    pub(crate) g: StableGraph<NodeKind, Edge, petgraph::Directed, u32>,
    pub name: String,
    pub doc_string: String,
    pub value_info: Vec<ValueInfoProto>,
    pub quantization_annotation: Vec<TensorAnnotation>,
    pub metadata_props: Vec<StringStringEntryProto>,
    /// `graph.input` order: `Input` nodes and `Weight` nodes with `input_info`.
    pub(crate) inputs: Vec<NodeId>,
    /// `graph.output` order: `Output` nodes.
    pub(crate) outputs: Vec<NodeId>,
    /// `graph.initializer` order: `Weight` nodes.
    pub(crate) initializers: Vec<NodeId>,
    /// `graph.sparse_initializer` order: `SparseWeight` nodes.
    pub(crate) sparse_initializers: Vec<NodeId>,
    pub(crate) next_order: u64,
}

impl Graph {
    pub fn new(name: &str) -> Graph {
        Graph { name: name.into(), ..Graph::default() }
    }

    // ---- reading -------------------------------------------------------------------

    pub fn node(&self, id: NodeId) -> &NodeKind {
        &self.g[id]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut NodeKind {
        &mut self.g[id]
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.g.contains_node(id)
    }

    pub fn op(&self, id: NodeId) -> Option<&Op> {
        match &self.g[id] {
            NodeKind::Op(op) => Some(op),
            _ => None,
        }
    }

    pub fn op_mut(&mut self, id: NodeId) -> Option<&mut Op> {
        match &mut self.g[id] {
            NodeKind::Op(op) => Some(op),
            _ => None,
        }
    }

    /// All node ids, in index order.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.g.node_indices()
    }

    pub fn node_count(&self) -> usize {
        self.g.node_count()
    }

    /// Op nodes in the order they will be saved (topological, original order kept).
    pub fn ops(&self) -> Vec<NodeId> {
        crate::verify::op_order(self).unwrap_or_else(|cycle| {
            // A cyclic graph has no valid order: fall back to index order so that
            // reporting still works; `verify` names the cycle.
            let _ = cycle;
            self.g.node_indices().filter(|&n| matches!(self.g[n], NodeKind::Op(_))).collect()
        })
    }

    /// `graph.input`, in order.
    pub fn inputs(&self) -> &[NodeId] {
        &self.inputs
    }

    /// Graph inputs that are not initializers: what a user must feed.
    pub fn real_inputs(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.inputs.iter().copied().filter(|&n| matches!(self.g[n], NodeKind::Input(_)))
    }

    /// `graph.output`, in order.
    pub fn outputs(&self) -> &[NodeId] {
        &self.outputs
    }

    /// `graph.initializer`, in order.
    pub fn initializers(&self) -> &[NodeId] {
        &self.initializers
    }

    /// The name of a value.
    pub fn value_name(&self, v: ValueRef) -> &str {
        match &self.g[v.0] {
            NodeKind::Input(vi) => &vi.name,
            NodeKind::Weight(w) => &w.tensor.proto.name,
            NodeKind::SparseWeight(s) => s.values.as_ref().map(|t| t.name.as_str()).unwrap_or(""),
            NodeKind::Op(op) => op.outputs.get(v.1).map(String::as_str).unwrap_or(""),
            NodeKind::Output(vi) => &vi.name,
        }
    }

    /// A short label for a node, for messages.
    pub fn label(&self, id: NodeId) -> String {
        match &self.g[id] {
            NodeKind::Input(vi) => format!("input `{}`", vi.name),
            NodeKind::Weight(w) => format!("initializer `{}`", w.tensor.proto.name),
            NodeKind::SparseWeight(_) => format!("sparse initializer `{}`", self.value_name(ValueRef(id, 0))),
            NodeKind::Op(op) => format!("node `{}` ({})", op.label(), op.op_type),
            NodeKind::Output(vi) => format!("output `{}`", vi.name),
        }
    }

    /// The value feeding input slot `slot` of `id`, if any.
    pub fn input(&self, id: NodeId, slot: usize) -> Option<ValueRef> {
        self.g
            .edges_directed(id, Direction::Incoming)
            .find(|e| e.weight().to == Slot::Input(slot))
            .map(|e| ValueRef(e.source(), e.weight().from_slot))
    }

    /// Values feeding the input slots of `id`, `None` for empty slots.
    pub fn op_inputs(&self, id: NodeId) -> Vec<Option<ValueRef>> {
        let n = match &self.g[id] {
            NodeKind::Op(op) => op.n_inputs,
            NodeKind::Output(_) => 1,
            _ => 0,
        };
        (0..n).map(|i| self.input(id, i)).collect()
    }

    /// Consumers of a value: (node, slot).
    pub fn consumers(&self, v: ValueRef) -> Vec<(NodeId, Slot)> {
        let mut out: Vec<(NodeId, Slot)> = self
            .g
            .edges_directed(v.0, Direction::Outgoing)
            .filter(|e| e.weight().from_slot == v.1)
            .map(|e| (e.target(), e.weight().to))
            .collect();
        out.sort_by_key(|(n, s)| (n.index(), matches!(s, Slot::Implicit), slot_index(*s)));
        out
    }

    /// The dense tensor behind a value, when it is an initializer or the
    /// `value` of a `Constant` op: both are weights to analysis (PyTorch and
    /// PaddlePaddle exports store weights as `Constant` nodes).
    pub fn weight(&self, v: ValueRef) -> Option<&Tensor> {
        match &self.g[v.0] {
            NodeKind::Weight(w) => Some(&w.tensor),
            NodeKind::Op(op) if crate::op::is_constant(op) && v.1 == 0 => {
                op.attr("value").and_then(|a| a.t.as_ref()).map(Tensor::from_proto_ref)
            }
            _ => None,
        }
    }

    /// Finds the value with this name (linear scan).
    pub fn find_value(&self, name: &str) -> Option<ValueRef> {
        if name.is_empty() {
            return None;
        }
        for n in self.g.node_indices() {
            match &self.g[n] {
                NodeKind::Op(op) => {
                    if let Some(i) = op.outputs.iter().position(|o| o == name) {
                        return Some(ValueRef(n, i));
                    }
                }
                NodeKind::Output(_) => {}
                _ => {
                    if self.value_name(ValueRef(n, 0)) == name {
                        return Some(ValueRef(n, 0));
                    }
                }
            }
        }
        None
    }

    /// Finds an op by node name.
    pub fn find_op(&self, name: &str) -> Option<NodeId> {
        self.g.node_indices().find(|&n| matches!(&self.g[n], NodeKind::Op(op) if op.name == name))
    }

    // ---- building and rewriting ----------------------------------------------------

    /// Adds a graph input (not an initializer).
    pub fn add_input(&mut self, info: ValueInfoProto) -> NodeId {
        let id = self.g.add_node(NodeKind::Input(info));
        self.inputs.push(id);
        id
    }

    /// Adds an initializer. Its value is named like the tensor.
    pub fn add_weight(&mut self, tensor: Tensor) -> NodeId {
        let id = self.g.add_node(NodeKind::Weight(Weight { tensor, input_info: None }));
        self.initializers.push(id);
        id
    }

    /// Adds an op reading `inputs` (one per slot, `None` for an empty optional
    /// slot). Its `order` is set after every existing op unless already set.
    pub fn add_op(&mut self, mut op: Op, inputs: &[Option<ValueRef>]) -> NodeId {
        op.n_inputs = op.n_inputs.max(inputs.len());
        if op.order == 0 {
            op.order = self.next_order;
        }
        self.next_order = self.next_order.max(op.order + 1);
        let id = self.g.add_node(NodeKind::Op(op));
        for (i, v) in inputs.iter().enumerate() {
            if let Some(v) = v {
                self.g.add_edge(v.0, id, Edge { from_slot: v.1, to: Slot::Input(i) });
            }
        }
        id
    }

    /// Adds a graph output reading `value`.
    pub fn add_output(&mut self, value: ValueRef, mut info: ValueInfoProto) -> NodeId {
        info.name = self.value_name(value).to_string();
        let id = self.g.add_node(NodeKind::Output(info));
        self.g.add_edge(value.0, id, Edge { from_slot: value.1, to: Slot::Input(0) });
        self.outputs.push(id);
        id
    }

    /// Points input slot `slot` of `node` at `value` (or empties it).
    pub fn set_input(&mut self, node: NodeId, slot: usize, value: Option<ValueRef>) {
        let old: Vec<EdgeIndex> = self
            .g
            .edges_directed(node, Direction::Incoming)
            .filter(|e| e.weight().to == Slot::Input(slot))
            .map(|e| e.id())
            .collect();
        for e in old {
            self.g.remove_edge(e);
        }
        if let Some(v) = value {
            self.g.add_edge(v.0, node, Edge { from_slot: v.1, to: Slot::Input(slot) });
        }
        if let NodeKind::Op(op) = &mut self.g[node] {
            op.n_inputs = op.n_inputs.max(slot + 1);
        }
    }

    /// Moves every consumer of `from` (including graph outputs) to `to`.
    pub fn replace_uses(&mut self, from: ValueRef, to: ValueRef) {
        for (n, s) in self.consumers(from) {
            match s {
                Slot::Input(i) => self.set_input(n, i, Some(to)),
                Slot::Implicit => {
                    let e = self
                        .g
                        .edges_connecting(from.0, n)
                        .find(|e| e.weight().to == Slot::Implicit && e.weight().from_slot == from.1)
                        .map(|e| e.id());
                    if let Some(e) = e {
                        self.g.remove_edge(e);
                        self.g.add_edge(to.0, n, Edge { from_slot: to.1, to: Slot::Implicit });
                    }
                }
            }
        }
    }

    /// Removes a node and its edges. Other ids stay valid.
    pub fn remove_node(&mut self, id: NodeId) -> Option<NodeKind> {
        self.inputs.retain(|&n| n != id);
        self.outputs.retain(|&n| n != id);
        self.initializers.retain(|&n| n != id);
        self.sparse_initializers.retain(|&n| n != id);
        self.g.remove_node(id)
    }

    /// Removes ops, weights and inputs whose values nobody reads and that do not
    /// reach a graph output. Returns how many nodes went.
    pub fn remove_dead(&mut self) -> usize {
        let mut removed = 0;
        loop {
            let dead: Vec<NodeId> = self
                .g
                .node_indices()
                .filter(|&n| {
                    matches!(self.g[n], NodeKind::Op(_) | NodeKind::Weight(_) | NodeKind::SparseWeight(_))
                        && self.g.edges_directed(n, Direction::Outgoing).next().is_none()
                        && !self.inputs.contains(&n)
                })
                .collect();
            if dead.is_empty() {
                return removed;
            }
            for n in dead {
                self.remove_node(n);
                removed += 1;
            }
        }
    }

    /// Incoming edges of a node: (source value, slot on this node).
    pub fn in_edges(&self, id: NodeId) -> Vec<(ValueRef, Slot)> {
        self.g
            .edges_directed(id, Direction::Incoming)
            .map(|e| (ValueRef(e.source(), e.weight().from_slot), e.weight().to))
            .collect()
    }

    /// Read-only access to the petgraph graph, for algorithms.
    pub fn petgraph(&self) -> &StableGraph<NodeKind, Edge, petgraph::Directed, u32> {
        &self.g
    }
}

fn slot_index(s: Slot) -> usize {
    match s {
        Slot::Input(i) => i,
        Slot::Implicit => usize::MAX,
    }
}
