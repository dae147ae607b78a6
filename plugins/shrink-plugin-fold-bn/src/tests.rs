//! Folding checked in tract: the MNIST fixture CNN (both exporters) and a
//! Gemm + BN case for each weight layout.

use std::path::{Path, PathBuf};

use shrink_data::{Dataset, Preprocess, Split};
use shrink_graph::builder::{attr_float, attr_int, tensor_info};
use shrink_graph::onnx::{ModelProto, OperatorSetIdProto};
use shrink_graph::{DataType, Dim, Graph, Model, Op, Tensor, ValueRef};
use shrink_plugin_sdk::ExportStage;
use shrink_verify::{InputSpec, Judge};

use crate::{FoldBatchNorm, fold_batchnorms};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn bn_count(m: &Model) -> usize {
    m.graph.ops().into_iter().filter(|&n| m.graph.op(n).is_some_and(|o| o.op_type == "BatchNormalization")).count()
}

/// Largest absolute logit difference between `a` and `b` over `inputs`.
fn max_diff(a: &Model, b: &Model, inputs: &[f32], batch: usize) -> f32 {
    let mut ja = Judge::new("before", a, &InputSpec::default()).unwrap();
    let mut jb = Judge::new("after", b, &InputSpec::default()).unwrap();
    let (la, lb) = (ja.logits(inputs, batch).unwrap(), jb.logits(inputs, batch).unwrap());
    la.data.iter().zip(&lb.data).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn convnet_mix_folds_and_agrees_in_tract() {
    let dirs = shrink_data::DataDirs { data_dir: Some(fixtures().join("data")), cache_dir: None };
    let data = shrink_data::load_builtin_from(&dirs, "mnist", Split::Test, &Preprocess::default()).unwrap();
    let indices: Vec<usize> = (0..64).collect();
    let batch = data.batch(&indices).unwrap();
    for file in ["convnet-mix.onnx", "convnet-mix.dynamo.onnx"] {
        let original = Model::load(fixtures().join("models").join(file)).unwrap();
        let bns = bn_count(&original);
        assert!(bns > 0, "{file} has no BatchNormalization");
        let mut model = original.clone();
        let report = fold_batchnorms(&mut model).unwrap();
        model.graph.verify().unwrap();
        assert_eq!(bn_count(&model), 0, "{file}: {report:?}");
        assert_eq!(report.figures["batchnorms_folded"], bns as f64, "{file}");
        assert!(report.figures["nodes_after"] < report.figures["nodes_before"], "{file}");
        let model = Model::from_bytes(&model.to_bytes()).unwrap();
        assert_eq!(model.meta.opset_import, original.meta.opset_import);
        let d = max_diff(&original, &model, &batch.inputs, batch.len());
        assert!(d <= 1e-4, "{file}: max abs diff {d}");
    }
}

/// `x -> Gemm(transB, no bias, beta) -> BN -> output`, random weights.
fn gemm_bn(trans_b: bool, beta: Option<f32>) -> Model {
    let (k, n) = (6usize, 4usize);
    let mut seed = 0x2545_f491_u64;
    let mut rnd = move |scale: f32| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
    };
    let mut g = Graph::new("g");
    let x = g.add_input(tensor_info("x", DataType::Float, &[Dim::Sym("batch".into()), Dim::Known(k as u64)]));
    let wd = if trans_b { [n as i64, k as i64] } else { [k as i64, n as i64] };
    let w = g.add_weight(Tensor::from_f32("fc.weight", &wd, &(0..k * n).map(|_| rnd(2.0)).collect::<Vec<_>>()));
    let mut op = Op::new("Gemm", "fc", 2, vec!["h".into()]);
    op.attributes.push(attr_int("transB", trans_b as i64));
    op.attributes.extend(beta.map(|b| attr_float("beta", b)));
    let gemm = g.add_op(op, &[Some(ValueRef(x, 0)), Some(ValueRef(w, 0))]);
    let mut bn_in = vec![Some(ValueRef(gemm, 0))];
    for (name, lo) in [("bn.weight", 0.5), ("bn.bias", -0.5), ("bn.running_mean", -0.5), ("bn.running_var", 0.1)] {
        let vals: Vec<f32> = (0..n).map(|_| lo + rnd(1.0).abs()).collect();
        bn_in.push(Some(ValueRef(g.add_weight(Tensor::from_f32(name, &[n as i64], &vals)), 0)));
    }
    let mut bn = Op::new("BatchNormalization", "bn", 5, vec!["y".into()]);
    bn.attributes.push(attr_float("epsilon", 1e-3));
    let bn = g.add_op(bn, &bn_in);
    g.add_output(ValueRef(bn, 0), tensor_info("", DataType::Float, &[Dim::Sym("batch".into()), Dim::Known(n as u64)]));
    let meta = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
        ..Default::default()
    };
    Model { meta, graph: g, source: None }
}

#[test]
fn gemm_layouts_fold_and_keep_the_output_name() {
    let inputs: Vec<f32> = (0..5 * 6).map(|i| ((i * 37 % 11) as f32 - 5.0) / 3.0).collect();
    for (trans_b, beta) in [(true, None), (false, Some(0.5)), (false, None)] {
        let original = gemm_bn(trans_b, beta);
        let mut model = original.clone();
        let report = fold_batchnorms(&mut model).unwrap();
        assert_eq!(report.figures["batchnorms_folded"], 1.0);
        let model = Model::from_bytes(&model.to_bytes()).unwrap();
        let proto = model.to_proto();
        let graph = proto.graph.as_ref().unwrap();
        assert_eq!(graph.node.len(), 1);
        assert_eq!(graph.output[0].name, "y");
        let names: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["fc.weight", "fc.bias"]);
        let d = max_diff(&original, &model, &inputs, 5);
        assert!(d <= 1e-4, "transB {trans_b}: max abs diff {d}");
    }
}

#[test]
fn parameters_are_refused() {
    let mut t = toml::Table::new();
    t.insert("epsilon".into(), toml::Value::Float(1.0));
    assert_eq!(
        FoldBatchNorm::from_params(&t).unwrap_err().to_string(),
        "stage `fold-batchnorm`: parameter `epsilon`: unknown parameter (fold-batchnorm takes none)"
    );
}
