//! Unit tests: the policy and its calibration on synthetic outcomes, the
//! parameters, and the graph surgery on convnet-mix (tract runs the result in
//! tests/it/early_exit.rs).

use std::path::{Path, PathBuf};

use shrink_data::SplitMix64;
use shrink_graph::{Model, NodeKind};

use crate::EarlyExit;
use crate::graph;
use crate::policy::{Policy, SampleOutcome, calibrate, evaluate};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../fixtures/models").join(name)
}

fn table(text: &str) -> toml::Table {
    toml::from_str(text).unwrap()
}

#[test]
fn scores() {
    let uniform = [0.0f32; 10];
    assert!((Policy::MaxProb.score(&uniform) - 0.1).abs() < 1e-12);
    assert!((Policy::Entropy.score(&uniform) - 10f64.ln()).abs() < 1e-12);
    let sharp = [20.0f32, 0.0, 0.0];
    assert!(Policy::MaxProb.score(&sharp) > 0.999_999);
    assert!(Policy::Entropy.score(&sharp) < 1e-6);
    assert!(Policy::MaxProb.exits(&sharp, 0.99) && !Policy::MaxProb.exits(&uniform, 0.99));
    assert!(Policy::Entropy.exits(&sharp, 0.01) && !Policy::Entropy.exits(&uniform, 0.01));
    for p in [Policy::MaxProb, Policy::Entropy] {
        assert!(!p.exits(&sharp, p.never()), "{p:?}: `never` lets a sample out");
    }
}

/// Synthetic: exit 0 is right exactly when confident (score >= 0.95); the final
/// exit is always right. Calibration must exit early only the confident ones.
#[test]
fn calibration_keeps_the_accuracy_and_cuts_the_cost() {
    let mut rng = SplitMix64::new(3);
    let samples: Vec<SampleOutcome> = (0..2000)
        .map(|_| {
            let s = 0.5 + (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 0.5;
            SampleOutcome { scores: vec![s], correct: vec![s >= 0.95, true] }
        })
        .collect();
    let costs = [0.2, 1.0];
    let cal = calibrate(Policy::MaxProb, &samples, &costs, 0.0);
    assert_eq!(cal.final_accuracy, 1.0);
    assert_eq!(cal.chosen.accuracy, 1.0);
    assert_eq!(cal.chosen.thresholds, vec![0.95]);
    let frac = samples.iter().filter(|s| s.scores[0] >= 0.95).count() as f64 / 2000.0;
    assert!((cal.chosen.exit_fractions[0] - frac).abs() < 1e-12);
    assert!((cal.chosen.mean_cost - (0.2 * frac + (1.0 - frac))).abs() < 1e-12);
    // a looser target allows a looser threshold and a lower cost
    let loose = calibrate(Policy::MaxProb, &samples, &costs, 0.05);
    assert!(loose.chosen.accuracy >= 0.95 && loose.chosen.mean_cost < cal.chosen.mean_cost);
    // the curve has one point per grid threshold and ends at "never" (cost 1)
    assert_eq!(cal.curve.len(), Policy::MaxProb.grid().len());
    assert_eq!(cal.curve.last().unwrap().mean_cost, 1.0);
    let never = evaluate(Policy::MaxProb, &samples, &[Policy::MaxProb.never()], &costs);
    assert_eq!(never.exit_fractions, vec![0.0, 1.0]);
}

#[test]
fn parameters_are_checked() {
    assert!(EarlyExit::from_table(&table("")).is_ok());
    let e = EarlyExit::from_table(&table("train = \"joint\"")).unwrap_err().to_string();
    assert!(e.contains("not available"), "{e}");
    let e = EarlyExit::from_table(&table("policy = \"margin\"")).unwrap_err().to_string();
    assert!(e.contains("policy"), "{e}");
    let e = EarlyExit::from_table(&table("exits = \"all\"")).unwrap_err().to_string();
    assert!(e.contains("exits"), "{e}");
    let e = EarlyExit::from_table(&table("head = { pool = \"median\" }")).unwrap_err().to_string();
    assert!(e.contains("head.pool"), "{e}");
    let e = EarlyExit::from_table(&table("head = { hidden = [32, 16] }")).unwrap_err().to_string();
    assert!(e.contains("hidden"), "{e}");
    let e = EarlyExit::from_table(&table("thresholds = 1")).unwrap_err().to_string();
    assert!(e.contains("thresholds"), "{e}");
}

#[test]
fn auto_exits_on_convnet_mix_are_cuts_where_the_size_changes() {
    let model = Model::load(fixture("convnet-mix.onnx")).unwrap();
    let exits = graph::auto_exits(&model).unwrap();
    let names: Vec<&str> = exits.iter().map(|&v| model.graph.value_name(v)).collect();
    assert_eq!(names, ["/stem/stem.2/Relu_output_0", "/residual/relu/Relu_output_0"]);
    // inside the residual block (the Add's input from conv2's BN, beside the skip) is not a cut
    let g = &model.graph;
    let add = g.ops().into_iter().find(|&n| g.op(n).unwrap().op_type == "Add").unwrap();
    let inside = [0, 1]
        .into_iter()
        .filter_map(|i| g.input(add, i))
        .find(|v| g.op(v.0).is_some_and(|o| o.op_type == "BatchNormalization"))
        .unwrap();
    assert!(graph::not_a_cut(g, inside).is_some(), "{}", g.value_name(inside));
    let names: Vec<String> = vec![g.value_name(inside).to_string()];
    let e = graph::named_exits(g, &names).unwrap_err().to_string();
    assert!(e.contains("cannot be an exit"), "{e}");
    // out of order
    let rev: Vec<String> = exits.iter().rev().map(|&v| g.value_name(v).to_string()).collect();
    assert!(graph::named_exits(g, &rev).unwrap_err().to_string().contains("backbone order"));
}

#[test]
fn segments_chain_and_heads_have_the_planned_shape() {
    let model = Model::load(fixture("convnet-mix.onnx")).unwrap();
    let exits = graph::auto_exits(&model).unwrap();
    let shapes = graph::sample_shapes(&model.graph);
    let (_, final_out) = graph::io(&model.graph).unwrap();
    let batch = graph::batch_dim(&model.graph);
    let mut multi = model.clone();
    let mut rng = SplitMix64::new(1);
    let head = crate::params::HeadParams { pool: "gap".into(), kernel: 2, hidden: vec![16] };
    let heads: Vec<graph::Head> = exits
        .iter()
        .enumerate()
        .map(|(k, &e)| graph::add_head(&mut multi.graph, k, e, &shapes[&e], &head, 10, &mut rng).unwrap())
        .collect();
    assert_eq!(heads[0].weights.len(), 4, "two Gemm layers: weight and bias each");
    let info = |m: &Model, v| graph::float_info(m.graph.value_name(v), &batch, &[10]);
    let mut outs = vec![(final_out, info(&multi, final_out))];
    outs.extend(heads.iter().map(|h| (h.logits, info(&multi, h.logits))));
    graph::set_outputs(&mut multi.graph, &outs);
    multi.graph.verify().unwrap();
    let after = graph::sample_shapes(&multi.graph);
    for h in &heads {
        assert_eq!(after[&h.logits], vec![10]);
    }
    // segment 1: takes exit 0, gives head 1 and exit 1
    let e0 = exits[0];
    let e1 = exits[1];
    let seg = graph::segment(
        &multi,
        Some((e0, &shapes[&e0])),
        &[
            (heads[1].logits, info(&multi, heads[1].logits)),
            (e1, graph::float_info(multi.graph.value_name(e1), &batch, &shapes[&e1])),
        ],
    )
    .unwrap();
    let inputs: Vec<_> = seg.graph.real_inputs().collect();
    assert_eq!(inputs.len(), 1);
    let NodeKind::Input(vi) = seg.graph.node(inputs[0]) else { panic!("not an input") };
    assert_eq!(vi.name, "/stem/stem.2/Relu_output_0");
    assert_eq!(seg.graph.outputs().len(), 2);
    // its MACs: the residual block's two convs plus the head
    let macs = shrink_graph::summarize(&seg).macs;
    assert_eq!(macs, 2 * 1_016_064 + 24 * 16 + 16 * 10);
}

/// `avg` / `max` heads pool `kernel` x `kernel` before the one linear layer:
/// on convnet-mix's stem exit (24x28x28) a 2x2 pool leaves 24x14x14 inputs to
/// the head's Gemm, a quarter of `flatten`'s; a kernel larger than the maps is
/// refused naming `head.kernel`.
#[test]
fn pooled_heads_shrink_the_head_and_check_the_kernel() {
    let model = Model::load(fixture("convnet-mix.onnx")).unwrap();
    let exits = graph::auto_exits(&model).unwrap();
    let shapes = graph::sample_shapes(&model.graph);
    let e0 = exits[0];
    assert_eq!(shapes[&e0], vec![24, 28, 28]);
    let in_features = |pool: &str, kernel: usize| {
        let mut g = model.graph.clone();
        let head = crate::params::HeadParams { pool: pool.into(), kernel, hidden: vec![] };
        let h = graph::add_head(&mut g, 0, e0, &shapes[&e0], &head, 10, &mut SplitMix64::new(1)).unwrap();
        assert_eq!(h.weights.len(), 2, "{pool}: one Gemm, weight and bias");
        let w = g.find_value(&h.weights[0]).and_then(|v| g.weight(v)).unwrap();
        assert_eq!(graph::sample_shapes(&g)[&h.logits], vec![10], "{pool}");
        w.dims()[1]
    };
    assert_eq!(in_features("flatten", 2), 24 * 28 * 28);
    assert_eq!(in_features("avg", 2), 24 * 14 * 14);
    assert_eq!(in_features("max", 2), 24 * 14 * 14);
    assert_eq!(in_features("max", 4), 24 * 7 * 7);
    let mut g = model.graph.clone();
    let head = crate::params::HeadParams { pool: "max".into(), kernel: 29, hidden: vec![] };
    let e = graph::add_head(&mut g, 0, e0, &shapes[&e0], &head, 10, &mut SplitMix64::new(1)).unwrap_err().to_string();
    assert!(e.contains("head.kernel") && e.contains("28x28"), "{e}");
    let flat = [24 * 28 * 28];
    let head = crate::params::HeadParams { pool: "avg".into(), kernel: 2, hidden: vec![] };
    let e = graph::add_head(&mut g, 0, e0, &flat, &head, 10, &mut SplitMix64::new(1)).unwrap_err().to_string();
    assert!(e.contains("head.pool") && e.contains("[C, H, W]"), "{e}");
    let e = EarlyExit::from_table(&table("head = { pool = \"max\", kernel = 0 }")).unwrap_err().to_string();
    assert!(e.contains("head.kernel"), "{e}");
}
