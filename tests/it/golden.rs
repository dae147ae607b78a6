//! Golden metrics (NNCF's reference-data habit): `tests/golden.toml` holds,
//! per benchmark pipeline, the overrides of its quick mode and the figures
//! that quick run must reproduce, each with its tolerance.
//!
//! Always: every case names an existing pipeline and its quick overrides
//! apply. With `SHRINK_GOLDEN=1` (CI sets it; `SHRINK_GOLDEN_ONLY=a,b` keeps
//! just the cases named): every case runs in quick mode,
//! through the `shrink` binary, and each figure must lie within its tolerance. A case with
//! `known_failure = "reason"` still runs and prints its figures, but does not
//! fail the test: known failures are recorded, not deleted.
//! `golden_figures_catch_broken_stages` (also under `SHRINK_GOLDEN=1`) reruns
//! cases with a stage broken on purpose ([`BROKEN`]) and checks that their
//! figures fail: the tolerances are tight enough to catch those bugs.
//! `golden_figures_hold_across_cpus` (slow, `cargo xtask bench cross-cpu`)
//! reruns two cases on other CPU paths ([`CPU_PATHS`]) against the same bounds.
//!
//! Figures (`[case.expect]`, each `[value, tolerance]` for a figure the run
//! must reproduce, or `{ min = a }` / `{ max = b }` / both for a claim, e.g.
//! "at least 2x faster" is `latency_ratio_b1 = { max = 0.5 }`):
//! - `accuracy`: top-1 of the final model on the pipeline's test data (tract);
//! - `accuracy_drop`: the original's top-1 minus the final model's;
//! - `nonzero_fraction`: non-zero parameters of the final model / the original's parameters;
//! - `onnx_ratio`: the original's ONNX bytes / the final model's;
//! - `latency_ratio_bN`: the final model's median tract latency at batch N /
//!   the original's, measured interleaved by the run's verify step (the case
//!   must leave `verify.latency` on and list N in `verify.batch_sizes`);
//! - `figure:NAME`: the last stage figure called NAME (e.g. `figure:ratio` of the huffman stage);
//! - `infer:NAME`: a field of `shrink infer`'s JSON report (`accuracy`,
//!   `latency_ratio`, `mean_relative_macs`, ...; `infer:accuracy_drop` is its
//!   full model's accuracy minus the segmented one's), run on the case's
//!   OUTPUT/early-exit/ with the arguments of the case's `infer` list.

use shrink_pipeline::{Pipeline, Report};

use crate::util::root;

/// What a figure must be.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Bound {
    /// `[value, tolerance]`: |got - value| <= tolerance.
    Near(f64, f64),
    /// `{ min = a, max = b }`, either optional: a <= got <= b.
    Range(Option<f64>, Option<f64>),
}

impl Bound {
    fn holds(&self, got: f64) -> bool {
        match *self {
            Bound::Near(want, tol) => (got - want).abs() <= tol,
            Bound::Range(lo, hi) => lo.is_none_or(|lo| got >= lo) && hi.is_none_or(|hi| got <= hi),
        }
    }

    fn parse(v: &toml::Value) -> Result<Bound, String> {
        let num = |x: &toml::Value| x.as_float().or_else(|| x.as_integer().map(|i| i as f64));
        match v {
            toml::Value::Array(a) if a.len() == 2 => match (num(&a[0]), num(&a[1])) {
                (Some(want), Some(tol)) if tol >= 0.0 => Ok(Bound::Near(want, tol)),
                _ => Err("must be [value, tolerance] with numbers and tolerance >= 0".into()),
            },
            toml::Value::Table(t) => {
                if let Some(k) = t.keys().find(|k| *k != "min" && *k != "max") {
                    return Err(format!("unknown key `{k}` (min, max)"));
                }
                let get = |k: &str| t.get(k).map(|x| num(x).ok_or(format!("{k} must be a number"))).transpose();
                let (lo, hi) = (get("min")?, get("max")?);
                match (lo, hi) {
                    (None, None) => Err("needs min or max".into()),
                    (Some(a), Some(b)) if a > b => Err(format!("min {a} > max {b}")),
                    _ => Ok(Bound::Range(lo, hi)),
                }
            }
            _ => Err("must be [value, tolerance] or { min = a, max = b }".into()),
        }
    }
}

impl std::fmt::Display for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Bound::Near(want, tol) => write!(f, "{want} ± {tol}"),
            Bound::Range(Some(a), Some(b)) => write!(f, "in [{a}, {b}]"),
            Bound::Range(Some(a), None) => write!(f, ">= {a}"),
            Bound::Range(None, Some(b)) => write!(f, "<= {b}"),
            Bound::Range(None, None) => write!(f, "anything"),
        }
    }
}

#[derive(Clone)]
struct Case {
    name: String,
    pipeline: String,
    quick: Vec<String>,
    expect: Vec<(String, Bound)>,
    /// Arguments of `shrink infer OUTPUT/early-exit ...` (after the folder).
    infer: Option<Vec<String>>,
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
        let strings = |k: &str| {
            t.get(k).and_then(|q| q.as_array()).map(|a| {
                a.iter()
                    .map(|v| v.as_str().unwrap_or_else(|| panic!("{pipeline}: {k} holds strings")).to_string())
                    .collect()
            })
        };
        let quick = strings("quick").unwrap_or_default();
        let infer = strings("infer");
        let mut expect = Vec::new();
        for (k, v) in t.get("expect").and_then(|e| e.as_table()).cloned().unwrap_or_default() {
            let b = Bound::parse(&v).unwrap_or_else(|e| panic!("{pipeline}: expect.{k} {e}"));
            expect.push((k, b));
        }
        out.push(Case {
            name: s("name").unwrap_or_else(|| pipeline.clone()),
            pipeline,
            quick,
            expect,
            infer,
            known_failure: s("known_failure"),
        });
    }
    out
}

/// The quick overrides of the case named `name`.
pub(crate) fn quick_overrides(name: &str) -> Vec<String> {
    cases().into_iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no golden case {name}")).quick
}

/// The figure `name` of a finished run (`infer`: `shrink infer`'s JSON report, if run).
fn figure(report: &Report, infer: Option<&serde_json::Value>, name: &str) -> Option<f64> {
    let first = report.rows.first()?;
    let last = report.rows.last()?;
    match name {
        "accuracy" => last.accuracy,
        "accuracy_drop" => Some(first.accuracy? - last.accuracy?),
        "nonzero_fraction" => Some(last.size.nonzero_params as f64 / first.size.params.max(1) as f64),
        "onnx_ratio" => Some(first.size.onnx_bytes as f64 / last.size.onnx_bytes.max(1) as f64),
        "infer:accuracy_drop" => {
            let i = infer?;
            Some(i["full_accuracy"].as_f64()? - i["accuracy"].as_f64()?)
        }
        _ => {
            if let Some(b) = latency_batch(name) {
                return last.latency_ratio.iter().find(|(x, _)| *x == b).map(|(_, r)| *r);
            }
            if let Some(key) = name.strip_prefix("infer:") {
                return infer?.get(key)?.as_f64();
            }
            let key = name.strip_prefix("figure:")?;
            report.rows.iter().rev().find_map(|r| r.stage.as_ref()?.figures.get(key).copied())
        }
    }
}

/// The batch size N of a `latency_ratio_bN` figure.
fn latency_batch(name: &str) -> Option<usize> {
    name.strip_prefix("latency_ratio_b")?.parse().ok().filter(|&b| b > 0)
}

/// Figure names the harness knows (before the run, so a typo fails every build, not just CI).
fn known_figure(k: &str) -> bool {
    ["accuracy", "accuracy_drop", "nonzero_fraction", "onnx_ratio"].contains(&k)
        || k.starts_with("figure:")
        || k.starts_with("infer:")
        || latency_batch(k).is_some()
}

#[test]
fn golden_cases_name_pipelines_whose_quick_overrides_apply() {
    let cases = cases();
    assert!(!cases.is_empty(), "tests/golden.toml has no cases");
    for c in &cases {
        let path = root().join(&c.pipeline);
        let p = Pipeline::load(&path, &c.quick).unwrap_or_else(|e| panic!("golden case {}: {e}", c.name));
        assert!(!c.expect.is_empty(), "golden case {} expects nothing", c.name);
        for (k, _) in &c.expect {
            assert!(known_figure(k), "golden case {}: unknown figure `{k}`", c.name);
            if k.starts_with("infer:") {
                assert!(c.infer.is_some(), "golden case {}: `{k}` needs an `infer` argument list", c.name);
            }
            if let Some(b) = latency_batch(k) {
                // a latency figure needs the run to measure that batch size
                assert!(
                    p.file.verify.latency && p.file.verify.batch_sizes.contains(&b),
                    "golden case {}: `{k}` needs verify.latency on and batch {b} in verify.batch_sizes",
                    c.name
                );
            }
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

/// A finished quick run of a case.
struct Run {
    report: Report,
    /// `shrink infer`'s JSON report, if the case has `infer` arguments.
    infer: Option<serde_json::Value>,
    /// The bytes of the run's final model (`OUTPUT/model.onnx`).
    model: Vec<u8>,
}

/// Runs case `c` in quick mode with `extra` overrides after its own, as a user
/// would (the `shrink` binary, from the repository root: pipeline paths are
/// relative to it), on CPU path `on`, then `shrink infer` if the case has
/// `infer` arguments. Returns the run, or the run's stderr if it failed (a
/// pipeline's own gate, e.g. `verify.max_accuracy_drop`, fails it).
fn run_case(c: &Case, extra: &[&str], on: &CpuPath) -> Result<Run, String> {
    let out = tempfile::tempdir().unwrap();
    let run_dir = out.path().join("run");
    let mut cmd = match on.emulator.split_first() {
        None => std::process::Command::new(crate::util::shrink_bin()),
        Some((emulator, args)) => {
            let mut cmd = std::process::Command::new(emulator);
            cmd.args(args).arg(crate::util::shrink_bin());
            cmd
        }
    };
    cmd.envs(on.env.iter().copied());
    cmd.current_dir(root()).args(["run", &c.pipeline, "--set"]).arg(format!("pipeline.output={}", run_dir.display()));
    for s in c.quick.iter().map(String::as_str).chain(extra.iter().copied()) {
        cmd.args(["--set", s]);
    }
    let t0 = std::time::Instant::now();
    let o = cmd.output().unwrap();
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).into_owned());
    }
    // qemu older than 7.2 cannot emulate AVX2/FMA: it warns and runs a lesser CPU
    let stderr = String::from_utf8_lossy(&o.stderr);
    if !on.emulator.is_empty() && stderr.contains("doesn't support requested feature") {
        return Err(format!("{} does not emulate the CPU asked for: {stderr}", on.emulator.join(" ")));
    }
    eprintln!("golden {} {extra:?} ({}): {:.0} s", c.name, on.name, t0.elapsed().as_secs_f64());
    let json = std::fs::read_to_string(run_dir.join("report.json")).unwrap();
    let report: Report = serde_json::from_str(&json).unwrap();
    let infer = c.infer.as_ref().map(|args| {
        let out = run_dir.join("infer.json");
        let o = std::process::Command::new(crate::util::shrink_bin())
            .current_dir(root())
            .arg("infer")
            .arg(run_dir.join("early-exit"))
            .args(args)
            .arg("--json")
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "golden case {}: shrink infer: {}", c.name, String::from_utf8_lossy(&o.stderr));
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&out).unwrap()).unwrap()
    });
    let model = std::fs::read(run_dir.join("model.onnx")).unwrap();
    Ok(Run { report, infer, model })
}

/// The figures of case `c` outside their bounds in this run, one line each
/// (every figure is printed).
fn outside(c: &Case, report: &Report, infer: Option<&serde_json::Value>) -> Vec<String> {
    let mut out = Vec::new();
    for (k, bound) in &c.expect {
        let got = figure(report, infer, k);
        let ok = got.is_some_and(|g| bound.holds(g));
        eprintln!("  {k}: {got:?} (expected {bound}){}", if ok { "" } else { "  <-- outside" });
        if !ok {
            out.push(format!("{}: {k} = {got:?}, expected {bound}", c.name));
        }
    }
    out
}

/// `SHRINK_GOLDEN_ONLY=a,b`: just those cases (while working on them; CI runs all).
fn selected(name: &str) -> bool {
    std::env::var("SHRINK_GOLDEN_ONLY").map_or(true, |v| v.split(',').any(|s| s.trim() == name))
}

#[test]
fn golden_figures_hold_in_quick_mode() {
    if std::env::var_os("SHRINK_GOLDEN").is_none() {
        eprintln!("skipped: set SHRINK_GOLDEN=1 to run the quick golden pipelines");
        return;
    }
    let mut failures = Vec::new();
    for c in cases().into_iter().filter(|c| selected(&c.name)) {
        let run = run_case(&c, &[], &NATIVE).unwrap_or_else(|e| panic!("golden case {}: {e}", c.name));
        let bad = outside(&c, &run.report, run.infer.as_ref());
        match &c.known_failure {
            Some(why) if !bad.is_empty() => eprintln!("  known failure: {why}"),
            _ => failures.extend(bad),
        }
    }
    assert!(failures.is_empty(), "golden figures outside their tolerance:\n{}", failures.join("\n"));
}

/// Deliberately broken stages: a golden case's quick run with overrides that
/// do what a bug would (the stage quietly does less than the pipeline asks),
/// and the reason. Each must put at least one of the case's figures outside
/// its bound, or the tolerances are too loose to catch that bug.
const BROKEN: &[(&str, &[&str], &str)] = &[
    ("deep-compression-lenet-300-100", &["stage.1.bits=1"], "k-means weight sharing with 2 centroids instead of 64"),
    (
        "prune-lenet-300-100",
        &["stage.0.finetune.max_steps=1", "stage.0.final_finetune.max_steps=1"],
        "magnitude pruning that skips fine-tuning (one step per fine-tune)",
    ),
    (
        "deep-compression-lenet-300-100",
        &["stage.1.finetune.max_steps=1"],
        "k-means weight sharing that skips the centroid fine-tune (one step)",
    ),
    (
        "prune-lenet-300-100",
        &["stage.0.final_finetune.epochs=1"],
        "magnitude pruning whose final fine-tune stops after 1 of its 3 epochs",
    ),
    // (Not here: lowrank-lenet-300-100 without its fine-tune. Its quick run scores
    // about the same without it, so no figure can tell.)
    (
        "quantize-binary-lenet-300-100",
        &["stage.0.finetune.max_steps=1"],
        "BinaryConnect that skips training (one step)",
    ),
];

#[test]
fn golden_figures_catch_broken_stages() {
    if std::env::var_os("SHRINK_GOLDEN").is_none() {
        eprintln!("skipped: set SHRINK_GOLDEN=1 to run the quick golden pipelines");
        return;
    }
    let all = cases();
    for (name, sets, what) in BROKEN.iter().filter(|(n, _, _)| selected(n)) {
        let c = all.iter().find(|c| c.name == *name).unwrap_or_else(|| panic!("no golden case {name}"));
        eprintln!("broken on purpose: {what}");
        let bad = match run_case(c, sets, &NATIVE) {
            Ok(run) => outside(c, &run.report, run.infer.as_ref()),
            Err(stderr) => {
                eprintln!("  the run failed: {}", stderr.trim_end().lines().last().unwrap_or(""));
                vec![stderr]
            }
        };
        assert!(!bad.is_empty(), "{name} with {what} ({sets:?}): every golden figure still holds");
    }
}

#[test]
fn golden_bounds_parse_and_hold_as_written() {
    let v = |s: &str| -> toml::Value { toml::from_str::<toml::Table>(&format!("x = {s}")).unwrap()["x"].clone() };
    let near = Bound::parse(&v("[0.5, 0.1]")).unwrap();
    assert!(near.holds(0.45) && near.holds(0.6) && !near.holds(0.61) && !near.holds(0.39));
    let max = Bound::parse(&v("{ max = 0.5 }")).unwrap();
    assert!(max.holds(0.1) && max.holds(0.5) && !max.holds(0.51));
    let min = Bound::parse(&v("{ min = 40 }")).unwrap();
    assert!(min.holds(42.0) && !min.holds(39.9));
    for bad in ["[1]", "[1, -0.1]", "{ max = 1, mni = 0 }", "{}", "{ min = 2, max = 1 }", "\"x\""] {
        assert!(Bound::parse(&v(bad)).is_err(), "{bad} parsed");
    }
    assert!(known_figure("latency_ratio_b64") && known_figure("infer:latency_ratio"));
    assert!(!known_figure("latency_ratio_b") && !known_figure("latency_ratio_bx") && !known_figure("acuracy"));
}

/// A CPU path a case can run on: this machine as detected, or with other SIMD
/// kernels forced by an environment variable or an emulated CPU.
struct CpuPath {
    name: &'static str,
    what: &'static str,
    /// The emulator and its arguments `shrink` runs under (empty: none).
    emulator: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
}

/// This machine, every kernel as detected.
const NATIVE: CpuPath =
    CpuPath { name: "native", what: "this machine, every kernel as detected", emulator: &[], env: &[] };

/// Every x86-64 feature tract-linalg dispatches on, each removed: with this as
/// `TRACT_CPU_ISA` (tract's knob that edits the probed instruction set) tract
/// runs its generic kernels.
const TRACT_NO_SIMD: &str = "-avx,-avx2,-fma,-f16c,-avx512f,-avx512fp16,-avx512vnni,-avxvnni,-amx-int8,-amx-bf16";

/// The paths `golden_figures_hold_across_cpus` reruns cases on. The emulated
/// ones run under qemu's user-mode x86-64 emulator, whose CPUID reports the
/// named model: tract picks its kernels and cost model (per vendor) from it, and
/// the trainer's gemm and SIMD element-wise kernels pick theirs, exactly as on
/// such a machine. qemu computes each floating-point instruction in software to
/// IEEE 754 rules (its softfloat), so the arithmetic is that of the emulated
/// instruction set, only a hundred or more times slower.
const CPU_PATHS: &[CpuPath] = &[
    NATIVE,
    CpuPath {
        name: "tract-generic",
        what: "this machine, tract forced to its generic kernels (`TRACT_CPU_ISA` removes every x86 feature it \
               dispatches on); the trainer as detected",
        emulator: &[],
        env: &[("TRACT_CPU_ISA", TRACT_NO_SIMD)],
    },
    CpuPath {
        name: "intel-haswell",
        what: "an emulated Intel Haswell (`qemu-x86_64 -cpu Haswell`: GenuineIntel, AVX2 and FMA, no AVX-512): \
               tract's Intel cost model and FMA kernels, the trainer's AVX2 kernels",
        emulator: &["qemu-x86_64", "-cpu", "Haswell"],
        env: &[],
    },
    CpuPath {
        name: "amd-epyc-zen1",
        what: "an emulated AMD EPYC (`qemu-x86_64 -cpu EPYC`: AuthenticAMD, AVX2 and FMA, no AVX-512): tract's AMD \
               cost model and FMA kernels, the trainer's AVX2 kernels",
        emulator: &["qemu-x86_64", "-cpu", "EPYC"],
        env: &[],
    },
    CpuPath {
        name: "sse-only",
        what: "an emulated Intel Nehalem (`qemu-x86_64 -cpu Nehalem`: SSE4.2, no AVX): tract's generic kernels, the \
               trainer's SSE and scalar kernels",
        emulator: &["qemu-x86_64", "-cpu", "Nehalem"],
        env: &[],
    },
];

/// The pipelines whose quick runs `golden_figures_hold_across_cpus` repeats.
const CROSS_CPU_CASES: &[&str] = &["deep-compression-lenet-300-100", "prune-structured-convnet-mix"];

/// Reproducibility across CPUs (`cargo xtask bench cross-cpu`): the quick runs
/// of [`CROSS_CPU_CASES`] on every path of [`CPU_PATHS`] must each hold every
/// figure of their golden case within its tolerance, which makes those
/// tolerances (accuracy and drop within 0.3 pp or tighter, ratios within 2 %
/// or tighter) the stated cross-CPU tolerances. Under emulation latency means
/// nothing, so the run skips it (`verify.latency=false`) and the latency claims
/// are not compared. Also says whether each final model is bit-identical to the
/// native run's: the trainer's arithmetic, not tract's, decides the weights.
/// x86-64 only (the paths name x86 CPUs and features). Without `qemu-x86_64` a
/// slow-test run skips it with the reason; the bench (`SHRINK_BENCH_OUT` set)
/// fails instead, since its section would not show what it claims.
#[test]
fn golden_figures_hold_across_cpus() {
    if crate::util::skip_unless_slow() {
        return;
    }
    if !cfg!(target_arch = "x86_64") {
        eprintln!("skipped: the CPU paths are x86-64 ones");
        return;
    }
    let emulator = CPU_PATHS.iter().find_map(|p| p.emulator.first()).expect("an emulated path");
    if !std::process::Command::new(emulator).arg("--version").output().is_ok_and(|o| o.status.success()) {
        let why = format!("{emulator} is needed to emulate other CPUs (Debian: apt-get install qemu-user)");
        assert!(std::env::var_os("SHRINK_BENCH_OUT").is_none(), "{why}");
        eprintln!("skipped: {why}");
        return;
    }
    let all = cases();
    let mut failures = Vec::new();
    let mut md = String::from("\nCPU paths:\n\n");
    for path in CPU_PATHS {
        md.push_str(&format!("- `{}`: {}\n", path.name, path.what));
    }
    for name in CROSS_CPU_CASES.iter().filter(|n| selected(n)) {
        let case = all.iter().find(|c| c.name == *name).unwrap_or_else(|| panic!("no golden case {name}"));
        // `shrink infer` runs natively (run_case), so its figures would not be the path's
        assert!(case.infer.is_none(), "{name}: a cross-CPU case cannot have `infer` figures");
        let keys: Vec<&str> = case.expect.iter().map(|(k, _)| k.as_str()).collect();
        md.push_str(&format!("\n`{}`, quick (each figure: its golden bound)\n\n| CPU path |", case.name));
        for (k, bound) in &case.expect {
            md.push_str(&format!(" {k} ({bound}) |"));
        }
        md.push_str(" final model.onnx | time |\n|---|");
        md.push_str(&"---:|".repeat(keys.len() + 2));
        md.push('\n');
        let mut native_model = None;
        for path in CPU_PATHS {
            let mut c = case.clone();
            let mut extra = Vec::new();
            if !path.emulator.is_empty() {
                extra.push("verify.latency=false");
                c.expect.retain(|(k, _)| latency_batch(k).is_none());
            }
            eprintln!("{} on {}", c.name, path.name);
            let t0 = std::time::Instant::now();
            let run = match run_case(&c, &extra, path) {
                Ok(run) => run,
                Err(stderr) => {
                    // recorded, and the other paths still run: one failure must not lose the table
                    let last = stderr.trim_end().lines().last().unwrap_or("").to_string();
                    eprintln!("  the run failed: {last}");
                    failures.push(format!("{} on {}: the run failed: {last}", c.name, path.name));
                    md.push_str(&format!("| {} | the run failed: {last} |\n", path.name));
                    continue;
                }
            };
            let secs = t0.elapsed().as_secs_f64();
            let bad = outside(&c, &run.report, run.infer.as_ref());
            failures.extend(bad.iter().map(|b| format!("{b} (on {})", path.name)));
            md.push_str(&format!("| {} |", path.name));
            for k in &keys {
                let cell = match c.expect.iter().find(|(e, _)| e == k) {
                    None => "not compared".to_string(),
                    Some((_, bound)) => {
                        let got = figure(&run.report, run.infer.as_ref(), k);
                        let mark = if got.is_some_and(|g| bound.holds(g)) { "" } else { " **outside**" };
                        got.map_or("none".into(), |g| format!("{g:.4}")) + mark
                    }
                };
                md.push_str(&format!(" {cell} |"));
            }
            let same = match &native_model {
                None => {
                    native_model = Some(run.model);
                    "the reference".to_string()
                }
                Some(m) if *m == run.model => "bit-identical".to_string(),
                Some(m) => {
                    let differing = m.iter().zip(&run.model).filter(|(a, b)| a != b).count();
                    format!("differs ({differing} of {} bytes)", m.len().max(run.model.len()))
                }
            };
            md.push_str(&format!(" {same} | {secs:.0} s |\n"));
        }
    }
    crate::util::write_bench_out("cross-cpu.md", &md);
    eprintln!("{md}");
    assert!(
        failures.is_empty(),
        "golden figures outside their tolerance on another CPU path:\n{}",
        failures.join("\n")
    );
}
