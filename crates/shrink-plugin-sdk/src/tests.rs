//! The generated entry, called in-process: descriptor, a run, errors and panics.

use shrink_graph::builder::tensor_info;
use shrink_graph::onnx::{ModelProto, OperatorSetIdProto};
use shrink_graph::{DataType, Dim, Graph, Model, Op, ValueRef};
use shrink_plugin_abi::{ABI_VERSION, PluginDescriptor, RunInput, STATUS_OK, Slice};

use crate::{ExportStage, Stage, StageCx, StageError, StageReport};

#[derive(Debug)]
struct Rename {
    to: String,
}

impl ExportStage for Rename {
    const KIND: &'static str = "rename";
    fn from_params(params: &toml::Table) -> Result<Self, StageError> {
        match params.get("to") {
            Some(toml::Value::String(s)) => Ok(Rename { to: s.clone() }),
            _ => Err(StageError::param("rename", "to", "expected a string")),
        }
    }
}

impl Stage for Rename {
    fn kind(&self) -> &str {
        Self::KIND
    }
    fn run(&self, model: &mut Model, cx: &mut StageCx<'_>) -> Result<StageReport, StageError> {
        model.graph.name = self.to.clone();
        Ok(StageReport::new(format!("renamed, seed {}", cx.seed)).figure("n", 1.0))
    }
}

#[derive(Debug)]
struct Boom;

impl ExportStage for Boom {
    const KIND: &'static str = "boom";
    fn from_params(_: &toml::Table) -> Result<Self, StageError> {
        Ok(Boom)
    }
}

impl Stage for Boom {
    fn kind(&self) -> &str {
        Self::KIND
    }
    fn run(&self, _: &mut Model, _: &mut StageCx<'_>) -> Result<StageReport, StageError> {
        panic!("boom at {}", 42)
    }
}

crate::export_stage!(Rename, Boom);

fn tiny() -> Model {
    let mut g = Graph::new("g");
    let x = g.add_input(tensor_info("x", DataType::Float, &[Dim::Known(2)]));
    let r = g.add_op(Op::new("Relu", "relu", 1, vec!["y".into()]), &[Some(ValueRef(x, 0))]);
    g.add_output(ValueRef(r, 0), tensor_info("", DataType::Float, &[Dim::Known(2)]));
    let meta = ModelProto {
        ir_version: 8,
        producer_name: "sdk-test".into(),
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
        ..Default::default()
    };
    Model { meta, graph: g, source: None }
}

fn descriptor() -> &'static PluginDescriptor {
    // SAFETY: the macro returns a pointer to a static.
    unsafe { &*shrink_plugin_entry_v1() }
}

/// Calls `run` and returns (status, model bytes, report, error text).
fn call(kind: &str, params: &str, model: &[u8]) -> (u32, Vec<u8>, String, String) {
    let d = descriptor();
    let context = br#"{"seed": 7, "pipeline": "p"}"#;
    let input = RunInput {
        size: RunInput::SIZE_V1,
        kind: Slice::from_bytes(kind.as_bytes()),
        model: Slice::from_bytes(model),
        params: Slice::from_bytes(params.as_bytes()),
        context: Slice::from_bytes(context),
    };
    // SAFETY: a valid input; the output is read, then freed once.
    unsafe {
        let out = (d.run)(&input);
        let o = &*out;
        let res = (
            o.status,
            o.model.as_bytes().to_vec(),
            String::from_utf8(o.report.as_bytes().to_vec()).unwrap(),
            String::from_utf8(o.error.as_bytes().to_vec()).unwrap(),
        );
        (d.free)(out);
        res
    }
}

#[test]
fn descriptor_lists_the_kinds() {
    let d = descriptor();
    assert_eq!((d.abi, d.size), (ABI_VERSION, PluginDescriptor::SIZE_V1));
    // SAFETY: the descriptor's slices point to statics.
    let kinds: Vec<&str> = unsafe {
        std::slice::from_raw_parts(d.kinds, d.n_kinds)
            .iter()
            .map(|s| std::str::from_utf8(s.as_bytes()).unwrap())
            .collect()
    };
    assert_eq!(kinds, ["rename", "boom"]);
    // SAFETY: as above.
    assert_eq!(unsafe { d.name.as_bytes() }, b"shrink-plugin-sdk");
}

#[test]
fn a_run_returns_the_whole_model_and_a_json_report() {
    let (status, bytes, report, error) = call("rename", "to = \"h\"", &tiny().to_bytes());
    assert_eq!((status, error.as_str()), (STATUS_OK, ""));
    let m = Model::from_bytes(&bytes).unwrap();
    assert_eq!((m.graph.name.as_str(), m.meta.producer_name.as_str()), ("h", "sdk-test"));
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["summary"], "renamed, seed 7");
    assert_eq!(report["figures"]["n"], 1.0);
}

#[test]
fn errors_and_panics_become_text() {
    let model = tiny().to_bytes();
    let cases = [
        ("rename", "", &model[..], "stage `rename`: parameter `to`: expected a string"),
        ("rename", "to = ", &model[..], "stage `rename`: parameters are not a TOML table"),
        ("prune", "", &model[..], "unknown stage kind `prune` (this plugin offers: rename, boom)"),
        ("rename", "to = \"h\"", b"\xff\xff garbage", "stage `rename`: cannot read the model the host sent"),
        ("boom", "", &model[..], "panicked: boom at 42"),
    ];
    for (kind, params, bytes, want) in cases {
        let (status, out, _, error) = call(kind, params, bytes);
        assert_ne!(status, STATUS_OK, "{kind}");
        assert!(out.is_empty());
        assert!(error.starts_with(want), "{kind}: {error}");
    }
}

#[test]
fn check_builds_without_running() {
    let d = descriptor();
    let input = |params: &'static str| RunInput {
        size: RunInput::SIZE_V1,
        kind: Slice::from_static("rename"),
        model: Slice::EMPTY,
        params: Slice::from_static(params),
        context: Slice::EMPTY,
    };
    // SAFETY: valid inputs; each output freed once.
    unsafe {
        let ok = (d.check)(&input("to = \"x\""));
        assert_eq!((*ok).status, STATUS_OK);
        (d.free)(ok);
        let bad = (d.check)(&input("too = 1"));
        assert_ne!((*bad).status, STATUS_OK);
        (d.free)(bad);
        let short = RunInput { size: 8, ..input("") };
        let bad = (d.check)(&short);
        assert!(std::str::from_utf8((*bad).error.as_bytes()).unwrap().contains("ABI v1 needs 72"));
        (d.free)(bad);
    }
}
