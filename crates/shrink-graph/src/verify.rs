//! [`Graph::verify`]: the IR's invariants, each failure naming the node.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use petgraph::Direction;
use petgraph::visit::EdgeRef;

use crate::error::GraphError;
use crate::graph::{Graph, NodeId, NodeKind, Slot};

impl Graph {
    /// Checks the invariants listed in the crate docs. Stages call it after
    /// every rewrite; a failure there is a bug in the stage.
    pub fn verify(&self) -> Result<(), GraphError> {
        let g = &self.g;
        let bad = |id: NodeId, reason: String| GraphError::Invalid { node: self.label(id), reason };

        // Order lists reference live nodes of the right kind, once each.
        let mut listed: HashMap<NodeId, &str> = HashMap::new();
        let lists: [(&str, &Vec<NodeId>); 4] = [
            ("graph.input", &self.inputs),
            ("graph.output", &self.outputs),
            ("graph.initializer", &self.initializers),
            ("graph.sparse_initializer", &self.sparse_initializers),
        ];
        for (what, list) in lists {
            for &id in list {
                if !g.contains_node(id) {
                    return Err(GraphError::Invalid {
                        node: what.into(),
                        reason: format!("lists removed node {id:?}"),
                    });
                }
                let ok = match (what, &g[id]) {
                    ("graph.input", NodeKind::Input(_)) => true,
                    ("graph.input", NodeKind::Weight(w)) => w.input_info.is_some(),
                    ("graph.output", NodeKind::Output(_)) => true,
                    ("graph.initializer", NodeKind::Weight(_)) => true,
                    ("graph.sparse_initializer", NodeKind::SparseWeight(_)) => true,
                    _ => false,
                };
                if !ok {
                    return Err(bad(id, format!("listed in {what} but is not of that kind")));
                }
                if listed.insert(id, what) == Some(what) {
                    return Err(bad(id, format!("listed twice in {what}")));
                }
            }
        }

        let mut names: HashMap<&str, NodeId> = HashMap::new();
        for id in g.node_indices() {
            let (n_out, n_in) = match &g[id] {
                NodeKind::Input(_) => {
                    if !self.inputs.contains(&id) {
                        return Err(bad(id, "not listed in graph.input".into()));
                    }
                    (1, 0)
                }
                NodeKind::Weight(w) => {
                    if !self.initializers.contains(&id) {
                        return Err(bad(id, "not listed in graph.initializer".into()));
                    }
                    w.tensor.check_data().map_err(|r| bad(id, r))?;
                    (1, 0)
                }
                NodeKind::SparseWeight(_) => (1, 0),
                NodeKind::Op(op) => (op.outputs.len(), op.n_inputs),
                NodeKind::Output(_) => {
                    if !self.outputs.contains(&id) {
                        return Err(bad(id, "not listed in graph.output".into()));
                    }
                    (0, 1)
                }
            };
            // Unique, non-empty value names.
            for slot in 0..n_out {
                let name = self.value_name(crate::ValueRef(id, slot));
                let is_op = matches!(g[id], NodeKind::Op(_));
                if name.is_empty() {
                    if is_op {
                        continue; // an optional output the op does not produce
                    }
                    return Err(bad(id, "produces a value with an empty name".into()));
                }
                if let Some(first) = names.insert(name, id) {
                    return Err(GraphError::DuplicateValue {
                        value: name.into(),
                        first: self.label(first),
                        second: self.label(id),
                    });
                }
            }
            // Inputs: each slot at most one edge, in range; outputs exactly one.
            let mut seen = vec![false; n_in];
            for e in g.edges_directed(id, Direction::Incoming) {
                let src = e.source();
                let from = e.weight().from_slot;
                let src_outs = match &g[src] {
                    NodeKind::Op(op) => op.outputs.len(),
                    NodeKind::Output(_) => 0,
                    _ => 1,
                };
                if from >= src_outs || self.value_name(crate::ValueRef(src, from)).is_empty() {
                    return Err(bad(
                        id,
                        format!("reads output {from} of {}, which it does not produce", self.label(src)),
                    ));
                }
                match e.weight().to {
                    Slot::Input(i) if i < n_in => {
                        if std::mem::replace(&mut seen[i], true) {
                            return Err(bad(id, format!("input slot {i} is fed twice")));
                        }
                    }
                    Slot::Input(i) => {
                        return Err(bad(id, format!("edge into slot {i}, but the node has {n_in} inputs")));
                    }
                    Slot::Implicit => {
                        if !matches!(g[id], NodeKind::Op(_)) {
                            return Err(bad(id, "implicit (subgraph) edge into a non-op node".into()));
                        }
                    }
                }
            }
            if matches!(g[id], NodeKind::Output(_)) && !seen[0] {
                return Err(bad(id, "reads no value".into()));
            }
        }
        op_order(self).map_err(|id| bad(id, "is on a cycle: the graph has no topological order".into()))?;
        Ok(())
    }
}

/// Ops in topological order, ties broken by (`Op::order`, node index) so that
/// an order that was already topological is kept exactly. Err names a node on a cycle.
pub(crate) fn op_order(graph: &Graph) -> Result<Vec<NodeId>, NodeId> {
    let g = &graph.g;
    let key = |id: NodeId| match &g[id] {
        NodeKind::Op(op) => (op.order, id.index()),
        _ => (0, id.index()),
    };
    let mut indeg: HashMap<NodeId, usize> = HashMap::new();
    let mut heap = BinaryHeap::new();
    let mut n_ops = 0;
    for id in g.node_indices() {
        if !matches!(g[id], NodeKind::Op(_)) {
            continue;
        }
        n_ops += 1;
        let d = g
            .edges_directed(id, Direction::Incoming)
            .filter(|e| matches!(g[e.source()], NodeKind::Op(_)))
            .map(|e| e.source())
            .collect::<std::collections::HashSet<_>>()
            .len();
        if d == 0 {
            heap.push(Reverse((key(id), id)));
        } else {
            indeg.insert(id, d);
        }
    }
    let mut out = Vec::with_capacity(n_ops);
    while let Some(Reverse((_, id))) = heap.pop() {
        out.push(id);
        let succ: std::collections::HashSet<NodeId> = g
            .edges_directed(id, Direction::Outgoing)
            .map(|e| e.target())
            .filter(|&t| matches!(g[t], NodeKind::Op(_)))
            .collect();
        for t in succ {
            let d = indeg.get_mut(&t).unwrap();
            *d -= 1;
            if *d == 0 {
                indeg.remove(&t);
                heap.push(Reverse((key(t), t)));
            }
        }
    }
    if out.len() == n_ops { Ok(out) } else { Err(*indeg.keys().min().unwrap()) }
}
