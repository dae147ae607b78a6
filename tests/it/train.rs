//! The trainer against tract: forward agreement on every fixture, and (with
//! `SHRINK_SLOW_TESTS=1`) training LeNet-300-100 from a random init and
//! fine-tuning under a 90 % pruning mask, judged by tract after write-back.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use shrink_data::{Dataset, Holdout, InMemoryDataset, Layout, Preprocess, Split, SplitMix64, Subset, train_val_split};
use shrink_graph::{DataType, Model, NodeKind};
use shrink_train::{Executor, FineTune, HostTensor, LrPlan, LrSchedule, NoProgress, OptimizerKind};
use shrink_verify::{InputSpec, Judge, evaluate};

use crate::util::{root, skip_unless_slow};

fn fixtures() -> PathBuf {
    root().join("fixtures")
}

fn mnist(split: Split, layout: Layout) -> InMemoryDataset {
    let pre = Preprocess { layout, ..Preprocess::default() };
    let dirs = shrink_data::DataDirs { data_dir: Some(fixtures().join("data")), cache_dir: None };
    shrink_data::load_builtin_from(&dirs, "mnist", split, &pre).unwrap()
}

/// Every fixture (3 models x 2 exporters): the trainer's forward equals
/// tract's logits on the first 1,000 MNIST test images within 1e-4.
#[test]
fn forward_agrees_with_tract_on_every_fixture() {
    let mut checked = 0;
    for name in ["lenet-300-100", "lenet-5", "convnet-mix"] {
        for suffix in [".onnx", ".dynamo.onnx"] {
            let t0 = Instant::now();
            let file = fixtures().join("models").join(format!("{name}{suffix}"));
            let model = Model::load(&file).unwrap();
            let exec = Executor::new(&model).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let mut judge = Judge::new(name, &model, &InputSpec::default()).unwrap();
            let layout = Layout::for_sample(judge.sample_shape());
            let data = mnist(Split::Test, layout);
            let mut max_diff = 0f32;
            for start in (0..1000).step_by(250) {
                let idx: Vec<usize> = (start..start + 250).collect();
                let b = data.batch(&idx).unwrap();
                let want = judge.logits(&b.inputs, 250).unwrap();
                let got = exec.forward(&[HostTensor::new(b.inputs.clone(), b.shape.clone())]).unwrap().remove(0);
                assert_eq!(got.dims, vec![250, want.classes], "{}", file.display());
                for (a, w) in got.data.iter().zip(&want.data) {
                    max_diff = max_diff.max((a - w).abs());
                }
            }
            eprintln!("{}: max |trainer - tract| = {max_diff:e} ({:.1} s)", file.display(), t0.elapsed().as_secs_f64());
            assert!(max_diff <= 1e-4, "{}: max abs diff {max_diff}", file.display());
            checked += 1;
        }
    }
    assert_eq!(checked, 6);
}

/// An op outside the trainer's set is an error at build time naming the node.
#[test]
fn unsupported_op_names_the_node() {
    let mut model = Model::load(fixtures().join("models").join("lenet-300-100.onnx")).unwrap();
    let relu = model.graph.ops().into_iter().find(|&n| model.graph.op(n).unwrap().op_type == "Relu").unwrap();
    let op = model.graph.op_mut(relu).unwrap();
    op.op_type = "Gelu".into();
    let label = op.label();
    let err = Executor::new(&model).unwrap_err().to_string();
    assert_eq!(err, format!("node `{label}`: op Gelu is not supported by the trainer"));
}

fn tract_error_rate(model: &Model) -> f64 {
    let mut judge = Judge::new("trained", model, &InputSpec::default()).unwrap();
    let data = mnist(Split::Test, Layout::Flat);
    let res = evaluate(&mut [&mut judge], &data, 500, None, &mut |_, _| {}).unwrap();
    1.0 - res.accuracy[0].top1
}

fn split(data: InMemoryDataset) -> (Subset, Subset) {
    let tv = train_val_split(data.len(), Holdout::Count(5000), 11).unwrap();
    let all: Arc<dyn Dataset> = Arc::new(data);
    (Subset::new(all.clone(), tv.train).unwrap(), Subset::new(all, tv.validation).unwrap())
}

/// From a random init (PyTorch's default uniform), LeNet-300-100 reaches at
/// most 2.5 % MNIST test error in 3 epochs, measured by tract after write-back.
#[test]
fn lenet_300_100_trains_from_scratch() {
    if skip_unless_slow() {
        return;
    }
    let mut model = Model::load(fixtures().join("models").join("lenet-300-100.onnx")).unwrap();
    let mut rng = SplitMix64::new(2024);
    for &id in model.graph.initializers().to_vec().iter() {
        let NodeKind::Weight(w) = model.graph.node_mut(id) else { continue };
        if w.tensor.dtype() != DataType::Float {
            continue;
        }
        let dims = w.tensor.dims().to_vec();
        // Bias [out] takes the fan-in of its weight [out, in]: every layer here has in = 784, 300 or 100.
        let fan_in = match dims.len() {
            2 => dims[1],
            _ => match dims[0] {
                300 => 784,
                100 => 300,
                _ => 100,
            },
        } as f32;
        let bound = 1.0 / fan_in.sqrt();
        let n = w.tensor.numel().unwrap() as usize;
        let vals: Vec<f32> =
            (0..n).map(|_| ((rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * bound).collect();
        w.tensor.set_f32(&vals).unwrap();
    }
    let before = tract_error_rate(&model);
    let mut exec = Executor::new(&model).unwrap();
    let (train, val) = split(mnist(Split::Train, Layout::Flat));
    let cfg = FineTune {
        epochs: 3,
        batch_size: 64,
        seed: 1,
        lr: LrPlan { base: 0.05, schedule: LrSchedule::Cosine { min_lr: 0.0 }, warmup_steps: 100 },
        optimizer: OptimizerKind::Sgd { momentum: 0.9, dampening: 0.0, nesterov: true, weight_decay: 5e-4 },
        ..FineTune::default()
    };
    let t0 = Instant::now();
    let report = cfg.run(&mut exec, &train, Some(&val), None, &mut NoProgress).unwrap();
    let secs = t0.elapsed().as_secs_f64();
    exec.write_back(&mut model.graph).unwrap();
    let after = tract_error_rate(&model);
    eprintln!(
        "from scratch: {} steps in {secs:.1} s, val {:?}, tract test error {:.2} % (before {:.1} %)",
        report.steps,
        report.epochs.iter().map(|e| e.val_accuracy).collect::<Vec<_>>(),
        after * 100.0,
        before * 100.0
    );
    assert!(after <= 0.025, "test error {after}");
}

/// A 90 % magnitude mask on every weight matrix keeps those weights exactly
/// zero through one epoch of fine-tuning; tract reads them as zero after write-back.
#[test]
fn mask_keeps_ninety_percent_zero_through_an_epoch() {
    if skip_unless_slow() {
        return;
    }
    let mut model = Model::load(fixtures().join("models").join("lenet-300-100.onnx")).unwrap();
    let mut exec = Executor::new(&model).unwrap();
    let mut masked = Vec::new();
    for p in exec.params() {
        if p.dims.len() != 2 {
            continue;
        }
        let w = exec.param(&p.name).unwrap().data;
        let mut mags: Vec<f32> = w.iter().map(|x| x.abs()).collect();
        mags.sort_by(f32::total_cmp);
        let cut = mags[w.len() * 9 / 10];
        let keep: Vec<bool> = w.iter().map(|x| x.abs() >= cut).collect();
        exec.set_mask(&p.name, Some(&keep)).unwrap();
        masked.push((p.name.clone(), keep));
    }
    let (train, val) = split(mnist(Split::Train, Layout::Flat));
    let cfg = FineTune {
        epochs: 1,
        lr: LrPlan::constant(0.01),
        optimizer: OptimizerKind::sgd(0.9, 5e-4),
        ..FineTune::default()
    };
    cfg.run(&mut exec, &train, Some(&val), None, &mut NoProgress).unwrap();
    exec.write_back(&mut model.graph).unwrap();
    let (mut zeros, mut total) = (0usize, 0usize);
    for (name, keep) in &masked {
        let v = model.graph.find_value(name).unwrap();
        let w = model.graph.weight(v).unwrap().to_f32().unwrap();
        assert!(w.iter().zip(keep).all(|(&x, &k)| k || x == 0.0), "{name}: a pruned weight moved");
        zeros += w.iter().filter(|&&x| x == 0.0).count();
        total += w.len();
    }
    let err = tract_error_rate(&model);
    eprintln!("masked: {:.1} % zero, tract test error {:.2} %", zeros as f64 * 100.0 / total as f64, err * 100.0);
    assert!(zeros * 10 >= total * 9);
    assert!(err < 0.05, "test error {err}");
}

/// The torchvision families (`cargo xtask fixtures --archs` exports them,
/// seeded random weights, both exporters) with `SHRINK_ARCHS_DIR` set to
/// that folder: the trainer builds each, its forward equals tract's logits on
/// two seeded random images within 1e-4 of the largest logit, and one SGD
/// step with BatchNorm in training mode gives a finite loss and moves the
/// running statistics. Skipped (with a message) without the variable: the
/// exports need PyTorch, which CI does not install.
#[test]
fn trainer_runs_every_torchvision_family() {
    let Some(dir) = std::env::var_os("SHRINK_ARCHS_DIR").map(PathBuf::from) else {
        eprintln!("skipped: set SHRINK_ARCHS_DIR to the folder `cargo xtask fixtures --archs` writes");
        return;
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    files.sort();
    assert!(files.len() >= 16, "{} holds {} models, expected the 16 exports", dir.display(), files.len());
    let mut failures = Vec::new();
    for file in &files {
        let t0 = Instant::now();
        let r = (|| -> Result<String, String> {
            let model = Model::load(file).map_err(|e| e.to_string())?;
            let mut exec = Executor::new(&model).map_err(|e| e.to_string())?;
            let mut judge = Judge::new("m", &model, &InputSpec::default()).map_err(|e| e.to_string())?;
            let sample = judge.sample_shape().to_vec();
            let n = 2;
            let len: usize = sample.iter().product();
            let mut rng = SplitMix64::new(5);
            let x: Vec<f32> = (0..n * len).map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0).collect();
            let mut dims = vec![n];
            dims.extend(&sample);
            let want = judge.logits(&x, n).map_err(|e| e.to_string())?;
            let got = exec.forward(&[HostTensor::new(x.clone(), dims.clone())]).map_err(|e| e.to_string())?.remove(0);
            if got.dims != [n, want.classes] {
                return Err(format!("trainer output dims {:?}, tract's [{n}, {}]", got.dims, want.classes));
            }
            let scale = want.data.iter().fold(1f32, |m, v| m.max(v.abs()));
            let diff = got.data.iter().zip(&want.data).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            if diff > 1e-4 * scale {
                return Err(format!("max |trainer - tract| = {diff:e} (largest logit {scale:e})"));
            }
            exec.set_batchnorm(shrink_train::BatchNormMode::Batch);
            let stats: Vec<String> =
                exec.params().into_iter().filter(|p| !p.trainable && p.dims.len() == 1).map(|p| p.name).collect();
            let before: Vec<Vec<f32>> = stats.iter().map(|s| exec.param(s).unwrap().data).collect();
            let mut opt = shrink_train::Optimizer::new(OptimizerKind::sgd(0.9, 0.0)).map_err(|e| e.to_string())?;
            let loss = exec
                .train_step(&mut opt, 1e-3, &HostTensor::new(x, dims), &[1, 7], &shrink_train::Loss::CrossEntropy, None)
                .map_err(|e| e.to_string())?;
            let moved = stats.iter().zip(&before).filter(|(s, b)| exec.param(s).unwrap().data != **b).count();
            if exec.has_batchnorm() && moved == 0 {
                return Err("a BatchNorm training step left every running statistic in place".into());
            }
            Ok(format!("max diff {diff:.1e} of {scale:.1e}, loss {loss:.3}, {moved} running stats moved"))
        })();
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        match r {
            Ok(m) => eprintln!("{name}: {m} ({:.1} s)", t0.elapsed().as_secs_f64()),
            Err(e) => {
                eprintln!("{name}: FAILED {e}");
                failures.push(format!("{name}: {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} failed:\n{}", failures.len(), files.len(), failures.join("\n"));
}

/// The CIFAR-10 fixtures (ResNet-20, MobileNetV2), both exports: the
/// trainer's forward equals tract's logits on 64 seeded random images (no
/// data needed) within 1e-4 of the largest logit, and a step with BatchNorm
/// in training mode moves the running statistics.
#[test]
fn trainer_agrees_with_tract_on_the_cifar_fixtures() {
    for (name, suffix) in
        ["resnet20-cifar", "mobilenetv2-cifar"].into_iter().flat_map(|n| [(n, ".onnx"), (n, ".dynamo.onnx")])
    {
        let file = fixtures().join("models").join(format!("{name}{suffix}"));
        let model = Model::load(&file).unwrap();
        let mut exec = Executor::new(&model).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let mut judge = Judge::new(name, &model, &InputSpec::default()).unwrap();
        assert_eq!(judge.sample_shape(), [3, 32, 32]);
        let n = 64;
        let mut rng = SplitMix64::new(11);
        let x: Vec<f32> =
            (0..n * 3 * 32 * 32).map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0).collect();
        let want = judge.logits(&x, n).unwrap();
        let input = HostTensor::new(x, vec![n, 3, 32, 32]);
        let got = exec.forward(std::slice::from_ref(&input)).unwrap().remove(0);
        let scale = want.data.iter().fold(1f32, |m, v| m.max(v.abs()));
        let diff = got.data.iter().zip(&want.data).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(diff <= 1e-4 * scale, "{}: max |trainer - tract| {diff} (largest logit {scale})", file.display());
        exec.set_batchnorm(shrink_train::BatchNormMode::Batch);
        let stat = exec.params().into_iter().find(|p| !p.trainable && p.dims.len() == 1).unwrap().name;
        let before = exec.param(&stat).unwrap().data;
        let mut opt = shrink_train::Optimizer::new(OptimizerKind::sgd(0.9, 0.0)).unwrap();
        let labels: Vec<u32> = (0..n as u32).map(|i| i % 10).collect();
        let loss = exec.train_step(&mut opt, 0.01, &input, &labels, &shrink_train::Loss::CrossEntropy, None).unwrap();
        assert!(loss.is_finite());
        assert_ne!(exec.param(&stat).unwrap().data, before, "{}: running statistics did not move", file.display());
    }
}
