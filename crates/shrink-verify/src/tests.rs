//! Unit tests: a tiny Add + Relu model through tract, tensors from protobuf,
//! the two comparisons, a judge's plans per batch size, and a reference's
//! figures against evaluating both models together.

use prost::Message;
use shrink_graph::onnx::tensor_proto::DataType;
use shrink_graph::onnx::tensor_shape_proto::{Dimension, dimension};
use shrink_graph::onnx::{
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
    type_proto,
};

use crate::{
    InputSpec, Judge, Reference, Tensor, VerifyError, agreement_on_random, compare_close, compare_exact, evaluate,
    run_onnx, tensor_from_proto, tensor_from_proto_bytes,
};

fn value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    let dim = dims.iter().map(|&d| Dimension { value: Some(dimension::Value::DimValue(d)), ..Default::default() });
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(TensorShapeProto { dim: dim.collect() }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: output.into(),
        ..Default::default()
    }
}

/// y = relu(x + b), x: f32[2, 3], b = [-1, 0, 1] as an initializer.
fn add_relu_model() -> Vec<u8> {
    let b = TensorProto {
        name: "b".into(),
        dims: vec![3],
        data_type: DataType::Float as i32,
        float_data: vec![-1.0, 0.0, 1.0],
        ..Default::default()
    };
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
        graph: Some(GraphProto {
            name: "add_relu".into(),
            node: vec![node("Add", &["x", "b"], "s"), node("Relu", &["s"], "y")],
            initializer: vec![b],
            input: vec![value_info("x", &[2, 3])],
            output: vec![value_info("y", &[2, 3])],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

fn f32_tensor(shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_shape(shape, data).unwrap()
}

#[test]
fn add_relu_runs_in_tract() {
    let x = f32_tensor(&[2, 3], &[0.5, -2.0, 3.0, 2.0, 0.25, -4.0]);
    let out = run_onnx(&add_relu_model(), &[x]).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].shape(), &[2, 3]);
    let y = out[0].to_plain_array_view::<f32>().unwrap();
    assert_eq!(y.iter().copied().collect::<Vec<_>>(), vec![0.0, 0.0, 4.0, 1.0, 0.25, 0.0]);
}

#[test]
fn round_tripped_model_gives_identical_outputs() {
    let bytes = add_relu_model();
    let round_tripped = shrink_graph::Model::from_bytes(&bytes).unwrap().to_bytes();
    let x = f32_tensor(&[2, 3], &[1.5, -0.0, f32::NAN, -7.0, 1e-30, 8.0]);
    let a = run_onnx(&bytes, std::slice::from_ref(&x)).unwrap();
    let b = run_onnx(&round_tripped, &[x]).unwrap();
    compare_exact(&a, &b).unwrap();
}

#[test]
fn wrong_input_count_and_garbage_are_errors() {
    let err = run_onnx(&add_relu_model(), &[]).unwrap_err();
    assert!(matches!(err, VerifyError::InputCount { expected: 1, given: 0 }), "{err}");
    assert!(run_onnx(b"\xff\xff\xff not a model", &[]).is_err());
    // A shape the model does not accept: an error (or a caught panic), never a crash.
    assert!(run_onnx(&add_relu_model(), &[f32_tensor(&[4], &[1.0; 4])]).is_err());
}

#[test]
fn tensors_from_raw_and_typed_fields() {
    let raw = TensorProto {
        dims: vec![2],
        data_type: DataType::Float as i32,
        raw_data: [1.5f32, -2.0].iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    };
    let t = tensor_from_proto_bytes(&raw.encode_to_vec()).unwrap();
    assert_eq!(t, f32_tensor(&[2], &[1.5, -2.0]));

    let u32s = TensorProto {
        dims: vec![1, 2],
        data_type: DataType::Uint32 as i32,
        uint64_data: vec![7, 4_000_000_000],
        ..Default::default()
    };
    let t = tensor_from_proto(&u32s).unwrap();
    assert_eq!(t, Tensor::from_shape(&[1, 2], &[7u32, 4_000_000_000]).unwrap());

    let strings = TensorProto {
        dims: vec![2],
        data_type: DataType::String as i32,
        string_data: vec![b"a".to_vec(), b"bc".to_vec()],
        ..Default::default()
    };
    let t = tensor_from_proto(&strings).unwrap();
    assert_eq!(t.to_plain_array_view::<String>().unwrap().iter().cloned().collect::<Vec<_>>(), ["a", "bc"]);

    let short = TensorProto { dims: vec![3], data_type: DataType::Float as i32, raw_data: vec![0; 8], ..raw };
    assert!(tensor_from_proto(&short).is_err());
    let bf16 = TensorProto { dims: vec![1], data_type: DataType::Bfloat16 as i32, ..Default::default() };
    assert!(tensor_from_proto(&bf16).is_err());
}

#[test]
fn exact_comparison_is_bitwise() {
    let nan = f32_tensor(&[2], &[f32::NAN, 1.0]);
    compare_exact(std::slice::from_ref(&nan), std::slice::from_ref(&nan)).unwrap();
    let zero = [f32_tensor(&[1], &[0.0])];
    let neg_zero = [f32_tensor(&[1], &[-0.0])];
    let err = compare_exact(&zero, &neg_zero).unwrap_err();
    assert!(err.to_string().contains("0x80000000"), "{err}");
    compare_close(&zero, &neg_zero).unwrap();
    let reshaped = f32_tensor(&[1, 1], &[0.0]);
    assert!(compare_exact(&zero, &[reshaped]).is_err());
    assert!(compare_exact(&zero, &[]).is_err());
    let f64s = Tensor::from_shape(&[1], &[0.0f64]).unwrap();
    assert!(compare_exact(&zero, &[f64s]).is_err());
}

#[test]
fn folded_inputs_give_the_same_outputs() {
    let x = f32_tensor(&[2, 3], &[0.5, -2.0, 3.0, 2.0, 0.25, -4.0]);
    let plain = run_onnx(&add_relu_model(), std::slice::from_ref(&x)).unwrap();
    let folded = crate::run_onnx_folded(&add_relu_model(), &[x]).unwrap();
    compare_exact(&plain, &folded).unwrap();
}

#[test]
fn shape_outputs_are_int64() {
    let mut proto = ModelProto::decode(add_relu_model().as_slice()).unwrap();
    let graph = proto.graph.as_mut().unwrap();
    graph.node.push(node("Shape", &["y"], "shape"));
    let mut out = value_info("shape", &[2]);
    if let Some(type_proto::Value::TensorType(t)) = out.r#type.as_mut().and_then(|t| t.value.as_mut()) {
        t.elem_type = DataType::Int64 as i32;
    }
    graph.output = vec![out];
    let x = f32_tensor(&[2, 3], &[0.0; 6]);
    let outputs = run_onnx(&proto.encode_to_vec(), &[x]).unwrap();
    assert_eq!(outputs, vec![Tensor::from_shape(&[2], &[2i64, 3]).unwrap()]);
}

/// y = relu(x + b) with x, the sum and y declared `[batch, 3]`, as exporters
/// write a symbolic batch on every intermediate.
fn batch_model(b: [f32; 3]) -> Vec<u8> {
    let mut proto = ModelProto::decode(add_relu_model().as_slice()).unwrap();
    let g = proto.graph.as_mut().unwrap();
    g.initializer[0].float_data = b.to_vec();
    let sym = |mut vi: ValueInfoProto| {
        if let Some(type_proto::Value::TensorType(t)) = vi.r#type.as_mut().and_then(|t| t.value.as_mut()) {
            t.shape.as_mut().unwrap().dim[0].value = Some(dimension::Value::DimParam("batch".into()));
        }
        vi
    };
    g.input = vec![sym(value_info("x", &[0, 3]))];
    g.output = vec![sym(value_info("y", &[0, 3]))];
    g.value_info = vec![sym(value_info("s", &[0, 3]))];
    proto.encode_to_vec()
}

fn inputs(n: usize, seed: u32) -> Vec<f32> {
    (0..n).map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 1000) as f32 / 250.0 - 2.0).collect()
}

#[test]
fn a_judge_binds_the_batch_of_one_parse_per_plan() {
    let b = [-1.0f32, 0.0, 1.0];
    let mut judge = Judge::from_bytes("m", &batch_model(b), &InputSpec::default()).unwrap();
    assert_eq!(judge.sample_shape(), &[3]);
    for batch in [1, 2, 5, 2, 1] {
        let x = inputs(batch * 3, batch as u32);
        let logits = judge.logits(&x, batch).unwrap();
        assert_eq!((logits.batch, logits.classes), (batch, 3));
        let want: Vec<f32> = x.iter().enumerate().map(|(i, v)| (v + b[i % 3]).max(0.0)).collect();
        assert_eq!(logits.data, want, "batch {batch}");
    }
    let text = format!("{judge:?}");
    assert!(["1", "2", "5"].iter().all(|b| text.contains(b)), "{text}");
    assert!(Judge::from_bytes("m", b"\xff\xff not a model", &InputSpec::default()).is_err());
}

fn dataset(n: usize) -> shrink_data::InMemoryDataset {
    use shrink_data::{Layout, Preprocess, RawArray, Values};
    let images = RawArray { origin: "x".into(), shape: vec![n, 3], values: Values::F32(inputs(n * 3, 7)) };
    let labels =
        RawArray { origin: "y".into(), shape: vec![n], values: Values::I64((0..n as i64).map(|i| i % 3).collect()) };
    let pre = Preprocess { scale: false, mean: Vec::new(), std: Vec::new(), layout: Layout::Flat };
    shrink_data::InMemoryDataset::new(images, labels, Some(3), &pre).unwrap()
}

#[test]
fn a_reference_gives_the_figures_of_evaluating_both() {
    let judge = |name: &str, b: [f32; 3]| Judge::from_bytes(name, &batch_model(b), &InputSpec::default()).unwrap();
    let (a, b) = ([-1.0f32, 0.0, 1.0], [-0.5f32, 0.1, 1.0]);
    let data = dataset(7); // batches of 3, 3 and 1

    let both = evaluate(&mut [&mut judge("a", a), &mut judge("b", b)], &data, 3, None, &mut |_, _| {}).unwrap();
    let mut ra = judge("a", a);
    let reference = Reference::on_data(&mut ra, &data, 3, None, &mut |_, _| {}).unwrap();
    assert_eq!(reference.accuracy(), Some(&both.accuracy[0]));
    let (acc, agree) = reference.compare(&mut judge("b", b), &mut |_, _| {}).unwrap();
    assert_eq!(acc.as_ref(), Some(&both.accuracy[1]));
    assert_eq!(Some(agree), both.agreement[1]);
    let same = evaluate(&mut [&mut judge("a", a), &mut judge("a2", a)], &data, 3, None, &mut |_, _| {}).unwrap();
    assert_eq!(Some(reference.self_agreement()), same.agreement[1]);

    let both = agreement_on_random(&mut [&mut judge("a", a), &mut judge("b", b)], 4, 3, 9, &mut |_, _| {}).unwrap();
    let reference = Reference::on_random(&mut judge("a", a), 4, 3, 9, &mut |_, _| {}).unwrap();
    assert_eq!(reference.accuracy(), None);
    let (acc, agree) = reference.compare(&mut judge("b", b), &mut |_, _| {}).unwrap();
    assert_eq!((acc, Some(agree)), (None, both[1].clone()));
}

/// A model exported with static shapes: input `[1, 3]`, a `Reshape` to the
/// constant `[1, 3]`, then relu(x + b). It cannot run at batch 4 (the
/// Reshape pins the batch); the judge then runs it one sample at a time and
/// gives the same logits as four batch-1 runs. A model with a fixed batch
/// that does re-batch (`add_relu_model`, input `[2, 3]`, no Reshape) keeps
/// running whole batches.
#[test]
fn a_model_with_a_pinned_batch_runs_in_pieces_of_that_batch() {
    let mut proto = ModelProto::decode(add_relu_model().as_slice()).unwrap();
    let g = proto.graph.as_mut().unwrap();
    g.initializer.push(TensorProto {
        name: "shape".into(),
        dims: vec![2],
        data_type: DataType::Int64 as i32,
        int64_data: vec![1, 3],
        ..Default::default()
    });
    g.node.insert(0, node("Reshape", &["x", "shape"], "r"));
    g.node[1].input[0] = "r".into();
    g.input = vec![value_info("x", &[1, 3])];
    g.output = vec![value_info("y", &[1, 3])];
    let bytes = proto.encode_to_vec();
    let b = [-1.0f32, 0.0, 1.0];
    let mut judge = Judge::from_bytes("pinned", &bytes, &InputSpec::default()).unwrap();
    let x = inputs(4 * 3, 7);
    let logits = judge.logits(&x, 4).unwrap();
    assert_eq!((logits.batch, logits.classes), (4, 3));
    let want: Vec<f32> = x.iter().enumerate().map(|(i, v)| (v + b[i % 3]).max(0.0)).collect();
    assert_eq!(logits.data, want);
    assert!(judge.chunked, "batch 4 was planned, the Reshape should have pinned it");
    let mut whole = Judge::from_bytes("whole", &add_relu_model(), &InputSpec::default()).unwrap();
    assert_eq!(whole.logits(&inputs(4 * 3, 7), 4).unwrap().data, want);
    assert!(!whole.chunked);
}
