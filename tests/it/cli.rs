//! The `shrink` binary as a user runs it: output, exit codes, help.

use std::process::Command;

use shrink_graph::builder::{attr_float, attr_int, tensor_info};
use shrink_graph::{DataType, Dim, Graph, Op, Tensor, ValueRef};

use crate::util::{lenet_300_100, model, root, shrink_bin, tempdir};

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(shrink_bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn info_prints_the_layer_table_and_totals() {
    let dir = tempdir();
    let path = dir.path().join("lenet.onnx");
    lenet_300_100(1).save(&path).unwrap();
    let (code, out, err) = run(&["info", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let squeezed: Vec<String> = out.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
    assert!(squeezed.iter().any(|l| l == "/fc1/Gemm Gemm 300x784 + 300 235,500 235,200 942,000"), "{out}");
    assert!(squeezed.iter().any(|l| l == "total 266,610 266,200 1,066,440"), "{out}");
    assert!(out.contains("parameters 266,610"), "{out}");
    assert!(out.contains("MACs per sample 266,200"), "{out}");
    assert!(squeezed.iter().any(|l| l == "input input float [batch, 784]"), "{out}");

    let (code, out, _) = run(&["info", path.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["params"], 266_610);
    assert_eq!(v["macs"], 266_200);
    assert_eq!(v["layers"][0]["weight_shapes"][0], serde_json::json!([300, 784]));
}

#[test]
fn bad_input_exits_2_with_a_message_not_a_panic() {
    let dir = tempdir();
    let garbage = dir.path().join("garbage.onnx");
    std::fs::write(&garbage, [0xffu8; 32]).unwrap();
    for (path, want) in
        [(garbage.to_str().unwrap(), "not an ONNX model"), ("missing.onnx", "missing.onnx: No such file")]
    {
        let (code, _, err) = run(&["info", path]);
        assert_eq!(code, 2, "{err}");
        assert!(err.starts_with("error: ") && err.contains(want), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn help_explains_every_flag() {
    let (code, out, _) = run(&["info", "--help"]);
    assert_eq!(code, 0);
    for want in ["--json", "MACs", "<MODEL>", "--verbose"] {
        assert!(out.contains(want), "info --help lacks {want}:\n{out}");
    }
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("info"), "{out}");
}

/// `shrink finetune`: one epoch on MNIST keeps the fixture's accuracy (measured
/// by tract after write-back) and writes a loadable model; the input is never
/// overwritten.
#[test]
fn finetune_one_epoch() {
    let root = root();
    let model = root.join("fixtures/models/lenet-300-100.onnx");
    let dir = tempdir();
    let out = dir.path().join("ft.onnx");
    let run_in = |args: &[&str]| {
        let o = Command::new(shrink_bin()).args(args).current_dir(&root).output().unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, _, err) = run_in(&["finetune", model.to_str().unwrap(), "-o", model.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("refusing to overwrite the input model"), "{err}");
    // LeNet-300-100 takes flat samples: nothing to shift.
    let (code, _, err) =
        run_in(&["finetune", model.to_str().unwrap(), "--augment-shift", "2", "-o", out.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("finetune.augment") && err.contains("flat") && !err.contains("panicked"), "{err}");
    assert!(!out.exists(), "a failed run wrote {}", out.display());
    let (code, stdout, err) =
        run_in(&["finetune", model.to_str().unwrap(), "--epochs", "1", "--lr", "0.005", "-o", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let after: f64 = stdout.split("→ ").nth(1).and_then(|s| s.split(" %").next()).unwrap().parse().unwrap();
    assert!(after >= 97.5, "{stdout}");
    shrink_graph::Model::load(&out).unwrap();
}

/// `shrink eval --data FOLDER --resize N --crop N`: an image folder (two
/// classes sorted by name, PNG and JPEG of different sizes) judged with a
/// 3-channel model built here whose logits are the mean blue and the mean red:
/// `blue/` is label 0, `red/` label 1, so every image is classified right.
#[test]
fn eval_reads_an_image_folder() {
    let dir = tempdir();
    let data = dir.path().join("my-images").join("val");
    let images: [(&str, [u8; 3], (u32, u32)); 4] = [
        ("red/a.png", [230, 20, 10], (12, 9)),
        ("red/b.jpg", [200, 30, 30], (9, 16)),
        ("blue/a.jpeg", [10, 20, 220], (10, 10)),
        ("blue/b.png", [0, 40, 250], (20, 11)),
    ];
    for (name, rgb, (w, h)) in images {
        let path = data.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::RgbImage::from_pixel(w, h, image::Rgb(rgb)).save(&path).unwrap();
    }
    std::fs::write(data.join("red").join("notes.txt"), "skipped").unwrap();

    let mut g = Graph::new("colour");
    let x = g.add_input(tensor_info(
        "input",
        DataType::Float,
        &[Dim::Sym("batch".into()), Dim::Known(3), Dim::Known(8), Dim::Known(8)],
    ));
    let pool = g.add_op(Op::new("GlobalAveragePool", "/pool", 1, vec!["pooled".into()]), &[Some(ValueRef(x, 0))]);
    let mut flat = Op::new("Flatten", "/flat", 1, vec!["flat".into()]);
    flat.attributes = vec![attr_int("axis", 1)];
    let flat = g.add_op(flat, &[Some(ValueRef(pool, 0))]);
    // logits = [blue, red]
    let w = g.add_weight(Tensor::from_f32("fc.weight", &[2, 3], &[0.0, 0.0, 1.0, 1.0, 0.0, 0.0]));
    let b = g.add_weight(Tensor::from_f32("fc.bias", &[2], &[0.0, 0.0]));
    let mut gemm = Op::new("Gemm", "/fc", 3, vec!["logits".into()]);
    gemm.attributes = vec![attr_float("alpha", 1.0), attr_float("beta", 1.0), attr_int("transB", 1)];
    let logits = g.add_op(gemm, &[Some(ValueRef(flat, 0)), Some(ValueRef(w, 0)), Some(ValueRef(b, 0))]);
    g.add_output(ValueRef(logits, 0), tensor_info("", DataType::Float, &[Dim::Sym("batch".into()), Dim::Known(2)]));
    let model_path = dir.path().join("colour.onnx");
    model(g, 17).save(&model_path).unwrap();

    let (m, d) = (model_path.to_str().unwrap(), data.to_str().unwrap());
    let args = ["eval", m, "--data", d, "--resize", "10", "--crop", "8", "--no-latency", "--json"];
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["accuracy"]["samples"], 4, "{out}");
    assert_eq!(v["accuracy"]["top1"], 1.0, "{out}");
    assert_eq!(v["input_shape"], serde_json::json!([64, 3, 8, 8]), "{out}");
    // ImageNet's normalisation changes the numbers, not the winner here
    let norm = ["--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"];
    let (code, out, err) = run(&[&args[..], &norm].concat());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"top1\": 1.0"), "{out}");

    // without --resize/--crop the sizes differ: an error naming the file, exit 2
    let (code, _, err) = run(&["eval", m, "--data", d, "--no-latency"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("blue/b.png: image is 20x11 but ") && err.contains("blue/a.jpeg is 10x10"), "{err}");
    // --crop is for folders only
    let (code, _, err) = run(&["eval", m, "--data", "mnist", "--crop", "8"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--resize and --crop are for a folder of images"), "{err}");

    let (code, out, _) = run(&["eval", "--help"]);
    assert_eq!(code, 0);
    for want in ["--resize <N>", "--crop <N>", "--channels-last", "ImageFolder", "--resize 256 --crop 224"] {
        assert!(out.contains(want), "eval --help lacks {want}:\n{out}");
    }
}
