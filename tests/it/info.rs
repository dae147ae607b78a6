//! `summarize` / `shrink info` against hand-computed numbers.

use shrink_graph::builder::{attr_int, attr_ints, tensor_info};
use shrink_graph::{DataType, Dim, Graph, Op, Tensor, ValueRef, summarize};

use crate::util::{Rng, lenet_300_100, model};

#[test]
fn lenet_300_100_params_and_macs() {
    let s = summarize(&lenet_300_100(1));
    // 784*300+300 + 300*100+100 + 100*10+10
    assert_eq!(s.params, 266_610);
    // per sample: 784*300 + 300*100 + 100*10
    assert_eq!(s.macs, 266_200);
    assert_eq!(s.macs_unknown, 0);
    assert_eq!(s.weight_bytes, 266_610 * 4);
    let layers: Vec<(&str, u64, Option<u64>)> = s.layers.iter().map(|l| (l.name.as_str(), l.params, l.macs)).collect();
    assert_eq!(
        layers,
        [("/fc1/Gemm", 235_500, Some(235_200)), ("/fc2/Gemm", 30_100, Some(30_000)), ("/fc3/Gemm", 1_010, Some(1_000))]
    );
    assert_eq!(s.op_histogram, [("Gemm".to_string(), 3), ("Relu".to_string(), 2)]);
    assert_eq!(s.inputs[0].shape.as_deref(), Some(&["batch".to_string(), "784".to_string()][..]));
    assert_eq!(s.outputs[0].shape.as_deref(), Some(&["batch".to_string(), "10".to_string()][..]));
}

/// LeNet-5 (Caffe variant) with a PyTorch-style flatten chain: the conv and pool
/// shapes, the Shape→Gather→Unsqueeze→Concat→Reshape constant chain and the MACs.
#[test]
fn lenet5_conv_macs_through_pytorch_flatten() {
    let mut rng = Rng::new(2);
    let mut g = Graph::new("g");
    let x = g.add_input(tensor_info(
        "x",
        DataType::Float,
        &[Dim::Sym("N".into()), Dim::Known(1), Dim::Known(28), Dim::Known(28)],
    ));
    let conv = |g: &mut Graph, rng: &mut Rng, x: ValueRef, name: &str, cin: i64, cout: i64| {
        let w = g.add_weight(Tensor::from_f32(
            &format!("{name}.w"),
            &[cout, cin, 5, 5],
            &rng.vec((cout * cin * 25) as usize, 0.1),
        ));
        let b = g.add_weight(Tensor::from_f32(&format!("{name}.b"), &[cout], &rng.vec(cout as usize, 0.1)));
        let mut op = Op::new("Conv", name, 3, vec![format!("{name}_out")]);
        op.attributes = vec![attr_ints("kernel_shape", &[5, 5])];
        ValueRef(g.add_op(op, &[Some(x), Some(ValueRef(w, 0)), Some(ValueRef(b, 0))]), 0)
    };
    let pool = |g: &mut Graph, x: ValueRef, name: &str| {
        let mut op = Op::new("MaxPool", name, 1, vec![format!("{name}_out")]);
        op.attributes = vec![attr_ints("kernel_shape", &[2, 2]), attr_ints("strides", &[2, 2])];
        ValueRef(g.add_op(op, &[Some(x)]), 0)
    };
    let c1 = conv(&mut g, &mut rng, ValueRef(x, 0), "conv1", 1, 20);
    let p1 = pool(&mut g, c1, "pool1");
    let c2 = conv(&mut g, &mut rng, p1, "conv2", 20, 50);
    let p2 = pool(&mut g, c2, "pool2");
    // PyTorch: x.view(x.size(0), -1)
    let shape = ValueRef(g.add_op(Op::new("Shape", "shape", 1, vec!["s".into()]), &[Some(p2)]), 0);
    let zero = g.add_weight(Tensor::from_i64("zero", &[], &[0]));
    let mut gather = Op::new("Gather", "gather", 2, vec!["n".into()]);
    gather.attributes = vec![attr_int("axis", 0)];
    let n = ValueRef(g.add_op(gather, &[Some(shape), Some(ValueRef(zero, 0))]), 0);
    let axes = g.add_weight(Tensor::from_i64("axes0", &[1], &[0]));
    let n1 =
        ValueRef(g.add_op(Op::new("Unsqueeze", "unsq", 2, vec!["n1".into()]), &[Some(n), Some(ValueRef(axes, 0))]), 0);
    let minus1 = g.add_weight(Tensor::from_i64("minus1", &[1], &[-1]));
    let mut cat = Op::new("Concat", "cat", 2, vec!["target".into()]);
    cat.attributes = vec![attr_int("axis", 0)];
    let target = ValueRef(g.add_op(cat, &[Some(n1), Some(ValueRef(minus1, 0))]), 0);
    let flat = ValueRef(g.add_op(Op::new("Reshape", "reshape", 2, vec!["flat".into()]), &[Some(p2), Some(target)]), 0);
    let fc1 = crate::util::linear(&mut g, &mut rng, flat, "fc1", 800, 500);
    let r = crate::util::relu(&mut g, fc1, "r");
    let fc2 = crate::util::linear(&mut g, &mut rng, r, "fc2", 500, 10);
    g.add_output(fc2, Default::default());
    g.verify().unwrap();
    let s = summarize(&model(g, 17));
    // 20*1*25+20 + 50*20*25+50 + 800*500+500 + 500*10+10 = 431,080 (+3 int64 shape constants, not parameters)
    assert_eq!(s.params, 431_080);
    let macs: Vec<Option<u64>> = s.layers.iter().map(|l| l.macs).collect();
    // conv1: 20*24*24*25, conv2: 50*8*8*(20*25), fc1: 800*500, fc2: 500*10
    assert_eq!(macs, [Some(288_000), Some(1_600_000), Some(400_000), Some(5_000)]);
    assert_eq!(s.macs, 2_293_000);
}

/// The PyTorch-exported fixture gives the same figures as the hand-built net,
/// for both exporters.
#[test]
fn lenet_300_100_fixture() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/models");
    for file in ["lenet-300-100.onnx", "lenet-300-100.dynamo.onnx"] {
        let m = shrink_graph::Model::load(dir.join(file)).unwrap();
        let s = summarize(&m);
        assert_eq!((s.params, s.macs, s.macs_unknown), (266_610, 266_200, 0), "{file}");
    }
    // LeNet-5: 431,080 parameters; MACs 288,000 + 1,600,000 + 400,000 + 5,000
    for file in ["lenet-5.onnx", "lenet-5.dynamo.onnx"] {
        let s = summarize(&shrink_graph::Model::load(dir.join(file)).unwrap());
        assert_eq!((s.params, s.macs, s.macs_unknown), (431_080, 2_293_000, 0), "{file}");
    }
}
