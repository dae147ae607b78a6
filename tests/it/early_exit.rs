//! The `early-exit` stage against tract: the segmented runtime predicts what
//! the multi-output model predicts under the same policy (1,000 MNIST test
//! samples), output 0 is still the original classifier, and the thresholds
//! come from samples held out of the training split (never the test split).

use std::path::{Path, PathBuf};

use shrink_data::{Dataset, InMemoryDataset, Layout, Preprocess, Split};
use shrink_early_exit::{EarlyExit, Manifest};
use shrink_graph::Model;
use shrink_stage::{NoProgress, Stage, StageCx};
use shrink_verify::{Segmented, Tensor, run_onnx};

use crate::util::root;

fn fixtures() -> PathBuf {
    root().join("fixtures")
}

fn mnist(split: Split) -> InMemoryDataset {
    let pre = Preprocess { layout: Layout::for_sample(&[1, 28, 28]), ..Preprocess::default() };
    let dirs = shrink_data::DataDirs { data_dir: Some(fixtures().join("data")), cache_dir: None };
    shrink_data::load_builtin_from(&dirs, "mnist", split, &pre).unwrap()
}

fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold(0, |b, (i, &x)| if x > row[b] { i } else { b })
}

/// Runs the stage on convnet-mix (max-pool heads, as shipped) with a few
/// training steps (head quality does not matter here: agreement and
/// provenance do).
fn run_stage(out: &Path, train: &InMemoryDataset, test: &InMemoryDataset) -> (Model, Model, Manifest) {
    let original = Model::load(fixtures().join("models/convnet-mix.onnx")).unwrap();
    let table: toml::Table = toml::from_str(
        r#"
        exits = "auto"
        calibration = 1000
        head = { pool = "max", kernel = 2 }   # the shipped pipeline's head
        [finetune]
        max_steps = 15
        batch_size = 64
        optimizer = "adam"
        lr = 0.002
        validation = 0
        "#,
    )
    .unwrap();
    let stage = EarlyExit::from_table(&table).unwrap();
    let mut model = original.clone();
    let mut progress = NoProgress;
    let mut cx = StageCx {
        pipeline: "test".into(),
        index: 0,
        train: Some(train),
        test: Some(test),
        original: &original,
        seed: 11,
        progress: &mut progress,
        scratch: out.join("scratch"),
        output_dir: out.to_path_buf(),
        encoded: Default::default(),
    };
    let report = stage.run(&mut model, &mut cx).unwrap();
    model.graph.verify().unwrap();
    assert!(report.files.iter().any(|f| f.ends_with("early-exit.toml")), "{:?}", report.files);
    let manifest = Manifest::load(&out.join("early-exit")).unwrap();
    (original, model, manifest)
}

fn segmented(dir: &Path, m: &Manifest) -> Segmented {
    let models: Vec<Model> = m.segments.iter().map(|s| Model::load(dir.join(&s.file)).unwrap()).collect();
    let named: Vec<(&str, &Model)> = m.segments.iter().map(|s| s.file.as_str()).zip(&models).collect();
    Segmented::new(&named).unwrap()
}

#[test]
fn segmented_runtime_agrees_with_multi_output_model_and_calibration_uses_train() {
    let tmp = tempfile::tempdir().unwrap();
    let train = mnist(Split::Train);
    let test = mnist(Split::Test);
    let (original, multi, m) = run_stage(tmp.path(), &train, &test);
    let dir = tmp.path().join("early-exit");
    let k = m.segments.len();
    assert!(k >= 2, "auto found {} exits", k - 1);
    assert_eq!(multi.graph.outputs().len(), k, "final classifier + one output per head");
    let th = m.thresholds();
    let mut seg = segmented(&dir, &m);

    // 1,000 test samples: multi-output model in tract (batches of 100) vs the segmented runtime
    let multi_bytes = multi.to_bytes();
    let orig_bytes = original.to_bytes();
    let (mut agree, mut exits_agree, mut max0) = (0usize, 0usize, 0f32);
    let mut hist = vec![0usize; k];
    for start in (0..1000).step_by(100) {
        let idx: Vec<usize> = (start..start + 100).collect();
        let b = test.batch(&idx).unwrap();
        let x = Tensor::from_shape(&b.shape, &b.inputs).unwrap();
        let outs = run_onnx(&multi_bytes, std::slice::from_ref(&x)).unwrap();
        let orig = run_onnx(&orig_bytes, &[x]).unwrap();
        assert_eq!(outs.len(), k);
        let rows: Vec<Vec<f32>> =
            outs.iter().map(|t| t.to_plain_array_view::<f32>().unwrap().iter().copied().collect()).collect();
        let o: Vec<f32> = orig[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect();
        for (a, w) in rows[0].iter().zip(&o) {
            max0 = max0.max((a - w).abs());
        }
        let c = m.classes;
        for i in 0..100 {
            // output 0 is the final classifier, output 1 + j head j
            let logits = |e: usize| {
                let o = if e + 1 == k { 0 } else { e + 1 };
                &rows[o][i * c..(i + 1) * c]
            };
            let want_exit = (0..k - 1).find(|&e| m.policy.exits(logits(e), th[e])).unwrap_or(k - 1);
            let want = argmax(logits(want_exit));
            let sample = &b.inputs[i * 784..(i + 1) * 784];
            let got = seg.run(sample, &mut |e, l| m.policy.exits(l, th[e])).unwrap();
            hist[got.exit] += 1;
            exits_agree += usize::from(got.exit == want_exit);
            agree += usize::from(got.argmax() == want);
        }
    }
    eprintln!(
        "exits {hist:?}; exit agreement {exits_agree}/1000, prediction agreement {agree}/1000; output 0 max diff {max0:e}"
    );
    assert_eq!(agree, 1000, "segmented predictions differ from the multi-output model's");
    assert_eq!(exits_agree, 1000);
    assert!(max0 <= 1e-5, "output 0 is no longer the original classifier: {max0}");
    assert!(hist[0] > 0, "no sample left at the first exit: {hist:?}");

    // the input normalisation `shrink infer` must apply is the training data's (here: /255 only)
    let pre = m.preprocess.as_ref().expect("the manifest records the input normalisation");
    assert!(pre.scale);
    assert_eq!((pre.mean.as_slice(), pre.std.as_slice()), (&[0.0f32][..], &[1.0f32][..]));

    // calibration: held out of the training split, and the recorded accuracy is reproduced there
    let c = &m.calibration;
    assert_eq!(c.split, "train");
    assert_eq!(c.train_samples, train.len());
    assert_ne!(c.train_samples, test.len());
    let text = std::fs::read_to_string(dir.join(&c.indices)).unwrap();
    let idx: Vec<usize> = text.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(idx.len(), c.samples);
    let mut sorted = idx.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), idx.len(), "calibration indices repeat");
    assert!(idx.iter().all(|&i| i < train.len()));
    let mut correct = 0usize;
    for &i in &idx {
        let b = train.batch(&[i]).unwrap();
        let r = seg.run(&b.inputs, &mut |e, l| m.policy.exits(l, th[e])).unwrap();
        correct += usize::from(r.argmax() == b.labels[0] as usize);
    }
    let acc = correct as f64 / idx.len() as f64;
    eprintln!("policy accuracy on the calibration indices: tract {acc}, recorded {}", c.policy_accuracy);
    // one sample of slack: burn and tract may differ in the last bits at a threshold
    assert!((acc - c.policy_accuracy).abs() <= 1.0 / idx.len() as f64 + 1e-12);
}

/// `shrink infer` feeds the segments what the stage trained on: the
/// normalisation recorded in the manifest. With a mean/std far from the
/// model's own (convnet-mix takes plain [0, 1] pixels), the full model's
/// accuracy on the first 200 test images differs from the unnormalised one,
/// and infer's must match the normalised one computed here in tract.
#[test]
fn shrink_infer_applies_the_recorded_input_normalisation() {
    let tmp = tempfile::tempdir().unwrap();
    let norm = Preprocess { mean: vec![0.5], std: vec![0.25], ..Preprocess::default() };
    let (mut train, mut test) = (mnist(Split::Train), mnist(Split::Test));
    train.set_preprocess(&norm).unwrap();
    test.set_preprocess(&norm).unwrap();
    let (original, _, m) = run_stage(tmp.path(), &train, &test);
    let pre = m.preprocess.as_ref().unwrap();
    assert_eq!((pre.scale, pre.mean.as_slice(), pre.std.as_slice()), (true, &[0.5f32][..], &[0.25f32][..]));

    let n = 200;
    let accuracy = |d: &InMemoryDataset| {
        let b = d.batch(&(0..n).collect::<Vec<_>>()).unwrap();
        let x = Tensor::from_shape(&b.shape, &b.inputs).unwrap();
        let out = run_onnx(&original.to_bytes(), &[x]).unwrap();
        let logits: Vec<f32> = out[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect();
        let hits = (0..n).filter(|&i| argmax(&logits[i * 10..(i + 1) * 10]) == b.labels[i] as usize).count();
        hits as f64 / n as f64
    };
    let (normalised, plain) = (accuracy(&test), accuracy(&mnist(Split::Test)));
    assert!((normalised - plain).abs() >= 0.05, "the normalisation must matter here: {normalised} vs {plain}");

    let json = tmp.path().join("infer.json");
    let infer = |repeat: &str| {
        std::process::Command::new(crate::util::shrink_bin())
            .current_dir(root())
            .args(["infer", tmp.path().join("early-exit").to_str().unwrap(), "--data", "mnist", "--limit", "200"])
            .args(["--repeat", repeat])
            .arg("--json")
            .arg(&json)
            .output()
            .unwrap()
    };
    let bad = infer("0");
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("--repeat") && err.contains("0"), "{err}");
    let out = infer("2");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["samples"], n);
    assert_eq!(r["repeat"], 2);
    assert_eq!(r["full_accuracy"].as_f64().unwrap(), normalised, "infer's full model saw other inputs");
    assert_eq!(r["mean"], serde_json::json!([0.5]));
}
