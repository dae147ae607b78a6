//! Channel-dependency groups (the DepGraph idea of Fang et al., 2023): which
//! output channels of which layers must be removed together so that every
//! tensor stays consistent.
//!
//! Every output channel of a *producer* (a `Conv` with `group = 1`, a `Gemm`
//! or a `MatMul` whose weight is a constant) is a channel *class*. The
//! analysis walks the ops in topological order and gives each value it can
//! follow a [`Layout`]: the class of each position along its channel axis.
//! Ops then either pass channels through (BatchNormalization, ReLU and the
//! other element-wise activations, pooling, depthwise `Conv` with
//! `group = channels`, `Flatten` to a `Gemm`, where each channel becomes a
//! block of H×W features, and a `Reshape` that flattens the same way,
//! `ReduceMean`/`ReduceMax` over the axes after the channels,
//! `Unsqueeze`/`Squeeze` of trailing axes), arrange
//! them (`Concat` and `Split` on the channel axis), or couple them: the two
//! operands of `Add`/`Sub`/`Mul`/`Div`/`Max`/`Min` (residual additions,
//! squeeze-and-excitation gates) have their classes merged position by
//! position (union-find). Classes that appear in exactly the same values form
//! one [`ChannelGroup`]: pruning keeps or removes its channels together.
//!
//! A class is *blocked* (never pruned; the reason is kept for `debug!` logs)
//! when it reaches a graph output, is read by an op the analysis does not
//! know, by a `Transpose`/`Shape`/`Slice` or another `Reshape` (a changed layout), by a
//! grouped conv that is not depthwise, or comes from a graph input.
//!
//! The analysis also lists the [`Rewrite`]s that removing channels needs:
//! which constant to slice along which axis (producer weights and biases,
//! consumer input channels or features, BatchNormalization parameters,
//! per-channel constants of element-wise ops), depthwise `group` attributes
//! `Split` sizes and flattening `Reshape` shapes. It never changes the graph.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use crate::graph::{Graph, NodeId, NodeKind, Op, ValueRef};
use crate::op::OpKind;
use crate::shape::{Dim, declared_shape, infer_shapes};

/// The classes along the channel axis of one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Class of each channel position (an index into [`ChannelGroups::class_group`]).
    pub classes: Vec<usize>,
    /// The channel axis (1 for NCHW and for `[N, features]`; the last axis after a `MatMul`).
    pub axis: usize,
    /// The value's rank.
    pub rank: usize,
    /// Consecutive elements per channel along the axis: 1, or H×W after `Flatten`.
    pub inner: usize,
}

/// What an op does with a group's channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Its output channels are the group's channels (Conv, Gemm, MatMul).
    Producer,
    /// Reads the channels: its weight loses input channels / features.
    Consumer,
    /// Depthwise conv: the channels pass through, weights and `group` shrink.
    Depthwise,
    /// Per-channel parameters (BatchNormalization, a bias added with `Add`).
    PerChannel,
    /// `Split` on the channel axis: sizes are recomputed.
    Split,
}

/// A change that removing channels needs, in terms of a value's [`Layout`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    /// Keep, along `axis` of the constant feeding input `slot` of `op`, the
    /// positions whose class in `layout_of` survives (each channel is
    /// `inner` consecutive positions).
    Slice { op: NodeId, slot: usize, axis: usize, layout_of: ValueRef },
    /// Set the `group` attribute of a depthwise conv to its kept channels.
    Group { op: NodeId, layout_of: ValueRef },
    /// Recompute the split sizes of a `Split` on the channel axis from its outputs' layouts.
    SplitSizes { op: NodeId, axis: usize },
    /// Set entry `index` of the shape constant of a flattening `Reshape` to
    /// the kept positions of its output's layout.
    ReshapeDim { op: NodeId, index: usize, layout_of: ValueRef },
}

/// Channels that are pruned together.
#[derive(Debug, Clone)]
pub struct ChannelGroup {
    /// The group's classes, in the order of its first producer's channels.
    pub classes: Vec<usize>,
    /// Ops whose output channels these are (their names label the group).
    pub producers: Vec<NodeId>,
    /// Every op the group touches, with its role.
    pub members: Vec<(NodeId, Role)>,
    /// Values (by name) whose channel axis holds these classes.
    pub values: Vec<ValueRef>,
    /// Why the group cannot be pruned, when it cannot.
    pub blocked: Option<String>,
}

impl ChannelGroup {
    pub fn channels(&self) -> usize {
        self.classes.len()
    }

    /// A short label: the producers' names joined with `+`.
    pub fn label(&self, graph: &Graph) -> String {
        let names: Vec<String> = self.producers.iter().map(|&p| op_label(graph, p)).collect();
        if names.is_empty() { "<no producer>".into() } else { names.join(" + ") }
    }
}

/// The result of [`channel_groups`].
#[derive(Debug, Clone, Default)]
pub struct ChannelGroups {
    pub groups: Vec<ChannelGroup>,
    /// Group of each class.
    pub class_group: Vec<usize>,
    /// Layout of every value the analysis could follow.
    pub layouts: HashMap<ValueRef, Layout>,
    /// What removing channels needs, in graph order.
    pub rewrites: Vec<Rewrite>,
}

impl ChannelGroups {
    pub fn layout(&self, v: ValueRef) -> Option<&Layout> {
        self.layouts.get(&v)
    }

    /// The groups that can be pruned.
    pub fn prunable(&self) -> impl Iterator<Item = (usize, &ChannelGroup)> {
        self.groups.iter().enumerate().filter(|(_, g)| g.blocked.is_none())
    }

    /// Positions along the axis of `layout_of` that survive when `keep(class)`,
    /// each channel expanded to its `inner` consecutive positions.
    pub fn kept_positions(&self, layout_of: ValueRef, keep: &dyn Fn(usize) -> bool) -> Option<Vec<usize>> {
        let l = self.layouts.get(&layout_of)?;
        let mut out = Vec::new();
        for (j, &c) in l.classes.iter().enumerate() {
            if keep(c) {
                out.extend(j * l.inner..(j + 1) * l.inner);
            }
        }
        Some(out)
    }

    /// A text dump: one line per group (channels, producers, members, blocked reason).
    pub fn dump(&self, graph: &Graph) -> String {
        let mut s = String::new();
        for (i, g) in self.groups.iter().enumerate() {
            let members: Vec<String> =
                g.members.iter().map(|&(n, r)| format!("{}:{:?}", op_label(graph, n), r)).collect();
            let _ = write!(s, "group {i}: {} ch, producers [{}]", g.channels(), g.label(graph));
            match &g.blocked {
                Some(r) => {
                    let _ = writeln!(s, ", blocked: {r}");
                }
                None => {
                    let _ = writeln!(s, ", members [{}]", members.join(", "));
                }
            }
        }
        s
    }
}

fn op_label(graph: &Graph, id: NodeId) -> String {
    match graph.op(id) {
        Some(op) => op.label(),
        None => graph.label(id),
    }
}

/// Union-find over channel classes, each root with an optional blocked reason.
#[derive(Default)]
pub(crate) struct Classes {
    parent: Vec<usize>,
    blocked: Vec<Option<String>>,
    producer: Vec<Option<NodeId>>,
}

impl Classes {
    pub(crate) fn fresh(&mut self, n: usize, producer: Option<NodeId>, blocked: Option<String>) -> Vec<usize> {
        let start = self.parent.len();
        for i in 0..n {
            self.parent.push(start + i);
            self.blocked.push(blocked.clone());
            self.producer.push(producer);
        }
        (start..start + n).collect()
    }

    pub(crate) fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    pub(crate) fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent[rb] = ra;
            if self.blocked[ra].is_none() {
                self.blocked[ra] = self.blocked[rb].take();
            }
        }
    }

    pub(crate) fn block(&mut self, classes: &[usize], reason: &str) {
        for &c in classes {
            let r = self.find(c);
            if self.blocked[r].is_none() {
                self.blocked[r] = Some(reason.to_string());
            }
        }
    }
}

/// The walk over the ops: what each op family's channel rule
/// ([`crate::op`]) reads and writes.
pub(crate) struct Walk<'a> {
    pub(crate) g: &'a Graph,
    pub(crate) shapes: crate::shape::Shapes,
    pub(crate) cls: Classes,
    pub(crate) lay: HashMap<ValueRef, Layout>,
    pub(crate) rewrites: Vec<Rewrite>,
    pub(crate) members: Vec<(NodeId, Role, ValueRef)>,
}

impl Walk<'_> {
    pub(crate) fn rank_of(&self, v: ValueRef) -> Option<usize> {
        self.shapes.get(v).map(Vec::len)
    }

    pub(crate) fn dims_of(&self, v: ValueRef) -> Option<Vec<u64>> {
        self.shapes.get(v).and_then(|s| s.iter().map(Dim::known).collect())
    }

    pub(crate) fn block_value(&mut self, v: ValueRef, reason: &str) {
        if let Some(l) = self.lay.get(&v) {
            let c = l.classes.clone();
            self.cls.block(&c, reason);
        }
    }

    pub(crate) fn block_inputs(&mut self, id: NodeId, reason: &str) {
        for v in self.g.op_inputs(id).into_iter().flatten() {
            self.block_value(v, reason);
        }
    }

    /// Gives every output of `id` a fresh blocked layout when its channel count is known.
    pub(crate) fn fresh_blocked_outputs(&mut self, id: NodeId, reason: &str) {
        let n = self.g.op(id).map(|o| o.outputs.len()).unwrap_or(0);
        for slot in 0..n {
            let v = ValueRef(id, slot);
            if let Some(d) = self.shapes.get(v)
                && d.len() >= 2
                && let Some(c) = d[1].known()
            {
                let classes = self.cls.fresh(c as usize, None, Some(reason.to_string()));
                self.lay.insert(v, Layout { classes, axis: 1, rank: d.len(), inner: 1 });
            }
        }
    }

    pub(crate) fn unknown(&mut self, id: NodeId, reason: &str) {
        let reason = if reason.is_empty() {
            let op = self.g.op(id).map(|o| format!("`{}` ({})", o.label(), o.op_type)).unwrap_or_default();
            format!("op {op} reads a value the channel analysis does not follow")
        } else {
            reason.to_string()
        };
        self.block_inputs(id, &reason);
        self.fresh_blocked_outputs(id, &reason);
    }

    pub(crate) fn member(&mut self, op: NodeId, role: Role, v: ValueRef) {
        self.members.push((op, role, v));
    }

    pub(crate) fn is_const(&self, v: Option<ValueRef>) -> bool {
        v.is_some_and(|v| self.g.weight(v).is_some())
    }

    pub(crate) fn const_dims(&self, v: ValueRef) -> Option<Vec<i64>> {
        self.g.weight(v).map(|t| t.dims().to_vec())
    }

    pub(crate) fn const_ints(&self, v: Option<ValueRef>) -> Option<Vec<i64>> {
        v.and_then(|v| self.g.weight(v)).and_then(|t| t.to_i64().ok())
    }

    pub(crate) fn producer(&mut self, id: NodeId, out: ValueRef, n: usize, axis: usize, rank: usize) -> Vec<usize> {
        let classes = self.cls.fresh(n, Some(id), None);
        self.lay.insert(out, Layout { classes: classes.clone(), axis, rank, inner: 1 });
        self.member(id, Role::Producer, out);
        classes
    }

    /// Elements per channel of `x` (NCHW), which `Flatten` turns into `out`:
    /// from the inferred shape, else 1 after a global pool, else from the
    /// input features of the `Gemm`/`MatMul` that reads `out`.
    pub(crate) fn spatial(&self, x: ValueRef, out: ValueRef, l: &Layout) -> Option<u64> {
        if let Some(d) = self.dims_of(x) {
            return Some(d[2..].iter().product());
        }
        if matches!(self.g.op(x.0).and_then(crate::op::kind), Some(OpKind::GlobalPool(_))) {
            return Some(1);
        }
        let c = (l.classes.len() * l.inner) as i64;
        self.g.consumers(out).into_iter().find_map(|(n, _)| {
            let kind = self.g.op(n).and_then(crate::op::kind)?;
            let wd = self.const_dims(self.g.input(n, 1)?)?;
            let f = match kind {
                OpKind::Gemm(_) | OpKind::MatMul(_) => *wd.get(kind.weight_in_axis(wd.len())?)?,
                _ => return None,
            };
            (c > 0 && f % c == 0).then_some((f / c) as u64)
        })
    }

    /// A constant operand of an element-wise op over `l`: fine when it
    /// broadcasts along the channel axis (size 1 or absent), a `Slice` rewrite
    /// when it holds one value per channel. False otherwise.
    pub(crate) fn const_operand(
        &mut self,
        id: NodeId,
        slot: usize,
        v: ValueRef,
        l: &Layout,
        x: Option<ValueRef>,
    ) -> bool {
        let Some(cd) = self.const_dims(v) else { return false };
        let r = cd.len();
        if r > l.rank {
            return false;
        }
        let lead = l.rank - r;
        if l.axis < lead {
            return true;
        }
        let ca = l.axis - lead;
        match cd[ca] {
            1 => true,
            n if n as usize == l.classes.len() * l.inner && l.inner == 1 => {
                if let Some(x) = x {
                    self.rewrites.push(Rewrite::Slice { op: id, slot, axis: ca, layout_of: x });
                    self.member(id, Role::PerChannel, x);
                    true
                } else {
                    false
                }
            }
            _ => false,
        }
    }

    /// Couples the channels of an element-wise op's operands position by
    /// position; every operand that is not tracked must be a constant.
    pub(crate) fn couple(&mut self, id: NodeId, op: &Op) {
        let ins = self.g.op_inputs(id);
        let out = ValueRef(id, 0);
        let acts: Vec<(usize, ValueRef, Layout)> = ins
            .iter()
            .enumerate()
            .filter_map(|(s, v)| v.and_then(|v| self.lay.get(&v).cloned().map(|l| (s, v, l))))
            .collect();
        if acts.is_empty() {
            return self.unknown(id, "");
        }
        // every other input must be a constant
        for (s, v) in ins.iter().enumerate() {
            let Some(v) = *v else { continue };
            if acts.iter().any(|a| a.0 == s) {
                continue;
            }
            let (_, x, l) = acts[0].clone();
            if !self.is_const(Some(v)) || !self.const_operand(id, s, v, &l, Some(x)) {
                return self.unknown(
                    id,
                    &format!("{} `{}` has an operand that is neither tracked nor constant", op.op_type, op.label()),
                );
            }
        }
        let (_, _, first) = acts[0].clone();
        let mut result = first.clone();
        for (_, v, l) in acts.iter().skip(1) {
            let same = l.classes.len() == result.classes.len()
                && l.inner == result.inner
                && l.rank - l.axis == result.rank - result.axis;
            if same {
                for (a, b) in result.classes.clone().iter().zip(&l.classes) {
                    self.cls.union(*a, *b);
                }
            } else if l.classes.len() == 1 && l.inner == 1 {
                self.block_value(*v, "broadcast over channels");
            } else if result.classes.len() == 1 && result.inner == 1 {
                self.block_value(acts[0].1, "broadcast over channels");
                result = l.clone();
            } else {
                return self.unknown(id, &format!("{} `{}`: operands with different channels", op.op_type, op.label()));
            }
        }
        if let Some(r) = self.rank_of(out) {
            if r < result.rank {
                return self.unknown(id, &format!("{} `{}`: output rank below its operands'", op.op_type, op.label()));
            }
            result.axis += r - result.rank;
            result.rank = r;
        }
        self.lay.insert(out, result);
    }
}

/// Analyses the channel dependencies of `graph` (shapes are inferred with a
/// batch of 1). Never fails: what it cannot follow is blocked, with a reason.
pub fn channel_groups(graph: &Graph) -> ChannelGroups {
    let mut overrides = HashMap::new();
    for id in graph.real_inputs() {
        if let NodeKind::Input(vi) = graph.node(id)
            && let Some(mut s) = declared_shape(vi.r#type.as_ref())
        {
            if let Some(d0) = s.first_mut()
                && d0.known().is_none()
            {
                *d0 = Dim::Known(1);
            }
            overrides.insert(vi.name.clone(), s);
        }
    }
    let shapes = infer_shapes(graph, &overrides);
    let mut w = Walk {
        g: graph,
        shapes,
        cls: Classes::default(),
        lay: HashMap::new(),
        rewrites: Vec::new(),
        members: Vec::new(),
    };
    // graph inputs: channels that exist outside the model
    for id in graph.real_inputs().collect::<Vec<_>>() {
        let v = ValueRef(id, 0);
        if let Some(d) = w.shapes.get(v).cloned()
            && d.len() >= 2
            && let Some(c) = d[1].known()
        {
            let classes = w.cls.fresh(c as usize, None, Some("graph input channels".into()));
            w.lay.insert(v, Layout { classes, axis: 1, rank: d.len(), inner: 1 });
        }
    }
    for id in graph.ops() {
        let Some(op) = graph.op(id) else { continue };
        if crate::op::is_constant(op) {
            continue;
        }
        // an op reading a tracked value through a subgraph: block it
        let implicit: Vec<ValueRef> =
            graph.in_edges(id).into_iter().filter(|(_, s)| *s == crate::Slot::Implicit).map(|(v, _)| v).collect();
        for v in implicit {
            w.block_value(v, "read by a subgraph");
        }
        match crate::op::parse(op) {
            Ok(Some(kind)) => kind.rules().channels(&mut w, id, op),
            Ok(None) if !op.is_onnx() => {
                w.unknown(id, &format!("custom op `{}` ({}:{})", op.label(), op.domain, op.op_type));
            }
            Ok(None) => w.unknown(
                id,
                &format!("op `{}` ({}) is not understood by the channel analysis", op.label(), op.op_type),
            ),
            Err(e) => w.unknown(id, &e.to_string()),
        }
    }
    for &o in graph.outputs() {
        if let Some(v) = graph.input(o, 0) {
            w.block_value(v, "reaches a graph output");
        }
    }
    finish(w)
}

fn finish(mut w: Walk<'_>) -> ChannelGroups {
    // canonical class per union-find root, in order of first appearance
    let n = w.cls.parent.len();
    let roots: Vec<usize> = (0..n).map(|c| w.cls.find(c)).collect();
    let mut canon: HashMap<usize, usize> = HashMap::new();
    let mut root_of_canon = Vec::new();
    for &r in &roots {
        canon.entry(r).or_insert_with(|| {
            root_of_canon.push(r);
            root_of_canon.len() - 1
        });
    }
    // rewrite layouts to canonical classes; signature = values a class appears in
    let mut values: Vec<ValueRef> = w.lay.keys().copied().collect();
    values.sort();
    let mut sig: Vec<BTreeSet<ValueRef>> = vec![BTreeSet::new(); root_of_canon.len()];
    let mut layouts = HashMap::new();
    for v in values {
        let mut l = w.lay[&v].clone();
        for c in l.classes.iter_mut() {
            *c = canon[&roots[*c]];
            sig[*c].insert(v);
        }
        layouts.insert(v, l);
    }
    // producers of each canonical class (in class creation order)
    let mut prods: Vec<Vec<NodeId>> = vec![Vec::new(); root_of_canon.len()];
    for c in 0..n {
        if let Some(p) = w.cls.producer[c] {
            let k = canon[&roots[c]];
            if !prods[k].contains(&p) {
                prods[k].push(p);
            }
        }
    }
    // group = classes with the same signature (and the same producers)
    let mut by_sig: BTreeMap<(Vec<ValueRef>, Vec<NodeId>), usize> = BTreeMap::new();
    let mut groups: Vec<ChannelGroup> = Vec::new();
    let mut class_group = vec![0usize; root_of_canon.len()];
    // visit classes in creation order so a group's classes follow its first producer's channels
    let mut seen = vec![false; root_of_canon.len()];
    for c in 0..n {
        let k = canon[&roots[c]];
        if std::mem::replace(&mut seen[k], true) {
            continue;
        }
        let key = (sig[k].iter().copied().collect::<Vec<_>>(), prods[k].clone());
        let gi = *by_sig.entry(key.clone()).or_insert_with(|| {
            let blocked = w.cls.blocked[root_of_canon[k]].clone();
            groups.push(ChannelGroup {
                classes: Vec::new(),
                producers: prods[k].clone(),
                members: Vec::new(),
                values: key.0.clone(),
                blocked,
            });
            groups.len() - 1
        });
        let g = &mut groups[gi];
        if g.blocked.is_none() {
            g.blocked = w.cls.blocked[root_of_canon[k]].clone();
        }
        g.classes.push(k);
        class_group[k] = gi;
    }
    for g in groups.iter_mut() {
        if g.blocked.is_none() && g.producers.is_empty() {
            g.blocked = Some("no layer produces these channels".into());
        }
    }
    // members: each (op, role, value) touches the groups of the value's classes
    for &(op, role, v) in &w.members {
        let Some(l) = layouts.get(&v) else { continue };
        let gs: BTreeSet<usize> = l.classes.iter().map(|&c| class_group[c]).collect();
        for gi in gs {
            if !groups[gi].members.contains(&(op, role)) {
                groups[gi].members.push((op, role));
            }
        }
    }
    ChannelGroups { groups, class_group, layouts, rewrites: w.rewrites }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::{attr_int, tensor_info};
    use crate::{DataType, Tensor};

    /// A tiny graph builder: convs with constant weights, ops, outputs.
    struct B(Graph, usize);

    impl B {
        fn new(c: u64) -> (B, ValueRef) {
            let mut g = Graph::new("g");
            let d = [Dim::Sym("N".into()), Dim::Known(c), Dim::Known(4), Dim::Known(4)];
            let x = g.add_input(tensor_info("x", DataType::Float, &d));
            (B(g, 0), ValueRef(x, 0))
        }
        fn op(&mut self, t: &str, name: &str, ins: &[ValueRef], attrs: Vec<crate::onnx::AttributeProto>) -> ValueRef {
            let mut op = Op::new(t, name, ins.len(), vec![format!("{name}_y")]);
            op.attributes = attrs;
            let ins: Vec<Option<ValueRef>> = ins.iter().copied().map(Some).collect();
            ValueRef(self.0.add_op(op, &ins), 0)
        }
        fn conv(&mut self, x: ValueRef, name: &str, cin: i64, cout: i64, group: i64) -> ValueRef {
            self.1 += 1;
            let n = (cout * cin / group) as usize;
            let w =
                self.0.add_weight(Tensor::from_f32(&format!("{name}.w"), &[cout, cin / group, 1, 1], &vec![0.5; n]));
            self.op("Conv", name, &[x, ValueRef(w, 0)], vec![attr_int("group", group)])
        }
        fn dump(mut self, outs: &[ValueRef]) -> String {
            for &o in outs {
                self.0.add_output(o, Default::default());
            }
            self.0.verify().unwrap();
            channel_groups(&self.0).dump(&self.0)
        }
    }

    #[test]
    fn residual_add_couples_both_sides() {
        let (mut b, x) = B::new(3);
        let a = b.conv(x, "a", 3, 4, 1);
        let r = b.op("Relu", "r", &[a], vec![]);
        let c = b.conv(r, "c", 4, 4, 1);
        let s = b.op("Add", "add", &[a, c], vec![]);
        let y = b.conv(s, "out", 4, 2, 1);
        assert_eq!(
            b.dump(&[y]),
            "group 0: 3 ch, producers [<no producer>], blocked: graph input channels\n\
             group 1: 4 ch, producers [a + c], members [a:Producer, c:Consumer, c:Producer, out:Consumer]\n\
             group 2: 2 ch, producers [out], blocked: reaches a graph output\n"
        );
    }

    #[test]
    fn concat_keeps_each_branch_a_group() {
        let (mut b, x) = B::new(3);
        let l = b.conv(x, "l", 3, 2, 1);
        let r = b.conv(x, "r", 3, 5, 1);
        let c = b.op("Concat", "cat", &[l, r], vec![attr_int("axis", 1)]);
        let y = b.conv(c, "out", 7, 2, 1);
        let text = b.dump(&[y]);
        assert!(text.contains("group 1: 2 ch, producers [l], members [l:Producer, out:Consumer]"), "{text}");
        assert!(text.contains("group 2: 5 ch, producers [r], members [r:Producer, out:Consumer]"), "{text}");
    }

    #[test]
    fn depthwise_passes_channels_through() {
        let (mut b, x) = B::new(3);
        let a = b.conv(x, "a", 3, 6, 1);
        let d = b.conv(a, "dw", 6, 6, 6);
        let y = b.conv(d, "pw", 6, 2, 1);
        let text = b.dump(&[y]);
        assert!(
            text.contains("group 1: 6 ch, producers [a], members [a:Producer, dw:Depthwise, pw:Consumer]"),
            "{text}"
        );
        // a grouped conv that is not depthwise blocks its input's channels
        let (mut b, x) = B::new(3);
        let a = b.conv(x, "a", 3, 6, 1);
        let g = b.conv(a, "g2", 6, 6, 2);
        let text = b.dump(&[g]);
        assert!(
            text.contains("group 1: 6 ch, producers [a], blocked: grouped conv `g2` (group 2) is not depthwise"),
            "{text}"
        );
    }

    #[test]
    fn reshapes_flatten_or_block() {
        let (mut b, x) = B::new(3);
        let a = b.conv(x, "a", 3, 6, 1);
        let m = b.op("ReduceMean", "gap", &[a], vec![crate::builder::attr_ints("axes", &[2, 3])]);
        let s = b.0.add_weight(Tensor::from_i64("s", &[2], &[-1, 6]));
        let f = b.op("Reshape", "flat", &[m, ValueRef(s, 0)], vec![]);
        let w = b.0.add_weight(Tensor::from_f32("fc.w", &[6, 2], &[0.5; 12]));
        let y = b.op("MatMul", "fc", &[f, ValueRef(w, 0)], vec![]);
        let text = b.dump(&[y]);
        assert!(text.contains("group 1: 6 ch, producers [a], members [a:Producer, fc:Consumer]"), "{text}");
        // a reshape that splits the channels blocks them
        let (mut b, x) = B::new(3);
        let a = b.conv(x, "a", 3, 6, 1);
        let s = b.0.add_weight(Tensor::from_i64("s", &[4], &[1, 3, 2, 16]));
        let r = b.op("Reshape", "r", &[a, ValueRef(s, 0)], vec![]);
        let text = b.dump(&[r]);
        assert!(text.contains("producers [a], blocked: reshape `r` changes the channel layout"), "{text}");
    }

    #[test]
    fn unknown_ops_and_outputs_block() {
        let (mut b, x) = B::new(3);
        let a = b.conv(x, "a", 3, 6, 1);
        let t = b.op("Transpose", "t", &[a], vec![]);
        let c = b.conv(x, "c", 3, 4, 1);
        let text = b.dump(&[t, c]);
        assert!(text.contains("producers [a], blocked: op `t` (Transpose) is not understood"), "{text}");
        assert!(text.contains("producers [c], blocked: reaches a graph output"), "{text}");
    }

    #[test]
    fn spatial_pad_keeps_channels_and_channel_pad_blocks() {
        let pad = |p: &[i64]| {
            let (mut b, x) = B::new(3);
            let a = b.conv(x, "a", 3, 6, 1);
            let p = b.0.add_weight(Tensor::from_i64("p", &[8], p));
            let pd = b.op("Pad", "pad", &[a, ValueRef(p, 0)], vec![]);
            let y = b.conv(pd, "out", 6, 2, 1);
            b.dump(&[y])
        };
        let text = pad(&[0, 0, 1, 1, 0, 0, 1, 1]);
        assert!(text.contains("group 1: 6 ch, producers [a], members [a:Producer, out:Consumer]"), "{text}");
        let text = pad(&[0, 1, 0, 0, 0, 1, 0, 0]);
        assert!(text.contains("producers [a], blocked: pad `pad` pads the channel axis"), "{text}");
    }
}
