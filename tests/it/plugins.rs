//! Stage plugins through the host: the fold-bn example plugin, built as a
//! cdylib and loaded, agrees with the original in tract on MNIST; the test
//! fixture plugins (`plugins/shrink-plugin-test-*`) check that a wrong ABI
//! is refused, a panic is reported with the process alive, and garbage
//! bytes are rejected.

use std::path::{Path, PathBuf};

use shrink_data::{Dataset, Preprocess, Split};
use shrink_graph::Model;
use shrink_pipeline::plugin::{Plugin, PluginError, list_kinds};
use shrink_stage::{NoProgress, Stage, StageCx, StageError, StageReport};
use shrink_verify::{InputSpec, Judge};

use crate::util::root;

fn repo() -> PathBuf {
    root()
}

/// The shared library of plugin crate `name`, built (with every plugin of
/// this test) by `cargo build` in this test binary's profile on first use.
fn plugin_lib(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_path_buf(); // target/<profile>
    static BUILD: std::sync::Once = std::sync::Once::new();
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.arg("build").arg("--quiet").arg("--manifest-path").arg(repo().join("Cargo.toml"));
        for p in ["shrink-plugin-fold-bn", "shrink-plugin-test-panic", "shrink-plugin-test-garbage"] {
            cmd.args(["-p", p]);
        }
        cmd.args(["-p", "shrink-plugin-test-wrong-abi"]);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo build for the plugins");
        assert!(status.success(), "cargo build of the plugins failed");
    });
    let file = format!("{}{}{}", std::env::consts::DLL_PREFIX, name.replace('-', "_"), std::env::consts::DLL_SUFFIX);
    let lib = dir.join(file);
    assert!(lib.exists(), "{} not found after building", lib.display());
    lib
}

/// Runs `stage` on `model` with a context that has no data.
fn run(stage: &dyn Stage, model: &mut Model) -> Result<StageReport, StageError> {
    let original = model.clone();
    let mut progress = NoProgress;
    let tmp = std::env::temp_dir();
    let mut cx = StageCx {
        pipeline: "plugins-test".into(),
        index: 0,
        train: None,
        test: None,
        original: &original,
        seed: 1,
        progress: &mut progress,
        scratch: tmp.clone(),
        output_dir: tmp,
        encoded: Default::default(),
    };
    stage.run(model, &mut cx)
}

fn count(m: &Model, op_type: &str) -> usize {
    m.graph.ops().into_iter().filter(|&n| m.graph.op(n).is_some_and(|o| o.op_type == op_type)).count()
}

fn convnet_mix() -> Model {
    Model::load(repo().join("fixtures/models/convnet-mix.onnx")).unwrap()
}

#[test]
fn fold_bn_plugin_folds_convnet_mix_and_agrees_with_tract() {
    let lib = plugin_lib("shrink-plugin-fold-bn");
    let plugin = Plugin::load(&lib).unwrap();
    assert_eq!((plugin.name(), plugin.kinds()), ("shrink-plugin-fold-bn", &["fold-batchnorm".to_string()][..]));
    assert_eq!(list_kinds(&lib).unwrap(), ["fold-batchnorm"]);
    let stage = plugin.stage("fold-batchnorm", &toml::Table::new()).unwrap();
    assert_eq!(stage.kind(), "fold-batchnorm");

    let original = convnet_mix();
    assert_eq!(count(&original, "BatchNormalization"), 8);
    let mut model = original.clone();
    let report = run(stage.as_ref(), &mut model).unwrap();
    assert_eq!(count(&model, "BatchNormalization"), 0);
    assert_eq!(report.figures["batchnorms_folded"], 8.0, "{report:?}");
    assert_eq!(report.figures["nodes_after"] + 8.0, report.figures["nodes_before"]);
    assert_eq!(model.graph.ops().len() + 8, original.graph.ops().len());
    // The plugin returns the whole model: metadata and the source path survive.
    assert_eq!(model.meta.opset_import, original.meta.opset_import);
    assert_eq!(model.meta.producer_name, original.meta.producer_name);
    assert_eq!(model.source, original.source);

    let dirs = shrink_data::DataDirs { data_dir: Some(repo().join("fixtures/data")), cache_dir: None };
    let data = shrink_data::load_builtin_from(&dirs, "mnist", Split::Test, &Preprocess::default()).unwrap();
    let indices: Vec<usize> = (0..100).collect();
    let batch = data.batch(&indices).unwrap();
    let mut before = Judge::new("convnet-mix", &original, &InputSpec::default()).unwrap();
    let mut after = Judge::new("convnet-mix folded", &model, &InputSpec::default()).unwrap();
    let a = before.logits(&batch.inputs, batch.len()).unwrap();
    let b = after.logits(&batch.inputs, batch.len()).unwrap();
    let max = a.data.iter().zip(&b.data).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(max <= 1e-4, "max abs logit difference {max}");
    assert!((0..batch.len()).all(|i| a.argmax(i) == b.argmax(i)));
}

#[test]
fn plugin_params_and_kinds_are_checked_before_running() {
    let lib = plugin_lib("shrink-plugin-fold-bn");
    let plugin = Plugin::load(&lib).unwrap();
    let mut params = toml::Table::new();
    params.insert("epsilon".into(), toml::Value::Float(1e-3));
    let e = plugin.stage("fold-batchnorm", &params).unwrap_err().to_string();
    assert!(e.contains("parameter `epsilon`") && e.contains(&lib.display().to_string()), "{e}");
    let e = plugin.stage("prune", &toml::Table::new()).unwrap_err().to_string();
    assert!(e.starts_with("unknown stage kind `prune` (known kinds: fold-batchnorm (offered by plugin"), "{e}");
}

#[test]
fn a_plugin_of_another_abi_version_is_refused() {
    let lib = plugin_lib("shrink-plugin-test-wrong-abi");
    let e = Plugin::load(&lib).unwrap_err();
    assert!(matches!(e, PluginError::Abi { found: 99, expected: 1, .. }), "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "plugin {}: speaks plugin ABI version 99, this shrink speaks version 1; \
             rebuild the plugin against shrink-plugin-abi 1",
            lib.display()
        )
    );
}

#[test]
fn a_panicking_plugin_stage_is_an_error_and_the_host_survives() {
    let lib = plugin_lib("shrink-plugin-test-panic");
    assert_eq!(list_kinds(&lib).unwrap(), ["test-panic", "test-fail"]);
    let plugin = Plugin::load(&lib).unwrap();
    let mut model = convnet_mix();
    let nodes = model.graph.node_count();
    let panic = plugin.stage("test-panic", &toml::Table::new()).unwrap();
    for _ in 0..2 {
        let e = run(panic.as_ref(), &mut model).unwrap_err();
        assert!(matches!(e, StageError::Failed { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            format!(
                "stage `test-panic`: plugin {}: panicked: deliberate panic in a test plugin ({nodes} nodes)",
                lib.display()
            )
        );
    }
    let fail = plugin.stage("test-fail", &toml::Table::new()).unwrap();
    let e = run(fail.as_ref(), &mut model).unwrap_err().to_string();
    assert_eq!(e, format!("stage `test-fail`: plugin {}: stage `test-fail`: deliberate failure", lib.display()));
    // The model is untouched and the process goes on working with plugins.
    assert_eq!(model.graph.node_count(), nodes);
    let fold = Plugin::load(&plugin_lib("shrink-plugin-fold-bn")).unwrap();
    run(fold.stage("fold-batchnorm", &toml::Table::new()).unwrap().as_ref(), &mut model).unwrap();
    assert_eq!(count(&model, "BatchNormalization"), 0);
}

#[test]
fn garbage_bytes_from_a_plugin_are_rejected() {
    let lib = plugin_lib("shrink-plugin-test-garbage");
    let plugin = Plugin::load(&lib).unwrap();
    let stage = plugin.stage("test-garbage", &toml::Table::new()).unwrap();
    let mut model = convnet_mix();
    let nodes = model.graph.node_count();
    let e = run(stage.as_ref(), &mut model).unwrap_err().to_string();
    let want = format!("stage `test-garbage`: plugin {}: returned a model that does not load: ", lib.display());
    assert!(e.starts_with(&want), "{e}");
    assert_eq!(model.graph.node_count(), nodes);
}

/// Both sides compile `shrink-plugin-abi`; it must stay free of dependencies.
#[test]
fn the_abi_crate_has_no_dependencies() {
    let manifest = std::fs::read_to_string(repo().join("crates/shrink-plugin-abi/Cargo.toml")).unwrap();
    let deps = manifest.split("[dependencies]").nth(1).unwrap().split("\n[").next().unwrap();
    let lines: Vec<&str> = deps.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    assert!(lines.is_empty(), "shrink-plugin-abi has dependencies: {lines:?}");
    assert!(!manifest.contains("[build-dependencies]"));
}

/// `shrink run pipelines/fold-bn.toml`-style run, killed (SIGKILL) after its
/// first stage finished: the rerun resumes at stage 2 and ends with the same
/// model bytes as an uninterrupted run; no output file is ever half-written.
#[cfg(unix)]
#[test]
fn killed_run_resumes_at_stage_2_with_the_same_result() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    let root = root();
    let lib = plugin_lib("shrink-plugin-fold-bn");
    let dir = crate::util::tempdir();
    let pipeline = |out: &Path| {
        format!(
            "[pipeline]\nname = \"kill\"\nmodel = \"{model}\"\noutput = \"{out}\"\nseed = 1\n\
             [data]\ntest = {{ builtin = \"mnist\", split = \"test\", limit = 2000 }}\n\
             [verify]\nbatch_sizes = [1, 64]\n\
             [[stage]]\nkind = \"plugin\"\npath = \"{lib}\"\nstage = \"fold-batchnorm\"\n\
             [[stage]]\nkind = \"plugin\"\npath = \"{lib}\"\nstage = \"fold-batchnorm\"\n",
            model = root.join("fixtures/models/convnet-mix.onnx").display(),
            out = out.display(),
            lib = lib.display(),
        )
    };
    let run =
        |toml: &Path| Command::new(crate::util::shrink_bin()).arg("run").arg(toml).current_dir(&root).output().unwrap();

    // uninterrupted
    let clean_out = dir.path().join("clean");
    let clean_toml = dir.path().join("clean.toml");
    std::fs::write(&clean_toml, pipeline(&clean_out)).unwrap();
    let o = run(&clean_toml);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // killed at staggered moments: every visible file is whole each time
    let check_whole = |out: &Path| {
        let mut files = vec![];
        for d in [out.to_path_buf(), out.join("stages")] {
            if let Ok(rd) = std::fs::read_dir(&d) {
                files.extend(rd.map(|e| e.unwrap().path()).filter(|p| p.is_file()));
            }
        }
        for p in files {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue; // the temp file of an interrupted atomic write: never a visible output
            }
            if name.ends_with(".onnx") {
                shrink_graph::Model::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            } else if name.ends_with(".json") {
                serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&p).unwrap())
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            }
        }
    };
    let churn = dir.path().join("churn");
    let churn_toml = dir.path().join("churn.toml");
    std::fs::write(&churn_toml, pipeline(&churn)).unwrap();
    for ms in [150u64, 400, 800, 1300, 2000] {
        let mut child = Command::new(crate::util::shrink_bin())
            .arg("run")
            .arg(&churn_toml)
            .current_dir(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        let _ = child.kill();
        child.wait().unwrap();
        check_whole(&churn);
    }

    // killed after stage 1's row is written
    let out = dir.path().join("killed");
    let toml = dir.path().join("killed.toml");
    std::fs::write(&toml, pipeline(&out)).unwrap();
    let mut child = Command::new(crate::util::shrink_bin())
        .arg("run")
        .arg(&toml)
        .current_dir(&root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let marker = out.join("stages/01-fold-batchnorm.json");
    let start = Instant::now();
    while !marker.exists() {
        assert!(start.elapsed() < Duration::from_secs(120), "stage 1 never finished");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!out.join("model.onnx").exists(), "killed too late: the run had finished");
    check_whole(&out);

    let o = run(&toml);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("resumed: 1 finished stage(s) taken from checkpoints"), "{stdout}");
    assert_eq!(std::fs::read(out.join("model.onnx")).unwrap(), std::fs::read(clean_out.join("model.onnx")).unwrap());
}
