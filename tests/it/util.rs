//! Shared helpers: small models built through the IR API, a seeded RNG, and
//! the path of the `shrink` binary.

use std::path::PathBuf;

use shrink_graph::builder::{attr_float, attr_int, tensor_info};
use shrink_graph::onnx::OperatorSetIdProto;
use shrink_graph::{DataType, Dim, Graph, Model, Op, Tensor, ValueRef};

/// A tiny deterministic generator (xorshift), so tests need no rand crate.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32() * scale).collect()
    }
}

pub fn model(graph: Graph, opset: i64) -> Model {
    let meta = shrink_graph::onnx::ModelProto {
        ir_version: 8,
        producer_name: "shrink-tests".into(),
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: opset }],
        ..Default::default()
    };
    Model { meta, graph, source: None }
}

/// Adds `Gemm(x, W, b)` with `transB = 1`, as PyTorch exports `nn.Linear`.
pub fn linear(g: &mut Graph, rng: &mut Rng, x: ValueRef, name: &str, n_in: usize, n_out: usize) -> ValueRef {
    let w = g.add_weight(Tensor::from_f32(
        &format!("{name}.weight"),
        &[n_out as i64, n_in as i64],
        &rng.vec(n_in * n_out, 0.1),
    ));
    let b = g.add_weight(Tensor::from_f32(&format!("{name}.bias"), &[n_out as i64], &rng.vec(n_out, 0.1)));
    let mut op = Op::new("Gemm", &format!("/{name}/Gemm"), 3, vec![format!("/{name}/Gemm_output_0")]);
    op.attributes = vec![attr_float("alpha", 1.0), attr_float("beta", 1.0), attr_int("transB", 1)];
    let id = g.add_op(op, &[Some(x), Some(ValueRef(w, 0)), Some(ValueRef(b, 0))]);
    ValueRef(id, 0)
}

pub fn relu(g: &mut Graph, x: ValueRef, name: &str) -> ValueRef {
    let id = g.add_op(Op::new("Relu", &format!("/{name}/Relu"), 1, vec![format!("/{name}/Relu_output_0")]), &[Some(x)]);
    ValueRef(id, 0)
}

/// LeNet-300-100 (784-300-100-10, ReLU) as PyTorch's exporter writes it:
/// input `[batch, 784]`, Gemm with transB, random weights.
pub fn lenet_300_100(seed: u64) -> Model {
    let mut rng = Rng::new(seed);
    let mut g = Graph::new("main_graph");
    let x = g.add_input(tensor_info("input", DataType::Float, &[Dim::Sym("batch".into()), Dim::Known(784)]));
    let mut v = ValueRef(x, 0);
    v = linear(&mut g, &mut rng, v, "fc1", 784, 300);
    v = relu(&mut g, v, "relu1");
    v = linear(&mut g, &mut rng, v, "fc2", 300, 100);
    v = relu(&mut g, v, "relu2");
    v = linear(&mut g, &mut rng, v, "fc3", 100, 10);
    g.add_output(v, tensor_info("", DataType::Float, &[Dim::Sym("batch".into()), Dim::Known(10)]));
    model(g, 17)
}

/// The `shrink` binary of this build (built on demand: `cargo test` does not
/// build another package's binary for this one).
pub fn shrink_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_path_buf(); // target/<profile>
    let bin = dir.join(format!("shrink{}", std::env::consts::EXE_SUFFIX));
    static BUILD: std::sync::Once = std::sync::Once::new();
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        // `--workspace --tests` resolves features as `cargo test --workspace` does
        // (dev-dependencies included), so the dependencies that build made are
        // reused; `-p shrink-cli` alone resolves them differently and rebuilds
        // tract and burn (over ten minutes on 2 cores with a cold cache).
        cmd.args(["build", "--quiet", "--workspace", "--bin", "shrink", "--tests"]);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo build for the shrink binary");
        assert!(status.success(), "cargo build --workspace --bin shrink --tests failed");
    });
    assert!(bin.exists(), "{} not found after building", bin.display());
    bin
}

/// A fresh temporary folder.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// The workspace root (fixtures, pipelines).
pub fn root() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Whether the slow, model-sized checks run (`SHRINK_SLOW_TESTS=1`).
pub fn slow() -> bool {
    std::env::var_os("SHRINK_SLOW_TESTS").is_some_and(|v| v == "1")
}

/// For a slow test's first line: true (after saying so) when it should skip.
pub fn skip_unless_slow() -> bool {
    if !slow() {
        eprintln!("skipped: set SHRINK_SLOW_TESTS=1");
    }
    !slow()
}

/// Writes `text` to `$SHRINK_BENCH_OUT/FILE` when `cargo xtask bench` runs the
/// test (it sets that variable and embeds `NAME.md` in BENCHMARKS.md,
/// `NAME.readme.md` in README.md); does nothing otherwise.
pub fn write_bench_out(file: &str, text: &str) {
    if let Some(dir) = std::env::var_os("SHRINK_BENCH_OUT") {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(std::path::Path::new(&dir).join(file), text).unwrap();
    }
}
