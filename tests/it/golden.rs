//! Golden metrics (NNCF's reference-data habit): `tests/golden.toml` holds,
//! per benchmark pipeline, the overrides of its quick mode and the figures
//! that quick run must reproduce, each with its tolerance.
//!
//! Always: every case names an existing pipeline and its quick overrides
//! apply. With `SHRINK_GOLDEN=1` (CI sets it): every case runs in quick mode,
//! in process, and each figure must lie within its tolerance. A case with
//! `known_failure = "reason"` still runs and prints its figures, but does not
//! fail the test: known failures are recorded, not deleted.
//!
//! Figures (`[case.expect]`, each `[value, tolerance]`):
//! - `accuracy`: top-1 of the final model on the pipeline's test data (tract);
//! - `accuracy_drop`: the original's top-1 minus the final model's;
//! - `nonzero_fraction`: non-zero parameters of the final model / the original's parameters;
//! - `onnx_ratio`: the original's ONNX bytes / the final model's;
//! - `figure:NAME`: the last stage figure called NAME (e.g. `figure:ratio` of the huffman stage).

use shrink_pipeline::{Pipeline, Report};

use crate::util::root;

struct Case {
    name: String,
    pipeline: String,
    quick: Vec<String>,
    expect: Vec<(String, f64, f64)>,
    known_failure: Option<String>,
}

fn cases() -> Vec<Case> {
    let path = root().join("tests/golden.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let doc: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    for c in doc.get("case").and_then(|c| c.as_array()).expect("tests/golden.toml has [[case]] tables") {
        let t = c.as_table().expect("a [[case]] table");
        let s = |k: &str| t.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let pipeline = s("pipeline").expect("case.pipeline");
        let quick = t
            .get("quick")
            .and_then(|q| q.as_array())
            .map(|a| a.iter().map(|v| v.as_str().expect("quick overrides are strings").to_string()).collect())
            .unwrap_or_default();
        let mut expect = Vec::new();
        for (k, v) in t.get("expect").and_then(|e| e.as_table()).cloned().unwrap_or_default() {
            let pair = v.as_array().unwrap_or_else(|| panic!("{pipeline}: expect.{k} must be [value, tolerance]"));
            let num = |x: &toml::Value| x.as_float().or_else(|| x.as_integer().map(|i| i as f64)).unwrap();
            assert_eq!(pair.len(), 2, "{pipeline}: expect.{k} must be [value, tolerance]");
            expect.push((k, num(&pair[0]), num(&pair[1])));
        }
        out.push(Case {
            name: s("name").unwrap_or_else(|| pipeline.clone()),
            pipeline,
            quick,
            expect,
            known_failure: s("known_failure"),
        });
    }
    out
}

/// The quick overrides of the case named `name`.
pub(crate) fn quick_overrides(name: &str) -> Vec<String> {
    cases().into_iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no golden case {name}")).quick
}

/// The figure `name` of a finished run.
fn figure(report: &Report, name: &str) -> Option<f64> {
    let first = report.rows.first()?;
    let last = report.rows.last()?;
    match name {
        "accuracy" => last.accuracy,
        "accuracy_drop" => Some(first.accuracy? - last.accuracy?),
        "nonzero_fraction" => Some(last.size.nonzero_params as f64 / first.size.params.max(1) as f64),
        "onnx_ratio" => Some(first.size.onnx_bytes as f64 / last.size.onnx_bytes.max(1) as f64),
        _ => {
            let key = name.strip_prefix("figure:")?;
            report.rows.iter().rev().find_map(|r| r.stage.as_ref()?.figures.get(key).copied())
        }
    }
}

#[test]
fn golden_cases_name_pipelines_whose_quick_overrides_apply() {
    let cases = cases();
    assert!(!cases.is_empty(), "tests/golden.toml has no cases");
    for c in &cases {
        let path = root().join(&c.pipeline);
        Pipeline::load(&path, &c.quick).unwrap_or_else(|e| panic!("golden case {}: {e}", c.name));
        assert!(!c.expect.is_empty(), "golden case {} expects nothing", c.name);
        for (k, _, tol) in &c.expect {
            let known = ["accuracy", "accuracy_drop", "nonzero_fraction", "onnx_ratio"].contains(&k.as_str())
                || k.starts_with("figure:");
            assert!(known, "golden case {}: unknown figure `{k}`", c.name);
            assert!(*tol >= 0.0, "golden case {}: negative tolerance for {k}", c.name);
        }
    }
}

/// `cargo xtask bench --quick` runs every pipeline bench with its case's quick
/// overrides; one without a case would run its full settings and break the
/// quick mode's time budget.
#[test]
fn every_bench_pipeline_has_a_golden_case() {
    let bench = root().join("xtask/src/bench.rs");
    let text = std::fs::read_to_string(&bench).unwrap();
    let benched: Vec<&str> =
        text.lines().filter_map(|l| l.trim().strip_prefix("pipeline: \"")?.strip_suffix("\",")).collect();
    assert!(!benched.is_empty(), "{}: no `pipeline: \"...\"` lines found", bench.display());
    let cases = cases();
    let missing: Vec<&str> = benched.into_iter().filter(|p| !cases.iter().any(|c| c.pipeline == *p)).collect();
    assert!(missing.is_empty(), "bench pipelines without a case in tests/golden.toml: {missing:?}");
}

#[test]
fn golden_figures_hold_in_quick_mode() {
    if std::env::var_os("SHRINK_GOLDEN").is_none() {
        eprintln!("skipped: set SHRINK_GOLDEN=1 to run the quick golden pipelines");
        return;
    }
    let mut failures = Vec::new();
    for c in cases() {
        let out = tempfile::tempdir().unwrap();
        let run_dir = out.path().join("run");
        // Run as a user would: the `shrink` binary, from the repository root
        // (pipeline paths are relative to the current directory).
        let mut cmd = std::process::Command::new(crate::util::shrink_bin());
        cmd.current_dir(root())
            .args(["run", &c.pipeline, "--set"])
            .arg(format!("pipeline.output={}", run_dir.display()));
        for s in &c.quick {
            cmd.args(["--set", s]);
        }
        let t0 = std::time::Instant::now();
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "golden case {}: {}", c.name, String::from_utf8_lossy(&o.stderr));
        eprintln!("golden {}: {:.0} s", c.name, t0.elapsed().as_secs_f64());
        let json = std::fs::read_to_string(run_dir.join("report.json")).unwrap();
        let report: Report = serde_json::from_str(&json).unwrap();
        for (k, want, tol) in &c.expect {
            let got = figure(&report, k);
            let ok = got.is_some_and(|g| (g - want).abs() <= *tol);
            eprintln!("  {k}: {got:?} (expected {want} ± {tol}){}", if ok { "" } else { "  <-- outside" });
            if !ok {
                match &c.known_failure {
                    Some(why) => eprintln!("  known failure: {why}"),
                    None => failures.push(format!("{}: {k} = {got:?}, expected {want} ± {tol}", c.name)),
                }
            }
        }
    }
    assert!(failures.is_empty(), "golden figures outside their tolerance:\n{}", failures.join("\n"));
}
