//! Unit tests: build-time errors, finite-difference gradient checks of every
//! op family against autodiff, the training hooks, losses and schedules.

use shrink_data::SplitMix64;
use shrink_graph::builder::{attr_float, attr_int, attr_ints, tensor_info};
use shrink_graph::onnx::{AttributeProto, ModelProto, OperatorSetIdProto};
use shrink_graph::{DataType, Dim, Graph, Model, Op, Tensor, ValueRef};

use crate::value::{F, with_f};
use crate::{
    BatchNormMode, Executor, FineTune, HostTensor, Loss, LrPlan, LrSchedule, Optimizer, OptimizerKind, Progress, Ste,
    StepInfo, TrainError,
};

/// A tiny graph under construction: random float initializers, ops, one output.
struct G {
    g: Graph,
    rng: SplitMix64,
    n: usize,
}

impl G {
    fn new(seed: u64) -> G {
        G { g: Graph::new("t"), rng: SplitMix64::new(seed), n: 0 }
    }

    fn uniform(&mut self) -> f32 {
        (self.rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    /// A float initializer with values in [lo, hi).
    fn w_in(&mut self, dims: &[i64], lo: f32, hi: f32) -> ValueRef {
        self.n += 1;
        let n: i64 = dims.iter().product();
        let data: Vec<f32> = (0..n).map(|_| lo + (self.uniform() + 1.0) / 2.0 * (hi - lo)).collect();
        ValueRef(self.g.add_weight(Tensor::from_f32(&format!("w{}", self.n), dims, &data)), 0)
    }

    fn w(&mut self, dims: &[i64]) -> ValueRef {
        self.w_in(dims, -1.0, 1.0)
    }

    fn ints(&mut self, vals: &[i64]) -> ValueRef {
        self.n += 1;
        ValueRef(self.g.add_weight(Tensor::from_i64(&format!("c{}", self.n), &[vals.len() as i64], vals)), 0)
    }

    fn op(&mut self, ty: &str, inputs: &[Option<ValueRef>], attrs: Vec<AttributeProto>) -> ValueRef {
        self.n += 1;
        let mut op = Op::new(ty, &format!("n{}_{ty}", self.n), inputs.len(), vec![format!("v{}", self.n)]);
        op.attributes = attrs;
        ValueRef(self.g.add_op(op, inputs), 0)
    }

    fn finish(mut self, out: ValueRef) -> Model {
        self.g.add_output(out, tensor_info("", DataType::Float, &[]));
        let meta = ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
            ..Default::default()
        };
        Model { meta, graph: self.g, source: None }
    }
}

fn host_loss(out: &HostTensor, r: &[f32]) -> f64 {
    out.data.iter().zip(r).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// Central finite differences (eps 1e-3) against autodiff for every parameter
/// of `model` (all made trainable), on the loss `sum(output * R)`.
fn gradcheck(name: &str, model: &Model) {
    let mut ex = Executor::new(model).unwrap_or_else(|e| panic!("{name}: {e}"));
    for p in ex.params() {
        ex.set_trainable(&p.name, true).unwrap();
    }
    let out = ex.forward(&[]).unwrap_or_else(|e| panic!("{name}: {e}")).remove(0);
    let mut rng = SplitMix64::new(7);
    let r: Vec<f32> = (0..out.data.len()).map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0).collect();
    let dims = out.dims.clone();
    let rr = r.clone();
    let (_, grads) = ex
        .gradients(&[], move |outs| {
            let o = outs.into_iter().next().ok_or("no output")?;
            let rt = F::from_host(rr, &dims, &o.inner_device())?;
            let prod = o.mul(rt).ok_or("rank")?;
            Ok(with_f!(prod, t => t.sum()))
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let eps = 1e-3f32;
    let mut checked = 0;
    for (i, p) in ex.params().iter().enumerate() {
        let g = grads[i].as_ref().unwrap_or_else(|| panic!("{name}: no gradient for {}", p.name)).to_host().data;
        let w = ex.param(&p.name).unwrap().data;
        let stride = (w.len() / 7).max(1);
        for j in (0..w.len()).step_by(stride) {
            let mut wp = w.clone();
            wp[j] += eps;
            ex.set_param(&p.name, &wp).unwrap();
            let lp = host_loss(&ex.forward(&[]).unwrap()[0], &r);
            wp[j] -= 2.0 * eps;
            ex.set_param(&p.name, &wp).unwrap();
            let lm = host_loss(&ex.forward(&[]).unwrap()[0], &r);
            ex.set_param(&p.name, &w).unwrap();
            let fd = ((lp - lm) / (2.0 * eps as f64)) as f32;
            let tol = 5e-3 + 1e-2 * fd.abs().max(g[j].abs());
            assert!(
                (fd - g[j]).abs() <= tol,
                "{name}: d/d {}[{j}]: autodiff {} vs finite difference {fd}",
                p.name,
                g[j]
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "{name}: nothing checked");
}

impl F {
    fn inner_device(&self) -> burn::tensor::Device {
        with_f!(self, t => t.device())
    }
}

#[test]
fn gradients_match_finite_differences() {
    let mut cases: Vec<(&str, Model)> = Vec::new();
    // Gemm with alpha, beta, transA, transB and a broadcast bias.
    let mut g = G::new(1);
    let (a, b, c) = (g.w(&[4, 3]), g.w(&[5, 4]), g.w(&[5]));
    let y = g.op(
        "Gemm",
        &[Some(a), Some(b), Some(c)],
        vec![attr_float("alpha", 0.7), attr_float("beta", 1.3), attr_int("transA", 1), attr_int("transB", 1)],
    );
    cases.push(("gemm", g.finish(y)));
    // MatMul 3-d x 2-d, then broadcasting Add/Sub/Mul/Div with lower-rank operands.
    let mut g = G::new(2);
    let (a, b) = (g.w(&[2, 3, 4]), g.w(&[4, 5]));
    let y = g.op("MatMul", &[Some(a), Some(b)], vec![]);
    let (c, d, e, f) = (g.w(&[5]), g.w(&[3, 1]), g.w(&[1, 1, 5]), g.w_in(&[3, 5], 1.0, 2.0));
    let y = g.op("Add", &[Some(y), Some(c)], vec![]);
    let y = g.op("Sub", &[Some(y), Some(d)], vec![]);
    let y = g.op("Mul", &[Some(y), Some(e)], vec![]);
    let y = g.op("Div", &[Some(y), Some(f)], vec![]);
    cases.push(("matmul-broadcast", g.finish(y)));
    // Conv with asymmetric pads, strides, dilations, groups; then depthwise; BN; activations.
    let mut g = G::new(3);
    let (x, w, b) = (g.w(&[2, 4, 7, 6]), g.w(&[6, 2, 3, 2]), g.w(&[6]));
    let y = g.op(
        "Conv",
        &[Some(x), Some(w), Some(b)],
        vec![
            attr_ints("pads", &[1, 0, 2, 1]),
            attr_ints("strides", &[2, 1]),
            attr_ints("dilations", &[1, 2]),
            attr_int("group", 2),
        ],
    );
    let dw = g.w(&[6, 1, 3, 3]);
    let y = g.op("Conv", &[Some(y), Some(dw)], vec![attr_ints("pads", &[1, 1, 1, 1]), attr_int("group", 6)]);
    let (s, bb, m) = (g.w(&[6]), g.w(&[6]), g.w(&[6]));
    let v = g.w_in(&[6], 0.5, 1.5);
    let y = g.op("BatchNormalization", &[Some(y), Some(s), Some(bb), Some(m), Some(v)], vec![]);
    let y = g.op("LeakyRelu", &[Some(y)], vec![attr_float("alpha", 0.1)]);
    let y = g.op("HardSwish", &[Some(y)], vec![]);
    cases.push(("conv-depthwise-bn", g.finish(y)));
    // Pools.
    let mut g = G::new(4);
    let x = g.w(&[1, 2, 7, 7]);
    let y = g.op(
        "MaxPool",
        &[Some(x)],
        vec![attr_ints("kernel_shape", &[3, 3]), attr_ints("strides", &[2, 2]), attr_ints("pads", &[1, 1, 1, 1])],
    );
    let z = g.op(
        "AveragePool",
        &[Some(x)],
        vec![
            attr_ints("kernel_shape", &[3, 3]),
            attr_ints("strides", &[2, 2]),
            attr_ints("pads", &[1, 1, 1, 1]),
            attr_int("ceil_mode", 1),
        ],
    );
    let y = g.op("Concat", &[Some(y), Some(z)], vec![attr_int("axis", 1)]);
    let q = g.op("GlobalAveragePool", &[Some(y)], vec![]);
    let y = g.op("Add", &[Some(y), Some(q)], vec![]);
    let y = g.op("Sigmoid", &[Some(y)], vec![]);
    cases.push(("pools-concat", g.finish(y)));
    // Shape chain flatten, Reshape, Transpose, Squeeze/Unsqueeze, softmaxes, Tanh, HardSigmoid, Clip, ReduceMean.
    let mut g = G::new(5);
    let x = g.w(&[2, 3, 2, 2]);
    let sh = g.op("Shape", &[Some(x)], vec![]);
    let zero = g.ints(&[0]);
    let n = g.op("Gather", &[Some(sh), Some(zero)], vec![attr_int("axis", 0)]);
    let minus1 = g.ints(&[-1]);
    let target = g.op("Concat", &[Some(n), Some(minus1)], vec![attr_int("axis", 0)]);
    let y = g.op("Reshape", &[Some(x), Some(target)], vec![]);
    let y = g.op("Transpose", &[Some(y)], vec![attr_ints("perm", &[1, 0])]);
    let ax = g.ints(&[0]);
    let y = g.op("Unsqueeze", &[Some(y), Some(ax)], vec![]);
    let y = g.op("Tanh", &[Some(y)], vec![]);
    let ax = g.ints(&[0]);
    let y = g.op("Squeeze", &[Some(y), Some(ax)], vec![]);
    let y = g.op("HardSigmoid", &[Some(y)], vec![attr_float("alpha", 0.3)]);
    let y = g.op("Softmax", &[Some(y)], vec![attr_int("axis", 0)]);
    let y = g.op("Clip", &[Some(y)], vec![]);
    let y = g.op("Flatten", &[Some(y)], vec![attr_int("axis", 1)]);
    let y = g.op("LogSoftmax", &[Some(y)], vec![]);
    let ax = g.ints(&[1]);
    let y = g.op("ReduceMean", &[Some(y), Some(ax)], vec![attr_int("keepdims", 1)]);
    let y = g.op("Relu", &[Some(y)], vec![]);
    let y = g.op("Dropout", &[Some(y)], vec![]);
    let y = g.op("Identity", &[Some(y)], vec![]);
    cases.push(("shape-chain", g.finish(y)));
    for (name, m) in &cases {
        gradcheck(name, m);
    }
}

fn mlp(seed: u64) -> (Model, Vec<String>) {
    let mut g = G::new(seed);
    let x = g.g.add_input(tensor_info("input", DataType::Float, &[Dim::Sym("n".into()), Dim::Known(6)]));
    let (w1, b1, w2, b2) = (g.w(&[8, 6]), g.w(&[8]), g.w(&[3, 8]), g.w(&[3]));
    let y = g.op("Gemm", &[Some(ValueRef(x, 0)), Some(w1), Some(b1)], vec![attr_int("transB", 1)]);
    let y = g.op("Relu", &[Some(y)], vec![]);
    let y = g.op("Gemm", &[Some(y), Some(w2), Some(b2)], vec![attr_int("transB", 1)]);
    let names = [w1, b1, w2, b2].iter().map(|v| g.g.value_name(*v).to_string()).collect();
    (g.finish(y), names)
}

fn batch(seed: u64, n: usize) -> (HostTensor, Vec<u32>) {
    let mut r = SplitMix64::new(seed);
    let data = (0..n * 6).map(|_| (r.next_u64() >> 40) as f32 / (1u64 << 24) as f32).collect();
    let labels = (0..n).map(|_| r.below(3) as u32).collect();
    (HostTensor::new(data, vec![n, 6]), labels)
}

#[test]
fn unsupported_op_is_a_build_error_naming_the_node() {
    let mut g = G::new(1);
    let x = g.w(&[2, 2]);
    let y = g.op("Erf", &[Some(x)], vec![]);
    let err = Executor::new(&g.finish(y)).unwrap_err();
    assert!(matches!(&err, TrainError::Unsupported { node, op } if node.contains("Erf") && op == "Erf"), "{err}");
    assert_eq!(err.to_string(), format!("node `{}`: op Erf is not supported by the trainer", "n2_Erf"));
}

#[test]
fn bad_shapes_are_errors_not_panics() {
    let (m, _) = mlp(1);
    let ex = Executor::new(&m).unwrap();
    let err = ex.forward(&[HostTensor::new(vec![0.0; 10], vec![2, 5])]).unwrap_err();
    assert!(err.to_string().contains("input `input`"), "{err}");
    let mut g = G::new(1);
    let (a, b) = (g.w(&[2, 3]), g.w(&[4, 3]));
    let y = g.op("Add", &[Some(a), Some(b)], vec![]);
    let err = Executor::new(&g.finish(y)).unwrap().forward(&[]).unwrap_err();
    assert!(err.to_string().contains("do not broadcast"), "{err}");
}

#[test]
fn mask_keeps_pruned_weights_exactly_zero() {
    let (m, names) = mlp(3);
    let mut ex = Executor::new(&m).unwrap();
    let keep: Vec<bool> = (0..48).map(|i| i % 3 == 0).collect();
    ex.set_mask(&names[0], Some(&keep)).unwrap();
    for kind in [OptimizerKind::sgd(0.9, 0.01), OptimizerKind::adamw()] {
        let mut opt = Optimizer::new(kind).unwrap();
        for s in 0..5 {
            let (x, y) = batch(s, 8);
            ex.train_step(&mut opt, 0.1, &x, &y, &Loss::CrossEntropy, None).unwrap();
        }
    }
    let w = ex.param(&names[0]).unwrap().data;
    assert!(w.iter().zip(&keep).all(|(&v, &k)| k || v == 0.0));
    assert!(w.iter().zip(&keep).any(|(&v, &k)| k && v != 0.0));
    let mut g = m.graph.clone();
    ex.write_back(&mut g).unwrap();
    let wt = g.weight(g.find_value(&names[0]).unwrap()).unwrap();
    assert_eq!(wt.dtype(), DataType::Float);
    let stored = wt.to_f32().unwrap();
    assert_eq!(stored, w);
    // Pruned entries are +0.0 (not -0.0, which a negative weight times 0 gives).
    assert!(stored.iter().zip(&keep).all(|(&v, &k)| k || v.to_bits() == 0), "a pruned weight was stored as -0.0");
}

#[test]
fn frozen_parameters_do_not_move_and_write_back_changes_only_weights() {
    let (m, names) = mlp(4);
    let mut ex = Executor::new(&m).unwrap();
    ex.set_trainable(&names[2], false).unwrap();
    let before = ex.param(&names[2]).unwrap();
    let before0 = ex.param(&names[0]).unwrap();
    let mut opt = Optimizer::new(OptimizerKind::adam()).unwrap();
    let (x, y) = batch(1, 16);
    ex.train_step(&mut opt, 0.01, &x, &y, &Loss::CrossEntropy, None).unwrap();
    assert_eq!(ex.param(&names[2]).unwrap(), before);
    assert_ne!(ex.param(&names[0]).unwrap(), before0);
    let mut g = m.graph.clone();
    ex.write_back(&mut g).unwrap();
    let mut m2 = m.clone();
    m2.graph = g;
    assert_eq!(m2.graph.node_count(), m.graph.node_count());
    // The written-back model computes what the executor computes.
    let ex2 = Executor::new(&m2).unwrap();
    assert_eq!(ex2.forward(std::slice::from_ref(&x)).unwrap(), ex.forward(&[x]).unwrap());
}

#[test]
fn tied_weights_get_the_sum_of_member_gradients() {
    let (m, names) = mlp(5);
    let mut ex = Executor::new(&m).unwrap();
    let assign: Vec<u32> = (0..48).map(|i| (i % 4) as u32).collect();
    let (x, y) = batch(2, 8);
    // Gradient of the untied weight, summed per cluster, equals the codebook gradient.
    let centroids = [-0.3f32, -0.1, 0.1, 0.3];
    let tied: Vec<f32> = assign.iter().map(|&a| centroids[a as usize]).collect();
    ex.set_param(&names[0], &tied).unwrap();
    let ce = |outs: Vec<F>| -> Result<burn::tensor::Tensor<1>, String> {
        let l = crate::ops::as_matrix(outs.into_iter().next().unwrap())?;
        let dev = l.device();
        let lab: Vec<i64> = batch(2, 8).1.iter().map(|&v| v as i64).collect();
        let lab =
            burn::tensor::Tensor::<1, burn::tensor::Int>::from_data(burn::tensor::TensorData::new(lab, [8]), &dev);
        Ok(crate::loss::cross_entropy(l, lab))
    };
    let (_, g_plain) = ex.gradients(std::slice::from_ref(&x), ce).unwrap();
    let g_plain = g_plain[0].as_ref().unwrap().to_host().data;
    let mut want = [0f32; 4];
    for (j, &a) in assign.iter().enumerate() {
        want[a as usize] += g_plain[j];
    }
    ex.tie(&names[0], &centroids, &assign).unwrap();
    let (_, g_tied) = ex.gradients(std::slice::from_ref(&x), ce).unwrap();
    let got = g_tied[0].as_ref().unwrap().to_host().data;
    for k in 0..4 {
        assert!((got[k] - want[k]).abs() < 1e-5, "cluster {k}: {} vs {}", got[k], want[k]);
    }
    // Training keeps exactly 4 distinct values.
    let mut opt = Optimizer::new(OptimizerKind::sgd(0.9, 0.0)).unwrap();
    ex.train_step(&mut opt, 0.1, &x, &y, &Loss::CrossEntropy, None).unwrap();
    let mut w = ex.param(&names[0]).unwrap().data;
    w.sort_by(f32::total_cmp);
    w.dedup();
    assert_eq!(w.len(), 4);
    assert_ne!(ex.codebook(&names[0]).unwrap().unwrap(), centroids.to_vec());
}

#[test]
fn straight_through_estimator_quantises_forward_and_passes_gradients() {
    let (m, names) = mlp(6);
    let mut ex = Executor::new(&m).unwrap();
    let (x, _) = batch(3, 4);
    let ce = |outs: Vec<F>| -> Result<burn::tensor::Tensor<1>, String> {
        let o = outs.into_iter().next().unwrap();
        Ok(with_f!(o, t => t.sum()))
    };
    ex.set_ste(&names[0], Some(Ste::FakeQuant { bits: 2 })).unwrap();
    let w = ex.param(&names[0]).unwrap().data;
    let mut levels = w.clone();
    levels.sort_by(f32::total_cmp);
    levels.dedup();
    assert!(levels.len() <= 3, "2-bit symmetric gives at most 3 levels, got {levels:?}");
    // Backward is the identity through the quantiser: the latent weight's
    // gradient equals the gradient of a plain weight holding the quantised values.
    let (_, g_ste) = ex.gradients(std::slice::from_ref(&x), ce).unwrap();
    let mut plain = Executor::new(&m).unwrap();
    plain.set_param(&names[0], &w).unwrap();
    let (_, g_plain) = plain.gradients(std::slice::from_ref(&x), ce).unwrap();
    assert_eq!(g_ste[0].as_ref().unwrap().to_host(), g_plain[0].as_ref().unwrap().to_host());
}

#[test]
fn taps_read_intermediate_values() {
    let (m, _) = mlp(7);
    let ex = Executor::new(&m).unwrap();
    let relu = m.graph.ops().into_iter().find(|&n| m.graph.op(n).unwrap().op_type == "Relu").unwrap();
    let name = m.graph.op(relu).unwrap().outputs[0].clone();
    let (x, _) = batch(4, 5);
    let (outs, taps) = ex.forward_with_taps(&[x], &[&name]).unwrap();
    assert_eq!(taps[0].dims, vec![5, 8]);
    assert!(taps[0].data.iter().all(|&v| v >= 0.0));
    assert_eq!(outs[0].dims, vec![5, 3]);
    assert!(ex.forward_with_taps(&[batch(4, 5).0], &["nope"]).is_err());
}

#[test]
fn distillation_loss_matches_the_formula() {
    let dev = burn::tensor::Device::flex();
    let s = [1.0f32, 2.0, 0.5, -1.0, 0.0, 3.0];
    let t = [0.5f32, 1.0, 2.0, 1.0, -2.0, 0.0];
    let labels = [1u32, 2];
    let (alpha, temp) = (0.7f32, 3.0f32);
    let mk = |v: &[f32]| match F::from_host(v.to_vec(), &[2, 3], &dev).unwrap() {
        F::R2(t) => t,
        _ => unreachable!(),
    };
    let lab = burn::tensor::Tensor::<1, burn::tensor::Int>::from_data(
        burn::tensor::TensorData::new(vec![1i64, 2], [2]),
        &dev,
    );
    let got =
        Loss::Distill { alpha, temperature: temp }.compute(mk(&s), lab, Some(mk(&t))).unwrap().into_scalar::<f32>();
    let softmax = |x: &[f32]| {
        let m = x.iter().cloned().fold(f32::MIN, f32::max);
        let e: Vec<f64> = x.iter().map(|&v| ((v - m) as f64).exp()).collect();
        let z: f64 = e.iter().sum();
        e.into_iter().map(|v| v / z).collect::<Vec<f64>>()
    };
    let (mut kl, mut ce) = (0f64, 0f64);
    for i in 0..2 {
        let (sr, tr) = (&s[i * 3..i * 3 + 3], &t[i * 3..i * 3 + 3]);
        let p = softmax(&tr.iter().map(|v| v / temp).collect::<Vec<_>>());
        let q = softmax(&sr.iter().map(|v| v / temp).collect::<Vec<_>>());
        kl += (0..3).map(|k| p[k] * (p[k] / q[k]).ln()).sum::<f64>();
        ce -= softmax(sr)[labels[i] as usize].ln();
    }
    let want = alpha as f64 * (temp * temp) as f64 * kl / 2.0 + (1.0 - alpha as f64) * ce / 2.0;
    assert!((got as f64 - want).abs() < 1e-5, "{got} vs {want}");
}

#[test]
fn learning_rate_schedules() {
    let step = LrPlan { base: 0.1, schedule: LrSchedule::Step { every_epochs: 2, gamma: 0.5 }, warmup_steps: 0 };
    assert_eq!([step.at(0, 0, 10), step.at(5, 2, 10), step.at(9, 4, 10)], [0.1, 0.05, 0.025]);
    let cos = LrPlan { base: 0.1, schedule: LrSchedule::Cosine { min_lr: 0.0 }, warmup_steps: 4 };
    assert!((cos.at(0, 0, 100) - 0.025).abs() < 1e-4);
    assert!((cos.at(50, 0, 100) - 0.05).abs() < 1e-9);
    assert!(cos.at(100, 0, 100).abs() < 1e-12);
    assert_eq!(LrPlan::constant(0.3).at(77, 5, 100), 0.3);
}

#[test]
fn training_is_deterministic_and_learns_a_tiny_task() {
    let run = || {
        let (m, _) = mlp(8);
        let mut ex = Executor::new(&m).unwrap();
        let mut opt = Optimizer::new(OptimizerKind::sgd(0.9, 1e-4)).unwrap();
        let mut losses = Vec::new();
        for s in 0..30 {
            let (x, _) = batch(s % 3, 16);
            // A learnable rule: the class is which third the first feature falls in.
            let y: Vec<u32> = x.data.chunks(6).map(|r| (r[0] * 3.0).min(2.0) as u32).collect();
            losses.push(ex.train_step(&mut opt, 0.2, &x, &y, &Loss::CrossEntropy, None).unwrap());
        }
        losses
    };
    let (a, b) = (run(), run());
    assert_eq!(a, b);
    assert!(a[29] < a[0] * 0.8, "loss {} -> {}", a[0], a[29]);
}

#[test]
fn finetune_table_reads_keys_and_names_bad_ones() {
    use crate::FineTuneConfig;
    let t: toml::Table = toml::from_str(
        "epochs = 3\nlr = 0.05\nschedule = \"step\"\nstep_every = 2\noptimizer = \"adam\"\nvalidation = 0",
    )
    .unwrap();
    let cfg = FineTuneConfig::from_toml(&t).unwrap();
    let ft = cfg.to_finetune(9).unwrap();
    assert_eq!((ft.epochs, ft.seed, ft.lr.base), (3, 9, 0.05));
    assert_eq!(ft.lr.schedule, LrSchedule::Step { every_epochs: 2, gamma: 0.1 });
    assert!(matches!(ft.optimizer, OptimizerKind::Adam { .. }));
    assert_eq!(cfg.total_steps(1000), 16 * 3);
    let capped = FineTuneConfig { max_steps: Some(10), validation: 200, ..cfg.clone() };
    assert_eq!(capped.total_steps(1000), 10);
    assert_eq!(FineTuneConfig { max_steps: None, ..capped }.total_steps(1000), 13 * 3);

    let bad: toml::Table = toml::from_str("epoch = 3").unwrap();
    let err = FineTuneConfig::from_toml(&bad).unwrap_err().to_string();
    assert!(err.contains("epoch"), "{err}");
    let bad: toml::Table = toml::from_str("optimizer = \"lbfgs\"").unwrap();
    let err = FineTuneConfig::from_toml(&bad).unwrap().to_finetune(0).unwrap_err().to_string();
    assert!(err.contains("finetune.optimizer") && err.contains("lbfgs"), "{err}");
    let bad: toml::Table = toml::from_str("batchnorm = \"train\"").unwrap();
    let err = FineTuneConfig::from_toml(&bad).unwrap().to_finetune(0).unwrap_err().to_string();
    assert!(err.contains("finetune.batchnorm") && err.contains("`train` is not one of frozen, batch"), "{err}");
}

/// Values drawn from a few levels, so that pooling windows hold ties.
fn coarse(rng: &mut SplitMix64, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.below(7) as f32 * 0.5 - 1.5).collect()
}

#[test]
fn fast_max_pool_matches_burn_values_and_gradients() {
    use burn::tensor::module as m;
    use burn::tensor::ops::MaxPoolOptions;
    use burn::tensor::{Device, Tensor, TensorData};
    let dev = Device::flex().autodiff();
    let mut rng = SplitMix64::new(11);
    let dims = [2, 3, 9, 8];
    let x = coarse(&mut rng, dims.iter().product());
    // (kernel, strides, pads (begin, end) per axis, dilations)
    type Case = ([usize; 2], [usize; 2], [(usize, usize); 2], [usize; 2]);
    let cases: [Case; 7] = [
        ([2, 2], [2, 2], [(0, 0), (0, 0)], [1, 1]),
        ([2, 2], [2, 2], [(1, 0), (1, 1)], [1, 1]),
        // Columns 9 wide with 2x9 windows padded (1, 1): no column window lies wholly inside.
        ([2, 9], [2, 2], [(0, 0), (1, 1)], [1, 1]),
        ([3, 3], [2, 2], [(1, 1), (1, 1)], [1, 1]),
        ([3, 2], [1, 2], [(0, 2), (1, 0)], [2, 1]),
        ([2, 2], [1, 1], [(0, 0), (0, 0)], [1, 1]),
        ([1, 3], [3, 1], [(0, 0), (2, 2)], [1, 2]),
    ];
    for (k, s, p, d) in cases {
        let r = coarse(&mut rng, 2 * 3 * 9 * 8);
        let leaf = || Tensor::<4>::from_data(TensorData::new(x.clone(), dims), &dev).require_grad();
        let run = |fast: bool| {
            let xt = leaf();
            let y = if fast {
                crate::ops::max_pool_select(&xt, k, s, p, d).expect("fast path applies")
            } else {
                m::max_pool2d(xt.clone(), MaxPoolOptions::new(k).with_stride(s).with_padding_pairs(p).with_dilation(d))
            };
            let yd = y.dims();
            let len: usize = yd.iter().product();
            let rt = Tensor::<1>::from_data(TensorData::new(r[..len].to_vec(), [len]), &dev);
            let loss = (y.clone().reshape([len]) * rt).sum();
            let g = xt.grad(&loss.backward()).expect("gradient");
            (yd, y.inner().into_data().try_to_vec::<f32>().unwrap(), g.into_data().try_to_vec::<f32>().unwrap())
        };
        let (fast, slow) = (run(true), run(false));
        assert_eq!(fast.0, slow.0, "dims for {k:?} {s:?} {p:?} {d:?}");
        assert_eq!(fast.1, slow.1, "values for {k:?} {s:?} {p:?} {d:?}");
        assert_eq!(fast.2, slow.2, "gradient for {k:?} {s:?} {p:?} {d:?}");
    }
}

#[test]
fn conv_on_a_graph_input_matches_burn_conv_and_its_gradients() {
    use burn::tensor::module as m;
    use burn::tensor::ops::ConvOptions;
    use burn::tensor::{Device, Tensor, TensorData};
    // (pads t,l,b,r; strides; dilations)
    for (pads, strides, dil) in
        [([0, 0, 0, 0], [1, 1], [1, 1]), ([1, 0, 2, 1], [2, 1], [1, 2]), ([2, 2, 2, 2], [1, 3], [2, 1])]
    {
        let mut g = G::new(21);
        let x = g.g.add_input(tensor_info(
            "x",
            DataType::Float,
            &[Dim::Known(2), Dim::Known(3), Dim::Known(9), Dim::Known(8)],
        ));
        let (w, b) = (g.w(&[4, 3, 3, 2]), g.w(&[4]));
        let y = g.op(
            "Conv",
            &[Some(ValueRef(x, 0)), Some(w), Some(b)],
            vec![attr_ints("pads", &pads), attr_ints("strides", &strides), attr_ints("dilations", &dil)],
        );
        let (wn, bn) = (g.g.value_name(w).to_string(), g.g.value_name(b).to_string());
        let ex = Executor::new(&g.finish(y)).unwrap();
        let mut rng = SplitMix64::new(5);
        let xv: Vec<f32> =
            (0..2 * 3 * 9 * 8).map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0).collect();
        let input = HostTensor::new(xv.clone(), vec![2, 3, 9, 8]);
        let out = ex.forward(std::slice::from_ref(&input)).unwrap().remove(0);
        let r: Vec<f32> =
            (0..out.data.len()).map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0).collect();
        let (od, rr) = (out.dims.clone(), r.clone());
        let (_, grads) = ex
            .gradients(std::slice::from_ref(&input), move |outs| {
                let o = outs.into_iter().next().ok_or("no output")?;
                let rt = F::from_host(rr, &od, &o.inner_device())?;
                Ok(with_f!(o.mul(rt).ok_or("rank")?, t => t.sum()))
            })
            .unwrap();
        // The reference: burn's conv2d on the same values.
        let dev = Device::flex().autodiff();
        let (wv, bv) = (ex.param(&wn).unwrap().data, ex.param(&bn).unwrap().data);
        let wt = Tensor::<4>::from_data(TensorData::new(wv, [4, 3, 3, 2]), &dev).require_grad();
        let bt = Tensor::<1>::from_data(TensorData::new(bv, [4]), &dev).require_grad();
        let xt = Tensor::<4>::from_data(TensorData::new(xv, [2, 3, 9, 8]), &dev);
        let opts = ConvOptions::new_with_padding(
            [strides[0] as usize, strides[1] as usize],
            [(pads[0] as usize, pads[2] as usize), (pads[1] as usize, pads[3] as usize)],
            [dil[0] as usize, dil[1] as usize],
            1,
        );
        let yr = m::conv2d(xt, wt.clone(), Some(bt.clone()), opts);
        assert_eq!(yr.dims().to_vec(), out.dims, "dims for pads {pads:?}");
        let yv = yr.clone().inner().into_data().try_to_vec::<f32>().unwrap();
        let close = |a: &[f32], b: &[f32], what: &str| {
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{what} for pads {pads:?}: {x} vs {y}");
            }
        };
        close(&out.data, &yv, "values");
        let n = yv.len();
        let rt = Tensor::<1>::from_data(TensorData::new(r, [n]), &dev);
        let gr = (yr.reshape([n]) * rt).sum().backward();
        close(
            &grads[0].as_ref().unwrap().to_host().data,
            &wt.grad(&gr).unwrap().into_data().try_to_vec::<f32>().unwrap(),
            "dW",
        );
        close(
            &grads[1].as_ref().unwrap().to_host().data,
            &bt.grad(&gr).unwrap().into_data().try_to_vec::<f32>().unwrap(),
            "dB",
        );
    }
}

#[test]
fn host_sgd_is_bit_identical_to_burns_sgd() {
    let dev = burn::tensor::Device::flex();
    let mut rng = SplitMix64::new(3);
    let mut draw =
        |n: usize| -> Vec<f32> { (0..n).map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0).collect() };
    let dims = [6usize, 5];
    for kind in [
        OptimizerKind::sgd(0.9, 0.0),
        OptimizerKind::sgd(0.9, 0.01),
        OptimizerKind::Sgd { momentum: 0.8, dampening: 0.1, nesterov: false, weight_decay: 5e-4 },
        OptimizerKind::Sgd { momentum: 0.9, dampening: 0.0, nesterov: true, weight_decay: 1e-3 },
        OptimizerKind::sgd(0.0, 0.01),
    ] {
        let mut host = Optimizer::new(kind).unwrap();
        let burn_opt = Optimizer::new(kind).unwrap();
        assert!(host.host_sgd());
        let mut w = draw(30);
        let mut wb = F::from_host(w.clone(), &dims, &dev).unwrap();
        let mut state = None;
        for step in 0..4 {
            let g = draw(30);
            host.sgd_step(0, 0.05 + step as f64 * 0.01, &mut w, &g).unwrap();
            let (rank, bw) = wb.into_bridge();
            let (_, bg) = F::from_host(g, &dims, &dev).unwrap().into_bridge();
            let (nw, st) = burn_opt.inner.step_dyn(rank, 0.05 + step as f64 * 0.01, bw, bg, state.take());
            state = st;
            wb = F::from_bridge(rank, nw).unwrap();
            assert_eq!(w, wb.to_host().data, "{kind:?}, step {step}");
        }
    }
}

#[test]
fn sgd_updates_in_place_leave_snapshots_alone() {
    let (m, names) = mlp(6);
    let mut ex = Executor::new(&m).unwrap();
    let before: Vec<HostTensor> = names.iter().map(|n| ex.param(n).unwrap()).collect();
    let snap = ex.snapshot();
    let mut opt = Optimizer::new(OptimizerKind::sgd(0.9, 0.01)).unwrap();
    for s in 0..3 {
        let (x, y) = batch(s, 8);
        ex.train_step(&mut opt, 0.1, &x, &y, &Loss::CrossEntropy, None).unwrap();
    }
    assert_ne!(ex.param(&names[0]).unwrap(), before[0]);
    ex.restore(&snap).unwrap();
    let after: Vec<HostTensor> = names.iter().map(|n| ex.param(n).unwrap()).collect();
    assert_eq!(after, before);
}

#[test]
fn holding_out_more_than_the_training_set_names_finetune_validation() {
    #[derive(Debug)]
    struct Tiny;
    impl shrink_data::Dataset for Tiny {
        fn len(&self) -> usize {
            100
        }
        fn num_classes(&self) -> usize {
            3
        }
        fn sample_shape(&self) -> &[usize] {
            &[4]
        }
        fn batch_into(&self, _: &[usize], _: &mut shrink_data::Batch) -> Result<(), shrink_data::DataError> {
            unreachable!("the split is checked before any batch is made")
        }
    }
    let (m, _) = mlp(5);
    let mut ex = Executor::new(&m).unwrap();
    let cfg = crate::FineTuneConfig { validation: 100, ..Default::default() };
    let ft = cfg.to_finetune(0).unwrap();
    let err = cfg.run(&ft, &mut ex, &Tiny, None, &mut |_, _, _| {}, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("finetune.validation") && err.contains("only 100"), "{err}");
}

/// A dataset of the samples in `x` (batch-first; each sample shaped like
/// `x.dims[1..]`) with labels `y` in 0..3.
#[derive(Debug)]
struct Samples(HostTensor, Vec<u32>);

impl shrink_data::Dataset for Samples {
    fn len(&self) -> usize {
        self.1.len()
    }
    fn num_classes(&self) -> usize {
        3
    }
    fn sample_shape(&self) -> &[usize] {
        &self.0.dims[1..]
    }
    fn batch_into(&self, idx: &[usize], b: &mut shrink_data::Batch) -> Result<(), shrink_data::DataError> {
        let per: usize = self.sample_shape().iter().product();
        b.inputs.clear();
        b.labels.clear();
        for &i in idx {
            b.inputs.extend_from_slice(&self.0.data[i * per..(i + 1) * per]);
            b.labels.push(self.1[i]);
        }
        b.shape = std::iter::once(idx.len()).chain(self.sample_shape().iter().copied()).collect();
        Ok(())
    }
}

#[test]
fn cached_teacher_logits_train_exactly_like_a_teacher_run_per_batch() {
    let (x, y) = batch(3, 100);
    let data = Samples(x, y);
    let teacher = Executor::new(&mlp(21).0).unwrap();
    let ft = FineTune {
        epochs: 2,
        batch_size: 16,
        eval_batch: 7, // a teacher batch that does not divide the set
        loss: Loss::Distill { alpha: 0.7, temperature: 3.0 },
        ..Default::default()
    };
    let run = |cache: bool| {
        struct Losses(Vec<f32>);
        impl Progress for Losses {
            fn step(&mut self, info: &StepInfo) {
                self.0.push(info.loss);
            }
        }
        let mut student = Executor::new(&mlp(8).0).unwrap();
        let mut losses = Losses(Vec::new());
        ft.run_with(&mut student, &data, None, Some(&teacher), &mut losses, cache).unwrap();
        losses.0
    };
    let (cached, per_batch) = (run(true), run(false));
    assert_eq!(cached.len(), 14);
    assert_eq!(cached, per_batch);
}

/// A small conv net (Conv on the input, Relu, MaxPool, Conv on an activation,
/// Flatten, Gemm) for `n` images of 2x8x8, and `n` inputs and labels.
fn conv_net(seed: u64, n: usize) -> (Model, HostTensor, Vec<u32>) {
    let mut g = G::new(seed);
    let x = g.g.add_input(tensor_info(
        "x",
        DataType::Float,
        &[Dim::Sym("n".into()), Dim::Known(2), Dim::Known(8), Dim::Known(8)],
    ));
    let (w1, b1, w2, b2) = (g.w(&[4, 2, 3, 3]), g.w(&[4]), g.w(&[5, 4, 2, 2]), g.w(&[5]));
    let (w3, b3) = (g.w(&[3, 5 * 2 * 2]), g.w(&[3]));
    let y = g.op("Conv", &[Some(ValueRef(x, 0)), Some(w1), Some(b1)], vec![]);
    let y = g.op("Relu", &[Some(y)], vec![]);
    let y = g.op("MaxPool", &[Some(y)], vec![attr_ints("kernel_shape", &[2, 2]), attr_ints("strides", &[2, 2])]);
    let y = g.op("Conv", &[Some(y), Some(w2), Some(b2)], vec![attr_ints("strides", &[1, 1])]);
    let y = g.op("Flatten", &[Some(y)], vec![]);
    let y = g.op("Gemm", &[Some(y), Some(w3), Some(b3)], vec![attr_int("transB", 1)]);
    let mut r = SplitMix64::new(seed + 1);
    let data = (0..n * 2 * 8 * 8).map(|_| (r.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0).collect();
    let labels = (0..n).map(|_| r.below(3) as u32).collect();
    (g.finish(y), HostTensor::new(data, vec![n, 2, 8, 8]), labels)
}

#[test]
fn half_batches_in_parallel_give_the_whole_batch_gradient() {
    let n = crate::train::SPLIT_MIN_BATCH;
    let (model, x, y) = conv_net(31, n);
    let ex = Executor::new(&model).unwrap();
    assert!(ex.split_batches());
    assert!(!Executor::new(&mlp(1).0).unwrap().split_batches(), "an MLP keeps whole batches");
    let mut r = SplitMix64::new(9);
    let teacher =
        HostTensor::new((0..n * 3).map(|_| (r.next_u64() >> 40) as f32 / (1u64 << 21) as f32).collect(), vec![n, 3]);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    for (loss, t) in [(Loss::CrossEntropy, None), (Loss::Distill { alpha: 0.7, temperature: 3.0 }, Some(&teacher))] {
        let (l1, g1, _) = ex.step_gradients(&x, &y, &loss, t, false).unwrap();
        let (l2, g2, _) = pool.install(|| ex.step_gradients(&x, &y, &loss, t, true)).unwrap();
        assert!((l1 - l2).abs() <= 1e-5 * l1.abs(), "{loss:?}: loss {l1} vs {l2}");
        assert_eq!(g1.len(), g2.len());
        let mut differ = 0;
        for (i, (a, b)) in g1.iter().zip(&g2).enumerate() {
            let (a, b) = (a.as_ref().unwrap().to_host(), b.as_ref().unwrap().to_host());
            assert_eq!(a.dims, b.dims);
            let scale = a.data.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (u, v) in a.data.iter().zip(&b.data) {
                assert!((u - v).abs() <= 1e-5 * scale, "{loss:?}: parameter {i}: {u} vs {v}");
                differ += usize::from(u != v);
            }
        }
        // The halves ran: some sums were added in another order.
        assert!(differ > 0, "{loss:?}: bit-identical to one pass");
    }
    // An odd batch, or one the gradient split cannot halve, runs whole.
    let (l_odd, _, _) = ex
        .step_gradients(
            &HostTensor::new(x.data[..128].to_vec(), vec![1, 2, 8, 8]),
            &y[..1],
            &Loss::CrossEntropy,
            None,
            true,
        )
        .unwrap();
    assert!(l_odd.is_finite());
}

#[test]
fn training_with_half_batches_tracks_whole_batches() {
    let n = crate::train::SPLIT_MIN_BATCH;
    let (model, x, y) = conv_net(32, n);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let mut runs = Vec::new();
    for threads in [1, 2] {
        let pool1 = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let p = if threads == 1 { &pool1 } else { &pool };
        let mut ex = Executor::new(&model).unwrap();
        let mut opt = Optimizer::new(OptimizerKind::sgd(0.9, 1e-3)).unwrap();
        let losses: Vec<f32> = (0..5)
            .map(|_| p.install(|| ex.train_step(&mut opt, 0.05, &x, &y, &Loss::CrossEntropy, None)).unwrap())
            .collect();
        runs.push((losses, ex.param("w1").unwrap().data));
    }
    let ((l1, w1), (l2, w2)) = (&runs[0], &runs[1]);
    assert!(l1[4] < l1[0], "the loss falls: {l1:?}");
    for (a, b) in l1.iter().zip(l2) {
        assert!((a - b).abs() <= 1e-4 * a.abs(), "losses {l1:?} vs {l2:?}");
    }
    for (a, b) in w1.iter().zip(w2) {
        assert!((a - b).abs() <= 1e-4, "weights {a} vs {b}");
    }
}

#[test]
fn parallel_sgd_pieces_are_bit_identical_to_one_pass() {
    let n = crate::optim::SGD_PARALLEL_MIN + 12_345;
    let mut rng = SplitMix64::new(4);
    let mut draw =
        |n: usize| -> Vec<f32> { (0..n).map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0).collect() };
    let (w0, gs) = (draw(n), [draw(n), draw(n), draw(n)]);
    for kind in [
        OptimizerKind::sgd(0.9, 0.01),
        OptimizerKind::Sgd { momentum: 0.9, dampening: 0.0, nesterov: true, weight_decay: 1e-3 },
        OptimizerKind::sgd(0.0, 0.01),
    ] {
        let mut out = Vec::new();
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let mut opt = Optimizer::new(kind).unwrap();
            let mut w = w0.clone();
            for g in &gs {
                pool.install(|| opt.sgd_step(0, 0.05, &mut w, g)).unwrap();
            }
            out.push(w);
        }
        assert_ne!(out[0], w0, "{kind:?}: the weights move");
        assert!(out[0].iter().zip(&out[1]).all(|(a, b)| a.to_bits() == b.to_bits()), "{kind:?}");
    }
}

#[test]
fn small_conv_free_steps_run_serially_and_match_one_thread() {
    // Called from outside any pool with a multi-thread global pool (2+ cores), an
    // MLP step takes the one-thread path: its results equal a one-thread run bit for bit.
    let run = |one_thread: bool| {
        let (m, names) = mlp(8);
        let mut ex = Executor::new(&m).unwrap();
        let mut opt = Optimizer::new(OptimizerKind::sgd(0.9, 1e-4)).unwrap();
        let pool1 = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let mut losses = Vec::new();
        for s in 0..10 {
            let (x, y) = batch(s, 64);
            let mut step = || ex.train_step(&mut opt, 0.1, &x, &y, &Loss::CrossEntropy, None).unwrap();
            losses.push(if one_thread { pool1.install(step) } else { step() });
        }
        (losses, ex.param(&names[0]).unwrap().data)
    };
    assert_eq!(run(false), run(true));
}

#[test]
fn augmented_distillation_runs_the_teacher_on_the_augmented_batch() {
    let (model, x, y) = conv_net(4, 40);
    let data = Samples(x, y);
    let teacher = Executor::new(&conv_net(9, 1).0).unwrap();
    let ft = |augment: shrink_data::Augment| FineTune {
        epochs: 2,
        batch_size: 8,
        loss: Loss::Distill { alpha: 0.8, temperature: 2.0 },
        augment,
        ..Default::default()
    };
    let run = |ft: &FineTune, cache: bool| {
        struct Losses(Vec<f32>);
        impl Progress for Losses {
            fn step(&mut self, info: &StepInfo) {
                self.0.push(info.loss);
            }
        }
        let mut student = Executor::new(&model).unwrap();
        let mut losses = Losses(Vec::new());
        ft.run_with(&mut student, &data, None, Some(&teacher), &mut losses, cache).unwrap();
        losses.0
    };
    let aug = ft(shrink_data::Augment { shift: 1, flip: true });
    let (asked_cache, per_batch) = (run(&aug, true), run(&aug, false));
    assert_eq!(asked_cache.len(), 10);
    // A cache of the un-augmented images' logits would give other losses.
    assert_eq!(asked_cache, per_batch, "augmented training used cached teacher logits");
    assert_ne!(per_batch, run(&ft(Default::default()), false), "the augmentation changed nothing");
}

#[test]
fn finetune_table_reads_augment_and_rejects_unknown_keys() {
    let t: toml::Table = "epochs = 1\naugment = { shift = 2, flip = true }".parse().unwrap();
    let c = crate::FineTuneConfig::from_toml(&t).unwrap();
    assert_eq!(c.to_finetune(0).unwrap().augment, shrink_data::Augment { shift: 2, flip: true });
    let t: toml::Table = "augment = { shift = 2, rotate = 10 }".parse().unwrap();
    let e = crate::FineTuneConfig::from_toml(&t).unwrap_err().to_string();
    assert!(e.contains("finetune") && e.contains("rotate"), "{e}");
}

#[test]
fn run_reporting_updates_on_the_first_every_20th_and_last_step_with_validation() {
    let (x, y) = batch(3, 100);
    let data = Samples(x, y);
    let cfg = crate::FineTuneConfig { epochs: 2, batch_size: 4, validation: 20, ..Default::default() };
    let ft = cfg.to_finetune(1).unwrap();
    let mut exec = Executor::new(&mlp(8).0).unwrap();
    let mut seen = Vec::new();
    let rep =
        cfg.run_reporting(&ft, &mut exec, &data, None, "test", &mut |d, m| seen.push((d, m.to_string()))).unwrap();
    assert_eq!(rep.steps, 40);
    assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), [1, 20, 40]);
    assert!(seen.iter().all(|(_, m)| m.starts_with("loss ")), "{seen:?}");
    // Step 20 ends the first epoch, whose validation comes after it.
    assert!(!seen[1].1.contains("validation") && seen[2].1.contains("validation"), "{seen:?}");
}

/// The ops ShuffleNet-, DenseNet- and MobileNet-class exports add: Slice
/// (float channels and an integer shape chain), Split into parts, a rank-5
/// channel shuffle (Reshape, Transpose, Reshape) and a Concat of three inputs.
#[test]
fn slice_split_and_rank_five_shuffle_gradients_match_finite_differences() {
    let mut g = G::new(11);
    let x = g.w(&[2, 6, 3, 4]);
    let (st, en, ax) = (g.ints(&[1]), g.ints(&[5]), g.ints(&[1]));
    let y = g.op("Slice", &[Some(x), Some(st), Some(en), Some(ax)], vec![]); // [2, 4, 3, 4]
    g.n += 1;
    let mut sp = Op::new("Split", &format!("n{}_Split", g.n), 1, vec!["sa".into(), "sb".into()]);
    sp.attributes = vec![attr_int("axis", 1), attr_int("num_outputs", 2)];
    let sid = g.g.add_op(sp, &[Some(y)]);
    let (a, b) = (ValueRef(sid, 0), ValueRef(sid, 1)); // [2, 2, 3, 4] each
    let five = g.ints(&[2, 2, 1, 3, 4]);
    let b5 = g.op("Reshape", &[Some(b), Some(five)], vec![]);
    let b5 = g.op("Transpose", &[Some(b5)], vec![attr_ints("perm", &[0, 2, 1, 3, 4])]);
    let four = g.ints(&[2, 2, 3, 4]);
    let b = g.op("Reshape", &[Some(b5), Some(four)], vec![]);
    let ab = g.op("Mul", &[Some(a), Some(b)], vec![]);
    let y = g.op("Concat", &[Some(a), Some(ab), Some(b)], vec![attr_int("axis", 1)]); // [2, 6, 3, 4]
    // an integer Slice in a shape chain: flatten by [N, -1]
    let sh = g.op("Shape", &[Some(y)], vec![]);
    let (s0, s1) = (g.ints(&[0]), g.ints(&[1]));
    let n = g.op("Slice", &[Some(sh), Some(s0), Some(s1)], vec![]);
    let minus1 = g.ints(&[-1]);
    let target = g.op("Concat", &[Some(n), Some(minus1)], vec![attr_int("axis", 0)]);
    let y = g.op("Reshape", &[Some(y), Some(target)], vec![]);
    let model = g.finish(y);
    let ex = Executor::new(&model).unwrap();
    let out = ex.forward(&[]).unwrap().remove(0);
    assert_eq!(out.dims, [2, 72]);
    // values: channel 0 of the output is channel 1 of the input (the slice starts at 1)
    let xin = ex.param("w1").unwrap();
    assert_eq!(&out.data[..12], &xin.data[12..24]);
    gradcheck("slice-split-shuffle", &model);
}

/// Conv, then BatchNormalization in training mode (batch statistics), then
/// Relu: autodiff against central finite differences of the same training
/// pass (the batch statistics move with every weight, x included).
#[test]
fn batchnorm_in_training_mode_matches_finite_differences() {
    let mut g = G::new(12);
    let (x, w) = (g.w(&[4, 2, 3, 3]), g.w(&[3, 2, 2, 2]));
    let y = g.op("Conv", &[Some(x), Some(w)], vec![]);
    let (s, b, m) = (g.w_in(&[3], 0.5, 1.5), g.w(&[3]), g.w(&[3]));
    let v = g.w_in(&[3], 0.5, 1.5);
    let y = g.op("BatchNormalization", &[Some(y), Some(s), Some(b), Some(m), Some(v)], vec![]);
    let y = g.op("Tanh", &[Some(y)], vec![]);
    let model = g.finish(y);
    let mut ex = Executor::new(&model).unwrap();
    ex.set_batchnorm(BatchNormMode::Batch);
    let frozen = ex.params().iter().filter(|p| !p.trainable).map(|p| p.name.clone()).collect::<Vec<_>>();
    assert_eq!(frozen, [g_name(&model, 3), g_name(&model, 4)], "mean and var are not trained");
    for p in ex.params() {
        if !frozen.contains(&p.name) {
            ex.set_trainable(&p.name, true).unwrap();
        }
    }
    let dims = ex.forward(&[]).unwrap()[0].dims.clone();
    let mut rng = SplitMix64::new(3);
    let n: usize = dims.iter().product();
    let r: Vec<f32> = (0..n).map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0).collect();
    let loss = |ex: &Executor| {
        let (rr, dims) = (r.clone(), dims.clone());
        ex.gradients(&[], move |outs| {
            let o = outs.into_iter().next().ok_or("no output")?;
            let rt = F::from_host(rr, &dims, &o.inner_device())?;
            Ok(with_f!(o.mul(rt).ok_or("rank")?, t => t.sum()))
        })
        .unwrap()
    };
    let (l0, grads) = loss(&ex);
    // batch statistics differ from the stored ones: the training pass is not the inference pass
    assert!((f64::from(l0) - host_loss(&ex.forward(&[]).unwrap()[0], &r)).abs() > 1e-3);
    let eps = 1e-3f32;
    let mut checked = 0;
    for (i, p) in ex.params().iter().enumerate() {
        if frozen.contains(&p.name) {
            assert!(grads[i].is_none());
            continue;
        }
        let gr = grads[i].as_ref().unwrap().to_host().data;
        let w = ex.param(&p.name).unwrap().data;
        for j in (0..w.len()).step_by((w.len() / 5).max(1)) {
            let mut wp = w.clone();
            wp[j] += eps;
            ex.set_param(&p.name, &wp).unwrap();
            let lp = loss(&ex).0 as f64;
            wp[j] -= 2.0 * eps;
            ex.set_param(&p.name, &wp).unwrap();
            let lm = loss(&ex).0 as f64;
            ex.set_param(&p.name, &w).unwrap();
            let fd = ((lp - lm) / (2.0 * eps as f64)) as f32;
            let tol = 5e-3 + 1e-2 * fd.abs().max(gr[j].abs());
            assert!((fd - gr[j]).abs() <= tol, "d/d {}[{j}]: autodiff {} vs finite difference {fd}", p.name, gr[j]);
            checked += 1;
        }
    }
    assert!(checked >= 15, "{checked} entries checked");
}

fn g_name(model: &Model, input: usize) -> String {
    let g = &model.graph;
    let bn = g.ops().into_iter().find(|&id| g.op(id).is_some_and(|o| o.op_type == "BatchNormalization")).unwrap();
    g.value_name(g.input(bn, input).unwrap()).to_string()
}

/// One training step in [`BatchNormMode::Batch`] folds the batch's mean and
/// unbiased variance into the running statistics with the node's momentum
/// (ONNX's meaning), and inference then uses them; in the default mode the
/// running statistics never move.
#[test]
fn batchnorm_training_mode_updates_running_statistics() {
    let mut g = G::new(13);
    let x = g.g.add_input(tensor_info("x", DataType::Float, &[Dim::Sym("n".into()), Dim::Known(2)]));
    let (s, b, m) = (g.w_in(&[2], 0.5, 1.5), g.w(&[2]), g.w(&[2]));
    let v = g.w_in(&[2], 0.5, 1.5);
    let y = g.op(
        "BatchNormalization",
        &[Some(ValueRef(x, 0)), Some(s), Some(b), Some(m), Some(v)],
        vec![attr_float("momentum", 0.8)],
    );
    let w = g.w(&[2, 3]);
    let y = g.op("MatMul", &[Some(y), Some(w)], vec![]);
    let model = g.finish(y);
    let (mean_name, var_name) = (g_name(&model, 3), g_name(&model, 4));
    let input = HostTensor::new(vec![1.0, -2.0, 3.0, 0.0, 2.0, 5.0, -2.0, 1.0], vec![4, 2]);
    let labels = [0, 1, 2, 0];
    let run = |mode: BatchNormMode| {
        let mut ex = Executor::new(&model).unwrap();
        ex.set_batchnorm(mode);
        let before = (ex.param(&mean_name).unwrap().data, ex.param(&var_name).unwrap().data);
        let mut opt = Optimizer::new(OptimizerKind::sgd(0.0, 0.0)).unwrap();
        ex.train_step(&mut opt, 0.1, &input, &labels, &Loss::CrossEntropy, None).unwrap();
        (before, (ex.param(&mean_name).unwrap().data, ex.param(&var_name).unwrap().data), ex)
    };
    let ((m0, v0), (m1, v1), ex) = run(BatchNormMode::Batch);
    // channel 0 holds 1, 3, 2, -2: mean 1, unbiased variance 14/3; channel 1: -2, 0, 5, 1: mean 1, 26/3
    let (bm, bv) = ([1.0f32, 1.0], [14.0f32 / 3.0, 26.0 / 3.0]);
    for c in 0..2 {
        assert!((m1[c] - (0.8 * m0[c] + 0.2 * bm[c])).abs() < 1e-6, "mean {c}: {} from {}", m1[c], m0[c]);
        assert!((v1[c] - (0.8 * v0[c] + 0.2 * bv[c])).abs() < 1e-5, "var {c}: {} from {}", v1[c], v0[c]);
    }
    // the written model carries the new statistics
    let mut written = model.clone();
    ex.write_back(&mut written.graph).unwrap();
    let again = Executor::new(&written).unwrap();
    assert_eq!(again.param(&mean_name).unwrap().data, m1);
    let ((m0, v0), (m1, v1), _) = run(BatchNormMode::Frozen);
    assert_eq!((m0, v0), (m1, v1), "frozen statistics moved");
}

#[test]
fn merged_half_batch_statistics_are_the_whole_batch_statistics() {
    let stat = |xs: &[f32]| {
        let n = xs.len() as f64;
        let m = xs.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let v = xs.iter().map(|&x| (f64::from(x) - m).powi(2)).sum::<f64>() / n;
        crate::exec::BnStat::for_test(vec![m as f32], vec![v as f32], xs.len())
    };
    let xs = [0.5f32, -1.0, 2.0, 4.0, 3.5, -0.25, 1.0];
    let whole = stat(&xs);
    let merged = crate::exec::BnStat::merge(&stat(&xs[..3]), &stat(&xs[3..]));
    assert!((merged.mean()[0] - whole.mean()[0]).abs() < 1e-6);
    assert!((merged.var()[0] - whole.var()[0]).abs() < 1e-5);
}
