//! Unit tests: the rank policies, the parameter checks (data-driven from
//! `test_data/params.toml`), and each method on small graphs, compared with
//! the original through the trainer's forward pass (tract runs them in
//! `tests/it/lowrank.rs`).

use proptest::prelude::*;
use shrink_data::{InMemoryDataset, Preprocess, RawArray, Values};
use shrink_graph::builder::{attr_int, attr_ints, tensor_info};
use shrink_graph::onnx::{ModelProto, OperatorSetIdProto};
use shrink_graph::{DataType, Dim, Graph, Model, Op, Tensor, ValueRef};
use shrink_stage::{NoProgress, StageCx, StageReport};
use shrink_train::{Executor, HostTensor};

use crate::params::{Policy, Sigma};
use crate::svd::{choose_rank, factors, pays, rel_error, svd};
use crate::{build, params::LowRankParams};

fn rnd(seed: &mut u64) -> f32 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    (*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
}

fn meta() -> ModelProto {
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
        ..Default::default()
    }
}

/// `x[?, 20] -> Gemm(fc1, transB=1, 16x20, bias) -> Relu -> MatMul(fc2, 16x6) -> y`.
fn mlp() -> Model {
    let mut s = 11u64;
    let mut g = Graph::new("g");
    let x = g.add_input(tensor_info("x", DataType::Float, &[Dim::Sym("batch".into()), Dim::Known(20)]));
    let w1 =
        g.add_weight(Tensor::from_f32("fc1.weight", &[16, 20], &(0..320).map(|_| rnd(&mut s)).collect::<Vec<_>>()));
    let b1 = g.add_weight(Tensor::from_f32("fc1.bias", &[16], &(0..16).map(|_| rnd(&mut s)).collect::<Vec<_>>()));
    let mut op = Op::new("Gemm", "fc1", 3, vec!["h".into()]);
    op.attributes.push(attr_int("transB", 1));
    let fc1 = g.add_op(op, &[Some(ValueRef(x, 0)), Some(ValueRef(w1, 0)), Some(ValueRef(b1, 0))]);
    let relu = g.add_op(Op::new("Relu", "relu", 1, vec!["r".into()]), &[Some(ValueRef(fc1, 0))]);
    let w2 = g.add_weight(Tensor::from_f32("fc2.weight", &[16, 6], &(0..96).map(|_| rnd(&mut s)).collect::<Vec<_>>()));
    let fc2 =
        g.add_op(Op::new("MatMul", "fc2", 2, vec!["y".into()]), &[Some(ValueRef(relu, 0)), Some(ValueRef(w2, 0))]);
    g.add_output(ValueRef(fc2, 0), tensor_info("", DataType::Float, &[Dim::Sym("batch".into()), Dim::Known(6)]));
    Model { meta: meta(), graph: g, source: None }
}

/// `x[?, 3, 8, 8] -> Conv(conv, 6x3x3x3, pads 1, bias) -> y`.
fn conv() -> Model {
    let mut s = 5u64;
    let mut g = Graph::new("g");
    let x = g.add_input(tensor_info(
        "x",
        DataType::Float,
        &[Dim::Sym("batch".into()), Dim::Known(3), Dim::Known(8), Dim::Known(8)],
    ));
    let w = g.add_weight(Tensor::from_f32(
        "conv.weight",
        &[6, 3, 3, 3],
        &(0..162).map(|_| rnd(&mut s)).collect::<Vec<_>>(),
    ));
    let b = g.add_weight(Tensor::from_f32("conv.bias", &[6], &(0..6).map(|_| rnd(&mut s)).collect::<Vec<_>>()));
    let mut op = Op::new("Conv", "conv", 3, vec!["y".into()]);
    op.attributes = vec![attr_ints("kernel_shape", &[3, 3]), attr_ints("pads", &[1, 1, 1, 1])];
    let c = g.add_op(op, &[Some(ValueRef(x, 0)), Some(ValueRef(w, 0)), Some(ValueRef(b, 0))]);
    g.add_output(
        ValueRef(c, 0),
        tensor_info("", DataType::Float, &[Dim::Sym("batch".into()), Dim::Known(6), Dim::Known(8), Dim::Known(8)]),
    );
    Model { meta: meta(), graph: g, source: None }
}

fn forward(m: &Model, dims: &[usize]) -> Vec<f32> {
    let mut s = 99u64;
    let n: usize = dims.iter().product();
    let x = HostTensor::new((0..n).map(|_| rnd(&mut s) * 2.0).collect(), dims.to_vec());
    Executor::new(m).unwrap().forward(&[x]).unwrap().remove(0).data
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn run(model: &mut Model, params: &str, train: Option<&InMemoryDataset>) -> StageReport {
    let stage = build(&params.parse().unwrap()).unwrap();
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
    let r = stage.run(model, &mut cx).unwrap();
    model.graph.verify().unwrap();
    r
}

#[test]
fn rank_policies() {
    let s = [4.0, 2.0, 1.0, 0.5];
    assert_eq!(choose_rank(Policy::Rank(2), &s, 10, 8), 2);
    assert_eq!(choose_rank(Policy::Rank(99), &s, 10, 8), 4);
    // Σσ² = 21.25: 16 / 21.25 = 0.753, 20 / 21.25 = 0.941, 21 / 21.25 = 0.988
    assert_eq!(choose_rank(Policy::Energy(0.7), &s, 10, 8), 1);
    assert_eq!(choose_rank(Policy::Energy(0.95), &s, 10, 8), 3);
    assert_eq!(choose_rank(Policy::Energy(1.0), &s, 10, 8), 4);
    // 0.5 · 80 / 18 = 2.2
    assert_eq!(choose_rank(Policy::ParamsRatio(0.5), &s, 10, 8), 2);
    assert_eq!(choose_rank(Policy::ParamsRatio(0.01), &s, 10, 8), 1);
    assert!(pays(4, 10, 8) && !pays(5, 10, 8));
    assert!((rel_error(&s, 2) - (1.25f64 / 21.25).sqrt()).abs() < 1e-12);
    assert_eq!(rel_error(&s, 4), 0.0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Full-rank factors reproduce the matrix, for every placement of Σ.
    #[test]
    fn full_rank_svd_is_identity(rows in 1usize..12, cols in 1usize..12, seed in 1u64..1000, sigma in 0usize..3) {
        let mut s = seed;
        let m: Vec<f32> = (0..rows * cols).map(|_| rnd(&mut s)).collect();
        let d = svd(rows, cols, &m).unwrap();
        prop_assert!(d.s.windows(2).all(|w| w[0] >= w[1]));
        let k = d.s.len();
        let sigma = [Sigma::First, Sigma::Second, Sigma::Sqrt][sigma];
        let (f1, f2) = factors(&d, k, sigma);
        for r in 0..rows {
            for c in 0..cols {
                let v: f32 = (0..k).map(|j| f2[r * k + j] * f1[j * cols + c]).sum();
                prop_assert!((v - m[r * cols + c]).abs() < 1e-5, "({r},{c}) {v} vs {}", m[r * cols + c]);
            }
        }
    }

    /// The sign of each singular pair is fixed (the largest-|.| entry of u_j
    /// is positive), so negating the matrix negates Vᵀ and leaves U alone.
    #[test]
    fn singular_vector_signs_are_fixed(rows in 1usize..12, cols in 1usize..12, seed in 1u64..1000) {
        let mut s = seed;
        let m: Vec<f32> = (0..rows * cols).map(|_| rnd(&mut s)).collect();
        let neg: Vec<f32> = m.iter().map(|v| -v).collect();
        let (d, e) = (svd(rows, cols, &m).unwrap(), svd(rows, cols, &neg).unwrap());
        let q = d.s.len();
        // random values: distinct singular values, so each pair is unique up to sign
        prop_assume!(d.s.windows(2).all(|w| w[0] - w[1] > 1e-6 * d.s[0]) && d.s[q - 1] > 1e-6 * d.s[0]);
        for j in 0..q {
            let big = (0..rows).map(|r| d.u[(r, j)]).fold(0.0f64, |a, x| if x.abs() > a.abs() { x } else { a });
            prop_assert!(big > 0.0, "u_{j}'s largest entry {big}");
            for r in 0..rows {
                prop_assert!((d.u[(r, j)] - e.u[(r, j)]).abs() < 1e-9, "u[{r},{j}]");
            }
            for c in 0..cols {
                prop_assert!((d.vt[(j, c)] + e.vt[(j, c)]).abs() < 1e-9, "vt[{j},{c}]");
            }
        }
    }
}

#[test]
fn param_errors() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/test_data/params.toml")).unwrap();
    let cases: toml::Table = text.parse().unwrap();
    let cases = cases["case"].as_array().unwrap();
    assert!(cases.len() >= 8);
    for case in cases {
        let t = case.as_table().unwrap();
        let table: toml::Table = t["stage"].as_str().unwrap().parse().unwrap();
        let res = LowRankParams::from_table(&table);
        match t.get("error").and_then(|e| e.as_str()) {
            Some(want) => {
                let got = res.err().unwrap_or_else(|| panic!("expected an error for {table:?}")).to_string();
                assert!(got.contains(want), "{got:?} should contain {want:?}");
            }
            None => {
                res.unwrap_or_else(|e| panic!("{table:?}: {e}"));
            }
        }
    }
}

#[test]
fn svd_truncates_and_reports() {
    let mut m = mlp();
    let before = forward(&m, &[5, 20]);
    let r = run(&mut m, "rank = 4\nlayers = [\"fc1\"]", None);
    assert_eq!(r.figures["layers_factorised"], 1.0);
    let fc1 = &r.layers[0];
    assert_eq!(fc1.figures["rank"], 4.0);
    assert_eq!(fc1.figures["params_before"], 16.0 * 20.0 + 16.0);
    assert_eq!(fc1.figures["params_after"], 4.0 * 20.0 + 16.0 * 4.0 + 16.0);
    assert!(fc1.figures["rel_error"] > 0.0 && fc1.figures["rel_error"] < 1.0);
    let after = forward(&m, &[5, 20]);
    // truncated: close to, but not the same as, the original
    assert!(max_diff(&before, &after) > 1e-4);
    assert!(m.graph.find_op("fc1.lowrank").is_some());
}

#[test]
fn full_rank_factorisation_matches_in_the_trainer() {
    use crate::{Form, Method};
    for (model, dims) in [(mlp(), vec![4, 20]), (conv(), vec![2, 3, 8, 8])] {
        let before = forward(&model, &dims);
        for (method, form) in [
            (Method::Svd, Form::Output),
            (Method::Svd, Form::Input),
            (Method::Svd, Form::Tucker2),
            (Method::Spatial, Form::Output),
        ] {
            let mut m = model.clone();
            for op in m.graph.ops() {
                let Ok(c) = crate::factor::candidate(&m.graph, op, method, form) else { continue };
                if matches!(c.layout, crate::factor::Layout::ConvTucker2 { .. }) {
                    let t = crate::tucker::decompose(&c).unwrap();
                    let (q1, q2) = t.full();
                    let f = t.factors(q1, q2);
                    assert!(f.rel_error < 1e-6, "{}", f.rel_error);
                    crate::tucker::apply(&mut m.graph, &c, &f).unwrap();
                } else {
                    let d = svd(c.rows, c.cols, &c.matrix).unwrap();
                    crate::factor::apply(&mut m.graph, &c, &d, d.s.len(), Sigma::Sqrt).unwrap();
                }
            }
            m.graph.verify().unwrap();
            let after = forward(&m, &dims);
            assert!(max_diff(&before, &after) < 1e-4, "{method:?} {form:?}: {}", max_diff(&before, &after));
        }
    }
}

fn weight_dims(m: &Model, op: &str) -> Vec<i64> {
    let g = &m.graph;
    let id = g.find_op(op).unwrap_or_else(|| panic!("no op {op}"));
    g.weight(g.input(id, 1).unwrap()).unwrap().dims().to_vec()
}

#[test]
fn input_form_puts_the_pointwise_conv_first() {
    let mut m = conv();
    // conv is 6×3×3×3: M is 54 × 3, rank 2 keeps 2·(54 + 3) = 114 < 162 weights
    let r = run(&mut m, "form = \"input\"\nrank = 2", None);
    assert_eq!(r.figures["layers_factorised"], 1.0, "{}", r.summary);
    assert_eq!(weight_dims(&m, "conv.lowrank"), [2, 3, 1, 1]);
    assert_eq!(weight_dims(&m, "conv"), [6, 2, 3, 3]);
    let first = m.graph.op(m.graph.find_op("conv.lowrank").unwrap()).unwrap();
    assert_eq!(first.attr_ints("kernel_shape"), Some(&[1i64, 1][..]));
    assert_eq!(first.attr_ints("pads"), Some(&[0i64, 0, 0, 0][..]));
    assert_eq!(r.layers[0].figures["params_after"], (114 + 6) as f64);
    // 8×8 outputs: 2·3 MACs per pixel in, 6·2·9 out
    assert_eq!(r.layers[0].figures["macs_after"], (64 * (2 * 3 + 6 * 2 * 9)) as f64);
}

#[test]
fn tucker2_form_writes_three_convs() {
    let mut m = conv();
    let r = run(&mut m, "form = \"tucker2\"\nrank = 2", None);
    assert_eq!(r.figures["layers_factorised"], 1.0, "{}", r.summary);
    assert_eq!(weight_dims(&m, "conv.lowrank"), [2, 3, 1, 1]);
    assert_eq!(weight_dims(&m, "conv.lowrank_core"), [2, 2, 3, 3]);
    assert_eq!(weight_dims(&m, "conv"), [6, 2, 1, 1]);
    let l = &r.layers[0];
    assert_eq!((l.figures["rank"], l.figures["rank_out"]), (2.0, 2.0));
    // 3·2 + 2·2·9 + 2·6 weights, and the bias
    assert_eq!(l.figures["params_after"], (6 + 36 + 12 + 6) as f64);
    assert!(l.figures["rel_error"] > 0.0 && l.figures["rel_error"] < 1.0);
    // params_ratio: the largest R₁ = R₂ within the budget (0.5 · 162 = 81 ≥ 3r + 9r² + 6r → r = 2)
    let mut m = conv();
    let r = run(&mut m, "form = \"tucker2\"\nparams_ratio = 0.5", None);
    assert_eq!(r.layers[0].figures["rank"], 2.0);
}

#[test]
fn a_layer_that_would_grow_is_left_alone() {
    let mut m = mlp();
    // fc2 is 16 → 6: rank 6 needs 6·22 = 132 weights > 96
    let r = run(&mut m, "rank = 6\nlayers = [\"fc2\"]", None);
    assert_eq!(r.figures["layers_factorised"], 0.0);
    assert!(r.layers[0].note.contains("left alone"), "{}", r.layers[0].note);
    assert_eq!(m.graph.ops().len(), 3);
}

fn images() -> InMemoryDataset {
    let mut s = 17u64;
    let x: Vec<f32> = (0..32 * 3 * 64).map(|_| rnd(&mut s) * 2.0).collect();
    let y: Vec<u8> = (0..32).map(|i| (i % 4) as u8).collect();
    let img = RawArray { origin: "x".into(), shape: vec![32, 3, 8, 8], values: Values::F32(x) };
    let lab = RawArray { origin: "y".into(), shape: vec![32], values: Values::U8(y) };
    InMemoryDataset::new(img, lab, Some(4), &Preprocess { scale: false, ..Preprocess::default() }).unwrap()
}

#[test]
fn depthwise_separable_least_squares_beats_rank1() {
    let model = conv();
    let before = forward(&model, &[2, 3, 8, 8]);
    let mut plain = model.clone();
    run(&mut plain, "method = \"depthwise-separable\"", None);
    let mut fitted = model.clone();
    let r = run(&mut fitted, "method = \"depthwise-separable\"\ncalibration = 32", Some(&images()));
    assert_eq!(r.figures["layers_factorised"], 1.0);
    assert_eq!(r.layers[0].figures["params_after"], (3 * 9 + 6 * 3 + 6) as f64);
    let e_plain = max_diff(&before, &forward(&plain, &[2, 3, 8, 8]));
    let e_fit = max_diff(&before, &forward(&fitted, &[2, 3, 8, 8]));
    assert!(e_fit < e_plain, "least squares {e_fit} vs rank-1 {e_plain}");
    let dw = fitted.graph.find_op("conv.lowrank").unwrap();
    assert_eq!(fitted.graph.op(dw).unwrap().attr_int("group"), Some(3));
}
