//! Unit tests of `method = "magnitude"`: parameter errors (data-driven from
//! `test_data/magnitude_params.toml`), mask selection (per layer, global,
//! ties, masks only grow), schedules, and a one-shot run on the
//! LeNet-300-100 fixture.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use shrink_graph::Model;
use shrink_stage::{NoProgress, Stage, StageCx, StageReport};

use crate::schedule::Schedule;
use crate::{build, prune_count, prune_to_ratio, select_keep, select_keep_global};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../fixtures/models").join(name)
}

fn run_stage(stage: &dyn Stage, model: &mut Model) -> Result<StageReport, shrink_stage::StageError> {
    let original = model.clone();
    let mut progress = NoProgress;
    let mut cx = StageCx {
        pipeline: "test".into(),
        index: 0,
        train: None,
        test: None,
        original: &original,
        seed: 1,
        progress: &mut progress,
        scratch: std::env::temp_dir(),
        output_dir: std::env::temp_dir(),
        encoded: Default::default(),
    };
    stage.run(model, &mut cx)
}

#[derive(Deserialize)]
struct Cases {
    case: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    params: toml::Table,
    expect: String,
    #[serde(default)]
    run: bool,
}

/// Every case of `test_data/magnitude_params.toml`.
#[test]
fn params_cases() {
    let cases: Cases = toml::from_str(include_str!("../test_data/magnitude_params.toml")).unwrap();
    let model = Model::load(fixture("lenet-300-100.onnx")).unwrap();
    for c in &cases.case {
        let got = build(&c.params)
            .and_then(|s| if c.run { run_stage(s.as_ref(), &mut model.clone()).map(|_| s) } else { Ok(s) });
        match (&got, c.expect.as_str()) {
            (Ok(_), "ok") => {}
            (Ok(_), want) => panic!("{:?}: built fine, expected error containing {want:?}", c.params),
            (Err(e), want) => {
                assert!(want != "ok" && e.to_string().contains(want), "{:?}: got {e}, expected {want:?}", c.params)
            }
        }
    }
    assert!(cases.case.len() >= 20);
}

#[test]
fn per_layer_counts_and_ties() {
    // ties: all equal magnitudes → lowest indices go first, signs ignored
    let a = [1.0f32, -1.0, 1.0, -1.0, 1.0, 1.0, -1.0, 1.0, 1.0, 1.0];
    let keep = select_keep(&[&a], &[None], &[4]);
    assert_eq!(keep[0], [false, false, false, false, true, true, true, true, true, true]);
    // exact counts per layer, whatever the scale of each layer
    let big: Vec<f32> = (0..100).map(|i| 10.0 + i as f32).collect();
    let small: Vec<f32> = (0..50).map(|i| 0.01 * (50 - i) as f32).collect();
    let keep = select_keep(&[&big, &small], &[None, None], &[prune_count(0.92, 100), prune_count(0.5, 50)]);
    assert_eq!(keep[0].iter().filter(|&&k| !k).count(), 92);
    assert_eq!(keep[1].iter().filter(|&&k| !k).count(), 25);
    // the smallest ones: big's first 92, small's last 25
    assert!(keep[0][..92].iter().all(|&k| !k) && keep[0][92..].iter().all(|&k| k));
    assert!(keep[1][..25].iter().all(|&k| k) && keep[1][25..].iter().all(|&k| !k));
}

#[test]
fn global_threshold_ranks_all_layers_together() {
    let big: Vec<f32> = (0..100).map(|i| 10.0 + i as f32).collect();
    let small: Vec<f32> = (0..50).map(|i| -0.01 * (1 + i) as f32).collect();
    // 60 of 150: the 50 small ones, then the 10 smallest big ones
    let keep = select_keep_global(&[&big, &small], &[None, None], 60);
    assert!(keep[1].iter().all(|&k| !k));
    assert_eq!(keep[0].iter().filter(|&&k| !k).count(), 10);
    assert!(keep[0][..10].iter().all(|&k| !k));
    // ties across layers: layer order, then position
    let a = [2.0f32; 4];
    let b = [2.0f32; 4];
    let keep = select_keep_global(&[&a, &b], &[None, None], 6);
    assert_eq!(keep[0], [false; 4]);
    assert_eq!(keep[1], [false, false, true, true]);
}

#[test]
fn masks_only_grow() {
    // step 1 prunes the 3 smallest; then "fine-tuning" makes those large and
    // others small: step 2 must keep the first three pruned and add more
    let v1 = [0.1f32, 0.2, 0.3, 5.0, 6.0, 7.0, 8.0, 9.0];
    let k1 = select_keep(&[&v1], &[None], &[3]).remove(0);
    assert_eq!(k1, [false, false, false, true, true, true, true, true]);
    let v2 = [100.0f32, 100.0, 100.0, 0.5, 0.4, 7.0, 8.0, 9.0];
    let k2 = select_keep(&[&v2], &[Some(&k1)], &[5]).remove(0);
    assert_eq!(k2, [false, false, false, false, false, true, true, true]);
    // a smaller count than already pruned prunes nothing more and unprunes nothing
    let k3 = select_keep(&[&v2], &[Some(&k2)], &[2]).remove(0);
    assert_eq!(k3, k2);
    // global: the same
    let g = select_keep_global(&[&v2, &v1], &[Some(&k2), None], 7);
    assert!(g[0][..5].iter().all(|&k| !k), "{g:?}");
    assert_eq!(g.iter().flatten().filter(|&&k| !k).count(), 7);
}

#[test]
fn prune_to_ratio_zeroes_the_smallest() {
    let mut v = [0.5f32, -3.0, 0.0, 2.0, -0.1, 1.0, 4.0, -0.2, 0.3, 5.0];
    assert_eq!(prune_to_ratio(&mut v, 0.4), 4);
    assert_eq!(v, [0.5, -3.0, 0.0, 2.0, 0.0, 1.0, 4.0, 0.0, 0.0, 5.0]);
    assert_eq!(prune_to_ratio(&mut v, 0.0), 0);
    assert_eq!(prune_count(0.925, 1000), 925);
    assert_eq!(prune_count(1.5, 10), 10);
}

#[test]
fn schedules() {
    // AGP (Zhu & Gupta): s_t = s_f + (s_i - s_f)(1 - t/n)^3
    let want = [0.5203125, 0.7875, 0.8859375, 0.9];
    for (k, w) in (1..=4).zip(want) {
        let s = Schedule::Agp.sparsity_at(0.0, 0.9, k, 4);
        assert!((s - w).abs() < 1e-12, "agp step {k}: {s} vs {w}");
    }
    let s = Schedule::Agp.sparsity_at(0.5, 0.9, 1, 2);
    assert!((s - (0.9 - 0.4 * 0.125)).abs() < 1e-12, "{s}");
    for (k, w) in (1..=5).zip([0.18, 0.36, 0.54, 0.72, 0.9]) {
        assert!((Schedule::Equal.sparsity_at(0.0, 0.9, k, 5) - w).abs() < 1e-12);
    }
    assert_eq!(Schedule::OneShot.sparsity_at(0.0, 0.9, 1, 1), 0.9);
    // an initial sparsity above a layer's target is clamped to it
    assert_eq!(Schedule::Agp.sparsity_at(0.8, 0.5, 1, 3), 0.5);
}

fn weights(m: &Model) -> Vec<(String, Vec<f32>)> {
    m.graph.weights().map(|(_, t)| (t.name().to_string(), t.to_f32().unwrap())).collect()
}

/// One-shot per-layer pruning of the fixture: exact counts per layer, biases
/// untouched, survivors unchanged, report figures consistent.
#[test]
fn one_shot_per_layer_on_lenet_300_100() {
    let mut model = Model::load(fixture("lenet-300-100.onnx")).unwrap();
    let before = weights(&model);
    let mut t = toml::Table::new();
    let sp: toml::Table = toml::from_str(
        r#""/0/*" = 0.92
"/2/*" = 0.91
"/4/*" = 0.74"#,
    )
    .unwrap();
    t.insert("sparsity".into(), toml::Value::Table(sp));
    let stage = build(&t).unwrap();
    let report = run_stage(stage.as_ref(), &mut model).unwrap();
    let after = weights(&model);
    let mut pruned_layers = 0;
    for ((name, b), (_, a)) in before.iter().zip(&after) {
        let zeros = a.iter().filter(|&&x| x == 0.0).count();
        if b.len() < 1000 {
            assert_eq!(a, b, "{name} (a bias) changed");
            continue;
        }
        let want = match b.len() {
            235200 => 0.92,
            30000 => 0.91,
            1000 => 0.74,
            n => panic!("unexpected weight {name} of {n}"),
        };
        assert_eq!(zeros, prune_count(want, b.len()), "{name}");
        // survivors are untouched and each is at least as large as every pruned one
        let min_kept = b.iter().zip(a).filter(|(_, x)| **x != 0.0).map(|(w, _)| w.abs()).fold(f32::MAX, f32::min);
        let max_pruned = b.iter().zip(a).filter(|(_, x)| **x == 0.0).map(|(w, _)| w.abs()).fold(0.0, f32::max);
        assert!(max_pruned <= min_kept, "{name}: {max_pruned} > {min_kept}");
        assert!(b.iter().zip(a).all(|(w, x)| *x == 0.0 || x == w));
        pruned_layers += 1;
    }
    assert_eq!(pruned_layers, 3);
    assert_eq!(report.layers.len(), 3);
    let nz = report.figures["nonzero_after"];
    let expect_nz = (235200 - 216384) + (30000 - 27300) + (1000 - 740) + 410;
    assert_eq!(nz as usize, expect_nz);
    assert!((report.figures["compression"] - 266610.0 / expect_nz as f64).abs() < 1e-9);
    assert_eq!(report.layers[0].figures["macs_before"], report.layers[0].figures["macs_after"]);
    assert_eq!(report.layers[0].figures["nonzero_after"], 18816.0);
}

/// A global threshold over the three layers prunes exactly the global count,
/// more from the large first layer than from the small last one.
#[test]
fn global_sparsity_on_lenet_300_100() {
    let mut model = Model::load(fixture("lenet-300-100.onnx")).unwrap();
    let t: toml::Table = toml::from_str("sparsity = 0.9\nschedule = \"equal\"\nsteps = 3").unwrap();
    let report = run_stage(build(&t).unwrap().as_ref(), &mut model).unwrap();
    assert_eq!(report.figures["pruned_layer_nonzero"] as usize, 266200 - prune_count(0.9, 266200));
    let kept: Vec<f64> = report.layers.iter().map(|l| l.figures["kept"]).collect();
    assert!(kept[0] < kept[2], "{kept:?}");
    let zeros: usize = model
        .graph
        .weights()
        .filter(|(_, t)| t.dims().len() == 2)
        .map(|(_, t)| t.to_f32().unwrap().iter().filter(|&&x| x == 0.0).count())
        .sum();
    assert_eq!(zeros, prune_count(0.9, 266200));
}
