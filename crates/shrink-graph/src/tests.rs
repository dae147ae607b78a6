//! Unit tests: shape inference rules, tensor views, the IR's editing API and
//! `verify`, each through one `check` helper per area.

use std::collections::HashMap;

use crate::builder::{attr_int, attr_ints, attr_str, tensor_info};
use crate::{DataType, Dim, Graph, NodeKind, Op, Tensor, ValueRef, infer_shapes};

fn d(v: &[i64]) -> Vec<Dim> {
    v.iter().map(|&x| if x < 0 { Dim::Sym("N".into()) } else { Dim::Known(x as u64) }).collect()
}

/// Builds `x -> op -> y` with the given weights as extra inputs and returns y's inferred shape as text.
fn check(x: &[i64], op: Op, weights: &[Tensor]) -> String {
    let mut g = Graph::new("g");
    let x = g.add_input(tensor_info("x", DataType::Float, &d(x)));
    let mut inputs = vec![Some(ValueRef(x, 0))];
    for (i, w) in weights.iter().enumerate() {
        let mut w = w.clone();
        w.proto.name = format!("w{i}");
        inputs.push(Some(ValueRef(g.add_weight(w), 0)));
    }
    let id = g.add_op(op, &inputs);
    g.add_output(ValueRef(id, 0), Default::default());
    g.verify().unwrap();
    let s = infer_shapes(&g, &HashMap::new());
    match s.get(ValueRef(id, 0)) {
        Some(shape) => format!("[{}]", shape.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")),
        None => "unknown".into(),
    }
}

fn op(t: &str, attrs: Vec<crate::onnx::AttributeProto>) -> Op {
    let mut o = Op::new(t, t, 0, vec!["y".into()]);
    o.attributes = attrs;
    o
}

fn w(dims: &[i64]) -> Tensor {
    let n = dims.iter().product::<i64>() as usize;
    Tensor::from_f32("w", dims, &vec![0.5; n])
}

#[test]
fn conv_shapes() {
    // 5x5, no padding
    assert_eq!(check(&[-1, 1, 28, 28], op("Conv", vec![]), &[w(&[20, 1, 5, 5])]), "[N, 20, 24, 24]");
    // 3x3 stride 2 pad 1
    let a = vec![attr_ints("strides", &[2, 2]), attr_ints("pads", &[1, 1, 1, 1])];
    assert_eq!(check(&[1, 8, 32, 32], op("Conv", a), &[w(&[16, 8, 3, 3])]), "[1, 16, 16, 16]");
    // depthwise, dilation 2, SAME_UPPER
    let a = vec![attr_int("group", 8), attr_ints("dilations", &[2, 2]), attr_str("auto_pad", "SAME_UPPER")];
    assert_eq!(check(&[1, 8, 15, 15], op("Conv", a), &[w(&[8, 1, 3, 3])]), "[1, 8, 15, 15]");
    // ConvTranspose stride 2: (7-1)*2 + 3 - 2 = 13, output_padding 1 → 14
    let a = vec![attr_ints("strides", &[2, 2]), attr_ints("pads", &[1, 1, 1, 1]), attr_ints("output_padding", &[1, 1])];
    assert_eq!(check(&[1, 4, 7, 7], op("ConvTranspose", a), &[w(&[4, 2, 3, 3])]), "[1, 2, 14, 14]");
}

#[test]
fn pool_shapes() {
    let k = |k: i64, s: i64| vec![attr_ints("kernel_shape", &[k, k]), attr_ints("strides", &[s, s])];
    assert_eq!(check(&[-1, 20, 24, 24], op("MaxPool", k(2, 2)), &[]), "[N, 20, 12, 12]");
    // 3x3/s2 with pad 1 (ResNet stem): 112 → 56
    let mut a = k(3, 2);
    a.push(attr_ints("pads", &[1, 1, 1, 1]));
    assert_eq!(check(&[1, 64, 112, 112], op("MaxPool", a), &[]), "[1, 64, 56, 56]");
    // ceil_mode: 6 with k2 s2 → 3; 5 → 3 (floor would give 2)
    let mut a = k(2, 2);
    a.push(attr_int("ceil_mode", 1));
    assert_eq!(check(&[1, 3, 5, 6], op("AveragePool", a), &[]), "[1, 3, 3, 3]");
    assert_eq!(check(&[-1, 7, 9, 9], op("GlobalAveragePool", vec![]), &[]), "[N, 7, 1, 1]");
}

#[test]
fn matrix_shapes() {
    assert_eq!(check(&[-1, 784], op("Gemm", vec![attr_int("transB", 1)]), &[w(&[300, 784]), w(&[300])]), "[N, 300]");
    assert_eq!(check(&[784, 5], op("Gemm", vec![attr_int("transA", 1)]), &[w(&[784, 300])]), "[5, 300]");
    assert_eq!(check(&[2, 3, 4, 5], op("MatMul", vec![]), &[w(&[5, 6])]), "[2, 3, 4, 6]");
    assert_eq!(check(&[5], op("MatMul", vec![]), &[w(&[3, 5, 6])]), "[3, 6]");
}

#[test]
fn layout_shapes() {
    assert_eq!(check(&[-1, 50, 4, 4], op("Flatten", vec![]), &[]), "[N, 800]");
    assert_eq!(check(&[2, 50, 4, 4], op("Flatten", vec![attr_int("axis", 0)]), &[]), "[1, 1600]");
    assert_eq!(check(&[2, 50, 4, 4], op("Reshape", vec![]), &[Tensor::from_i64("s", &[2], &[0, -1])]), "[2, 800]");
    // -1 cannot be resolved when the batch is symbolic: stays unknown, not guessed
    assert_eq!(check(&[-1, 50, 4, 4], op("Reshape", vec![]), &[Tensor::from_i64("s", &[2], &[-1, 800])]), "[?, 800]");
    assert_eq!(check(&[1, 2, 3], op("Transpose", vec![attr_ints("perm", &[2, 0, 1])]), &[]), "[3, 1, 2]");
    assert_eq!(check(&[1, 2, 3], op("Transpose", vec![]), &[]), "[3, 2, 1]");
    assert_eq!(check(&[1, 2, 1, 3], op("Squeeze", vec![]), &[]), "[2, 3]");
    assert_eq!(check(&[1, 2, 1, 3], op("Squeeze", vec![]), &[Tensor::from_i64("a", &[1], &[-2])]), "[1, 2, 3]");
    assert_eq!(check(&[2, 3], op("Unsqueeze", vec![attr_ints("axes", &[0, 3])]), &[]), "[1, 2, 3, 1]");
    assert_eq!(check(&[-1, 3, 4], op("Concat", vec![attr_int("axis", 1)]), &[w(&[1, 5, 4])]), "[N, 8, 4]");
    assert_eq!(check(&[-1, 3, 4], op("Add", vec![]), &[w(&[4])]), "[N, 3, 4]");
    assert_eq!(check(&[-1, 1, 4], op("Mul", vec![]), &[w(&[5, 1])]), "[N, 5, 4]");
    assert_eq!(check(&[-1, 10], op("Softmax", vec![attr_int("axis", 1)]), &[]), "[N, 10]");
    // an op the rules do not know stays unknown
    assert_eq!(check(&[-1, 10], op("TopK", vec![]), &[]), "unknown");
}

#[test]
fn tensor_views() {
    let t = Tensor::from_f32("t", &[2, 2], &[1.0, -2.0, 0.5, 0.0]);
    assert_eq!(t.to_f32().unwrap(), [1.0, -2.0, 0.5, 0.0]);
    assert_eq!(t.nbytes(), 16);
    // float16 raw bytes: 1.0 = 0x3c00, -2.0 = 0xc000, smallest subnormal 0x0001 = 2^-24
    let h = Tensor::from_raw("h", DataType::Float16, &[3], vec![0x00, 0x3c, 0x00, 0xc0, 0x01, 0x00]);
    assert_eq!(h.to_f32().unwrap(), [1.0, -2.0, 2f32.powi(-24)]);
    // typed field storage
    let mut p = Tensor::from_f32("p", &[3], &[]).proto;
    p.raw_data.clear();
    p.float_data = vec![1.0, 2.0, 3.0];
    assert_eq!(Tensor::from_proto(p.clone()).to_f32().unwrap(), [1.0, 2.0, 3.0]);
    let mut t = Tensor::from_proto(p);
    t.set_f32(&[4.0, 5.0, 6.0]).unwrap();
    assert!(t.proto.float_data.is_empty());
    assert_eq!(t.to_f32().unwrap(), [4.0, 5.0, 6.0]);
    assert_eq!(
        t.set_f32(&[1.0]).unwrap_err().to_string(),
        "tensor `p`: cannot store 1 f32 values in a Float tensor of 3 elements"
    );
    assert_eq!(Tensor::from_i64("i", &[2], &[7, -1]).to_i64().unwrap(), [7, -1]);
    let bad = Tensor::from_f32("neg", &[-1], &[]);
    assert_eq!(bad.numel().unwrap_err().to_string(), "tensor `neg`: bad dims [-1]");
}

#[test]
fn editing_keeps_ids_and_order() {
    let mut g = Graph::new("g");
    let x = g.add_input(tensor_info("x", DataType::Float, &d(&[-1, 4])));
    let a = g.add_op(Op::new("Relu", "a", 1, vec!["a".into()]), &[Some(ValueRef(x, 0))]);
    let b = g.add_op(Op::new("Neg", "b", 1, vec!["b".into()]), &[Some(ValueRef(a, 0))]);
    let c = g.add_op(Op::new("Abs", "c", 1, vec!["c".into()]), &[Some(ValueRef(b, 0))]);
    let out = g.add_output(ValueRef(c, 0), Default::default());
    // bypass b: c reads a; b is dead and goes; the other ids stay valid
    g.replace_uses(ValueRef(b, 0), ValueRef(a, 0));
    assert_eq!(g.remove_dead(), 1);
    assert!(!g.contains(b));
    assert_eq!(g.op(c).unwrap().name, "c");
    assert_eq!(g.input(c, 0), Some(ValueRef(a, 0)));
    g.verify().unwrap();
    // a node inserted later but placed before `c` by its order hint
    let mut mid = Op::new("Sigmoid", "mid", 1, vec!["m".into()]);
    mid.order = g.op(a).unwrap().order;
    let m = g.add_op(mid, &[Some(ValueRef(a, 0))]);
    g.set_input(c, 0, Some(ValueRef(m, 0)));
    let names: Vec<&str> = g.ops().iter().map(|&n| g.op(n).unwrap().name.as_str()).collect();
    assert_eq!(names, ["a", "mid", "c"]);
    assert!(matches!(g.node(out), NodeKind::Output(_)));
    g.verify().unwrap();
}

#[test]
fn verify_names_the_broken_node() {
    let mut g = Graph::new("g");
    let x = g.add_input(tensor_info("x", DataType::Float, &d(&[4])));
    let a = g.add_op(Op::new("Relu", "a", 1, vec!["a".into()]), &[Some(ValueRef(x, 0))]);
    g.add_output(ValueRef(a, 0), Default::default());
    g.verify().unwrap();

    // reading an output slot the producer does not have
    let mut bad = g.clone();
    let z = bad.add_op(Op::new("Neg", "z", 1, vec!["z".into()]), &[Some(ValueRef(a, 3))]);
    let _ = z;
    assert_eq!(
        bad.verify().unwrap_err().to_string(),
        "invalid graph at node `z` (Neg): reads output 3 of node `a` (Relu), which it does not produce"
    );
    // a second value with the same name
    let mut bad = g.clone();
    bad.add_op(Op::new("Neg", "n", 1, vec!["a".into()]), &[Some(ValueRef(x, 0))]);
    assert_eq!(
        bad.verify().unwrap_err().to_string(),
        "value `a` is produced twice: by node `a` (Relu) and by node `n` (Neg)"
    );
    // a cycle
    let mut bad = g.clone();
    bad.set_input(a, 1, Some(ValueRef(a, 0)));
    assert_eq!(
        bad.verify().unwrap_err().to_string(),
        "invalid graph at node `a` (Relu): is on a cycle: the graph has no topological order"
    );
}

#[test]
fn reduce_shapes() {
    let a = |keep: i64| vec![attr_ints("axes", &[2, 3]), attr_int("keepdims", keep)];
    assert_eq!(check(&[-1, 8, 4, 4], op("ReduceMean", a(1)), &[]), "[N, 8, 1, 1]");
    assert_eq!(check(&[-1, 8, 4, 4], op("ReduceMean", a(0)), &[]), "[N, 8]");
    // opset 18: axes from input 1
    assert_eq!(check(&[-1, 8, 4, 4], op("ReduceSum", vec![]), &[Tensor::from_i64("a", &[1], &[-1])]), "[N, 8, 4, 1]");
    // no axes: every axis
    assert_eq!(check(&[2, 8], op("ReduceMax", vec![attr_int("keepdims", 0)]), &[]), "[]");
}

/// Crafted window attributes: an error naming the node, or an unknown shape;
/// never an overflow (this test would panic in debug before).
#[test]
fn crafted_window_attributes_never_overflow() {
    let huge = vec![attr_ints("kernel_shape", &[i64::MAX, i64::MAX]), attr_ints("dilations", &[i64::MAX, i64::MAX])];
    assert_eq!(check(&[1, 8, 32, 32], op("MaxPool", huge.clone()), &[]), "unknown");
    assert_eq!(check(&[1, 8, 32, 32], op("Conv", huge), &[w(&[4, 8, 3, 3])]), "unknown");
    let pads = vec![attr_ints("kernel_shape", &[1, 1]), attr_ints("pads", &[i64::MAX, i64::MAX, i64::MAX, i64::MAX])];
    assert_eq!(check(&[1, 8, 32, 32], op("MaxPool", pads), &[]), "unknown"); // 2^64 + 30 does not fit
    let mut bad = op("Conv", vec![attr_ints("strides", &[0, 1])]);
    bad.name = "conv7".into();
    let e = crate::op::parse(&bad).unwrap_err().to_string();
    assert_eq!(e, "node `conv7` (Conv): strides [0, 1]: every entry must be at least 1");
    let neg = op("AveragePool", vec![attr_ints("kernel_shape", &[2, 2]), attr_ints("pads", &[-1, 0, 0, 0])]);
    assert!(crate::op::parse(&neg).unwrap_err().to_string().contains("pads [-1, 0, 0, 0]"));
    let mismatch = op("MaxPool", vec![attr_ints("kernel_shape", &[2, 2]), attr_ints("strides", &[2])]);
    assert!(crate::op::parse(&mismatch).unwrap_err().to_string().contains("do not match"));
}

/// Which input is a layer's weight and which of its axes holds the output
/// channels, for every layer op.
#[test]
fn weight_slots_and_axes() {
    use crate::op::{OpKind, parse};
    let kind = |t: &str, attrs| parse(&op(t, attrs)).unwrap().unwrap();
    let conv = kind("Conv", vec![]);
    assert_eq!((conv.weight_slots(), conv.weight_out_axis(1, 4), conv.weight_in_axis(4)), (&[1][..], 0, Some(1)));
    let gemm = kind("Gemm", vec![attr_int("transB", 1)]);
    assert_eq!((gemm.weight_out_axis(1, 2), gemm.weight_in_axis(2)), (0, Some(1)));
    let gemm = kind("Gemm", vec![]);
    assert_eq!((gemm.weight_out_axis(1, 2), gemm.weight_out_axis(0, 2), gemm.weight_in_axis(2)), (1, 0, Some(0)));
    let mm = kind("MatMul", vec![]);
    assert_eq!((mm.weight_slots(), mm.weight_out_axis(1, 3), mm.weight_in_axis(3)), (&[1, 0][..], 2, Some(1)));
    let ct = kind("ConvTranspose", vec![]);
    assert_eq!((ct.weight_out_axis(1, 4), ct.weight_in_axis(4)), (1, Some(0)));
    let relu = kind("Relu", vec![]);
    assert!(!relu.is_layer() && relu.weight_slots().is_empty() && matches!(relu, OpKind::Activation(_)));
    // another domain is not ONNX's op of that name
    let mut custom = op("Conv", vec![]);
    custom.domain = "com.example".into();
    assert!(parse(&custom).unwrap().is_none());
}

#[test]
fn pad_shapes() {
    let pads = |p: &[i64]| Tensor::from_i64("p", &[p.len() as i64], p);
    // opset 11+: pads from input 1, begins then ends
    assert_eq!(check(&[-1, 3, 28, 28], op("Pad", vec![]), &[pads(&[0, 0, 2, 1, 0, 0, 2, 1])]), "[N, 3, 32, 30]");
    // opset < 11: the attribute
    assert_eq!(check(&[1, 3, 4], op("Pad", vec![attr_ints("pads", &[0, 1, 0, 0, 1, 2])]), &[]), "[1, 5, 6]");
    // negative pads crop
    assert_eq!(check(&[1, 3, 8, 8], op("Pad", vec![]), &[pads(&[0, 0, -1, -1, 0, 0, -1, -1])]), "[1, 3, 6, 6]");
    let bad = op("Pad", vec![attr_str("mode", "mirror")]);
    assert!(crate::op::parse(&bad).unwrap_err().to_string().contains("unknown mode `mirror`"));
}

#[test]
fn slice_shapes_and_values() {
    let ints = |p: &[i64]| Tensor::from_i64("p", &[p.len() as i64], p);
    // opset 10+: starts, ends, axes, steps from inputs; negative indices and an end past the axis clamp
    let s = |x: &[i64], ts: &[Tensor]| check(x, op("Slice", vec![]), ts);
    assert_eq!(s(&[-1, 8, 6, 6], &[ints(&[0]), ints(&[4]), ints(&[1])]), "[N, 4, 6, 6]");
    assert_eq!(s(&[1, 8, 6, 6], &[ints(&[-3, 1]), ints(&[i64::MAX, 5]), ints(&[1, 3])]), "[1, 3, 6, 4]");
    // steps, a negative one walking back from the end
    assert_eq!(s(&[1, 8, 7], &[ints(&[1]), ints(&[8]), ints(&[2]), ints(&[3])]), "[1, 8, 2]");
    assert_eq!(s(&[1, 8, 7], &[ints(&[-1]), ints(&[i64::MIN]), ints(&[1]), ints(&[-1])]), "[1, 8, 7]");
    // opset < 10: attributes
    let a = vec![attr_ints("starts", &[2]), attr_ints("ends", &[-1]), attr_ints("axes", &[2])];
    assert_eq!(check(&[1, 3, 10, 10], op("Slice", a), &[]), "[1, 3, 7, 10]");
    // a constant vector sliced stays a constant (shape chains)
    let sl = crate::op::parse(&op("Slice", vec![])).unwrap().unwrap();
    let crate::op::OpKind::Slice(sl) = sl else { panic!("not the Slice family") };
    let r = sl.resolve(&[5], Some(&[4]), Some(&[0]), None, Some(&[-2])).unwrap();
    assert_eq!((r[0].start, r[0].len, r[0].step), (4, 2, -2));
    assert!(sl.resolve(&[5], Some(&[0]), Some(&[1]), None, Some(&[0])).unwrap_err().contains("step is 0"));
    assert!(sl.resolve(&[5, 5], Some(&[0]), Some(&[1]), Some(&[0, 1]), None).unwrap_err().contains("do not pair up"));
    let half = op("Slice", vec![attr_ints("starts", &[0])]);
    assert!(crate::op::parse(&half).unwrap_err().to_string().contains("only one of"));
}

#[test]
fn split_shapes() {
    let mut g = Graph::new("g");
    let x = g.add_input(tensor_info("x", DataType::Float, &d(&[-1, 10, 4, 4])));
    let mut sp = Op::new("Split", "s", 1, vec!["a".into(), "b".into(), "c".into()]);
    sp.attributes = vec![attr_int("axis", 1), attr_int("num_outputs", 3)];
    let id = g.add_op(sp, &[Some(ValueRef(x, 0))]);
    for k in 0..3 {
        g.add_output(ValueRef(id, k), Default::default());
    }
    let s = infer_shapes(&g, &HashMap::new());
    let show = |k: usize| s.get(ValueRef(id, k)).map(|sh| sh.iter().map(ToString::to_string).collect::<Vec<_>>());
    // ceil(10 / 3) = 4, 4, then the rest
    assert_eq!(show(0).unwrap(), ["N", "4", "4", "4"]);
    assert_eq!(show(1).unwrap()[1], "4");
    assert_eq!(show(2).unwrap()[1], "2");
    let bad = op("Split", vec![attr_int("num_outputs", 0)]);
    assert!(crate::op::parse(&bad).unwrap_err().to_string().contains("num_outputs 0 is not positive"));
}

/// An `Identity` of a weight read by two convs becomes one copy per conv;
/// the `Identity` and the now unread weight are gone, the graph stays valid.
#[test]
fn identity_weights_are_copied_per_reader() {
    let mut g = Graph::new("g");
    let x = ValueRef(g.add_input(tensor_info("x", DataType::Float, &d(&[1, 2, 4, 4]))), 0);
    let shared = ValueRef(g.add_weight(Tensor::from_f32("b", &[2], &[0.0, 0.0])), 0);
    let mut id_op = Op::new("Identity", "id", 1, vec!["b_id".into()]);
    id_op.attributes = vec![];
    let ident = ValueRef(g.add_op(id_op, &[Some(shared)]), 0);
    let mut y = x;
    for k in 0..2 {
        let wt = ValueRef(g.add_weight(Tensor::from_f32(&format!("w{k}"), &[2, 2, 1, 1], &[1.0; 4])), 0);
        y = ValueRef(
            g.add_op(Op::new("Conv", &format!("c{k}"), 3, vec![format!("y{k}")]), &[Some(y), Some(wt), Some(ident)]),
            0,
        );
    }
    g.add_output(y, Default::default());
    let copies = crate::rewrite::unshare_identity_weights(&mut g).unwrap();
    assert_eq!(copies, 2);
    g.verify().unwrap();
    assert!(g.find_op("id").is_none() && g.find_value("b").is_none());
    let c0 = g.find_op("c0").unwrap();
    let c1 = g.find_op("c1").unwrap();
    let (b0, b1) = (g.input(c0, 2).unwrap(), g.input(c1, 2).unwrap());
    assert_ne!(b0, b1);
    assert_eq!(g.weight(b0).unwrap().to_f32().unwrap(), [0.0, 0.0]);
    assert_eq!((g.value_name(b0), g.value_name(b1)), ("b_id", "b_id_1"));
}
