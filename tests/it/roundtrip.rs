//! ONNX → IR → ONNX: byte-stable round trips (proptest), and the pieces that
//! must survive: node order, subgraphs, initializers listed as inputs,
//! external data, metadata.

use proptest::prelude::*;
use shrink_graph::builder::{attr_float, attr_int, attr_ints, attr_str, tensor_info};
use shrink_graph::onnx::{AttributeProto, GraphProto, NodeProto, StringStringEntryProto, ValueInfoProto};
use shrink_graph::{DataType, Dim, Graph, Model, NodeKind, Op, Slot, Tensor, ValueRef};

use crate::util::{lenet_300_100, model, tempdir};

/// A recipe for a random graph: built through the IR API, not as protobuf.
#[derive(Debug, Clone)]
struct Recipe {
    inputs: Vec<Vec<i64>>,
    weights: Vec<Vec<f32>>,
    ops: Vec<OpRecipe>,
    outputs: Vec<usize>,
    doc: String,
}

#[derive(Debug, Clone)]
struct OpRecipe {
    op_type: usize,
    domain: bool,
    inputs: Vec<Option<usize>>,
    n_outputs: usize,
    skip_output: bool,
    attrs: Vec<(u8, i64, f32)>,
    named: bool,
}

const OP_TYPES: &[&str] = &["Relu", "Add", "Mul", "Gemm", "Concat", "MyCustomOp", "Split", "Identity"];

fn recipe() -> impl Strategy<Value = Recipe> {
    let op = (
        0..OP_TYPES.len(),
        any::<bool>(),
        prop::collection::vec(prop::option::weighted(0.85, 0usize..1000), 0..4),
        1usize..4,
        any::<bool>(),
        prop::collection::vec((0u8..4, any::<i64>(), any::<f32>()), 0..4),
        any::<bool>(),
    )
        .prop_map(|(op_type, domain, inputs, n_outputs, skip_output, attrs, named)| OpRecipe {
            op_type,
            domain,
            inputs,
            n_outputs,
            skip_output,
            attrs,
            named,
        });
    (
        prop::collection::vec(prop::collection::vec(-1i64..64, 0..4), 1..4),
        prop::collection::vec(prop::collection::vec(any::<f32>(), 0..6), 0..4),
        prop::collection::vec(op, 1..10),
        prop::collection::vec(0usize..1000, 1..4),
        "[a-z ]{0,12}",
    )
        .prop_map(|(inputs, weights, ops, outputs, doc)| Recipe { inputs, weights, ops, outputs, doc })
}

fn build(r: &Recipe) -> Model {
    let mut g = Graph::new("random");
    g.doc_string = r.doc.clone();
    let mut values: Vec<ValueRef> = Vec::new();
    for (i, dims) in r.inputs.iter().enumerate() {
        let shape: Vec<Dim> = dims
            .iter()
            .map(|&d| {
                if d < 0 {
                    Dim::Sym("batch".into())
                } else if d == 0 {
                    Dim::Unknown
                } else {
                    Dim::Known(d as u64)
                }
            })
            .collect();
        values.push(ValueRef(g.add_input(tensor_info(&format!("in{i}"), DataType::Float, &shape)), 0));
    }
    for (i, w) in r.weights.iter().enumerate() {
        values.push(ValueRef(g.add_weight(Tensor::from_f32(&format!("w{i}"), &[w.len() as i64], w)), 0));
    }
    for (k, o) in r.ops.iter().enumerate() {
        let outputs: Vec<String> = (0..o.n_outputs)
            .map(|j| if o.skip_output && j == 0 && o.n_outputs > 1 { String::new() } else { format!("v{k}_{j}") })
            .collect();
        let mut op =
            Op::new(OP_TYPES[o.op_type], if o.named { &outputs[outputs.len() - 1] } else { "" }, 0, outputs.clone());
        if o.domain {
            op.domain = "com.example".into();
        }
        op.attributes = o
            .attrs
            .iter()
            .enumerate()
            .map(|(j, &(kind, i, f))| match kind {
                0 => attr_int(&format!("a{j}"), i),
                1 => attr_float(&format!("a{j}"), f),
                2 => attr_ints(&format!("a{j}"), &[i, i / 2]),
                _ => attr_str(&format!("a{j}"), &format!("{i:x}")),
            })
            .collect();
        let inputs: Vec<Option<ValueRef>> = o.inputs.iter().map(|x| x.map(|x| values[x % values.len()])).collect();
        let id = g.add_op(op, &inputs);
        for (j, name) in outputs.iter().enumerate() {
            if !name.is_empty() {
                values.push(ValueRef(id, j));
            }
        }
    }
    for &o in &r.outputs {
        g.add_output(values[o % values.len()], ValueInfoProto::default());
    }
    let mut m = model(g, 17);
    m.meta.metadata_props = vec![StringStringEntryProto { key: "k".into(), value: r.doc.clone() }];
    m
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_graphs_round_trip_byte_stably(r in recipe()) {
        let m = build(&r);
        m.graph.verify().unwrap();
        let once = m.to_bytes();
        let loaded = Model::from_bytes(&once).unwrap();
        let twice = loaded.to_bytes();
        prop_assert_eq!(&once, &twice);
        // and the structure came back: same number of nodes of each kind
        prop_assert_eq!(loaded.graph.node_count(), m.graph.node_count());
    }
}

#[test]
fn lenet_round_trips_through_a_file() {
    let dir = tempdir();
    let m = lenet_300_100(3);
    let a = dir.path().join("a.onnx");
    let b = dir.path().join("b.onnx");
    m.save(&a).unwrap();
    let loaded = Model::load(&a).unwrap();
    loaded.save(&b).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    // the input model is never overwritten
    let err = loaded.save(&a).unwrap_err().to_string();
    assert!(err.contains("refusing to overwrite the input model"), "{err}");
}

/// Ops written in an order that is topological but not the index order the
/// IR would pick keep their file order; out-of-order files load and are
/// written in a topological order.
#[test]
fn node_order_is_kept_and_repaired() {
    let node = |name: &str, i: &[&str], o: &str| NodeProto {
        name: name.into(),
        op_type: "Relu".into(),
        input: i.iter().map(|s| s.to_string()).collect(),
        output: vec![o.into()],
        ..Default::default()
    };
    let vi = |n: &str| ValueInfoProto { name: n.into(), ..Default::default() };
    let graph = GraphProto {
        node: vec![node("b", &["x"], "b"), node("a", &["x"], "a"), node("c", &["a"], "c")],
        input: vec![vi("x")],
        output: vec![vi("b"), vi("c")],
        ..Default::default()
    };
    let proto = shrink_graph::onnx::ModelProto { graph: Some(graph.clone()), ..Default::default() };
    let m = Model::from_proto(proto).unwrap();
    let names: Vec<String> = m.to_proto().graph.unwrap().node.iter().map(|n| n.name.clone()).collect();
    assert_eq!(names, ["b", "a", "c"]);

    let mut shuffled = graph;
    shuffled.node.swap(1, 2); // c before its producer a
    let proto = shrink_graph::onnx::ModelProto { graph: Some(shuffled), ..Default::default() };
    let m = Model::from_proto(proto).unwrap();
    let names: Vec<String> = m.to_proto().graph.unwrap().node.iter().map(|n| n.name.clone()).collect();
    assert_eq!(names, ["b", "a", "c"]);
}

/// An `If` whose branches read an outer value by name: the value gets an
/// implicit edge, the subgraphs pass through untouched.
#[test]
fn subgraph_reads_are_edges_and_subgraphs_survive() {
    let vi = |n: &str| ValueInfoProto { name: n.into(), ..Default::default() };
    let branch = |name: &str, op: &str| GraphProto {
        name: name.into(),
        node: vec![NodeProto {
            op_type: op.into(),
            input: vec!["outer".into()],
            output: vec![format!("{name}_y")],
            ..Default::default()
        }],
        output: vec![vi(&format!("{name}_y"))],
        ..Default::default()
    };
    let graph = GraphProto {
        node: vec![
            NodeProto {
                name: "mk".into(),
                op_type: "Neg".into(),
                input: vec!["x".into()],
                output: vec!["outer".into()],
                ..Default::default()
            },
            NodeProto {
                name: "if".into(),
                op_type: "If".into(),
                input: vec!["cond".into()],
                output: vec!["y".into()],
                attribute: vec![
                    AttributeProto {
                        name: "then_branch".into(),
                        r#type: 5,
                        g: Some(branch("then", "Relu")),
                        ..Default::default()
                    },
                    AttributeProto {
                        name: "else_branch".into(),
                        r#type: 5,
                        g: Some(branch("else", "Abs")),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
        ],
        input: vec![vi("x"), vi("cond")],
        output: vec![vi("y")],
        ..Default::default()
    };
    let proto = shrink_graph::onnx::ModelProto { graph: Some(graph.clone()), ..Default::default() };
    let m = Model::from_proto(proto.clone()).unwrap();
    let if_id = m.graph.find_op("if").unwrap();
    let implicit: Vec<String> = m
        .graph
        .in_edges(if_id)
        .into_iter()
        .filter(|(_, s)| *s == Slot::Implicit)
        .map(|(v, _)| m.graph.value_name(v).to_string())
        .collect();
    assert_eq!(implicit, ["outer"]);
    assert_eq!(m.to_proto(), proto);

    // A branch reading a value that exists nowhere is refused, naming it.
    let mut bad = graph;
    bad.node.remove(0);
    let err = Model::from_proto(shrink_graph::onnx::ModelProto { graph: Some(bad), ..Default::default() }).unwrap_err();
    assert_eq!(err.to_string(), "node `if` (If) reads value `outer`, which nothing produces");
}

/// Older exporters list initializers in `graph.input` too: they are weights,
/// and both lists come back in their order.
#[test]
fn initializers_listed_as_inputs() {
    let w = Tensor::from_f32("w", &[2], &[1.0, 2.0]).proto;
    let vi = |n: &str| ValueInfoProto { name: n.into(), ..Default::default() };
    let graph = GraphProto {
        node: vec![NodeProto {
            op_type: "Add".into(),
            input: vec!["x".into(), "w".into()],
            output: vec!["y".into()],
            ..Default::default()
        }],
        input: vec![vi("w"), vi("x")],
        initializer: vec![w],
        output: vec![vi("y")],
        ..Default::default()
    };
    let proto = shrink_graph::onnx::ModelProto { graph: Some(graph), ..Default::default() };
    let m = Model::from_proto(proto.clone()).unwrap();
    assert_eq!(m.graph.real_inputs().count(), 1);
    assert_eq!(m.graph.weights().count(), 1);
    assert_eq!(m.to_proto(), proto);
}

/// Constant nodes are weights to analysis, and stay Constant nodes on save.
#[test]
fn constant_nodes_are_weights() {
    let mut g = Graph::new("g");
    let x = g.add_input(tensor_info("x", DataType::Float, &[Dim::Known(3)]));
    let mut c = Op::new("Constant", "c", 0, vec!["c".into()]);
    c.attributes =
        vec![shrink_graph::builder::attr_tensor("value", Tensor::from_f32("", &[3], &[1.0, 0.0, 3.0]).proto)];
    let c = g.add_op(c, &[]);
    let add = g.add_op(Op::new("Add", "add", 2, vec!["y".into()]), &[Some(ValueRef(x, 0)), Some(ValueRef(c, 0))]);
    g.add_output(ValueRef(add, 0), ValueInfoProto::default());
    let m = model(g, 17);
    assert_eq!(m.graph.weight(ValueRef(c, 0)).unwrap().to_f32().unwrap(), [1.0, 0.0, 3.0]);
    let s = shrink_graph::summarize(&m);
    assert_eq!((s.params, s.nonzero_params), (3, 2));
    let back = Model::from_bytes(&m.to_bytes()).unwrap();
    assert!(matches!(back.graph.node(back.graph.find_op("c").unwrap()), NodeKind::Op(op) if op.op_type == "Constant"));
}

/// External data: read from beside the model, written beside the output, bit-exact.
#[test]
fn external_data_loads_and_saves() {
    let dir = tempdir();
    let data: Vec<f32> = (0..100).map(|i| i as f32 * 0.5).collect();
    let raw: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut side = vec![7u8; 16]; // some other bytes first: offsets must be honoured
    side.extend_from_slice(&raw);
    std::fs::write(dir.path().join("weights.bin"), &side).unwrap();
    let mut w = Tensor::from_f32("w", &[100], &[]).proto;
    w.raw_data.clear();
    w.data_location = 1;
    w.external_data = vec![
        StringStringEntryProto { key: "location".into(), value: "weights.bin".into() },
        StringStringEntryProto { key: "offset".into(), value: "16".into() },
        StringStringEntryProto { key: "length".into(), value: "400".into() },
    ];
    let vi = |n: &str| ValueInfoProto { name: n.into(), ..Default::default() };
    let graph = GraphProto {
        node: vec![NodeProto {
            op_type: "Add".into(),
            input: vec!["x".into(), "w".into()],
            output: vec!["y".into()],
            ..Default::default()
        }],
        input: vec![vi("x")],
        initializer: vec![w],
        output: vec![vi("y")],
        ..Default::default()
    };
    let proto = shrink_graph::onnx::ModelProto { graph: Some(graph), ir_version: 8, ..Default::default() };
    use prost::Message;
    std::fs::write(dir.path().join("m.onnx"), proto.encode_to_vec()).unwrap();

    let m = Model::load(dir.path().join("m.onnx")).unwrap();
    let (_, t) = m.graph.weights().next().unwrap();
    assert!(t.is_external());
    assert_eq!(t.to_f32().unwrap(), data);

    m.save(dir.path().join("out.onnx")).unwrap();
    let written = std::fs::read(dir.path().join("out.onnx.data")).unwrap();
    assert_eq!(written, raw);
    let again = Model::load(dir.path().join("out.onnx")).unwrap();
    assert_eq!(again.graph.weights().next().unwrap().1.to_f32().unwrap(), data);
    // in memory, the tensor is inline
    let inline = Model::from_bytes(&m.to_bytes()).unwrap();
    assert!(!inline.graph.weights().next().unwrap().1.is_external());
}
