//! Every bad-input path of the loader: a clear error naming the file and the
//! node or field, never a panic.

use prost::Message;
use shrink_graph::onnx::{GraphProto, ModelProto, NodeProto, StringStringEntryProto, ValueInfoProto};
use shrink_graph::{GraphError, LoadOptions, Model, Tensor};

use crate::util::{lenet_300_100, tempdir};

fn vi(n: &str) -> ValueInfoProto {
    ValueInfoProto { name: n.into(), ..Default::default() }
}

fn node(name: &str, op: &str, i: &[&str], o: &[&str]) -> NodeProto {
    NodeProto {
        name: name.into(),
        op_type: op.into(),
        input: i.iter().map(|s| s.to_string()).collect(),
        output: o.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn model_of(graph: GraphProto) -> ModelProto {
    ModelProto { ir_version: 8, graph: Some(graph), ..Default::default() }
}

/// Writes `bytes` to a file and loads it; returns the error text.
fn load_err(bytes: &[u8]) -> String {
    let dir = tempdir();
    let path = dir.path().join("bad.onnx");
    std::fs::write(&path, bytes).unwrap();
    let err = Model::load(&path).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with(&path.display().to_string()), "error does not name the file: {text}");
    text
}

#[test]
fn missing_file() {
    let err = Model::load("no/such/model.onnx").unwrap_err().to_string();
    assert!(err.starts_with("no/such/model.onnx: "), "{err}");
    assert!(err.contains("No such file"), "{err}");
}

#[test]
fn truncated_file() {
    let bytes = lenet_300_100(1).to_bytes();
    let err = load_err(&bytes[..bytes.len() / 2]);
    assert!(err.contains("not an ONNX model (protobuf decode failed"), "{err}");
}

#[test]
fn garbage_bytes() {
    let err = load_err(&[0xff; 64]);
    assert!(err.contains("not an ONNX model (protobuf decode failed"), "{err}");
    let err = load_err(b"");
    assert!(err.contains("the model has no graph"), "{err}");
}

#[test]
fn dangling_input_names_node_and_value() {
    let g = GraphProto {
        node: vec![node("relu1", "Relu", &["nope"], &["y"])],
        input: vec![vi("x")],
        output: vec![vi("y")],
        ..Default::default()
    };
    let err = load_err(&model_of(g).encode_to_vec());
    assert!(err.ends_with("node `relu1` (Relu) reads value `nope`, which nothing produces"), "{err}");
}

#[test]
fn dangling_output() {
    let g = GraphProto {
        node: vec![node("r", "Relu", &["x"], &["y"])],
        input: vec![vi("x")],
        output: vec![vi("z")],
        ..Default::default()
    };
    let err = load_err(&model_of(g).encode_to_vec());
    assert!(err.ends_with("graph output `z` is not produced by any node, input or initializer"), "{err}");
}

#[test]
fn duplicate_output_name_names_both_nodes() {
    let g = GraphProto {
        node: vec![node("a", "Relu", &["x"], &["y"]), node("b", "Neg", &["x"], &["y"])],
        input: vec![vi("x")],
        output: vec![vi("y")],
        ..Default::default()
    };
    let err = load_err(&model_of(g).encode_to_vec());
    assert!(err.ends_with("value `y` is produced twice: by node `a` (Relu) and by node `b` (Neg)"), "{err}");
}

#[test]
fn cycle_is_refused() {
    let g = GraphProto {
        node: vec![node("a", "Add", &["x", "b"], &["a"]), node("b", "Relu", &["a"], &["b"])],
        input: vec![vi("x")],
        output: vec![vi("b")],
        ..Default::default()
    };
    let err = load_err(&model_of(g).encode_to_vec());
    assert!(err.contains("is on a cycle: the graph has no topological order"), "{err}");
}

#[test]
fn initializer_data_must_match_dims() {
    let mut w = Tensor::from_f32("w", &[2, 3], &[1.0; 5]).proto;
    w.dims = vec![2, 3];
    let g = GraphProto {
        node: vec![node("add", "Add", &["x", "w"], &["y"])],
        input: vec![vi("x")],
        initializer: vec![w],
        output: vec![vi("y")],
        ..Default::default()
    };
    let err = load_err(&model_of(g).encode_to_vec());
    assert!(
        err.ends_with("invalid graph at initializer `w`: dims [2, 3] of Float need 24 bytes, raw_data holds 20"),
        "{err}"
    );
}

#[test]
fn model_over_the_size_limit() {
    let dir = tempdir();
    let path = dir.path().join("big.onnx");
    std::fs::write(&path, lenet_300_100(1).to_bytes()).unwrap();
    let err = Model::load_with(&path, &LoadOptions { max_bytes: 1000, ..Default::default() }).unwrap_err();
    assert!(
        matches!(&err, GraphError::File { source, .. } if matches!(**source, GraphError::TooLarge { limit: 1000, .. }))
    );
    assert!(err.to_string().contains("over the limit of 1000 bytes"), "{err}");
}

#[test]
fn external_data_outside_the_model_folder_is_refused() {
    let mut w = Tensor::from_f32("fc.weight", &[4], &[]).proto;
    w.raw_data.clear();
    w.data_location = 1;
    w.external_data = vec![StringStringEntryProto { key: "location".into(), value: "../../etc/passwd".into() }];
    let g = GraphProto {
        node: vec![node("add", "Add", &["x", "fc.weight"], &["y"])],
        input: vec![vi("x")],
        initializer: vec![w],
        output: vec![vi("y")],
        ..Default::default()
    };
    let err = load_err(&model_of(g).encode_to_vec());
    assert!(
        err.ends_with("tensor `fc.weight`: external data: location `../../etc/passwd` must be a relative path inside the model's folder"),
        "{err}"
    );
}

#[test]
fn external_data_past_the_end_of_its_file() {
    let dir = tempdir();
    std::fs::write(dir.path().join("w.bin"), [0u8; 8]).unwrap();
    let mut w = Tensor::from_f32("w", &[4], &[]).proto;
    w.raw_data.clear();
    w.data_location = 1;
    w.external_data = vec![
        StringStringEntryProto { key: "location".into(), value: "w.bin".into() },
        StringStringEntryProto { key: "length".into(), value: "16".into() },
    ];
    let g = GraphProto {
        node: vec![node("add", "Add", &["x", "w"], &["y"])],
        input: vec![vi("x")],
        initializer: vec![w],
        output: vec![vi("y")],
        ..Default::default()
    };
    let path = dir.path().join("m.onnx");
    std::fs::write(&path, model_of(g).encode_to_vec()).unwrap();
    let err = Model::load(&path).unwrap_err().to_string();
    assert!(err.contains("tensor `w`: external data: bytes 0..+16 lie past the end of"), "{err}");
}
