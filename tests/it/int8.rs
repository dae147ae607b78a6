//! `quantize` with `method = "int8"` judged by tract: every export form on a
//! small CNN and on LeNet-5 runs and agrees with the float model; QDQ nodes
//! sit on the layer inputs and weights; `keep_float` is honoured; a golden
//! dump of each form's op sequence. With `SHRINK_SLOW_TESTS=1`:
//! `forms_side_by_side` measures accuracy on the full MNIST test set, file
//! size and tract latency (batch 1 and 64, interleaved) of every form of
//! LeNet-5 and ConvNet-mix in one run (the figures behind `form = "auto"`), and
//! of `calibration = "entropy"`, which the stage refuses (the figures behind
//! the refusal: it must still fail on convnet-mix).

use std::path::PathBuf;

use shrink_data::{Dataset, InMemoryDataset, Layout, Preprocess, Split};
use shrink_graph::builder::{attr_int, attr_ints, tensor_info};
use shrink_graph::{DataType, Dim, Graph, Model, NodeKind, Op, Tensor, ValueRef};
use shrink_quantize::int8::{Int8Params, Int8Stage};
use shrink_stage::{NoProgress, StageCx, StageReport};
use shrink_verify::{InputSpec, Judge, LatencyConfig, evaluate, latency};

use crate::util::{Rng, linear, model, relu, root, skip_unless_slow};

fn fixtures() -> PathBuf {
    root().join("fixtures")
}

fn mnist(split: Split) -> InMemoryDataset {
    let pre = Preprocess { layout: Layout::Nchw, ..Preprocess::default() };
    let dirs = shrink_data::DataDirs { data_dir: Some(fixtures().join("data")), cache_dir: None };
    shrink_data::load_builtin_from(&dirs, "mnist", split, &pre).unwrap()
}

/// Runs the stage built from `params` (TOML lines after kind/method) on a copy of `m`.
fn quantize(m: &Model, params: &str, train: &dyn Dataset) -> (Model, StageReport) {
    let table: toml::Table = toml::from_str(&format!("kind = \"quantize\"\nmethod = \"int8\"\n{params}")).unwrap();
    quantize_table(m, &table, train)
}

/// Runs the stage built from a whole `[[stage]]` table on a copy of `m`.
fn quantize_table(m: &Model, table: &toml::Table, train: &dyn Dataset) -> (Model, StageReport) {
    let stage = shrink_pipeline::builtin().build("quantize", table).unwrap();
    run_stage(m, stage.as_ref(), train)
}

/// Runs `stage` on a copy of `m`.
fn run_stage(m: &Model, stage: &dyn shrink_stage::Stage, train: &dyn Dataset) -> (Model, StageReport) {
    let mut out = m.clone();
    let mut progress = NoProgress;
    let dir = tempfile::tempdir().unwrap();
    let mut cx = StageCx {
        pipeline: "int8-test".into(),
        index: 0,
        train: Some(train),
        test: None,
        original: m,
        seed: 7,
        progress: &mut progress,
        scratch: dir.path().to_path_buf(),
        output_dir: dir.path().to_path_buf(),
        encoded: Default::default(),
    };
    let report = stage.run(&mut out, &mut cx).unwrap();
    out.graph.verify().unwrap();
    // what is saved is what tract reads
    (Model::from_bytes(&out.to_bytes()).unwrap(), report)
}

fn count(m: &Model, op_type: &str) -> usize {
    m.graph.ops().into_iter().filter(|&n| m.graph.op(n).is_some_and(|o| o.op_type == op_type)).count()
}

fn op_types(m: &Model) -> String {
    m.graph.ops().into_iter().filter_map(|n| m.graph.op(n).map(|o| o.op_type.clone())).collect::<Vec<_>>().join(" ")
}

/// Logits of the first `n` test images through tract: (top-1 agreement with
/// `a`, max |Δlogit| / max |logit of a|).
fn agreement(a: &Model, b: &Model, data: &dyn Dataset, n: usize) -> (f64, f64) {
    let mut ja = Judge::new("float", a, &InputSpec::default()).unwrap();
    let mut jb = Judge::new("int8", b, &InputSpec::default()).unwrap();
    let idx: Vec<usize> = (0..n).collect();
    let batch = data.batch(&idx).unwrap();
    let la = ja.logits(&batch.inputs, n).unwrap();
    let lb = jb.logits(&batch.inputs, n).unwrap();
    let same = (0..n).filter(|&i| la.argmax(i) == lb.argmax(i)).count();
    let scale = la.data.iter().fold(0f32, |m, x| m.max(x.abs())) as f64;
    let diff = la.data.iter().zip(&lb.data).fold(0f32, |m, (x, y)| m.max((x - y).abs())) as f64;
    (same as f64 / n as f64, diff / scale)
}

fn conv(g: &mut Graph, rng: &mut Rng, x: ValueRef, name: &str, cin: usize, cout: usize) -> ValueRef {
    let w = g.add_weight(Tensor::from_f32(
        &format!("{name}.weight"),
        &[cout as i64, cin as i64, 3, 3],
        &rng.vec(cout * cin * 9, 1.0 / (cin as f32 * 9.0).sqrt()),
    ));
    let b = g.add_weight(Tensor::from_f32(&format!("{name}.bias"), &[cout as i64], &rng.vec(cout, 0.1)));
    let mut op = Op::new("Conv", &format!("/{name}/Conv"), 3, vec![format!("/{name}/Conv_output_0")]);
    op.attributes = vec![attr_ints("kernel_shape", &[3, 3]), attr_ints("pads", &[1, 1, 1, 1])];
    ValueRef(g.add_op(op, &[Some(x), Some(ValueRef(w, 0)), Some(ValueRef(b, 0))]), 0)
}

fn pool(g: &mut Graph, x: ValueRef, name: &str) -> ValueRef {
    let mut op = Op::new("MaxPool", &format!("/{name}/MaxPool"), 1, vec![format!("/{name}/MaxPool_output_0")]);
    op.attributes = vec![attr_ints("kernel_shape", &[2, 2]), attr_ints("strides", &[2, 2])];
    ValueRef(g.add_op(op, &[Some(x)]), 0)
}

/// Conv-Relu-MaxPool x2, Flatten, Gemm-Relu-Gemm on MNIST-shaped input, random weights.
fn small_cnn() -> Model {
    let mut rng = Rng::new(11);
    let mut g = Graph::new("small");
    let x = g.add_input(tensor_info(
        "input",
        DataType::Float,
        &[Dim::Sym("batch".into()), Dim::Known(1), Dim::Known(28), Dim::Known(28)],
    ));
    let mut v = conv(&mut g, &mut rng, ValueRef(x, 0), "c1", 1, 4);
    v = relu(&mut g, v, "r1");
    v = pool(&mut g, v, "p1");
    v = conv(&mut g, &mut rng, v, "c2", 4, 8);
    v = relu(&mut g, v, "r2");
    v = pool(&mut g, v, "p2");
    let mut flat = Op::new("Flatten", "/flat/Flatten", 1, vec!["/flat/Flatten_output_0".into()]);
    flat.attributes = vec![attr_int("axis", 1)];
    v = ValueRef(g.add_op(flat, &[Some(v)]), 0);
    v = linear(&mut g, &mut rng, v, "fc1", 8 * 7 * 7, 32);
    v = relu(&mut g, v, "r3");
    v = linear(&mut g, &mut rng, v, "fc2", 32, 10);
    g.add_output(v, tensor_info("logits", DataType::Float, &[Dim::Sym("batch".into()), Dim::Known(10)]));
    model(g, 17)
}

/// The op producing input `slot` of the op named `name`.
fn producer(m: &Model, name: &str, slot: usize) -> String {
    let g = &m.graph;
    let id = g.find_op(name).unwrap_or_else(|| panic!("no op `{name}`"));
    let v = g.input(id, slot).unwrap();
    match g.node(v.0) {
        NodeKind::Op(o) => o.op_type.clone(),
        NodeKind::Weight(w) => format!("{:?} initializer", w.tensor.dtype()),
        NodeKind::Input(_) => "input".into(),
        _ => "other".into(),
    }
}

/// Tolerances, as max |Δlogit| relative to the largest float logit, and
/// top-1 agreement, per form (on the first 500 test images).
const FORMS: &[(&str, f64, f64)] =
    &[("weight-only", 0.01, 0.99), ("qdq", 0.08, 0.99), ("qlinear", 0.08, 0.99), ("dynamic", 0.02, 0.99)];

#[test]
fn every_form_of_a_small_cnn_runs_in_tract_and_agrees() {
    let train = mnist(Split::Train);
    let test = mnist(Split::Test);
    let float = small_cnn();
    for &(form, tol, agree) in FORMS {
        let (q, report) =
            quantize(&float, &format!("form = \"{form}\"\ncalibration_samples = 128\nkeep_float = []"), &train);
        assert_eq!(report.figures["layers_quantised"], 4.0, "{form}: {}", report.summary);
        let (top1, diff) = agreement(&float, &q, &test, 500);
        eprintln!("small cnn {form}: top-1 agreement {top1:.4}, max |Δ| / max |logit| {diff:.4}");
        assert!(top1 >= agree && diff <= tol, "{form}: agreement {top1}, relative logit error {diff}");
    }
}

#[test]
fn qdq_nodes_sit_on_layer_inputs_and_weights_and_keep_float_is_honoured() {
    let train = mnist(Split::Train);
    let float = small_cnn();
    let (q, report) = quantize(&float, "form = \"qdq\"\ncalibration_samples = 64\nkeep_float = [\"/fc2/*\"]", &train);
    for layer in ["/c1/Conv", "/c2/Conv", "/fc1/Gemm"] {
        assert_eq!(producer(&q, layer, 0), "DequantizeLinear", "{layer} input");
        assert_eq!(producer(&q, layer, 1), "DequantizeLinear", "{layer} weight");
        let g = &q.graph;
        let dq = g.input(g.find_op(layer).unwrap(), 0).unwrap().0;
        assert_eq!(g.op(g.input(dq, 0).unwrap().0).unwrap().op_type, "QuantizeLinear");
        let wdq = g.input(g.find_op(layer).unwrap(), 1).unwrap().0;
        assert_eq!(g.weight(g.input(wdq, 0).unwrap()).unwrap().dtype(), DataType::Int8);
    }
    // kept float: its weight is still the f32 initializer and its input is not quantised
    assert_eq!(producer(&q, "/fc2/Gemm", 1), "Float initializer");
    assert_eq!(producer(&q, "/fc2/Gemm", 0), "Relu");
    assert_eq!(count(&q, "QuantizeLinear"), 3);
    assert!(report.layers.iter().any(|l| l.layer == "/fc2/Gemm" && l.note.contains("keep_float")));
    // default keep_float: first and last layer stay float
    let (d, _) = quantize(&float, "form = \"qdq\"\ncalibration_samples = 64", &train);
    assert_eq!(producer(&d, "/c1/Conv", 1), "Float initializer");
    assert_eq!(producer(&d, "/fc2/Gemm", 1), "Float initializer");
    assert_eq!(producer(&d, "/c2/Conv", 1), "DequantizeLinear");
}

/// Bias correction moves each quantised layer's bias by the mean output
/// error of its weight quantisation, and the model still agrees with float.
#[test]
fn bias_correction_shifts_biases_and_agrees() {
    let train = mnist(Split::Train);
    let test = mnist(Split::Test);
    let float = small_cnn();
    let (q, report) = quantize(
        &float,
        "form = \"weight-only\"\ncalibration_samples = 64\nkeep_float = []\nbias_correction = true",
        &train,
    );
    for l in &report.layers {
        let shift = l.figures["bias_shift_max"];
        assert!(shift > 0.0 && shift < 0.05, "{}: bias shift {shift}", l.layer);
    }
    let (top1, diff) = agreement(&float, &q, &test, 300);
    assert!(top1 >= 0.99 && diff <= 0.01, "agreement {top1}, relative logit error {diff}");
}

/// Golden: the op sequence each form writes for the small CNN (every layer quantised).
#[test]
fn golden_op_sequence_of_each_form() {
    let train = mnist(Split::Train);
    let float = small_cnn();
    let mut dump = String::new();
    for (form, act) in
        [("weight-only", "int8"), ("qdq", "int8"), ("qlinear", "int8"), ("qlinear", "uint8"), ("dynamic", "int8")]
    {
        let params =
            format!("form = \"{form}\"\nactivation_type = \"{act}\"\ncalibration_samples = 32\nkeep_float = []");
        let (q, _) = quantize(&float, &params, &train);
        dump += &format!("{form} {act}: {}\n", op_types(&q));
    }
    expect_test::expect![[r#"
        weight-only int8: DequantizeLinear Conv Relu MaxPool DequantizeLinear Conv Relu MaxPool Flatten DequantizeLinear Gemm Relu DequantizeLinear Gemm
        qdq int8: DequantizeLinear QuantizeLinear DequantizeLinear Conv Relu MaxPool DequantizeLinear QuantizeLinear DequantizeLinear Conv Relu MaxPool Flatten DequantizeLinear QuantizeLinear DequantizeLinear Gemm Relu DequantizeLinear QuantizeLinear DequantizeLinear Gemm
        qlinear int8: QuantizeLinear QLinearConv DequantizeLinear Relu MaxPool QuantizeLinear QLinearConv DequantizeLinear Relu MaxPool Flatten QuantizeLinear QLinearMatMul DequantizeLinear Add Relu QuantizeLinear QLinearMatMul DequantizeLinear Add
        qlinear uint8: QuantizeLinear QLinearConv MaxPool QLinearConv MaxPool Flatten QLinearMatMul DequantizeLinear Add Relu QuantizeLinear QLinearMatMul DequantizeLinear Add
        dynamic int8: DynamicQuantizeLinear ConvInteger Cast Mul Mul Add Relu MaxPool DynamicQuantizeLinear ConvInteger Cast Mul Mul Add Relu MaxPool Flatten DynamicQuantizeLinear MatMulInteger Cast Mul Mul Add Relu DynamicQuantizeLinear MatMulInteger Cast Mul Mul Add
    "#]].assert_eq(&dump);
}

/// LeNet-5 (the fixture): every form runs in tract and agrees with the
/// float model on 500 test images within the tolerances of [`FORMS`].
#[test]
fn every_form_of_lenet_5_runs_in_tract_and_agrees() {
    let train = mnist(Split::Train);
    let test = mnist(Split::Test);
    let float = Model::load(fixtures().join("models/lenet-5.onnx")).unwrap();
    for &(form, tol, agree) in FORMS {
        let (q, _) = quantize(&float, &format!("form = \"{form}\"\ncalibration_samples = 128"), &train);
        let (top1, diff) = agreement(&float, &q, &test, 500);
        eprintln!("lenet-5 {form}: top-1 agreement {top1:.4}, max |Δ| / max |logit| {diff:.4}");
        assert!(top1 >= agree && diff <= tol, "{form}: agreement {top1}, relative logit error {diff}");
    }
}

/// ConvNet-mix (BatchNormalization, residual Add, depthwise, Concat): BNs
/// are folded first, and every form runs in tract and agrees with float.
#[test]
fn every_form_of_convnet_mix_folds_batchnorm_and_agrees() {
    let train = mnist(Split::Train);
    let test = mnist(Split::Test);
    let float = Model::load(fixtures().join("models/convnet-mix.onnx")).unwrap();
    for &(form, tol, agree) in FORMS {
        let (q, report) = quantize(&float, &format!("form = \"{form}\"\ncalibration_samples = 64"), &train);
        assert_eq!(count(&q, "BatchNormalization"), 0, "{form}");
        assert_eq!(report.figures["layers_quantised"], 7.0, "{form}: {}", report.summary);
        let (top1, diff) = agreement(&float, &q, &test, 300);
        let size = q.to_bytes().len() as f64 / float.to_bytes().len() as f64;
        eprintln!("convnet-mix {form}: top-1 agreement {top1:.4}, max |Δ| / max |logit| {diff:.4}, size {size:.4}x");
        assert!(top1 >= agree && diff <= tol, "{form}: agreement {top1}, relative logit error {diff}");
    }
}

/// One row of the side-by-side table.
struct Variant {
    name: String,
    model: Model,
}

/// Every form of LeNet-5 and ConvNet-mix, measured together in tract: full
/// MNIST test accuracy, file size, latency at batch 1 and 64 (1 thread,
/// interleaved). The stage table is the one of
/// `pipelines/quantize-int8-<model>.toml`, with `form` (and
/// `activation_type`) overridden per row. Prints the table; asserts the
/// done-when figures for the pipeline's own form (`auto`) and for qdq:
/// accuracy drop ≤ 0.3 pp, file ≤ 0.27x the f32 file. The `entropy (refused)`
/// rows run the calibration the stage refuses; on convnet-mix it must still
/// lose more than 5 pp (while refused, a known failure must stay one).
#[test]
fn forms_side_by_side() {
    if skip_unless_slow() {
        return;
    }
    let train = mnist(Split::Train);
    let test = mnist(Split::Test);
    // `cargo xtask bench int8-forms` sets SHRINK_BENCH_OUT and embeds this table in BENCHMARKS.md.
    let mut md = String::new();
    let mut failures = Vec::new();
    for name in ["lenet-5", "convnet-mix"] {
        let float = Model::load(fixtures().join(format!("models/{name}.onnx"))).unwrap();
        let pipeline = root().join(format!("pipelines/quantize-int8-{name}.toml"));
        let doc: toml::Table = toml::from_str(&std::fs::read_to_string(pipeline).unwrap()).unwrap();
        let stage = doc["stage"].as_array().unwrap()[0].as_table().unwrap().clone();
        let mut variants = vec![Variant { name: "f32".into(), model: float.clone() }];
        let calib = stage["calibration"].as_str().unwrap().to_string();
        for (label, form, act, calibration) in [
            ("auto", "auto", "uint8", calib.as_str()),
            ("weight-only", "weight-only", "uint8", &calib),
            ("qdq", "qdq", "uint8", &calib),
            ("qdq minmax", "qdq", "uint8", "minmax"),
            ("qdq mse", "qdq", "uint8", "mse"),
            ("qdq int8-act", "qdq", "int8", &calib),
            ("qlinear", "qlinear", "uint8", &calib),
            ("qlinear int8-act", "qlinear", "int8", &calib),
            ("dynamic", "dynamic", "uint8", &calib),
            ("qdq entropy (refused)", "qdq", "uint8", "entropy"),
            ("qdq int8-act entropy (refused)", "qdq", "int8", "entropy"),
        ] {
            let mut table = stage.clone();
            table.insert("form".into(), form.into());
            table.insert("activation_type".into(), act.into());
            table.insert("calibration".into(), calibration.into());
            let (q, report) = if calibration == "entropy" {
                // A pipeline cannot ask for it (the stage refuses it, a known failure); built
                // directly here so that its figures, which justify the refusal, are measured.
                let p: Int8Params = toml::Value::Table(table).try_into().unwrap();
                run_stage(&float, &Int8Stage { p }, &train)
            } else {
                quantize_table(&float, &table, &train)
            };
            eprintln!("{name} {label}: {}", report.summary);
            for l in &report.layers {
                eprintln!("  {}: {}", l.layer, l.note);
            }
            variants.push(Variant { name: label.into(), model: q });
        }
        let mut judges: Vec<Judge> =
            variants.iter().map(|v| Judge::new(&v.name, &v.model, &InputSpec::default()).unwrap()).collect();
        let mut refs: Vec<&mut Judge> = judges.iter_mut().collect();
        let acc = evaluate(&mut refs, &test, 64, None, &mut |_, _| {}).unwrap();
        let cfg = LatencyConfig::default();
        let lat1 = latency::measure(&mut refs, 1, 1, &cfg).unwrap();
        let lat64 = latency::measure(&mut refs, 64, 1, &cfg).unwrap();
        let f32_bytes = float.to_bytes().len() as f64;
        let f32_acc = acc.accuracy[0].top1;
        eprintln!("\n{name} (tract, MNIST test 10k, 1 thread)");
        eprintln!(
            "{:<18} {:>8} {:>9} {:>10} {:>7} {:>10} {:>10} {:>9} {:>9}",
            "form", "top-1 %", "drop pp", "bytes", "size x", "b1 ms", "b64 ms", "b1 speed", "b64 speed"
        );
        md.push_str(&format!(
            "\n{name} (tract, MNIST test 10k, 1 thread; speed = f32 median / form median, measured interleaved)\n\n\
             | form | top-1 | drop pp | bytes | size | b1 ms | b64 ms | b1 speed | b64 speed |\n\
             |---|---|---|---|---|---|---|---|---|\n"
        ));
        for (i, v) in variants.iter().enumerate() {
            let bytes = v.model.to_bytes().len() as f64;
            let a = acc.accuracy[i].top1;
            md.push_str(&format!(
                "| {} | {:.2} % | {:.2} | {} | {:.3}x | {:.4} | {:.4} | {:.2}x | {:.2}x |\n",
                v.name,
                a * 100.0,
                (f32_acc - a) * 100.0,
                bytes,
                bytes / f32_bytes,
                lat1[i].median_ms,
                lat64[i].median_ms,
                lat1[0].median_ms / lat1[i].median_ms,
                lat64[0].median_ms / lat64[i].median_ms,
            ));
            eprintln!(
                "{:<18} {:>8.2} {:>9.2} {:>10} {:>7.3} {:>10.4} {:>10.4} {:>8.2}x {:>8.2}x",
                v.name,
                a * 100.0,
                (f32_acc - a) * 100.0,
                bytes,
                bytes / f32_bytes,
                lat1[i].median_ms,
                lat64[i].median_ms,
                lat1[0].median_ms / lat1[i].median_ms,
                lat64[0].median_ms / lat64[i].median_ms,
            );
            let drop = (f32_acc - a) * 100.0;
            if v.name.contains("entropy") && name == "convnet-mix" && drop <= 5.0 {
                // the known failure must stay one while it is refused: if it no longer
                // collapses, the refusal and its doc are out of date
                failures.push(format!("{name} {}: entropy no longer collapses (drop {drop:.2} pp)", v.name));
            }
            if ["auto", "qdq"].contains(&v.name.as_str()) {
                if drop > 0.3 {
                    failures.push(format!("{name} {}: drop {drop:.2} pp > 0.3", v.name));
                }
                if bytes / f32_bytes > 0.27 {
                    failures.push(format!("{name} {}: size ratio {:.3} > 0.27", v.name, bytes / f32_bytes));
                }
            }
        }
    }
    // the table is written first, so a failing figure can be read there
    crate::util::write_bench_out("int8-forms.md", &md);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
