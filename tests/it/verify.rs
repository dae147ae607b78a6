//! tract as the judge: fixture accuracy against the figures the export
//! scripts recorded, `compare` of a model with itself, shape mismatches.

use std::path::PathBuf;

use shrink_data::{InMemoryDataset, Layout, Preprocess, RawArray, Split, Values};
use shrink_graph::Model;
use shrink_verify::{CompareReport, InputSpec, Judge, LatencyConfig, VerifyError, evaluate, latency, size};

use crate::util::{lenet_300_100, root, shrink_bin};

fn fixtures() -> PathBuf {
    root().join("fixtures")
}

fn mnist_test(layout: Layout) -> InMemoryDataset {
    let pre = Preprocess { layout, ..Preprocess::default() };
    let dirs = shrink_data::DataDirs { data_dir: Some(fixtures().join("data")), cache_dir: None };
    shrink_data::load_builtin_from(&dirs, "mnist", Split::Test, &pre).unwrap()
}

/// Every fixture's tract accuracy on the 10k MNIST test images equals what
/// the export script measured with onnxruntime, within 0.05 pp (5 images).
#[test]
fn fixture_accuracy_in_tract_matches_the_recorded_figure() {
    let dir = fixtures().join("models");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        // A fixture made by shrink's own trainer (not exported by PyTorch)
        // records tract's count on its builtin dataset: check it exactly
        // when that dataset is installed (Fashion-MNIST lives in the cache).
        if let Some(want) = meta["tract_test"]["correct"].as_u64() {
            let file = dir.join(format!("{}.onnx", meta["name"].as_str().unwrap()));
            let name = meta["dataset"]["builtin"].as_str().unwrap();
            let model = Model::load(&file).unwrap();
            let mut judge = Judge::new(&file.display().to_string(), &model, &InputSpec::default()).unwrap();
            let pre = Preprocess { layout: Layout::for_sample(judge.sample_shape()), ..Preprocess::default() };
            let Ok(data) = shrink_data::load_builtin(name, Split::Test, &pre) else {
                eprintln!("skipped {}: the builtin dataset `{name}` is not installed", file.display());
                continue;
            };
            let res = evaluate(&mut [&mut judge], &data, 500, None, &mut |_, _| {}).unwrap();
            assert_eq!(res.accuracy[0].top1_correct, want, "{}", file.display());
            continue;
        }
        for export in meta["exports"].as_array().unwrap_or_else(|| panic!("{}: no exports", path.display())) {
            let file = dir.join(export["file"].as_str().unwrap());
            let want = export["onnxruntime_test"]["correct"].as_u64().unwrap();
            let model = Model::load(&file).unwrap();
            let mut judge = Judge::new(&file.display().to_string(), &model, &InputSpec::default()).unwrap();
            let layout = Layout::for_sample(judge.sample_shape());
            let data = match meta["dataset"]["name"].as_str() {
                Some("CIFAR-10") => {
                    // the normalisation of fixtures/gen/cifar.py (MEAN, STD)
                    let pre = Preprocess {
                        mean: vec![0.4914, 0.4822, 0.4465],
                        std: vec![0.2470, 0.2435, 0.2616],
                        layout,
                        ..Preprocess::default()
                    };
                    match shrink_data::load_builtin("cifar10", Split::Test, &pre) {
                        Ok(d) => d,
                        Err(e) => {
                            eprintln!("skipped {}: {e}", file.display());
                            continue;
                        }
                    }
                }
                _ => mnist_test(layout),
            };
            let res = evaluate(&mut [&mut judge], &data, 500, None, &mut |_, _| {}).unwrap();
            let got = res.accuracy[0].top1_correct;
            assert!(got.abs_diff(want) <= 5, "{}: tract {got} correct, recorded {want}", file.display());
            checked += 1;
        }
    }
    assert!(checked >= 6, "expected at least the 3 MNIST fixtures x 2 exporters, checked {checked}");
}

/// `compare` of a model with itself: same size, 100 % agreement, zero logit
/// difference, latency ratio near 1 (interleaved measurement).
#[test]
fn compare_with_itself() {
    let model = lenet_300_100(5);
    let spec = InputSpec::default();
    let mut a = Judge::new("a", &model, &spec).unwrap();
    let mut b = Judge::new("b", &model, &spec).unwrap();
    let mut rng = crate::util::Rng::new(9);
    let n = 300;
    let images = RawArray {
        origin: "random".into(),
        shape: vec![n, 784],
        values: Values::F32((0..n * 784).map(|_| rng.f32().abs()).collect()),
    };
    let labels = RawArray {
        origin: "random".into(),
        shape: vec![n],
        values: Values::I64((0..n).map(|i| (i % 10) as i64).collect()),
    };
    let pre = Preprocess { scale: false, layout: Layout::Flat, ..Preprocess::default() };
    let data = InMemoryDataset::new(images, labels, Some(10), &pre).unwrap();
    let res = evaluate(&mut [&mut a, &mut b], &data, 64, None, &mut |_, _| {}).unwrap();
    let agree = res.agreement[1].clone().unwrap();
    assert_eq!((agree.samples, agree.top1_agreement, agree.max_abs_diff), (300, 1.0, 0.0));
    assert_eq!(res.accuracy[0], res.accuracy[1]);

    let cfg = LatencyConfig { min_runs: 20, max_runs: 200, min_seconds: 0.05, max_seconds: 2.0 };
    let lat = latency::measure(&mut [&mut a, &mut b], 1, 1, &cfg).unwrap();
    assert!(lat.iter().all(|l| l.runs >= 20 && l.median_ms > 0.0 && l.p90_ms >= l.median_ms));
    let report = |name: &str, l| shrink_verify::VerifyReport {
        model: name.into(),
        input_shape: vec![1, 784],
        size: size(&model),
        accuracy: Some(res.accuracy[0].clone()),
        agreement: None,
        latency: vec![l],
        latency_skipped: Vec::new(),
    };
    let c = CompareReport::new(report("a", lat[0].clone()), report("b", lat[1].clone()));
    assert_eq!((c.ratios.onnx_bytes, c.ratios.params, c.ratios.top1_delta), (1.0, 1.0, Some(0.0)));
    let q = c.ratios.latency[0].2;
    // the same model twice: only noise separates them
    assert!((0.5..2.0).contains(&q), "latency ratio of a model with itself: {q}");
}

#[test]
fn a_dataset_that_does_not_fit_names_both_shapes() {
    let model = lenet_300_100(1);
    let mut judge = Judge::new("lenet", &model, &InputSpec::default()).unwrap();
    let data = mnist_test(Layout::Nchw); // [1, 28, 28] samples for a [batch, 784] model
    let err = evaluate(&mut [&mut judge], &data, 64, Some(10), &mut |_, _| {}).unwrap_err();
    assert!(matches!(err, VerifyError::DataShape { .. }));
    assert_eq!(err.to_string(), "model `lenet` takes input samples of shape [784], the dataset gives [1, 28, 28]");
}

#[test]
fn a_symbolic_dimension_without_a_value_is_a_clear_error() {
    use shrink_graph::builder::tensor_info;
    use shrink_graph::{DataType, Dim, Graph, Op, ValueRef};
    let mut g = Graph::new("g");
    let x = g.add_input(tensor_info("x", DataType::Float, &[Dim::Sym("N".into()), Dim::Sym("len".into())]));
    let r = g.add_op(Op::new("Relu", "r", 1, vec!["y".into()]), &[Some(ValueRef(x, 0))]);
    g.add_output(ValueRef(r, 0), Default::default());
    let model = crate::util::model(g, 17);
    let err = Judge::new("m", &model, &InputSpec::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "model `m`: input `x` has dimension `len` in shape [N, len]: fix it with --set-dim NAME=N or --input-shape"
    );
    let spec = InputSpec { dims: [("len".to_string(), 5)].into(), ..InputSpec::default() };
    let mut judge = Judge::new("m", &model, &spec).unwrap();
    let out = judge.logits(&[-1.0, 2.0, -3.0, 4.0, 0.5], 1).unwrap();
    assert_eq!(out.data, [0.0, 2.0, 0.0, 4.0, 0.5]);
}

/// The newcomer's first command, on a slice of the test set.
#[test]
fn shrink_eval_on_mnist() {
    let model = fixtures().join("models/lenet-5.onnx");
    let out = std::process::Command::new(shrink_bin())
        .args(["eval", model.to_str().unwrap(), "--data", "mnist", "--limit", "1000", "--no-latency"])
        .current_dir(fixtures().parent().unwrap())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("on mnist test"), "{stdout}");
    assert!(stdout.contains("/ 1000)"), "{stdout}");
}
