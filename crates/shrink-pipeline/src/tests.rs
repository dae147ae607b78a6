//! Pipeline tests with test-only stages: TOML errors with line and column,
//! overrides, outputs, resume and invalidation, output-folder protection, the
//! accuracy gate.

use std::path::{Path, PathBuf};

use shrink_graph::{Model, NodeKind};
use shrink_stage::{NoProgress, Registry, Stage, StageCx, StageError, StageFactory, StageReport};

use crate::{Pipeline, PipelineError, RunOptions, run};

/// Multiplies every bias (1-D weight) by `factor`: deterministic, cheap, visible.
#[derive(Debug)]
struct ScaleBias {
    factor: f32,
}

impl Stage for ScaleBias {
    fn kind(&self) -> &str {
        "scale-bias"
    }
    fn run(&self, model: &mut Model, _: &mut StageCx<'_>) -> Result<StageReport, StageError> {
        let ids: Vec<_> = model.graph.initializers().to_vec();
        let mut n = 0;
        for id in ids {
            if let NodeKind::Weight(w) = model.graph.node_mut(id)
                && w.tensor.dims().len() == 1
            {
                let v: Vec<f32> = w.tensor.to_f32().unwrap().iter().map(|x| x * self.factor).collect();
                w.tensor.set_f32(&v).map_err(|e| StageError::graph("scale-bias", e))?;
                n += 1;
            }
        }
        Ok(StageReport::new(format!("scaled {n} biases by {}", self.factor)).figure("biases", n as f64))
    }
}

fn build_scale(params: &toml::Table) -> Result<Box<dyn Stage>, StageError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        factor: f32,
    }
    let p: P = params
        .clone()
        .try_into()
        .map_err(|e: toml::de::Error| StageError::param("scale-bias", "factor", e.message()))?;
    Ok(Box::new(ScaleBias { factor: p.factor }))
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(StageFactory { kind: "scale-bias", summary: "test stage", build: build_scale });
    r
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models").join(name)
}

fn pipeline_text(out: &Path, stages: &str, extra: &str) -> String {
    format!(
        "[pipeline]\nname = \"test\"\nmodel = \"{}\"\noutput = \"{}\"\nseed = 3\n{extra}\n[verify]\nlatency = false\n{stages}",
        fixture("lenet-300-100.onnx").display(),
        out.display()
    )
}

const TWO: &str = "[[stage]]\nkind = \"scale-bias\"\nfactor = 0.5\n\n[[stage]]\nkind = \"scale-bias\"\nfactor = 3.0\n";

fn parse(text: &str) -> Result<Pipeline, PipelineError> {
    Pipeline::parse(Path::new("p.toml"), text, &[])
}

#[test]
fn toml_errors_name_line_column_and_key() {
    let err = parse("[pipeline]\nname = \"x\"\nnmae = 1\n").unwrap_err().to_string();
    assert!(err.starts_with("p.toml: line 3, column 1: unknown field `nmae`"), "{err}");
    let err =
        parse("[pipeline]\nname = \"x\"\nmodel = \"m\"\noutput = \"o\"\nseed = \"seven\"\n").unwrap_err().to_string();
    assert!(err.starts_with("p.toml: line 5, column 8: invalid type: string \"seven\", expected u64"), "{err}");
    let err = parse("[pipeline]\nname = \"x\"\nmodel = \"m\"\noutput = \"o\"\n[[stage]]\nfactor = 1\n")
        .unwrap_err()
        .to_string();
    assert_eq!(err, "p.toml: line 5, column 1: stage 0: missing `kind` (a string)");
    let err = parse("[pipeline]\nname = \"x\"\nmodel = \"m\"\noutput = \"o\"\n[verify]\nbatch_size = [1]\n")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("p.toml: line 6, column 1: unknown field `batch_size`"), "{err}");
}

#[test]
fn unknown_kinds_and_bad_params_fail_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let text = pipeline_text(&out, "[[stage]]\nkind = \"prune\"\n", "");
    let path = dir.path().join("p.toml");
    std::fs::write(&path, &text).unwrap();
    let p = Pipeline::load(&path, &[]).unwrap();
    let err = run(&p, &registry(), &RunOptions::default(), &mut NoProgress).unwrap_err().to_string();
    assert!(
        err.ends_with(
            "stage 1 (`prune`): line 9, column 1: unknown stage kind `prune` (known kinds: scale-bias, plugin)"
        ),
        "{err}"
    );
    assert!(!out.exists(), "nothing may be written when a stage cannot be built");
    let text = pipeline_text(&out, "[[stage]]\nkind = \"scale-bias\"\nfactr = 2\n", "");
    std::fs::write(&path, &text).unwrap();
    let p = Pipeline::load(&path, &[]).unwrap();
    let err = run(&p, &registry(), &RunOptions::default(), &mut NoProgress).unwrap_err().to_string();
    assert!(err.contains("stage `scale-bias`: parameter `factor`: unknown field `factr`"), "{err}");
}

#[test]
fn missing_files_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[pipeline]\nname = \"x\"\nmodel = \"no/such.onnx\"\noutput = \"o\"\n";
    let err = run(&parse(text).unwrap(), &registry(), &RunOptions::default(), &mut NoProgress).unwrap_err();
    assert_eq!(err.to_string(), "p.toml: line 3, column 1: `pipeline.model` names no/such.onnx, which does not exist");
    let text =
        pipeline_text(&dir.path().join("o"), "", "[data]\ntest = { images = \"no/x.idx\", labels = \"no/y.idx\" }\n");
    let err = run(&parse(&text).unwrap(), &registry(), &RunOptions::default(), &mut NoProgress).unwrap_err();
    assert_eq!(err.to_string(), "p.toml: line 7, column 10: `data.test.images` names no/x.idx, which does not exist");
}

#[test]
fn set_overrides_keys() {
    let text = pipeline_text(Path::new("o"), TWO, "");
    let p =
        Pipeline::parse(Path::new("p.toml"), &text, &["stage.1.factor=4".into(), "pipeline.seed=9".into()]).unwrap();
    assert_eq!(p.params(1)["factor"].as_integer(), Some(4));
    assert_eq!(p.file.pipeline.seed, 9);
    let err = Pipeline::parse(Path::new("p.toml"), &text, &["stage.5.factor=1".into()]).unwrap_err();
    assert_eq!(err.to_string(), "--set stage.5.factor=1: index 5 is past the end (2 entries)");
}

fn run_text(text: &str, opts: &RunOptions) -> Result<crate::RunOutcome, PipelineError> {
    run(&parse(text).unwrap(), &registry(), opts, &mut NoProgress)
}

#[test]
fn outputs_resume_and_invalidation() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let text = pipeline_text(&out, TWO, "");
    let first = run_text(&text, &RunOptions::default()).unwrap();
    assert_eq!(first.resumed, 0);
    for f in [
        "model.onnx",
        "report.json",
        "report.md",
        "report.svg",
        "stages/01-scale-bias.onnx",
        "stages/02-scale-bias.json",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let rows = &first.report.rows;
    assert_eq!(rows.len(), 3);
    // no data: agreement with the original on random inputs; biases x1.5 change logits
    assert!(rows[2].agreement.as_ref().unwrap().max_abs_diff > 0.0);
    assert!(std::fs::read_to_string(out.join("report.md")).unwrap().contains("| 2 | scale-bias |"));
    let bytes = std::fs::read(out.join("model.onnx")).unwrap();
    let m = Model::load(out.join("model.onnx")).unwrap();
    let b = m.graph.weights().find(|(_, t)| t.name() == "0.bias" || t.dims().len() == 1).unwrap().1.clone();
    let orig = Model::load(fixture("lenet-300-100.onnx")).unwrap();
    let b0 = orig.graph.weights().find(|(_, t)| t.name() == b.name()).unwrap().1;
    let (x, y) = (b.to_f32().unwrap()[0], b0.to_f32().unwrap()[0]);
    assert!((x - y * 1.5).abs() <= 1e-6 * y.abs().max(1.0), "{x} vs {y} * 1.5");

    // unchanged: both stages come from checkpoints, same bytes
    let again = run_text(&text, &RunOptions::default()).unwrap();
    assert_eq!(again.resumed, 2);
    assert_eq!(std::fs::read(out.join("model.onnx")).unwrap(), bytes);
    // --from-stage 2 reruns the second
    assert_eq!(run_text(&text, &RunOptions { from_stage: Some(2), ..RunOptions::default() }).unwrap().resumed, 1);
    // a changed second stage invalidates only itself
    let changed = pipeline_text(&out, &TWO.replace("3.0", "2.0"), "");
    assert_eq!(run_text(&changed, &RunOptions::default()).unwrap().resumed, 1);
    // a changed first stage invalidates both
    let changed = pipeline_text(&out, &TWO.replace("0.5", "0.25"), "");
    assert_eq!(run_text(&changed, &RunOptions::default()).unwrap().resumed, 0);
}

#[test]
fn output_folders_of_others_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let text = pipeline_text(&out, "", "");
    let err = run_text(&text, &RunOptions::default()).unwrap_err().to_string();
    assert!(err.ends_with("is not empty and holds no shrink run; use --force to replace it"), "{err}");
    run_text(&text, &RunOptions { force: true, ..RunOptions::default() }).unwrap();
    let other = text.replace("name = \"test\"", "name = \"other\"");
    let err = run_text(&other, &RunOptions::default()).unwrap_err().to_string();
    assert!(err.contains("holds a run of pipeline \"test\""), "{err}");
    assert_eq!(std::fs::read_to_string(out.join("notes.txt")).unwrap(), "mine");
}

#[test]
fn dry_run_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    run_text(&pipeline_text(&out, TWO, ""), &RunOptions { dry_run: true, ..RunOptions::default() }).unwrap();
    assert!(!out.exists());
}

#[test]
fn the_accuracy_gate_fails_loudly_after_writing_reports() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let data = format!(
        "[data]\ntest = {{ images = \"{0}/t10k-images-idx3-ubyte.gz\", labels = \"{0}/t10k-labels-idx1-ubyte.gz\", limit = 300 }}\n",
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/data/mnist").display()
    );
    let stages = "[[stage]]\nkind = \"scale-bias\"\nfactor = -40.0\n";
    let text =
        pipeline_text(&out, stages, &data).replace("latency = false", "latency = false\nmax_accuracy_drop = 0.01");
    let err = run_text(&text, &RunOptions::default()).unwrap_err();
    assert!(matches!(err, PipelineError::AccuracyDrop { .. }), "{err}");
    assert!(err.to_string().contains("more than verify.max_accuracy_drop = 1.000 pp"), "{err}");
    assert!(out.join("report.md").exists() && out.join("model.onnx").exists());
}

#[test]
fn a_stored_container_is_the_size_its_row_shows() {
    let row = |step: usize, kind: &str, stage: &str| {
        format!(
            r#"{{"step":{step},"kind":"{kind}","accuracy":0.98,"samples":100,"agreement":null,"nodes":5,
            "size":{{"onnx_bytes":1000,"params":250,"nonzero_params":250,"weight_bytes":1000}},
            "latency":[],"latency_ratio":[],"stage":{stage},"seconds":0.0,"hash":""}}"#
        )
    };
    let stage = r#"{"summary":"packed","layers":[],"figures":{"stored_bytes":40.0},"files":["model.shrink"]}"#;
    let json = format!(
        r#"{{"pipeline":"p","model":"m.onnx","seed":1,"data":"mnist test","rows":[{},{}]}}"#,
        row(0, "original", "null"),
        row(1, "huffman", stage)
    );
    let report: crate::Report = serde_json::from_str(&json).unwrap();
    let md = report.markdown();
    assert!(md.contains("| 40 † | 0.040x |"), "{md}");
    assert!(md.contains("| 1000 | 1.000x |"), "{md}");
    assert!(md.contains("† the size of the file the stage stored the model in"), "{md}");
    // The plot puts the step at the same size: 0.04 on a log axis that reaches below it.
    assert_eq!(report.rows[1].shown_bytes(), 40);
    let svg = report.svg().unwrap();
    assert!(svg.contains("size / original (log)"), "{svg}");
    let ticks: Vec<f64> =
        svg.split("<text").filter_map(|t| t.split('>').nth(1)?.split('<').next()?.trim().parse::<f64>().ok()).collect();
    assert!(ticks.iter().any(|&t| t > 0.0 && t <= 0.04), "no size tick at or below 0.04: {ticks:?}");
}

/// `folder = ...`: an image folder is a data source like the others (grey
/// 30x40 and 31x40 PNGs, resized and cropped to the fixture's 28x28, flattened).
#[test]
fn an_image_folder_is_a_data_source() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    for (class, shade) in [("dark", 20u8), ("light", 230)] {
        for i in 0..2u32 {
            let path = images.join(class).join(format!("{i}.png"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            image::GrayImage::from_pixel(30 + i, 40, image::Luma([shade])).save(&path).unwrap();
        }
    }
    let source = |keys: &str| format!("[data]\ntest = {{ {keys} }}\n");
    let folder = format!("folder = \"{}\"", images.display());
    let text = pipeline_text(&dir.path().join("out"), TWO, &source(&format!("{folder}, resize = 28, crop = 28")));
    let outcome = run_text(&text, &RunOptions::default()).unwrap();
    assert_eq!(outcome.report.data.as_deref(), Some(images.display().to_string().as_str()));
    assert!(outcome.report.rows.iter().all(|r| r.samples == Some(4) && r.accuracy.is_some()));

    let err = |keys: &str| {
        let text = pipeline_text(&dir.path().join("o2"), "", &source(keys));
        run_text(&text, &RunOptions::default()).unwrap_err().to_string()
    };
    let e = err(&format!("{folder}, builtin = \"mnist\""));
    assert!(e.ends_with("`data.test` needs exactly one of `builtin`, `images` or `folder`"), "{e}");
    let e = err("builtin = \"mnist\", crop = 28");
    assert!(e.ends_with("`data.test.crop` is only for `folder`"), "{e}");
    let e = err("folder = \"no/such/dir\"");
    assert!(e.ends_with("`data.test.folder` names no/such/dir, which does not exist"), "{e}");
    // without resize and crop, the 31x40 image differs from the 30x40 one
    let e = err(&folder);
    assert!(e.contains("data `data.test`: ") && e.contains("1.png: image is 31x40 but "), "{e}");
}
