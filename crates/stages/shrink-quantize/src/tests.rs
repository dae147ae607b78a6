//! Unit tests: parameter errors (data-driven from `test_data/params.toml`),
//! the 1-D k-means, the quantise → dequantise error bound (proptest), and
//! each method on a small two-layer graph. Running the results in tract is
//! done in the integration tests (`tests/it/quantize.rs`).

use std::collections::BTreeSet;

use proptest::prelude::*;
use shrink_data::{InMemoryDataset, Preprocess, RawArray, Values};
use shrink_graph::builder::{attr_int, tensor_info};
use shrink_graph::onnx::{ModelProto, OperatorSetIdProto};
use shrink_graph::{DataType, Dim, Graph, Model, Op, Tensor, ValueRef};
use shrink_stage::{NoProgress, StageCx, StageReport};

use crate::common::{Channels, QParams, binarize, code_range};
use crate::kmeans::kmeans_1d;
use crate::{Init, build};

/// A tiny deterministic generator in [-0.5, 0.5).
fn rnd(seed: &mut u64) -> f32 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    (*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
}

/// `x[?, 8] -> Gemm(fc1, transB = 1, W 6x8, bias) -> Relu -> Gemm(fc2, transB = 0, W 6x4) -> y`.
/// Every third weight of fc1 is zero (pruned).
fn mlp() -> Model {
    let mut s = 0x9e37_79b9_u64;
    let mut g = Graph::new("g");
    let x = g.add_input(tensor_info("x", DataType::Float, &[Dim::Sym("batch".into()), Dim::Known(8)]));
    let w1: Vec<f32> = (0..48).map(|i| if i % 3 == 0 { 0.0 } else { rnd(&mut s) }).collect();
    let w1 = g.add_weight(Tensor::from_f32("fc1.weight", &[6, 8], &w1));
    let b1 = g.add_weight(Tensor::from_f32("fc1.bias", &[6], &(0..6).map(|_| rnd(&mut s)).collect::<Vec<_>>()));
    let mut op = Op::new("Gemm", "fc1", 3, vec!["h".into()]);
    op.attributes.push(attr_int("transB", 1));
    let fc1 = g.add_op(op, &[Some(ValueRef(x, 0)), Some(ValueRef(w1, 0)), Some(ValueRef(b1, 0))]);
    let relu = g.add_op(Op::new("Relu", "relu", 1, vec!["r".into()]), &[Some(ValueRef(fc1, 0))]);
    let w2: Vec<f32> = (0..24).map(|_| 2.0 * rnd(&mut s)).collect();
    let w2 = g.add_weight(Tensor::from_f32("fc2.weight", &[6, 4], &w2));
    let fc2 = g.add_op(Op::new("Gemm", "fc2", 2, vec!["y".into()]), &[Some(ValueRef(relu, 0)), Some(ValueRef(w2, 0))]);
    g.add_output(ValueRef(fc2, 0), tensor_info("", DataType::Float, &[Dim::Sym("batch".into()), Dim::Known(4)]));
    let meta = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
        ..Default::default()
    };
    Model { meta, graph: g, source: None }
}

/// 64 samples of 8 features, labels 0..4.
fn data() -> InMemoryDataset {
    let mut s = 7u64;
    let x: Vec<f32> = (0..64 * 8).map(|_| rnd(&mut s) * 2.0).collect();
    let y: Vec<u8> = (0..64).map(|i| (i % 4) as u8).collect();
    let img = RawArray { origin: "x".into(), shape: vec![64, 8], values: Values::F32(x) };
    let lab = RawArray { origin: "y".into(), shape: vec![64], values: Values::U8(y) };
    InMemoryDataset::new(img, lab, Some(4), &Preprocess { scale: false, ..Preprocess::default() }).unwrap()
}

fn table(text: &str) -> toml::Table {
    text.parse().unwrap()
}

fn run(model: &mut Model, params: &str, train: Option<&InMemoryDataset>) -> StageReport {
    let stage = build(&table(params)).unwrap();
    let original = model.clone();
    let mut progress = NoProgress;
    let mut cx = StageCx {
        pipeline: "test".into(),
        index: 0,
        train: train.map(|d| d as &dyn shrink_data::Dataset),
        test: None,
        original: &original,
        seed: 3,
        progress: &mut progress,
        scratch: std::env::temp_dir(),
        output_dir: std::env::temp_dir(),
        encoded: Default::default(),
    };
    let report = stage.run(model, &mut cx).unwrap();
    model.graph.verify().unwrap();
    report
}

fn weight(m: &Model, name: &str) -> Vec<f32> {
    m.graph.weight(m.graph.find_value(name).unwrap()).unwrap().to_f32().unwrap()
}

fn distinct(v: &[f32]) -> BTreeSet<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

// ---- parameters ---------------------------------------------------------------------

/// Every case of `test_data/params.toml`: a stage table and the error it gives (or "ok").
#[test]
fn parameter_cases() {
    let text = include_str!("../test_data/params.toml");
    let cases: toml::Table = text.parse().unwrap();
    let cases = cases["case"].as_array().unwrap();
    assert!(cases.len() >= 8);
    for c in cases {
        let c = c.as_table().unwrap();
        let params = c["params"].as_table().unwrap();
        let want = c["expect"].as_str().unwrap();
        let got = match build(params) {
            Ok(_) => "ok".to_string(),
            Err(e) => e.to_string(),
        };
        assert!(got.contains(want), "params {params:?}: expected `{want}`, got `{got}`");
    }
}

// ---- 1-D k-means ---------------------------------------------------------------------

#[test]
fn kmeans_finds_separated_clusters_exactly() {
    let values = [1.0, 1.2, 0.8, 5.0, 5.5, 4.5, -3.0, -3.0, -3.3, -2.7];
    // (random init may end in a local minimum: checked for nearest-centroid assignment below)
    for init in [Init::Linear, Init::Density] {
        let c = kmeans_1d(&values, 3, init, 1, 100);
        assert_eq!(c.centroids, vec![-3.0, 1.0, 5.0], "{init:?}");
        let got: Vec<f32> = c.assignment.iter().map(|&a| c.centroids[a as usize]).collect();
        assert_eq!(got, [1.0, 1.0, 1.0, 5.0, 5.0, 5.0, -3.0, -3.0, -3.0, -3.0], "{init:?}");
    }
}

#[test]
fn kmeans_with_few_distinct_values_keeps_them_exactly() {
    let values = [0.25f32, -0.5, 0.25, 0.75, -0.5];
    let c = kmeans_1d(&values, 32, Init::Linear, 0, 100);
    assert_eq!(c.centroids, vec![-0.5, 0.25, 0.75]);
    for (&v, &a) in values.iter().zip(&c.assignment) {
        assert_eq!(c.centroids[a as usize], v);
    }
}

#[test]
fn kmeans_assigns_each_value_to_its_nearest_centroid() {
    let mut s = 11u64;
    let values: Vec<f32> = (0..5000).map(|_| rnd(&mut s) * rnd(&mut s) * 4.0).collect();
    for init in [Init::Linear, Init::Density, Init::Random] {
        let c = kmeans_1d(&values, 16, init, 5, 1000);
        assert!(c.centroids.len() <= 16 && c.centroids.len() >= 8, "{init:?}: {}", c.centroids.len());
        assert!(c.centroids.windows(2).all(|w| w[0] < w[1]));
        for (&v, &a) in values.iter().zip(&c.assignment) {
            let d = (v - c.centroids[a as usize]).abs();
            let best = c.centroids.iter().map(|&x| (v - x).abs()).fold(f32::INFINITY, f32::min);
            assert!(d <= best + 1e-6, "{init:?}: {v} -> {} (nearest at distance {best})", c.centroids[a as usize]);
        }
    }
}

// ---- uniform quantisation ------------------------------------------------------------

proptest! {
    /// |w - dequant(quant(w))| ≤ scale / 2 (plus f32 rounding of the product),
    /// symmetric and affine, per tensor and per channel, 2 to 8 bits.
    #[test]
    fn quantise_dequantise_error_is_at_most_half_a_step(
        w in prop::collection::vec(-10.0f32..10.0, 1..200),
        bits in 2u32..=8,
        symmetric in any::<bool>(),
        per_channel in any::<bool>(),
        rows in 1usize..5,
    ) {
        let cols = w.len().div_ceil(rows);
        let mut w = w;
        w.resize(rows * cols, 0.25);
        let ch = if per_channel { Channels::new(&[rows, cols], 0) } else { Channels::whole() };
        let p = QParams::compute(&w, bits, symmetric, ch);
        let q = p.quantize(&w);
        let (qmin, qmax) = code_range(bits, symmetric);
        prop_assert!(q.iter().all(|&v| (qmin..=qmax).contains(&v)));
        prop_assert!(p.zero_point.iter().all(|&z| (qmin..=qmax).contains(&z)));
        let d = p.dequantize(&q);
        for (i, (&a, &b)) in w.iter().zip(&d).enumerate() {
            let s = p.scale[ch.of(i)];
            prop_assert!((a - b).abs() <= s / 2.0 + 1e-6 * a.abs().max(s), "w {a} -> {b}, scale {s}");
        }
        // zero is always exact
        let zq = p.quantize(&vec![0.0; w.len()]);
        prop_assert!(p.dequantize(&zq).iter().all(|&z| z == 0.0));
    }
}

#[test]
fn per_channel_axis_follows_the_layout() {
    // [2, 3] with channels on axis 1: columns
    let ch = Channels::new(&[2, 3], 1);
    assert_eq!((0..6).map(|i| ch.of(i)).collect::<Vec<_>>(), [0, 1, 2, 0, 1, 2]);
    let ch = Channels::new(&[2, 3], 0);
    assert_eq!((0..6).map(|i| ch.of(i)).collect::<Vec<_>>(), [0, 0, 0, 1, 1, 1]);
    let b = binarize(&[1.0, -3.0, 0.5, -2.0, 0.0, -1.0], Channels::new(&[2, 3], 0));
    assert_eq!(b, [1.5, -1.5, 1.5, -1.0, 1.0, -1.0]);
}

#[test]
fn linear_inserts_dequantize_linear_with_int8_codes() {
    let mut m = mlp();
    let w2 = weight(&m, "fc2.weight");
    let report = run(&mut m, "method = 'linear'\nbits = 4\nsymmetric = false", None);
    assert_eq!(report.figures["layers_quantized"], 2.0);
    assert!(m.graph.find_value("fc2.weight").is_none());
    let dq: Vec<_> =
        m.graph.ops().into_iter().filter_map(|n| m.graph.op(n)).filter(|o| o.op_type == "DequantizeLinear").collect();
    assert_eq!(dq.len(), 2);
    // fc2 is Gemm transB = 0: [K, N] weights, channels on axis 1
    let fc2 = dq.iter().find(|o| o.name.starts_with("fc2")).unwrap();
    assert_eq!(fc2.attr_int("axis"), Some(1));
    let q = m.graph.weight(m.graph.find_value("fc2.weight_quantized").unwrap()).unwrap();
    assert_eq!(q.dtype(), DataType::Int8);
    let s = weight(&m, "fc2.weight_scale");
    assert_eq!(s.len(), 4);
    let zp = m.graph.weight(m.graph.find_value("fc2.weight_zero_point").unwrap()).unwrap();
    let codes: Vec<i32> = q.proto.raw_data.iter().map(|&b| b as i8 as i32).collect();
    let zps: Vec<i32> = zp.proto.raw_data.iter().map(|&b| b as i8 as i32).collect();
    assert!(codes.iter().all(|c| (-8..=7).contains(c)));
    for (i, (&c, &w)) in codes.iter().zip(&w2).enumerate() {
        let deq = (c - zps[i % 4]) as f32 * s[i % 4];
        assert!((deq - w).abs() <= s[i % 4] / 2.0 + 1e-6, "{i}: {w} -> {deq}");
    }
    let note = &report.layers[1];
    assert!(note.figures["max_abs_error"] <= note.figures["max_scale"] / 2.0 + 1e-6);
    assert!(note.figures["rel_l2_error"] > 0.0 && note.figures["rel_l2_error"] < 0.2);
    // the model still serialises and reloads
    Model::from_bytes(&m.to_bytes()).unwrap().graph.verify().unwrap();
}

#[test]
fn linear_qat_trains_and_keeps_zeros() {
    let mut m = mlp();
    let d = data();
    run(
        &mut m,
        "method = 'linear'\nbits = 3\nlayers = ['fc1']\n[finetune]\nmax_steps = 4\nvalidation = 0\nbatch_size = 16",
        Some(&d),
    );
    let q = m.graph.weight(m.graph.find_value("fc1.weight_quantized").unwrap()).unwrap();
    let codes: Vec<i8> = q.proto.raw_data.iter().map(|&b| b as i8).collect();
    assert!(codes.iter().all(|c| (-3..=3).contains(c)));
    for (i, c) in codes.iter().enumerate() {
        if i % 3 == 0 {
            assert_eq!(*c, 0, "pruned entry {i} got a non-zero code");
        }
    }
    assert!(m.graph.find_value("fc2.weight").is_some(), "fc2 was not selected");
}

// ---- k-means -------------------------------------------------------------------------

/// Every weight of each layer is one of its ≤ 2^bits centroids and the zeros stayed zero.
fn check_shared(before: &Model, after: &Model, name: &str, bits: u32) {
    let (w0, w1) = (weight(before, name), weight(after, name));
    let centroids: BTreeSet<u32> = w1.iter().filter(|&&x| x != 0.0).map(|x| x.to_bits()).collect();
    assert!(centroids.len() <= 1 << bits, "{name}: {} distinct values for {bits} bits", centroids.len());
    for (a, b) in w0.iter().zip(&w1) {
        assert_eq!(*a == 0.0, *b == 0.0, "{name}: zero pattern changed ({a} -> {b})");
    }
}

#[test]
fn kmeans_shares_weights_and_keeps_zeros() {
    let before = mlp();
    let mut m = before.clone();
    let report = run(&mut m, "method = 'kmeans'\nbits = 2\nlayer_bits = { 'fc2*' = 3 }", None);
    check_shared(&before, &m, "fc1.weight", 2);
    check_shared(&before, &m, "fc2.weight", 3);
    assert_eq!(distinct(&weight(&m, "fc1.weight")).len(), 5, "4 centroids + zero");
    assert_eq!(report.layers[0].figures["centroids"], 4.0);
    assert_eq!(report.layers[1].figures["bits"], 3.0);
    assert_eq!(weight(&m, "fc1.bias"), weight(&before, "fc1.bias"));
}

#[test]
fn kmeans_finetune_moves_only_the_centroids() {
    let before = mlp();
    let mut clustered = before.clone();
    run(&mut clustered, "method = 'kmeans'\nbits = 2", None);
    let mut tuned = before.clone();
    let d = data();
    let report = run(
        &mut tuned,
        "method = 'kmeans'\nbits = 2\n[finetune]\nepochs = 2\nmax_steps = 8\nvalidation = 0\nbatch_size = 16\nlr = 0.1",
        Some(&d),
    );
    assert_eq!(report.figures["finetune_steps"], 8.0);
    for name in ["fc1.weight", "fc2.weight"] {
        check_shared(&before, &tuned, name, 2);
        let (c, t) = (weight(&clustered, name), weight(&tuned, name));
        assert_ne!(c, t, "{name}: centroids did not move");
        // same clusters: equal before fine-tuning means equal after
        for i in 0..c.len() {
            for j in 0..c.len() {
                assert_eq!(c[i] == c[j], t[i] == t[j], "{name}: clusters {i}, {j} changed");
            }
        }
    }
    assert_eq!(weight(&tuned, "fc1.bias"), weight(&before, "fc1.bias"), "frozen bias moved");
}

// ---- binary --------------------------------------------------------------------------

#[test]
fn binary_gives_plus_minus_alpha_per_channel() {
    let before = mlp();
    let mut m = before.clone();
    let report = run(&mut m, "method = 'binary'\nkeep_float = ['last']", None);
    let w = weight(&m, "fc1.weight");
    for row in w.chunks(8) {
        let alphas = distinct(&row.iter().map(|x| x.abs()).collect::<Vec<_>>());
        assert_eq!(alphas.len(), 1, "one |α| per output channel: {row:?}");
    }
    assert_eq!(weight(&m, "fc2.weight"), weight(&before, "fc2.weight"), "last layer must stay float");
    assert_eq!(report.figures["layers_binarized"], 1.0);
    // 48 weights at 1 bit + 6 f32 alphas, the rest (6 + 24 floats) at 4 bytes
    assert_eq!(report.figures["binary_storage_bytes"], (6 + 6 * 4 + 30 * 4) as f64);
}

#[test]
fn binary_training_keeps_the_form() {
    let mut m = mlp();
    let d = data();
    run(
        &mut m,
        "method = 'binary'\nkeep_float = ['fc2']\n[finetune]\nmax_steps = 4\nvalidation = 0\nbatch_size = 16\noptimizer = 'adam'\nlr = 0.01",
        Some(&d),
    );
    for row in weight(&m, "fc1.weight").chunks(8) {
        assert_eq!(distinct(&row.iter().map(|x| x.abs()).collect::<Vec<_>>()).len(), 1);
    }
}

#[test]
fn finetune_without_training_data_names_the_key() {
    let stage = build(&table("method = 'binary'\nkeep_float = ['last']\n[finetune]\nepochs = 1")).unwrap();
    let mut m = mlp();
    let original = m.clone();
    let mut progress = NoProgress;
    let mut cx = StageCx {
        pipeline: "test".into(),
        index: 0,
        train: None,
        test: None,
        original: &original,
        seed: 0,
        progress: &mut progress,
        scratch: std::env::temp_dir(),
        output_dir: std::env::temp_dir(),
        encoded: Default::default(),
    };
    let err = stage.run(&mut m, &mut cx).unwrap_err().to_string();
    assert!(err.contains("data.train"), "{err}");
}

#[test]
fn kmeans_gather_export_has_a_codebook_and_byte_indices() {
    let before = mlp();
    let mut dense = before.clone();
    run(&mut dense, "method = 'kmeans'\nbits = 2", None);
    let mut m = before.clone();
    run(&mut m, "method = 'kmeans'\nbits = 2\nexport = 'gather'", None);
    assert!(m.graph.find_value("fc1.weight").is_none());
    let idx = m.graph.weight(m.graph.find_value("fc1.weight_indices").unwrap()).unwrap();
    assert_eq!(idx.dtype(), DataType::Uint8);
    assert_eq!(idx.dims(), [6, 8]);
    let book = weight(&m, "fc1.weight_codebook");
    assert_eq!(book.len(), 5, "0.0 for the pruned entries + 4 centroids");
    assert_eq!(book[0], 0.0);
    // codebook[indices] is the dense export, value for value
    let got: Vec<f32> = idx.proto.raw_data.iter().map(|&i| book[i as usize]).collect();
    assert_eq!(got, weight(&dense, "fc1.weight"));
    let book2 = weight(&m, "fc2.weight_codebook");
    assert_eq!(book2.len(), 4, "fc2 has no zeros: no 0.0 entry");
    let ops: Vec<String> = m.graph.ops().into_iter().filter_map(|n| m.graph.op(n)).map(|o| o.op_type.clone()).collect();
    assert_eq!(ops.iter().filter(|o| *o == "Gather").count(), 2);
    assert_eq!(ops.iter().filter(|o| *o == "Cast").count(), 2);
}
