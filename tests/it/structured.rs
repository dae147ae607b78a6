//! Structured (channel) pruning against tract: one small hand-built graph per
//! dependency pattern (residual add, concat, split, depthwise, flatten → gemm,
//! SE-style mul, two outputs). Each is pruned physically and compared with the
//! unpruned model in which the removed channels were zeroed (producer weights
//! and biases, BN γ and β): the outputs must agree within 1e-5. Also the group
//! partition of convnet-mix, and (with `SHRINK_SLOW_TESTS=1`) the stage on it.

use std::path::PathBuf;

use shrink_graph::builder::{attr_int, attr_ints, tensor_info};
use shrink_graph::groups::{ChannelGroups, Rewrite, channel_groups};
use shrink_graph::{DataType, Dim, Graph, Model, NodeKind, Op, Tensor, ValueRef, summarize};
use shrink_prune::structured::remove_channels;
use shrink_verify::run_onnx;

use crate::util::{Rng, linear, model, relu, root, skip_unless_slow};

fn fixtures() -> PathBuf {
    root().join("fixtures")
}

struct B {
    g: Graph,
    rng: Rng,
    n: usize,
}

impl B {
    fn new(c: usize, hw: usize) -> (B, ValueRef) {
        let mut g = Graph::new("g");
        let d = [Dim::Sym("batch".into()), Dim::Known(c as u64), Dim::Known(hw as u64), Dim::Known(hw as u64)];
        let x = g.add_input(tensor_info("x", DataType::Float, &d));
        (B { g, rng: Rng::new(42), n: 0 }, ValueRef(x, 0))
    }

    fn name(&mut self, t: &str) -> String {
        self.n += 1;
        format!("{t}{}", self.n)
    }

    fn w(&mut self, name: &str, dims: &[i64], scale: f32) -> ValueRef {
        let n = dims.iter().product::<i64>() as usize;
        let data = self.rng.vec(n, scale);
        ValueRef(self.g.add_weight(Tensor::from_f32(name, dims, &data)), 0)
    }

    fn op(&mut self, t: &str, ins: &[ValueRef], attrs: Vec<shrink_graph::onnx::AttributeProto>) -> ValueRef {
        let name = self.name(t);
        let mut op = Op::new(t, &name, ins.len(), vec![format!("{name}_out")]);
        op.attributes = attrs;
        let ins: Vec<Option<ValueRef>> = ins.iter().copied().map(Some).collect();
        ValueRef(self.g.add_op(op, &ins), 0)
    }

    /// A conv named `name` with weights `name.w` and `name.b`.
    fn conv(&mut self, x: ValueRef, name: &str, cin: usize, cout: usize, k: usize, group: usize) -> ValueRef {
        let w = self.w(&format!("{name}.w"), &[cout as i64, (cin / group) as i64, k as i64, k as i64], 0.5);
        let b = self.w(&format!("{name}.b"), &[cout as i64], 0.2);
        let p = (k / 2) as i64;
        let mut op = Op::new("Conv", name, 3, vec![format!("{name}_out")]);
        op.attributes = vec![attr_ints("pads", &[p, p, p, p]), attr_int("group", group as i64)];
        ValueRef(self.g.add_op(op, &[Some(x), Some(w), Some(b)]), 0)
    }

    fn bn(&mut self, x: ValueRef, c: usize) -> ValueRef {
        let name = self.name("bn");
        let gamma = self.w(&format!("{name}.g"), &[c as i64], 1.0);
        let beta = self.w(&format!("{name}.b"), &[c as i64], 0.3);
        let mean = self.w(&format!("{name}.m"), &[c as i64], 0.3);
        let var: Vec<f32> = self.rng.vec(c, 0.4).iter().map(|v| v.abs() + 0.5).collect();
        let var = ValueRef(self.g.add_weight(Tensor::from_f32(&format!("{name}.v"), &[c as i64], &var)), 0);
        self.op("BatchNormalization", &[x, gamma, beta, mean, var], vec![])
    }

    fn relu(&mut self, x: ValueRef) -> ValueRef {
        let name = self.name("relu");
        relu(&mut self.g, x, &name)
    }

    fn head(&mut self, x: ValueRef, c: usize, classes: usize) -> ValueRef {
        let gap = self.op("GlobalAveragePool", &[x], vec![]);
        let f = self.op("Flatten", &[gap], vec![attr_int("axis", 1)]);
        let name = self.name("fc");
        linear(&mut self.g, &mut self.rng, f, &name, c, classes)
    }

    fn output(&mut self, v: ValueRef) {
        self.g.add_output(v, tensor_info("", DataType::Float, &[]));
    }

    fn model(self) -> Model {
        model(self.g, 13)
    }
}

/// Zeroes `positions` along `axis` of a float initializer.
fn zero_positions(g: &mut Graph, v: ValueRef, axis: usize, positions: &[usize]) {
    let NodeKind::Weight(w) = g.node_mut(v.0) else { panic!("not an initializer") };
    let dims: Vec<usize> = w.tensor.dims().iter().map(|&d| d as usize).collect();
    let mut data = w.tensor.to_f32().unwrap();
    let outer: usize = dims[..axis].iter().product();
    let inner: usize = dims[axis + 1..].iter().product();
    for o in 0..outer {
        for &p in positions {
            let s = (o * dims[axis] + p) * inner;
            data[s..s + inner].iter_mut().for_each(|x| *x = 0.0);
        }
    }
    w.tensor.set_f32(&data).unwrap();
}

/// The unpruned model with the dropped channels' producers zeroed (weights,
/// biases, BN γ and β, per-channel added constants): it computes what the
/// pruned model computes.
fn zeroed(m: &Model, a: &ChannelGroups, keep: &dyn Fn(usize) -> bool) -> Model {
    let mut z = m.clone();
    for rw in &a.rewrites {
        let Rewrite::Slice { op, slot, axis, layout_of } = *rw else { continue };
        let t = z.graph.op(op).unwrap().op_type.clone();
        let zero = (layout_of == ValueRef(op, 0) && matches!(t.as_str(), "Conv" | "Gemm" | "MatMul"))
            || (t == "BatchNormalization" && (slot == 1 || slot == 2))
            || matches!(t.as_str(), "Add" | "Sub");
        if !zero {
            continue;
        }
        let l = a.layout(layout_of).unwrap();
        let dropped: Vec<usize> = l
            .classes
            .iter()
            .enumerate()
            .filter(|(_, c)| !keep(**c))
            .flat_map(|(j, _)| j * l.inner..(j + 1) * l.inner)
            .collect();
        let v = z.graph.input(op, slot).unwrap();
        zero_positions(&mut z.graph, v, axis, &dropped);
    }
    z
}

fn run(m: &Model, input: &[f32], dims: &[usize]) -> Vec<Vec<f32>> {
    let t = shrink_verify::Tensor::from_shape::<f32>(dims, input).unwrap();
    let out = run_onnx(&m.to_bytes(), &[t]).unwrap();
    out.iter().map(|t| t.to_plain_array_view::<f32>().unwrap().iter().copied().collect()).collect()
}

/// Prunes every other channel of each prunable group (the first stays), checks
/// the pruned model against the zeroed one in tract, and returns the analysis
/// and the pruned model.
fn check(m: &Model, in_dims: &[usize], prunable: usize) -> (ChannelGroups, Model) {
    m.graph.verify().unwrap();
    let a = channel_groups(&m.graph);
    let dump = a.dump(&m.graph);
    assert_eq!(a.prunable().count(), prunable, "{dump}");
    let mut drop = std::collections::HashSet::new();
    for (_, g) in a.prunable() {
        for (i, &c) in g.classes.iter().enumerate() {
            if i % 2 == 1 {
                drop.insert(c);
            }
        }
    }
    let keep = |c: usize| !drop.contains(&c);
    let mut pruned = m.clone();
    let n = remove_channels(&mut pruned.graph, &a, &keep, 13).unwrap();
    assert!(n > 0, "nothing sliced\n{dump}");
    pruned.graph.verify().unwrap();
    // reload from bytes: what is saved is what tract runs
    let pruned = Model::from_bytes(&pruned.to_bytes()).unwrap();
    let before = summarize(m);
    let after = summarize(&pruned);
    assert!(after.params < before.params, "{} → {}", before.params, after.params);
    assert!(after.macs < before.macs, "{} → {}", before.macs, after.macs);
    let z = zeroed(m, &a, &keep);
    let mut rng = Rng::new(7);
    let input = rng.vec(in_dims.iter().product(), 1.0);
    let want = run(&z, &input, in_dims);
    let got = run(&pruned, &input, in_dims);
    assert_eq!(want.len(), got.len());
    let orig = run(m, &input, in_dims);
    let mut differs = false;
    for (k, (w, g)) in want.iter().zip(&got).enumerate() {
        assert_eq!(w.len(), g.len(), "output {k}");
        for (x, y) in w.iter().zip(g) {
            assert!((x - y).abs() <= 1e-5, "output {k}: zeroed {x} vs pruned {y}\n{dump}");
        }
        differs |= orig[k].iter().zip(w).any(|(a, b)| (a - b).abs() > 1e-4);
    }
    // the channels removed did matter: the unpruned model computes something else
    assert!(differs, "zeroing changed nothing: the test would not notice a wrong surgery");
    (a, pruned)
}

fn weight_dims(m: &Model, name: &str) -> Vec<i64> {
    m.graph.weights().find(|(_, t)| t.name() == name).map(|(_, t)| t.dims().to_vec()).unwrap_or_default()
}

#[test]
fn residual_add() {
    let (mut b, x) = B::new(3, 6);
    let a = b.conv(x, "c1", 3, 8, 3, 1);
    let a = b.bn(a, 8);
    let a = b.relu(a);
    let c = b.conv(a, "c2", 8, 6, 3, 1);
    let c = b.relu(c);
    let d = b.conv(c, "c3", 6, 8, 3, 1);
    let d = b.bn(d, 8);
    let s = b.op("Add", &[a, d], vec![]);
    let s = b.relu(s);
    let y = b.head(s, 8, 4);
    b.output(y);
    let m = b.model();
    let (a, p) = check(&m, &[2, 3, 6, 6], 2);
    // c1 and c3 (both sides of the Add) are one group of 8
    let g = a.prunable().find(|(_, g)| g.producers.len() == 2).unwrap().1;
    assert_eq!(g.channels(), 8);
    assert_eq!(weight_dims(&p, "c1.w"), [4, 3, 3, 3]);
    assert_eq!(weight_dims(&p, "c3.w"), [4, 3, 3, 3]);
    assert_eq!(weight_dims(&p, "c2.w"), [3, 4, 3, 3]);
}

#[test]
fn concat() {
    let (mut b, x) = B::new(3, 6);
    let l = b.conv(x, "c1", 3, 6, 1, 1);
    let l = b.relu(l);
    let r = b.conv(x, "c2", 3, 4, 3, 1);
    let r = b.relu(r);
    let c = b.op("Concat", &[l, r], vec![attr_int("axis", 1)]);
    let m2 = b.conv(c, "c3", 10, 5, 3, 1);
    let m2 = b.relu(m2);
    let y = b.head(m2, 5, 3);
    b.output(y);
    let (_, p) = check(&b.model(), &[2, 3, 6, 6], 3);
    // 6 → 3 and 4 → 2 channels concatenated: the mixing conv reads 5
    assert_eq!(weight_dims(&p, "c3.w")[1], 5);
}

#[test]
fn split() {
    let (mut b, x) = B::new(3, 5);
    let a = b.conv(x, "c1", 3, 8, 3, 1);
    let a = b.relu(a);
    let sizes = ValueRef(b.g.add_weight(Tensor::from_i64("sizes", &[2], &[3, 5])), 0);
    let name = b.name("split");
    let op = Op::new("Split", &name, 2, vec![format!("{name}_0"), format!("{name}_1")]);
    let mut op = op;
    op.attributes = vec![attr_int("axis", 1)];
    let s = b.g.add_op(op, &[Some(a), Some(sizes)]);
    let l = b.conv(ValueRef(s, 0), "c2", 3, 4, 3, 1);
    let r = b.conv(ValueRef(s, 1), "c3", 5, 4, 1, 1);
    let sum = b.op("Add", &[l, r], vec![]);
    let sum = b.relu(sum);
    let y = b.head(sum, 4, 3);
    b.output(y);
    let (a, p) = check(&b.model(), &[2, 3, 5, 5], 3);
    // the split's two parts are separate groups (3 and 5 channels)
    let mut sizes: Vec<usize> = a.prunable().map(|(_, g)| g.channels()).collect();
    sizes.sort();
    assert_eq!(sizes, [3, 4, 5]);
    assert_eq!(weight_dims(&p, "c1.w")[0], 2 + 3);
}

#[test]
fn depthwise() {
    let (mut b, x) = B::new(3, 6);
    let a = b.conv(x, "c1", 3, 8, 3, 1);
    let a = b.bn(a, 8);
    let a = b.relu(a);
    let d = b.conv(a, "c2", 8, 8, 3, 8);
    let d = b.bn(d, 8);
    let d = b.relu(d);
    let pw = b.conv(d, "c3", 8, 6, 1, 1);
    let pw = b.relu(pw);
    let y = b.head(pw, 6, 3);
    b.output(y);
    let (_, p) = check(&b.model(), &[2, 3, 6, 6], 2);
    assert_eq!(weight_dims(&p, "c2.w"), [4, 1, 3, 3]);
    let dw = p.graph.find_op("c2").unwrap();
    assert_eq!(p.graph.op(dw).unwrap().attr_int("group"), Some(4));
}

#[test]
fn flatten_gemm() {
    let (mut b, x) = B::new(3, 4);
    let a = b.conv(x, "c1", 3, 6, 3, 1);
    let a = b.relu(a);
    let pool = b.op("MaxPool", &[a], vec![attr_ints("kernel_shape", &[2, 2]), attr_ints("strides", &[2, 2])]);
    let f = b.op("Flatten", &[pool], vec![attr_int("axis", 1)]);
    let h = linear(&mut b.g, &mut b.rng, f, "fc1", 24, 10);
    let h = b.relu(h);
    let y = linear(&mut b.g, &mut b.rng, h, "fc2", 10, 3);
    b.output(y);
    let (_, p) = check(&b.model(), &[2, 3, 4, 4], 2);
    // 3 of 6 channels, each a block of 2x2 features; 5 of 10 neurons
    assert_eq!(weight_dims(&p, "fc1.weight"), [5, 12]);
    assert_eq!(weight_dims(&p, "fc1.bias"), [5]);
    assert_eq!(weight_dims(&p, "fc2.weight"), [3, 5]);
}

/// The flatten PyTorch's dynamo exporter writes: `ReduceMean` over H, W
/// (keepdims) and `Reshape` to `[-1, C]`: the literal C is rewritten.
#[test]
fn reduce_mean_reshape_gemm() {
    let (mut b, x) = B::new(3, 4);
    let a = b.conv(x, "c1", 3, 6, 3, 1);
    let a = b.relu(a);
    let m = b.op("ReduceMean", &[a], vec![attr_ints("axes", &[2, 3]), attr_int("keepdims", 1)]);
    let shape = ValueRef(b.g.add_weight(Tensor::from_i64("shape", &[2], &[-1, 6])), 0);
    let f = b.op("Reshape", &[m, shape], vec![]);
    let y = linear(&mut b.g, &mut b.rng, f, "fc", 6, 3);
    b.output(y);
    let (_, p) = check(&b.model(), &[2, 3, 4, 4], 1);
    assert_eq!(weight_dims(&p, "fc.weight"), [3, 3]);
    let s = p.graph.weights().find(|(_, t)| t.name() == "shape").unwrap().1.to_i64().unwrap();
    assert_eq!(s, [-1, 3]);
}

#[test]
fn se_mul() {
    let (mut b, x) = B::new(3, 5);
    let a = b.conv(x, "c1", 3, 8, 3, 1);
    let a = b.relu(a);
    let gap = b.op("GlobalAveragePool", &[a], vec![]);
    let f = b.op("Flatten", &[gap], vec![attr_int("axis", 1)]);
    let s = linear(&mut b.g, &mut b.rng, f, "se1", 8, 4);
    let s = b.relu(s);
    let s = linear(&mut b.g, &mut b.rng, s, "se2", 4, 8);
    let s = b.op("Sigmoid", &[s], vec![]);
    let axes = ValueRef(b.g.add_weight(Tensor::from_i64("axes", &[2], &[2, 3])), 0);
    let s = b.op("Unsqueeze", &[s, axes], vec![]);
    let y = b.op("Mul", &[a, s], vec![]);
    let c = b.conv(y, "c2", 8, 6, 3, 1);
    let c = b.relu(c);
    let y = b.head(c, 6, 3);
    b.output(y);
    let (a, p) = check(&b.model(), &[2, 3, 5, 5], 3);
    // the conv and the excitation gemm are one group
    let g = a.prunable().find(|(_, g)| g.producers.len() == 2).unwrap().1;
    assert_eq!(g.channels(), 8);
    assert_eq!(weight_dims(&p, "se2.weight"), [4, 2]);
    assert_eq!(weight_dims(&p, "se1.weight"), [2, 4]);
}

#[test]
fn two_outputs() {
    let (mut b, x) = B::new(3, 5);
    let a = b.conv(x, "c1", 3, 8, 3, 1);
    let a = b.relu(a);
    let y1 = b.head(a, 8, 3);
    b.output(y1);
    let y2 = b.conv(a, "c2", 8, 4, 1, 1);
    b.output(y2);
    let (a, p) = check(&b.model(), &[2, 3, 5, 5], 1);
    // the second output's channels are never pruned
    assert_eq!(weight_dims(&p, "c2.w"), [4, 4, 1, 1]);
    assert!(a.groups.iter().filter(|g| g.blocked.as_deref() == Some("reaches a graph output")).count() == 2);
}

/// The partition of convnet-mix: the stem, the residual conv2 and the
/// depthwise conv share one group (Add + depthwise); each concat branch is a
/// group; the classifier's 10 classes are blocked.
#[test]
fn convnet_mix_groups() {
    let m = Model::load(fixtures().join("models/convnet-mix.onnx")).unwrap();
    let a = channel_groups(&m.graph);
    let text: Vec<String> = a
        .groups
        .iter()
        .map(|g| {
            format!("{} ch: {}{}", g.channels(), g.label(&m.graph), if g.blocked.is_some() { " (blocked)" } else { "" })
        })
        .collect();
    expect_test::expect![[r#"
        1 ch: <no producer> (blocked)
        24 ch: /stem/stem.0/Conv + /residual/conv2/Conv
        24 ch: /residual/conv1/conv1.0/Conv
        48 ch: /pointwise/pointwise.0/Conv
        32 ch: /concat/branch1/branch1.0/Conv
        32 ch: /concat/branch3/branch3.0/Conv
        64 ch: /mix/mix.0/Conv
        10 ch: /fc/Gemm (blocked)"#]]
    .assert_eq(&text.join("\n"));
    let g = &a.groups[1];
    let dw = m.graph.find_op("/depthwise/depthwise.0/Conv").unwrap();
    assert!(g.members.contains(&(dw, shrink_graph::groups::Role::Depthwise)));
}

/// A few random images with labels, for the criteria that need data.
#[derive(Debug)]
struct Tiny {
    x: Vec<f32>,
    y: Vec<u32>,
    shape: Vec<usize>,
}

impl shrink_data::Dataset for Tiny {
    fn len(&self) -> usize {
        self.y.len()
    }
    fn num_classes(&self) -> usize {
        3
    }
    fn sample_shape(&self) -> &[usize] {
        &self.shape
    }
    fn batch_into(&self, indices: &[usize], out: &mut shrink_data::Batch) -> Result<(), shrink_data::DataError> {
        let n: usize = self.shape.iter().product();
        out.inputs.clear();
        out.labels.clear();
        for &i in indices {
            out.inputs.extend_from_slice(&self.x[i * n..(i + 1) * n]);
            out.labels.push(self.y[i]);
        }
        out.shape = [vec![indices.len()], self.shape.clone()].concat();
        Ok(())
    }
}

/// conv(1→4) → BN → ReLU → head, where channel 2 is dead (zero conv weights,
/// BN γ = 0 and β = −1: its ReLU output is always 0). Every criterion must
/// rank it last: removing one of four channels removes channel 2.
#[test]
fn every_criterion_removes_the_dead_channel() {
    let (mut b, x) = B::new(1, 4);
    let a = b.conv(x, "c1", 1, 4, 3, 1);
    let a = b.bn(a, 4);
    let a = b.relu(a);
    let y = b.head(a, 4, 3);
    b.output(y);
    let mut m = b.model();
    let set = |m: &mut Model, name: &str, f: &dyn Fn(usize, &mut f32)| {
        let id = m.graph.weights().find(|(_, t)| t.name() == name).unwrap().0;
        let NodeKind::Weight(w) = m.graph.node_mut(id) else { unreachable!() };
        let mut d = w.tensor.to_f32().unwrap();
        d.iter_mut().enumerate().for_each(|(i, v)| f(i, v));
        w.tensor.set_f32(&d).unwrap();
    };
    set(&mut m, "c1.w", &|i, v| if i / 9 == 2 { *v = 0.0 } else { *v = v.abs() + 0.5 });
    set(&mut m, "c1.b", &|i, v| {
        if i == 2 {
            *v = 0.0
        }
    });
    let bn = m.graph.find_op("BatchNormalization2").unwrap();
    let gname = |slot| m.graph.value_name(m.graph.input(bn, slot).unwrap()).to_string();
    let (gamma, beta) = (gname(1), gname(2));
    set(&mut m, &gamma, &|i, v| *v = if i == 2 { 0.0 } else { v.abs() + 0.5 });
    set(&mut m, &beta, &|i, v| {
        if i == 2 {
            *v = -1.0
        }
    });
    let fc_name = m.graph.weights().map(|(_, t)| t.name().to_string()).find(|n| n.starts_with("fc")).unwrap();
    assert!(fc_name.ends_with(".weight"));
    let fc_before = m.graph.weights().find(|(_, t)| t.name() == fc_name).unwrap().1.to_f32().unwrap();
    let mut rng = Rng::new(3);
    let data = Tiny { x: rng.vec(32 * 16, 1.0), y: (0..32).map(|i| i % 3).collect(), shape: vec![1, 4, 4] };
    for criterion in ["l1", "l2", "bn-scale", "apoz", "taylor"] {
        let text = format!(
            "method = \"structured\"\ncriterion = \"{criterion}\"\nratio = 0.25\nsamples = 32\nrecalibrate_bn = 0"
        );
        let stage = shrink_prune::structured::StructuredPrune::from_table(&text.parse().unwrap()).unwrap();
        let mut pruned = m.clone();
        let mut progress = shrink_stage::NoProgress;
        let mut cx = shrink_stage::StageCx {
            pipeline: "t".into(),
            index: 0,
            train: Some(&data),
            test: None,
            original: &m,
            seed: 1,
            progress: &mut progress,
            scratch: std::env::temp_dir(),
            output_dir: std::env::temp_dir(),
            encoded: Default::default(),
        };
        use shrink_stage::Stage;
        let report = stage.run(&mut pruned, &mut cx).unwrap();
        pruned.graph.verify().unwrap();
        assert_eq!(report.figures["channels_removed"], 1.0, "{criterion}");
        // the head's weight lost column 2: the others are the original columns 0, 1, 3
        let fc = pruned.graph.weights().find(|(_, t)| t.name() == fc_name).unwrap().1.to_f32().unwrap();
        let want: Vec<f32> = fc_before.iter().enumerate().filter(|(i, _)| i % 4 != 2).map(|(_, v)| *v).collect();
        assert_eq!(fc, want, "{criterion}");
        // and it still runs in tract, computing what the original computes (channel 2 was always 0)
        let input = rng.vec(2 * 16, 1.0);
        let (o, p) = (run(&m, &input, &[2, 1, 4, 4]), run(&pruned, &input, &[2, 1, 4, 4]));
        for (x, y) in o[0].iter().zip(&p[0]) {
            assert!((x - y).abs() <= 1e-5, "{criterion}: {x} vs {y}");
        }
    }
}

/// `steps = 2` reaches the ratio in two surgeries with a fine-tune after each;
/// the result still runs in tract.
#[test]
fn iterative_steps_with_finetune() {
    let (mut b, x) = B::new(1, 4);
    let a = b.conv(x, "c1", 1, 8, 3, 1);
    let a = b.bn(a, 8);
    let a = b.relu(a);
    let y = b.head(a, 8, 3);
    b.output(y);
    let m = b.model();
    let mut rng = Rng::new(5);
    let data = Tiny { x: rng.vec(64 * 16, 1.0), y: (0..64).map(|i| i % 3).collect(), shape: vec![1, 4, 4] };
    let text = "method = \"structured\"\nratio = 0.5\nsteps = 2\nrecalibrate_bn = 32\n\
                [finetune]\nmax_steps = 2\nbatch_size = 16\nvalidation = 16\noptimizer = \"adam\"\nlr = 0.001";
    let stage = shrink_prune::structured::StructuredPrune::from_table(&text.parse().unwrap()).unwrap();
    let mut pruned = m.clone();
    let mut progress = shrink_stage::NoProgress;
    let mut cx = shrink_stage::StageCx {
        pipeline: "t".into(),
        index: 0,
        train: Some(&data),
        test: None,
        original: &m,
        seed: 1,
        progress: &mut progress,
        scratch: std::env::temp_dir(),
        output_dir: std::env::temp_dir(),
        encoded: Default::default(),
    };
    use shrink_stage::Stage;
    let report = stage.run(&mut pruned, &mut cx).unwrap();
    assert_eq!(report.figures["channels_removed"], 4.0, "{report:?}");
    assert_eq!(report.figures["finetune_steps_step1"], 2.0);
    assert_eq!(report.figures["finetune_steps_step2"], 2.0);
    let c1 = report.layers.iter().find(|l| l.layer == "c1").unwrap();
    assert_eq!((c1.figures["channels_before"], c1.figures["channels_after"]), (8.0, 4.0));
    assert_eq!(weight_dims(&pruned, "c1.w"), [4, 1, 3, 3]);
    let out = run(&pruned, &rng.vec(16, 1.0), &[1, 1, 4, 4]);
    assert!(out[0].iter().all(|v| v.is_finite()));
}

/// (slow) The stage on convnet-mix without fine-tuning: every prunable group
/// shrinks to its rounded count (residual, depthwise, concat branches
/// included), BN statistics are re-estimated, and the trainer and tract agree
/// on the pruned model.
#[test]
fn stage_on_convnet_mix() {
    if skip_unless_slow() {
        return;
    }
    let m = Model::load(fixtures().join("models/convnet-mix.onnx")).unwrap();
    let pre = shrink_data::Preprocess { layout: shrink_data::Layout::Nchw, ..Default::default() };
    let dirs = shrink_data::DataDirs { data_dir: Some(fixtures().join("data")), cache_dir: None };
    let train = shrink_data::load_builtin_from(&dirs, "mnist", shrink_data::Split::Train, &pre).unwrap();
    let text = "method = \"structured\"\nratio = 0.7\nround_to = 4\nrecalibrate_bn = 1024";
    let stage = shrink_prune::structured::StructuredPrune::from_table(&text.parse().unwrap()).unwrap();
    let mut pruned = m.clone();
    let mut progress = shrink_stage::NoProgress;
    let mut cx = shrink_stage::StageCx {
        pipeline: "t".into(),
        index: 0,
        train: Some(&train),
        test: None,
        original: &m,
        seed: 1,
        progress: &mut progress,
        scratch: std::env::temp_dir(),
        output_dir: std::env::temp_dir(),
        encoded: Default::default(),
    };
    use shrink_stage::Stage;
    let report = stage.run(&mut pruned, &mut cx).unwrap();
    let ch = |layer: &str| {
        let l = report.layers.iter().find(|l| l.layer == layer).unwrap();
        (l.figures["channels_before"] as usize, l.figures["channels_after"] as usize)
    };
    assert_eq!(ch("/stem/stem.0/Conv"), (24, 8));
    assert_eq!(ch("/residual/conv2/Conv"), (24, 8));
    assert_eq!(ch("/depthwise/depthwise.0/Conv"), (24, 8));
    assert_eq!(ch("/residual/conv1/conv1.0/Conv"), (24, 8));
    assert_eq!(ch("/pointwise/pointwise.0/Conv"), (48, 16));
    assert_eq!(ch("/concat/branch1/branch1.0/Conv"), (32, 12));
    assert_eq!(ch("/concat/branch3/branch3.0/Conv"), (32, 12));
    assert_eq!(ch("/mix/mix.0/Conv"), (64, 20));
    assert_eq!(ch("/fc/Gemm"), (10, 10));
    assert!(report.figures["macs_after"] < 0.25 * report.figures["macs_before"], "{:?}", report.figures);
    let dw = pruned.graph.find_op("/depthwise/depthwise.0/Conv").unwrap();
    assert_eq!(pruned.graph.op(dw).unwrap().attr_int("group"), Some(8));
    // the trainer and tract compute the same logits on the saved model
    let pruned = Model::from_bytes(&pruned.to_bytes()).unwrap();
    let exec = shrink_train::Executor::new(&pruned).unwrap();
    let b = shrink_data::Dataset::batch(&train, &(0..64).collect::<Vec<_>>()).unwrap();
    let want = run(&pruned, &b.inputs, &b.shape);
    let got = exec.forward(&[shrink_train::HostTensor::new(b.inputs.clone(), b.shape.clone())]).unwrap();
    for (x, y) in want[0].iter().zip(&got[0].data) {
        assert!((x - y).abs() <= 1e-4, "tract {x} vs trainer {y}");
    }
}

fn run_structured(m: &Model, text: &str) -> (Model, shrink_stage::StageReport) {
    let stage = shrink_prune::structured::StructuredPrune::from_table(&text.parse().unwrap()).unwrap();
    run_data_free(&stage, m)
}

/// Runs `stage` on a copy of `m` without data; the result must verify.
fn run_data_free(stage: &dyn shrink_stage::Stage, m: &Model) -> (Model, shrink_stage::StageReport) {
    let mut out = m.clone();
    let mut progress = shrink_stage::NoProgress;
    let mut cx = shrink_stage::StageCx {
        pipeline: "t".into(),
        index: 0,
        train: None,
        test: None,
        original: m,
        seed: 1,
        progress: &mut progress,
        scratch: std::env::temp_dir(),
        output_dir: std::env::temp_dir(),
        encoded: Default::default(),
    };
    let report = stage.run(&mut out, &mut cx).unwrap();
    out.graph.verify().unwrap();
    (out, report)
}

/// The TorchScript exporter hands identical initializers (the zero biases of
/// BatchNorm-folded convs of a fresh torchvision model) to their other
/// readers through `Identity` nodes. Structured pruning copies them per
/// layer first, prunes, and the pruned model computes what the original does
/// on the kept channels; before, the analysis found no group and the stage
/// removed nothing without saying so.
#[test]
fn identity_shared_biases_are_copied_per_layer_and_pruned() {
    let (mut b, x) = B::new(2, 4);
    let zero = ValueRef(b.g.add_weight(Tensor::from_f32("shared_bias", &[4], &[0.0; 4])), 0);
    let biased_conv = |b: &mut B, x: ValueRef, name: &str, cin: usize| {
        let w = b.w(&format!("{name}.w"), &[4, cin as i64, 3, 3], 0.5);
        let bias = b.op("Identity", &[zero], vec![]);
        let mut op = Op::new("Conv", name, 3, vec![format!("{name}_out")]);
        op.attributes = vec![attr_ints("pads", &[1, 1, 1, 1])];
        ValueRef(b.g.add_op(op, &[Some(x), Some(w), Some(bias)]), 0)
    };
    let a = biased_conv(&mut b, x, "c1", 2);
    let a = b.relu(a);
    let a = biased_conv(&mut b, a, "c2", 4);
    let a = b.relu(a);
    let y = b.head(a, 4, 3);
    b.output(y);
    let m = b.model();
    let (pruned, report) = run_structured(&m, "method = \"structured\"\nratio = 0.5\nrecalibrate_bn = 0");
    assert_eq!(report.figures["weights_unshared"], 2.0);
    assert_eq!(report.figures["groups_pruned"], 2.0, "{:?}", report.layers);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert!(pruned.graph.ops().iter().all(|&id| pruned.graph.op(id).unwrap().op_type != "Identity"));
    assert_eq!(weight_dims(&pruned, "c1.w"), [2, 2, 3, 3]);
    let input = Rng::new(9).vec(2 * 2 * 16, 1.0);
    assert_eq!(run(&pruned, &input, &[2, 2, 4, 4])[0].len(), 6, "the pruned model runs in tract");
}

/// A model with nothing to prune (one conv straight to the output): the
/// stage says so, with the reason, in a warning.
#[test]
fn pruning_nothing_is_a_warning_with_the_reason() {
    let (mut b, x) = B::new(2, 4);
    let a = b.conv(x, "c1", 2, 4, 3, 1);
    b.output(a);
    let m = b.model();
    let (_, report) = run_structured(&m, "method = \"structured\"\nratio = 0.5\nrecalibrate_bn = 0");
    assert_eq!(report.figures["groups_pruned"], 0.0);
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
    let w = &report.warnings[0];
    assert!(w.starts_with("structured pruning removed nothing: "), "{w}");
    assert!(w.contains("c1") && w.contains("graph output"), "{w}");
    assert!(report.layers.iter().any(|l| l.layer.starts_with("group ") && l.note.starts_with("left whole: ")));
}

/// int8 on the same kind of export: the `Identity`-shared biases are copied
/// per layer and every conv is quantised (before, each was kept float with
/// "its bias is not one f32 constant"); when layers kept float hold most of
/// the weights, the report says so in a warning naming them.
#[test]
fn int8_quantises_layers_whose_biases_were_shared_and_warns_when_most_stay_float() {
    let (mut b, x) = B::new(2, 4);
    let zero = ValueRef(b.g.add_weight(Tensor::from_f32("shared_bias", &[4], &[0.0; 4])), 0);
    let mut y = x;
    for (k, cin) in [2usize, 4, 4].into_iter().enumerate() {
        let w = b.w(&format!("c{k}.w"), &[4, cin as i64, 3, 3], 0.5);
        let bias = b.op("Identity", &[zero], vec![]);
        let mut op = Op::new("Conv", &format!("c{k}"), 3, vec![format!("c{k}_out")]);
        op.attributes = vec![attr_ints("pads", &[1, 1, 1, 1])];
        y = ValueRef(b.g.add_op(op, &[Some(y), Some(w), Some(bias)]), 0);
        y = b.relu(y);
    }
    let y = b.head(y, 4, 3);
    b.output(y);
    let m = b.model();
    let run_int8 = |keep: &str| {
        let table: toml::Table = format!("method = \"int8\"\n{keep}").parse().unwrap();
        run_data_free(shrink_quantize::build(&table).unwrap().as_ref(), &m).1
    };
    let r = run_int8("keep_float = []");
    assert_eq!((r.figures["layers_quantised"], r.figures["weights_unshared"]), (4.0, 3.0), "{:?}", r.layers);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let r = run_int8("keep_float = [\"c1\", \"c2\"]");
    assert_eq!(r.warnings.len(), 1);
    assert!(
        r.warnings[0].contains("stay float") && r.warnings[0].contains("c1 (144 weights): keep_float `c1`"),
        "{}",
        r.warnings[0]
    );
}
