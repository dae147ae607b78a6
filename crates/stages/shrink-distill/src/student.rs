//! Students built in the IR from a spec: an MLP (`Gemm` + `Relu`) or a small
//! CNN (`Conv` 3×3 pad 1 + `Relu` + `MaxPool` 2×2 blocks, `Flatten`, then
//! `Gemm` + `Relu`), for a given per-sample input shape and class count.
//!
//! Weights and biases are drawn as PyTorch's `nn.Linear` / `nn.Conv2d`
//! defaults do (Kaiming-uniform with a = √5): U(−1/√fan_in, 1/√fan_in),
//! from a seeded `SplitMix64`, so a seed gives the same student every time.
//! The input and output carry the teacher's names and declared shapes.

use shrink_data::SplitMix64;
use shrink_graph::builder::{attr_int, attr_ints};
use shrink_graph::onnx::ValueInfoProto;
use shrink_graph::{Graph, Model, Op, Tensor, ValueRef};
use shrink_stage::StageError;

use crate::params::{STAGE, StudentSpec};

/// What the student must fit: the teacher's interface.
#[derive(Debug, Clone)]
pub struct Interface {
    /// The input's value info (name, element type, declared shape).
    pub input: ValueInfoProto,
    /// The output's value info.
    pub output: ValueInfoProto,
    /// Shape of one sample, without the batch axis: `[784]` or `[1, 28, 28]`.
    pub sample_shape: Vec<usize>,
    pub classes: usize,
}

struct Builder {
    g: Graph,
    rng: SplitMix64,
    x: ValueRef,
    layer: usize,
}

impl Builder {
    /// U(−bound, bound), `n` values.
    fn uniform(&mut self, n: usize, bound: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let u = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                ((2.0 * u - 1.0) * bound as f64) as f32
            })
            .collect()
    }

    fn weight(&mut self, name: &str, dims: &[usize], fan_in: usize) -> ValueRef {
        let n = dims.iter().product();
        let bound = 1.0 / (fan_in as f32).sqrt();
        let data = self.uniform(n, bound);
        let dims: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
        ValueRef(self.g.add_weight(Tensor::from_f32(name, &dims, &data)), 0)
    }

    fn op(
        &mut self,
        op_type: &str,
        name: &str,
        out: &str,
        inputs: &[ValueRef],
        attrs: Vec<shrink_graph::onnx::AttributeProto>,
    ) {
        let mut op = Op::new(op_type, name, inputs.len(), vec![out.to_string()]);
        op.attributes = attrs;
        op.order = self.g.node_count() as u64;
        let ins: Vec<Option<ValueRef>> = inputs.iter().copied().map(Some).collect();
        self.x = ValueRef(self.g.add_op(op, &ins), 0);
    }

    fn gemm(&mut self, fan_in: usize, out: usize, out_name: Option<&str>) {
        let l = self.layer;
        self.layer += 1;
        let w = self.weight(&format!("fc{l}.weight"), &[out, fan_in], fan_in);
        let b = self.weight(&format!("fc{l}.bias"), &[out], fan_in);
        let name = out_name.map_or_else(|| format!("/fc{l}/Gemm_output_0"), str::to_string);
        let x = self.x;
        self.op("Gemm", &format!("/fc{l}/Gemm"), &name, &[x, w, b], vec![attr_int("transB", 1)]);
    }

    fn unary(&mut self, op_type: &str, name: &str, attrs: Vec<shrink_graph::onnx::AttributeProto>) {
        let x = self.x;
        self.op(op_type, name, &format!("{name}_output_0"), &[x], attrs);
    }
}

/// Builds the student `spec` (only [`StudentSpec::Mlp`] and [`StudentSpec::Cnn`])
/// for `iface`, with the model-level fields (opset, IR version) of `like`.
pub fn build(spec: &StudentSpec, iface: &Interface, like: &Model, seed: u64) -> Result<Model, StageError> {
    let mut g = Graph::new("student");
    let input = ValueRef(g.add_input(iface.input.clone()), 0);
    let mut b = Builder { g, rng: SplitMix64::new(seed), x: input, layer: 0 };
    let out_name = iface.output.name.clone();
    let sample_len: usize = iface.sample_shape.iter().product();
    match spec {
        StudentSpec::Mlp { hidden } => {
            if iface.sample_shape.len() > 1 {
                b.unary("Flatten", "/flatten/Flatten", vec![attr_int("axis", 1)]);
            }
            let mut width = sample_len;
            for (i, &h) in hidden.iter().enumerate() {
                b.gemm(width, h, None);
                b.unary("Relu", &format!("/relu{i}/Relu"), vec![]);
                width = h;
            }
            b.gemm(width, iface.classes, Some(&out_name));
        }
        StudentSpec::Cnn { channels, fc } => {
            let &[c0, h0, w0] = iface.sample_shape.as_slice() else {
                return Err(StageError::param(
                    STAGE,
                    "student.cnn",
                    format!("needs image samples [C, H, W]; the teacher takes {:?}", iface.sample_shape),
                ));
            };
            let (mut c, mut h, mut w) = (c0, h0, w0);
            for (i, &co) in channels.iter().enumerate() {
                if h < 2 || w < 2 {
                    return Err(StageError::param(
                        STAGE,
                        "student.cnn.channels",
                        format!("{} pooling blocks shrink a {h0}×{w0} input below 1×1", channels.len()),
                    ));
                }
                let fan_in = c * 9;
                let wt = b.weight(&format!("conv{i}.weight"), &[co, c, 3, 3], fan_in);
                let bs = b.weight(&format!("conv{i}.bias"), &[co], fan_in);
                let x = b.x;
                let name = format!("/conv{i}/Conv");
                b.op(
                    "Conv",
                    &name,
                    &format!("{name}_output_0"),
                    &[x, wt, bs],
                    vec![
                        attr_ints("kernel_shape", &[3, 3]),
                        attr_ints("pads", &[1, 1, 1, 1]),
                        attr_ints("strides", &[1, 1]),
                    ],
                );
                b.unary("Relu", &format!("/conv{i}/Relu"), vec![]);
                b.unary(
                    "MaxPool",
                    &format!("/conv{i}/MaxPool"),
                    vec![attr_ints("kernel_shape", &[2, 2]), attr_ints("strides", &[2, 2])],
                );
                (c, h, w) = (co, h / 2, w / 2);
            }
            b.unary("Flatten", "/flatten/Flatten", vec![attr_int("axis", 1)]);
            let mut width = c * h * w;
            for (i, &f) in fc.iter().enumerate() {
                b.gemm(width, f, None);
                b.unary("Relu", &format!("/relu{i}/Relu"), vec![]);
                width = f;
            }
            b.gemm(width, iface.classes, Some(&out_name));
        }
        StudentSpec::Current | StudentSpec::File(_) => {
            return Err(StageError::failed(STAGE, "only mlp and cnn students are built from a spec"));
        }
    }
    let x = b.x;
    let mut g = b.g;
    g.add_output(x, iface.output.clone());
    g.verify().map_err(|e| StageError::graph(STAGE, e))?;
    let mut meta = like.meta.clone();
    meta.graph = None;
    meta.producer_name = "shrink-distill".into();
    meta.producer_version = String::new();
    meta.metadata_props.clear();
    Ok(Model { meta, graph: g, source: None })
}
