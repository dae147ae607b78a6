//! Unit tests: parameters (data-driven from `test_data/params.toml`), students built from a spec, and the loss the stage
//! actually trains with (alpha and T passed through), on tiny synthetic data.

use shrink_data::{Dataset, InMemoryDataset, Preprocess, RawArray, Values};
use shrink_graph::builder::tensor_info;
use shrink_graph::{DataType, Dim, Model, NodeKind, summarize};
use shrink_stage::{NoProgress, Stage, StageCx, StageError, StageReport};
use shrink_train::{Executor, HostTensor, Loss};

use crate::params::{DistillConfig, StudentSpec, TeacherSpec};
use crate::student::{self, Interface};
use crate::{Distill, build};

fn table(text: &str) -> toml::Table {
    text.parse::<toml::Table>().unwrap()
}

fn config(text: &str) -> Result<DistillConfig, StageError> {
    DistillConfig::from_table(&table(text))
}

#[test]
fn params_pass_alpha_and_temperature_to_the_loss() {
    let c = config("kind = 'distill'\nstudent = { mlp = [30] }\nalpha = 0.3\ntemperature = 2.5").unwrap();
    assert_eq!(c.loss(), Loss::Distill { alpha: 0.3, temperature: 2.5 });
    assert_eq!(c.teacher, TeacherSpec::Original);
    assert_eq!(c.student, StudentSpec::Mlp { hidden: vec![30] });
    let d = config("student = 'current'").unwrap();
    assert_eq!(d.loss(), Loss::Distill { alpha: 0.5, temperature: 4.0 });
    assert_eq!(d.student, StudentSpec::Current);
    let hard = config("student = { cnn = { channels = [4, 8] } }\nalpha = 0.0\nteacher = 'current'").unwrap();
    assert_eq!(hard.loss(), Loss::CrossEntropy);
    assert_eq!(hard.teacher, TeacherSpec::Current);
    assert_eq!(hard.student, StudentSpec::Cnn { channels: vec![4, 8], fc: vec![] });
    let f = config("student = 's.onnx'\nteacher = 't.onnx'\n[finetune]\nepochs = 3").unwrap();
    assert_eq!(f.student, StudentSpec::File("s.onnx".into()));
    assert_eq!(f.teacher, TeacherSpec::File("t.onnx".into()));
    assert_eq!(f.finetune.epochs, 3);
}

#[derive(Debug, serde::Deserialize)]
struct Cases {
    case: Vec<Case>,
}

#[derive(Debug, serde::Deserialize)]
struct Case {
    params: toml::Table,
    expect: String,
}

/// Every case of `test_data/params.toml`: built fine, or an error naming the key.
#[test]
fn params_cases() {
    let cases: Cases = toml::from_str(include_str!("../test_data/params.toml")).unwrap();
    for c in &cases.case {
        match (build(&c.params), c.expect.as_str()) {
            (Ok(_), "ok") => {}
            (Ok(_), want) => panic!("{:?}: built fine, expected an error containing {want:?}", c.params),
            (Err(e), want) => {
                let e = e.to_string();
                assert!(want != "ok" && e.contains(want), "{:?}: {e:?} does not contain {want:?}", c.params);
            }
        }
    }
}

fn iface(sample: &[usize], classes: usize) -> Interface {
    let mut shape = vec![Dim::Sym("batch".into())];
    shape.extend(sample.iter().map(|&d| Dim::Known(d as u64)));
    Interface {
        input: tensor_info("input", DataType::Float, &shape),
        output: tensor_info("logits", DataType::Float, &[Dim::Sym("batch".into()), Dim::Known(classes as u64)]),
        sample_shape: sample.to_vec(),
        classes,
    }
}

fn like() -> Model {
    let mut meta = shrink_graph::onnx::ModelProto { ir_version: 8, ..Default::default() };
    meta.opset_import.push(shrink_graph::onnx::OperatorSetIdProto { domain: String::new(), version: 17 });
    Model { meta, graph: shrink_graph::Graph::new("like"), source: None }
}

fn names(m: &Model) -> (Vec<String>, Vec<String>) {
    let g = &m.graph;
    let name = |id| match g.node(id) {
        NodeKind::Input(i) | NodeKind::Output(i) => i.name.clone(),
        _ => String::new(),
    };
    (g.real_inputs().map(name).collect(), g.outputs().iter().map(|&id| name(id)).collect())
}

#[test]
fn built_students_have_the_spec_size_and_run() {
    let mlp = StudentSpec::Mlp { hidden: vec![300, 30] };
    let m = student::build(&mlp, &iface(&[784], 10), &like(), 1).unwrap();
    assert_eq!(summarize(&m).params, (784 * 300 + 300 + 300 * 30 + 30 + 30 * 10 + 10) as u64);
    assert_eq!(names(&m), (vec!["input".to_string()], vec!["logits".to_string()]));
    let cnn = StudentSpec::Cnn { channels: vec![8, 16], fc: vec![32] };
    let c = student::build(&cnn, &iface(&[1, 28, 28], 10), &like(), 1).unwrap();
    let want = 8 * 9 + 8 + 16 * 8 * 9 + 16 + 16 * 7 * 7 * 32 + 32 + 32 * 10 + 10;
    assert_eq!(summarize(&c).params, want as u64);
    let exec = Executor::new(&c).unwrap();
    let out = exec.forward(&[HostTensor::new(vec![0.5; 2 * 784], vec![2, 1, 28, 28])]).unwrap();
    assert_eq!(out[0].dims, vec![2, 10]);
    // an image MLP flattens first
    let f = student::build(&StudentSpec::Mlp { hidden: vec![] }, &iface(&[1, 4, 4], 3), &like(), 1).unwrap();
    let out = Executor::new(&f).unwrap().forward(&[HostTensor::new(vec![1.0; 16], vec![1, 1, 4, 4])]).unwrap();
    assert_eq!(out[0].dims, vec![1, 3]);
    // too many pooling blocks for the input is an error naming the key
    let deep = StudentSpec::Cnn { channels: vec![2, 2, 2], fc: vec![] };
    let err = student::build(&deep, &iface(&[1, 4, 4], 3), &like(), 1).unwrap_err().to_string();
    assert!(err.contains("student.cnn.channels"), "{err}");
    let err = student::build(&StudentSpec::Cnn { channels: vec![2], fc: vec![] }, &iface(&[16], 3), &like(), 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[C, H, W]"), "{err}");
}

#[test]
fn initialisation_is_seeded_kaiming_uniform() {
    let spec = StudentSpec::Mlp { hidden: vec![64] };
    let weights = |seed| {
        let m = student::build(&spec, &iface(&[100], 10), &like(), seed).unwrap();
        let g = &m.graph;
        let w = g.initializers().iter().find_map(|&id| match g.node(id) {
            NodeKind::Weight(w) if w.tensor.name() == "fc0.weight" => Some(w.tensor.to_f32().unwrap()),
            _ => None,
        });
        w.unwrap()
    };
    let (a, b, c) = (weights(1), weights(1), weights(2));
    assert_eq!(a, b);
    assert_ne!(a, c);
    // U(-1/sqrt(100), 1/sqrt(100)): bounded, mean ~0, variance bound^2 / 3
    let bound = 0.1f32;
    assert!(a.iter().all(|w| w.abs() <= bound));
    let n = a.len() as f64;
    let mean = a.iter().map(|&w| w as f64).sum::<f64>() / n;
    let var = a.iter().map(|&w| (w as f64 - mean).powi(2)).sum::<f64>() / n;
    assert!(mean.abs() < 0.003, "{mean}");
    assert!((var / (0.01 / 3.0) - 1.0).abs() < 0.05, "{var}");
}

/// 24 samples of 4 features, 3 classes.
fn tiny_data() -> InMemoryDataset {
    let mut rng = shrink_data::SplitMix64::new(9);
    let x: Vec<f32> = (0..24 * 4).map(|_| (rng.below(1000) as f32 / 500.0) - 1.0).collect();
    let y: Vec<i64> = (0..24).map(|i| i % 3).collect();
    InMemoryDataset::new(
        RawArray { origin: "x".into(), shape: vec![24, 4], values: Values::F32(x) },
        RawArray { origin: "y".into(), shape: vec![24], values: Values::I64(y) },
        Some(3),
        &Preprocess::default(),
    )
    .unwrap()
}

fn run_stage(text: &str, model: &mut Model, data: &dyn Dataset, seed: u64) -> StageReport {
    let original = model.clone();
    let mut progress = NoProgress;
    let mut cx = StageCx {
        pipeline: "test".into(),
        index: 0,
        train: Some(data),
        test: None,
        original: &original,
        seed,
        progress: &mut progress,
        scratch: std::env::temp_dir(),
        output_dir: std::env::temp_dir(),
        encoded: Default::default(),
    };
    Distill::from_table(&table(text)).unwrap().run(model, &mut cx).unwrap()
}

fn softmax(x: &[f64]) -> Vec<f64> {
    let m = x.iter().cloned().fold(f64::MIN, f64::max);
    let e: Vec<f64> = x.iter().map(|v| (v - m).exp()).collect();
    let z: f64 = e.iter().sum();
    e.into_iter().map(|v| v / z).collect()
}

/// The stage's first training step (one batch holding all 24 samples, no
/// update yet) has the loss alpha · T² · KL + (1 − alpha) · CE computed by
/// hand from the teacher's and the freshly built student's logits: the
/// stage passes alpha and T through, and builds the student it says it does.
#[test]
fn the_stage_trains_with_its_alpha_and_temperature() {
    let data = tiny_data();
    let teacher = student::build(&StudentSpec::Mlp { hidden: vec![8] }, &iface(&[4], 3), &like(), 7).unwrap();
    let student = student::build(&StudentSpec::Mlp { hidden: vec![5] }, &iface(&[4], 3), &like(), 3).unwrap();
    let batch = data.batch(&(0..24).collect::<Vec<_>>()).unwrap();
    let input = [HostTensor::new(batch.inputs.clone(), batch.shape.clone())];
    let t = Executor::new(&teacher).unwrap().forward(&input).unwrap().remove(0).data;
    let s = Executor::new(&student).unwrap().forward(&input).unwrap().remove(0).data;
    for (alpha, temp) in [(0.7f64, 3.0f64), (0.3, 1.0), (1.0, 8.0), (0.0, 2.0)] {
        let (mut kl, mut ce) = (0f64, 0f64);
        for i in 0..24 {
            let sr: Vec<f64> = s[i * 3..i * 3 + 3].iter().map(|&v| v as f64).collect();
            let tr: Vec<f64> = t[i * 3..i * 3 + 3].iter().map(|&v| v as f64).collect();
            let p = softmax(&tr.iter().map(|v| v / temp).collect::<Vec<_>>());
            let q = softmax(&sr.iter().map(|v| v / temp).collect::<Vec<_>>());
            kl += (0..3).map(|k| p[k] * (p[k] / q[k]).ln()).sum::<f64>();
            ce -= softmax(&sr)[batch.labels[i] as usize].ln();
        }
        let want = alpha * temp * temp * kl / 24.0 + (1.0 - alpha) * ce / 24.0;
        let mut model = teacher.clone();
        let text = format!(
            "teacher = 'current'\nstudent = {{ mlp = [5] }}\ninit_seed = 3\nalpha = {alpha}\ntemperature = {temp}\n\
             [finetune]\nbatch_size = 32\nvalidation = 0\nmax_steps = 1\nlr = 0.01"
        );
        let rep = run_stage(&text, &mut model, &data, 5);
        let got = rep.figures["first_step_loss"];
        assert!((got - want).abs() < 1e-4 * want.max(1.0), "alpha {alpha} T {temp}: stage {got} vs hand {want}");
        assert!((rep.figures["alpha"] - alpha).abs() < 1e-6);
        assert!((rep.figures["temperature"] - temp).abs() < 1e-6);
        // the model is now the student: its size, the teacher's interface
        assert_eq!(summarize(&model).params, summarize(&student).params);
        assert_eq!(names(&model), names(&teacher));
    }
}

/// alpha = 1 with the student equal to the teacher: the loss (a KL of equal
/// distributions) is zero and plain SGD leaves every weight where it was;
/// alpha = 0.5 adds cross-entropy and the weights move.
#[test]
fn a_student_equal_to_its_teacher_learns_nothing_at_alpha_one() {
    let data = tiny_data();
    let teacher = student::build(&StudentSpec::Mlp { hidden: vec![8] }, &iface(&[4], 3), &like(), 7).unwrap();
    let weights = |m: &Model| {
        let g = &m.graph;
        g.initializers()
            .iter()
            .flat_map(|&id| match g.node(id) {
                NodeKind::Weight(w) => w.tensor.to_f32().unwrap(),
                _ => Vec::new(),
            })
            .collect::<Vec<f32>>()
    };
    let base = "teacher = 'current'\nstudent = 'current'\ntemperature = 2.0\n\
                [finetune]\nbatch_size = 8\nvalidation = 0\nepochs = 2\nlr = 0.1\nmomentum = 0.0";
    let mut same = teacher.clone();
    let rep = run_stage(&format!("alpha = 1.0\n{base}"), &mut same, &data, 1);
    assert!(rep.figures["first_step_loss"].abs() < 1e-6);
    let max_diff =
        |a: &Model| weights(a).iter().zip(weights(&teacher)).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    // zero up to float rounding of the KL gradient
    assert!(max_diff(&same) < 1e-6, "{}", max_diff(&same));
    let mut moved = teacher.clone();
    run_stage(&format!("alpha = 0.5\n{base}"), &mut moved, &data, 1);
    assert!(max_diff(&moved) > 1e-3, "{}", max_diff(&moved));
}
