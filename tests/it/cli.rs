//! The `shrink` binary as a user runs it: output, exit codes, help.

use std::process::Command;

use crate::util::{lenet_300_100, root, shrink_bin, tempdir};

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
