//! Unit tests of the structured method: parameter checks, rounding of kept
//! channels, slicing, and one surgery on a small graph (checked with the
//! trainer's forward; the tract checks live in the integration tests).

use shrink_graph::builder::{attr_int, tensor_info};
use shrink_graph::groups::channel_groups;
use shrink_graph::{DataType, Dim, Graph, Op, Tensor, ValueRef};

use super::{StructuredPrune, kept_channels, remove_channels, slice_axis};

fn table(text: &str) -> toml::Table {
    text.parse().unwrap()
}

fn err(text: &str) -> String {
    StructuredPrune::from_table(&table(text)).unwrap_err().to_string()
}

#[test]
fn params() {
    let s = StructuredPrune::from_table(&table("kind = \"prune\"\nmethod = \"structured\"\nratio = 0.5")).unwrap();
    assert_eq!(s.params.criterion, "l1");
    assert_eq!(s.params.round_to, 1);
    assert!(s.finetune.is_none());
    let s = StructuredPrune::from_table(&table(
        "method = \"structured\"\nratio = { \"/a/*\" = 0.5, \"/a/b\" = 0.25, \"*\" = 0.1 }\n[finetune]\nepochs = 2",
    ))
    .unwrap();
    assert_eq!(s.layer_ratio("/a/b"), Some(0.25));
    assert_eq!(s.layer_ratio("/a/c"), Some(0.5));
    assert_eq!(s.layer_ratio("/z"), Some(0.1));
    assert_eq!(s.finetune.unwrap().epochs, 2);
    assert!(err("method = \"structured\"\nratio = 0.5\ncriterion = \"l3\"").contains("`l3` is not one of l1, l2"));
    assert!(err("method = \"structured\"\nratio = 1.5").contains("parameter `ratio`: 1.5 is not in [0, 1)"));
    assert!(err("method = \"structured\"\nratio = 0.5\nsparsity = 0.5").contains("unknown field `sparsity`"));
    assert!(err("method = \"structured\"\nratio = 0.5\n[finetune]\nepoch = 1").contains("finetune"));
    let s = StructuredPrune::from_table(&table(
        "method = \"structured\"\nratio = 0.5\ndistill = { temperature = 3.0 }\n[finetune]\nepochs = 1",
    ))
    .unwrap();
    assert_eq!(s.params.distill.map(|d| (d.alpha, d.temperature)), Some((0.5, 3.0)));
    assert!(
        err("method = \"structured\"\nratio = 0.5\ndistill = { alpha = 0.5 }")
            .contains("parameter `distill`: needs `finetune`")
    );
    assert!(
        err("method = \"structured\"\nratio = 0.5\ndistill = { alpha = 2.0 }\n[finetune]\nepochs = 1")
            .contains("parameter `distill.alpha`: 2 is not in [0, 1]")
    );
}

#[test]
fn rounding_never_reaches_zero() {
    assert_eq!(kept_channels(24, 0.5, 1), 12);
    assert_eq!(kept_channels(24, 0.5, 8), 16); // 12 rounds half up to 16
    assert_eq!(kept_channels(24, 0.7, 8), 8);
    assert_eq!(kept_channels(64, 0.7, 8), 16); // 19.2 → 19 → 16
    assert_eq!(kept_channels(10, 0.99, 8), 8);
    assert_eq!(kept_channels(6, 0.9, 8), 6); // fewer than round_to: left alone
    assert_eq!(kept_channels(5, 0.99, 1), 1);
    assert_eq!(kept_channels(5, 0.0, 4), 4); // rounding may remove a few
}

#[test]
fn slicing() {
    // [2, 3] keep columns 0 and 2; rows 1
    let d = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    assert_eq!(slice_axis(&d, &[2, 3], 1, &[0, 2]), [1.0, 3.0, 4.0, 6.0]);
    assert_eq!(slice_axis(&d, &[2, 3], 0, &[1]), [4.0, 5.0, 6.0]);
}

/// conv(3→4) → relu → conv(4→2): removing channels 1 and 3 slices the first
/// conv's weight rows and bias and the second conv's input channels.
#[test]
fn surgery_slices_producer_and_consumer() {
    let mut g = Graph::new("g");
    let d = [Dim::Sym("N".into()), Dim::Known(3), Dim::Known(2), Dim::Known(2)];
    let x = ValueRef(g.add_input(tensor_info("x", DataType::Float, &d)), 0);
    let w1: Vec<f32> = (0..12).map(|i| i as f32).collect();
    let w1 = ValueRef(g.add_weight(Tensor::from_f32("w1", &[4, 3, 1, 1], &w1)), 0);
    let b1 = ValueRef(g.add_weight(Tensor::from_f32("b1", &[4], &[0.0, 1.0, 2.0, 3.0])), 0);
    let w2: Vec<f32> = (0..8).map(|i| i as f32).collect();
    let w2 = ValueRef(g.add_weight(Tensor::from_f32("w2", &[2, 4, 1, 1], &w2)), 0);
    let mut c1 = Op::new("Conv", "c1", 3, vec!["y1".into()]);
    c1.attributes = vec![attr_int("group", 1)];
    let c1 = g.add_op(c1, &[Some(x), Some(w1), Some(b1)]);
    let r = g.add_op(Op::new("Relu", "r", 1, vec!["r".into()]), &[Some(ValueRef(c1, 0))]);
    let c2 = g.add_op(Op::new("Conv", "c2", 2, vec!["y2".into()]), &[Some(ValueRef(r, 0)), Some(w2)]);
    g.add_output(ValueRef(c2, 0), Default::default());
    let a = channel_groups(&g);
    let grp = a.prunable().next().unwrap().1.clone();
    assert_eq!(grp.channels(), 4);
    let drop = [grp.classes[1], grp.classes[3]];
    let n = remove_channels(&mut g, &a, &|c| !drop.contains(&c), 13).unwrap();
    assert_eq!(n, 3);
    g.verify().unwrap();
    let w = |name: &str| {
        g.weights().find(|(_, t)| t.name() == name).map(|(_, t)| (t.dims().to_vec(), t.to_f32().unwrap())).unwrap()
    };
    assert_eq!(w("w1"), (vec![2, 3, 1, 1], vec![0.0, 1.0, 2.0, 6.0, 7.0, 8.0]));
    assert_eq!(w("b1"), (vec![2], vec![0.0, 2.0]));
    assert_eq!(w("w2"), (vec![2, 2, 1, 1], vec![0.0, 2.0, 4.0, 6.0]));
}
