//! `cargo xtask bench [NAME...] [--quick]`: runs the benchmark pipelines and
//! the trainer-speed bench, and writes their sections of BENCHMARKS.md and
//! `bench/results.json`.
//!
//! A pipeline bench is a file in `pipelines/` plus a title and the published
//! figure it is measured against ([`PIPELINES`]). It runs through the `shrink`
//! binary (`shrink run --force`), and its section of BENCHMARKS.md is the
//! run's own `report.md` (every figure there was measured by tract in that
//! run) under the command that reproduces it. Benches whose pipeline file does
//! not exist yet are skipped: rows for absent stages are simply absent.
//!
//! `--reuse` does not run the pipeline: it records the run already in the
//! pipeline's own output folder (`[pipeline] output`, made by `shrink run
//! PIPELINE`), checking that folder's marker names this pipeline file, and
//! the section says so (the command that produced the figures is `shrink run`).
//!
//! `--quick` applies the `quick` overrides of the pipeline's case in
//! `tests/golden.toml` (fewer epochs, data subsets) and runs the dev build
//! that `cargo test` already made; the full run uses the release build.
//! Quick results go to `bench/results-quick.json` and never into BENCHMARKS.md.
//!
//! An early-exit bench ([`PipelineBench::infer`]) then runs `shrink infer
//! OUTPUT/early-exit --data DATA --json OUTPUT/infer.json` with the same
//! binary: the segmented model against the full one in tract, batch 1. Its
//! figures go into the section (under that command), into the bench's entry
//! of the results file (`infer`), and into the README row (accuracy and mean
//! batch-1 latency ratio, marked `shrink infer`). `--reuse` reads the
//! `infer.json` already in the output folder, refusing one older than the run.
//!
//! Sections of BENCHMARKS.md sit between `<!-- bench:NAME -->` and
//! `<!-- /bench:NAME -->` markers; a bench replaces only its own section.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::project_root;

/// A benchmark pipeline.
struct PipelineBench {
    name: &'static str,
    pipeline: &'static str,
    title: &'static str,
    /// The published (or previously measured) figure this row answers.
    anchor: &'static str,
    /// For an early-exit pipeline: the builtin dataset (its test split) that
    /// `shrink infer` measures the segmented model on after the run.
    infer: Option<&'static str>,
}

const PIPELINES: &[PipelineBench] = &[
    PipelineBench {
        name: "deep-compression-lenet-300-100",
        pipeline: "pipelines/deep-compression-lenet-300-100.toml",
        title: "Deep Compression, LeNet-300-100 (prune → k-means → Huffman)",
        anchor: "Quoted from Han et al. 2016 (Deep Compression, Table 1): 40× smaller, 1.64 % → 1.58 % test error.",
        infer: None,
    },
    PipelineBench {
        name: "deep-compression-lenet-5",
        pipeline: "pipelines/deep-compression-lenet-5.toml",
        title: "Deep Compression, LeNet-5 (prune → k-means → Huffman)",
        anchor: "Quoted from Han et al. 2016 (Deep Compression, Table 1): 39× smaller, 0.80 % → 0.74 % test error.",
        infer: None,
    },
    PipelineBench {
        name: "prune-lenet-300-100",
        pipeline: "pipelines/prune-lenet-300-100.toml",
        title: "Magnitude pruning, LeNet-300-100",
        anchor: "Quoted from Han et al. 2015 (Learning both Weights and Connections, Table 1): 12× fewer weights, 1.64 % → 1.59 % test error.",
        infer: None,
    },
    PipelineBench {
        name: "prune-lenet-5",
        pipeline: "pipelines/prune-lenet-5.toml",
        title: "Magnitude pruning, LeNet-5",
        anchor: "Quoted from Han et al. 2015 (Learning both Weights and Connections, Table 1): 12× fewer weights, 0.80 % → 0.77 % test error.",
        infer: None,
    },
    PipelineBench {
        name: "prune-structured-convnet-mix",
        pipeline: "pipelines/prune-structured-convnet-mix.toml",
        title: "Structured (channel) pruning, convnet-mix",
        anchor: "Target: ≥ 2× faster in tract at batch 1 and 64, ≤ 1 pp accuracy drop.",
        infer: None,
    },
    PipelineBench {
        name: "quantize-int8-lenet-5",
        pipeline: "pipelines/quantize-int8-lenet-5.toml",
        title: "int8 static quantisation, LeNet-5",
        anchor: "Target: ≤ 0.3 pp drop, file ≤ 0.27× the f32 file.",
        infer: None,
    },
    PipelineBench {
        name: "quantize-int8-convnet-mix",
        pipeline: "pipelines/quantize-int8-convnet-mix.toml",
        title: "int8 static quantisation, convnet-mix",
        anchor: "Target: ≤ 0.3 pp drop, file ≤ 0.27× the f32 file.",
        infer: None,
    },
    PipelineBench {
        name: "quantize-int8-resnet20-cifar",
        pipeline: "pipelines/quantize-int8-resnet20-cifar.toml",
        title: "int8 weights, CIFAR-10 ResNet-20 (real images)",
        anchor: "Target (issue 19): file ≤ 0.27× the f32 file at ≤ 0.5 pp drop.",
        infer: None,
    },
    PipelineBench {
        name: "quantize-int8-mobilenetv2-cifar",
        pipeline: "pipelines/quantize-int8-mobilenetv2-cifar.toml",
        title: "int8 weights, CIFAR-10 MobileNetV2 (real images, depthwise convolutions)",
        anchor: "Target (issue 19): file ≤ 0.27× the f32 file at ≤ 0.5 pp drop.",
        infer: None,
    },
    PipelineBench {
        name: "quantize-linear4-lenet-5",
        pipeline: "pipelines/quantize-linear4-lenet-5.toml",
        title: "4-bit linear per-channel quantisation with QAT, LeNet-5",
        anchor: "Target: ≤ 0.5 pp drop.",
        infer: None,
    },
    PipelineBench {
        name: "quantize-binary-lenet-300-100",
        pipeline: "pipelines/quantize-binary-lenet-300-100.toml",
        title: "Binary weights (BinaryConnect), LeNet-300-100",
        anchor: "Quoted from Courbariaux et al. 2015 (BinaryConnect): 1.29 % test error for a larger MLP. Target ≤ 2.0 %.",
        infer: None,
    },
    PipelineBench {
        name: "lowrank-lenet-300-100",
        pipeline: "pipelines/lowrank-lenet-300-100.toml",
        title: "Low-rank (truncated SVD) factorisation, LeNet-300-100",
        anchor: "Target ≤ 0.3× params at ≤ +0.15 pp test error.",
        infer: None,
    },
    PipelineBench {
        name: "lowrank-convnet-mix",
        pipeline: "pipelines/lowrank-convnet-mix.toml",
        title: "Channel decomposition of the 3×3 convs, convnet-mix",
        anchor: "Target: MACs ≤ 0.6×, tract latency lower at batch 64, ≤ 1 pp drop.",
        infer: None,
    },
    PipelineBench {
        name: "lowrank-resnet20-cifar",
        pipeline: "pipelines/lowrank-resnet20-cifar.toml",
        title: "Channel decomposition of the 3×3 convs, CIFAR-10 ResNet-20 (real images)",
        anchor: "No target (issue 19 asks for low-rank on real images): params, MACs, tract latency and the \
                 accuracy after a 3-epoch fine-tune, reported as measured; the pipeline fails over a 1 pp drop.",
        infer: None,
    },
    PipelineBench {
        name: "lowrank-depthwise-convnet-mix",
        pipeline: "pipelines/lowrank-depthwise-convnet-mix.toml",
        title: "Depthwise-separable replacement of one conv, convnet-mix",
        anchor: "No target: the accuracy after fine-tuning, reported as measured.",
        infer: None,
    },
    PipelineBench {
        name: "early-exit-convnet-mix",
        pipeline: "pipelines/early-exit-convnet-mix.toml",
        title: "Early-exit heads, convnet-mix (the multi-output model; `shrink infer` measures the segmented one)",
        anchor: "BranchyNet (Teerapittayanon et al. 2016) reports several-fold CPU speed-ups for LeNet with one early exit. Target: ≤ 0.5 pp drop at ≤ 0.5× mean batch-1 latency (`shrink infer`).",
        infer: Some("mnist"),
    },
    PipelineBench {
        name: "early-exit-lenet-5-fashion",
        pipeline: "pipelines/early-exit-lenet-5-fashion.toml",
        title: "Early-exit heads, LeNet-5 on Fashion-MNIST (the multi-output model; `shrink infer` measures the segmented one)",
        anchor: "No published figure: a harder task (fewer easy inputs), measured against the MNIST target (≤ 0.5 pp drop at ≤ 0.5× mean batch-1 latency, `shrink infer`) and reported as it holds.",
        infer: Some("fashion-mnist"),
    },
    PipelineBench {
        name: "early-exit-resnet20-cifar",
        pipeline: "pipelines/early-exit-resnet20-cifar.toml",
        title: "Early-exit heads, CIFAR-10 ResNet-20 (real images; `shrink infer` measures the segmented model)",
        anchor: "No published figure for this net: a harder task than MNIST with a shallow backbone (two exits, \
                 after stages 1 and 2), measured against the MNIST target (≤ 0.5 pp drop at ≤ 0.5× mean \
                 batch-1 latency, `shrink infer`) and reported as it holds.",
        infer: Some("cifar10"),
    },
    PipelineBench {
        name: "distill-mnist",
        pipeline: "pipelines/distill-mnist.toml",
        title: "Distillation, LeNet-5 teacher → small CNN student, MNIST",
        anchor: "Student ≥ 10× fewer parameters.",
        infer: None,
    },
];

/// A benchmark that is a slow integration test printing a table: it runs with
/// `SHRINK_SLOW_TESTS=1` and `SHRINK_BENCH_OUT=out/bench`, and writes
/// `out/bench/<name>.md`, which becomes its section.
struct TestBench {
    name: &'static str,
    test: &'static str,
    /// More environment for the test run (beside SHRINK_SLOW_TESTS and SHRINK_BENCH_OUT).
    env: &'static [(&'static str, &'static str)],
    title: &'static str,
    anchor: &'static str,
}

const TESTS: &[TestBench] = &[
    TestBench {
        name: "int8-forms",
        test: "int8::forms_side_by_side",
        env: &[],
        title: "int8 export forms side by side (tract latency, one run)",
        anchor: "Every form of the int8 stage (and ORT-style dynamic quantisation for comparison) on LeNet-5 and \
                 convnet-mix, measured interleaved with f32 in one run. Weight-only DequantizeLinear is folded into f32 \
                 constants at load.",
    },
    TestBench {
        name: "distill-fashion",
        test: "distill::fashion_benchmark",
        env: &[],
        title: "Distillation on Fashion-MNIST: hard labels vs distilled, 3 seeds",
        anchor: "Target: the distilled mean test error is lower than the hard-label mean by more than the seed \
                 spread (the larger of the two standard deviations).",
    },
    TestBench {
        name: "distill-fashion-tuning",
        test: "distill::fashion_tuning",
        env: &[],
        title: "Distillation on Fashion-MNIST: the settings, chosen on a validation split",
        anchor: "The grid that picks distill-fashion's alpha, T, epochs and augmentation, scored on training images \
                 the student never trains on; the test asserts the shipped pipeline holds the pick.",
    },
    TestBench {
        name: "teacher-logits",
        test: "distill::teacher_forward_trainer_vs_tract",
        env: &[],
        title: "Teacher logits per step: the trainer's forward or tract",
        anchor: "With augmentation the teacher's logits change every step and cannot be cached, so the teacher runs \
                 once per batch. Question: should tract give them instead of the trainer's own forward pass? Only if \
                 tract is much faster: it would make the trainer depend on a second runtime inside its training \
                 loop (the trainer never links tract). Reported as measured.",
    },
    TestBench {
        name: "distill-mnist-mlp",
        test: "distill::fashion_benchmark",
        env: &[("SHRINK_DISTILL_PIPELINE", "pipelines/distill-mnist-mlp.toml")],
        title: "Distillation on MNIST into a 784-30-10 MLP: hard labels vs distilled, 3 seeds",
        anchor: "No target: reported as measured.",
    },
    TestBench {
        name: "prune-distill-convnet-mix",
        test: "distill::prune_then_distill_benchmark",
        env: &[],
        title: "prune → distill: structured-pruned convnet-mix fine-tuned with the original as teacher, 3 seeds",
        anchor: "Question: does the unpruned teacher recover more accuracy than plain fine-tuning for the same \
                 epochs? Reported as measured.",
    },
    TestBench {
        name: "cross-cpu",
        test: "golden::golden_figures_hold_across_cpus",
        env: &[],
        title: "Reproducibility across CPUs: golden quick runs on other SIMD paths",
        anchor: "Stated tolerances between x86 CPUs: the golden ones, per case in tests/golden.toml (accuracy and \
                 accuracy drop within 0.3 pp or tighter, ratios within 2 % or tighter). The Deep Compression and structured-pruning quick runs are repeated \
                 with tract forced to its generic kernels, and whole under emulated Intel, AMD and SSE-only CPUs \
                 (needs `qemu-x86_64`, Debian's `qemu-user`); the test fails if any figure leaves its bound.",
    },
];

/// README's picture: the report plot of this bench's run, copied here.
const PICTURE: (&str, &str) = ("deep-compression-lenet-300-100", "docs/deep-compression-lenet-300-100.svg");

/// `K=V ` for each variable, as a shell command line would set them.
fn env_prefix(env: &[(&str, &str)]) -> String {
    env.iter().map(|(k, v)| format!("{k}={v} ")).collect()
}

const USAGE: &str = "usage: cargo xtask bench [NAME...] [--quick | --reuse]   (NAME: train, scale, compare, svd, archs \
                     or a pipeline bench; none: all but svd and archs, which run only when named: svd for many \
                     minutes, archs needs PyTorch for `cargo xtask fixtures --archs`)";

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let reuse = args.iter().any(|a| a == "--reuse");
    anyhow::ensure!(!(quick && reuse), "--quick and --reuse do not go together\n{USAGE}");
    let names: Vec<&str> = args.iter().map(String::as_str).filter(|a| *a != "--quick" && *a != "--reuse").collect();
    if names.iter().any(|n| n.starts_with('-')) {
        anyhow::bail!("{USAGE}");
    }
    for n in &names {
        anyhow::ensure!(
            matches!(*n, "train" | "scale" | "compare" | "svd" | "archs")
                || PIPELINES.iter().any(|p| p.name == *n)
                || TESTS.iter().any(|t| t.name == *n),
            "unknown bench `{n}`; known: train, scale, compare, svd, archs, {}, {}\n{USAGE}",
            PIPELINES.iter().map(|p| p.name).collect::<Vec<_>>().join(", "),
            TESTS.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
        );
    }
    let all = names.is_empty();
    if (all && !quick && !reuse) || names.contains(&"train") {
        crate::bench_train::train()?;
    }
    if (all && !quick && !reuse) || names.contains(&"scale") {
        crate::bench_scale::scale()?;
    }
    if (all && !quick && !reuse) || names.contains(&"compare") {
        crate::bench_compare::compare()?;
    }
    if names.contains(&"svd") {
        crate::bench_svd::svd()?;
    }
    if names.contains(&"archs") {
        crate::bench_archs::archs(quick)?;
    }
    let root = project_root();
    let golden = read_golden(&root)?;
    let benches: Vec<&PipelineBench> = PIPELINES.iter().filter(|p| all || names.contains(&p.name)).collect();
    let shrink = if benches.is_empty() || reuse { None } else { Some(build_shrink(quick)?) };
    let mut failed = Vec::new();
    for b in benches {
        if !root.join(b.pipeline).is_file() {
            println!("skipping {}: {} does not exist yet", b.name, b.pipeline);
            continue;
        }
        let sets = if quick { quick_sets(&golden, b.pipeline) } else { Vec::new() };
        let (out, secs) = if reuse {
            match reused_run(&root, b) {
                Ok(out) => (out, f64::NAN),
                Err(e) => {
                    println!("bench {}: nothing to reuse: {e:#}", b.name);
                    failed.push(b.name);
                    continue;
                }
            }
        } else {
            let out = format!("out/bench{}/{}", if quick { "-quick" } else { "" }, b.name);
            let mut cmd = Command::new(shrink.as_ref().expect("built above"));
            cmd.current_dir(&root).args(["run", b.pipeline, "--force", "--set", &format!("pipeline.output={out}")]);
            for s in &sets {
                cmd.args(["--set", s]);
            }
            println!("bench {}: {:?}", b.name, cmd);
            let t0 = std::time::Instant::now();
            if let Err(e) = crate::run_cmd(&mut cmd) {
                println!("bench {} failed: {e:#}", b.name);
                failed.push(b.name);
                continue;
            }
            (out, t0.elapsed().as_secs_f64())
        };
        let infer = match b.infer {
            None => None,
            Some(data) => match run_infer(&root, shrink.as_deref(), b, &out, data) {
                Ok(i) => Some(i),
                Err(e) => {
                    println!("bench {} (shrink infer) failed: {e:#}", b.name);
                    failed.push(b.name);
                    continue;
                }
            },
        };
        let report_json = std::fs::read_to_string(root.join(&out).join("report.json"))
            .with_context(|| format!("reading {out}/report.json"))?;
        let report: serde_json::Value =
            serde_json::from_str(&report_json).with_context(|| format!("parsing {out}/report.json"))?;
        record_result(&root, quick, b.name, secs, &sets, report)?;
        if let Some(i) = &infer {
            record_infer(&root, quick, b.name, i)?;
        }
        if !quick {
            let md = std::fs::read_to_string(root.join(&out).join("report.md"))
                .with_context(|| format!("reading {out}/report.md"))?;
            let mut body = section(b, &md, secs, reuse);
            if let Some(i) = &infer {
                body.push_str(&infer_section(b, i));
            }
            write_section(&root.join("BENCHMARKS.md"), b.name, &body)?;
            if b.name == PICTURE.0 {
                let svg = root.join(&out).join("report.svg");
                let text = std::fs::read_to_string(&svg).with_context(|| format!("reading {}", svg.display()))?;
                write_atomic(&root.join(PICTURE.1), &text)?;
                println!("bench {}: wrote {}", b.name, PICTURE.1);
            }
        }
    }
    if !quick {
        for t in TESTS.iter().filter(|t| (all && !reuse) || names.contains(&t.name)) {
            let out = root.join("out/bench");
            let md_path = out.join(format!("{}.md", t.name));
            // A test may also write README's paragraph for its bench (between `<!-- bench:NAME -->` markers).
            let readme_path = out.join(format!("{}.readme.md", t.name));
            let t0 = std::time::Instant::now();
            if !reuse {
                let _ = std::fs::remove_file(&readme_path);
                let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
                let mut cmd = Command::new(&cargo);
                cmd.current_dir(&root)
                    // `--workspace --tests`, not `-p shrink-tests`: resolved as `cargo test
                    // --workspace` resolves features, so its build is reused (the other
                    // binaries run no test under this filter)
                    .args(["test", "--workspace", "--tests", "--", t.test, "--exact", "--nocapture"])
                    .env("SHRINK_SLOW_TESTS", "1")
                    .env("SHRINK_BENCH_OUT", &out)
                    .envs(t.env.iter().copied());
                println!("bench {}: {:?}", t.name, cmd);
                if let Err(e) = crate::run_cmd(&mut cmd) {
                    println!("bench {} failed: {e:#}", t.name);
                    failed.push(t.name);
                    continue;
                }
            }
            let secs = t0.elapsed().as_secs_f64();
            let md = std::fs::read_to_string(&md_path).with_context(|| format!("reading {}", md_path.display()))?;
            let how = if reuse {
                format!(
                    "the output of `{}SHRINK_SLOW_TESTS=1 cargo test --workspace --tests -- {} --exact` (recorded by `cargo xtask bench {} --reuse`)",
                    env_prefix(t.env),
                    t.test,
                    t.name
                )
            } else {
                format!(
                    "`cargo xtask bench {}` (runs the test `{}` with {}SHRINK_SLOW_TESTS=1; {secs:.0} s here)",
                    t.name,
                    t.test,
                    env_prefix(t.env)
                )
            };
            let body = format!("## {}\n\n{how}. {}\n\n{}\n{md}", t.title, t.anchor, machine_line());
            write_section(&root.join("BENCHMARKS.md"), t.name, &body)?;
            if let Ok(par) = std::fs::read_to_string(&readme_path) {
                write_section(&root.join("README.md"), t.name, &par)?;
            }
        }
    }
    if !quick {
        write_readme_results(&root)?;
    }
    anyhow::ensure!(failed.is_empty(), "benches failed: {}", failed.join(", "));
    Ok(())
}

/// Rewrites README.md's results table (between `<!-- results -->` markers)
/// from `bench/results.json`: per pipeline bench, the first and last rows
/// of its report. Nothing in that table is typed by hand.
fn write_readme_results(root: &Path) -> anyhow::Result<()> {
    let path = root.join("bench/results.json");
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(()) };
    let all: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let mut md = String::from(
        "| pipeline | accuracy (before → after) | size | non-zero params | latency b1 / b64 | anchor |\n|---|---|---|---|---|---|\n",
    );
    for b in PIPELINES {
        let Some(r) = all.get(b.name) else { continue };
        let rows = r["report"]["rows"].as_array().cloned().unwrap_or_default();
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else { continue };
        let acc = |row: &serde_json::Value| row["accuracy"].as_f64().map(|a| format!("{:.2} %", a * 100.0));
        let onnx0 = first["size"]["onnx_bytes"].as_f64().unwrap_or(f64::NAN);
        let stored = last["stage"]["figures"]["stored_bytes"].as_f64();
        let bytes = stored.unwrap_or(last["size"]["onnx_bytes"].as_f64().unwrap_or(f64::NAN));
        let factor = onnx0 / bytes;
        let how =
            if factor >= 1.0 { format!("{factor:.1}× smaller") } else { format!("{:.1}× larger", 1.0 / factor) };
        let size = format!("{bytes:.0} B ({how}{})", if stored.is_some() { ", .shrink" } else { "" });
        let nz = last["size"]["nonzero_params"].as_f64().unwrap_or(f64::NAN)
            / first["size"]["params"].as_f64().unwrap_or(f64::NAN);
        let infer = b.infer.and_then(|_| InferFigures::from_json(&r["infer"]["report"]).ok());
        let lat: Vec<String> = last["latency_ratio"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p.as_array().and_then(|p| p.get(1)).and_then(|x| x.as_f64()))
            .map(|x| format!("{x:.2}×"))
            .collect();
        let (accuracy, latency) = match &infer {
            // the segmented model is what an early-exit deployment runs: its accuracy and latency
            Some(f) => (
                format!("{:.2} % → {:.2} % (`shrink infer`)", f.full_accuracy * 100.0, f.accuracy * 100.0),
                format!("{:.2}× b1 mean (`shrink infer`)", f.latency_ratio),
            ),
            None => (
                format!("{} → {}", acc(first).unwrap_or_else(|| "-".into()), acc(last).unwrap_or_else(|| "-".into())),
                if lat.is_empty() { "-".into() } else { lat.join(" / ") },
            ),
        };
        md.push_str(&format!(
            "| [{}](pipelines/{}.toml) | {accuracy} | {} | {:.2} % | {latency} | {} |\n",
            b.name,
            b.name,
            size,
            nz * 100.0,
            b.anchor
        ));
    }
    md.push_str(
        "\nWritten by `cargo xtask bench` from `bench/results.json` (latency: the compressed model's median over the \
         original's, measured interleaved in tract, 1 thread; rows marked `shrink infer`: the segmented early-exit \
         model's accuracy and mean batch-1 latency over the full model's, from `shrink infer` on the same run's \
         output, see BENCHMARKS.md).\n",
    );
    let readme = root.join("README.md");
    let old = std::fs::read_to_string(&readme).with_context(|| format!("reading {}", readme.display()))?;
    let (open, close) = ("<!-- results -->", "<!-- /results -->");
    let (Some(a), Some(z)) = (old.find(open), old.find(close)) else {
        println!("README.md has no {open} markers: results table not written");
        return Ok(());
    };
    let new = format!("{}{open}\n{md}{close}{}", &old[..a], &old[z + close.len()..]);
    write_atomic(&readme, &new)?;
    println!("wrote the results table of {}", readme.display());
    Ok(())
}

/// `report.md` under the bench's title, anchor and command; its headings
/// moved two levels down.
fn section(b: &PipelineBench, report_md: &str, secs: f64, reused: bool) -> String {
    let body: String = report_md
        .lines()
        .skip_while(|l| l.starts_with("# ") || l.trim().is_empty())
        .map(|l| if l.starts_with('#') { format!("##{l}\n") } else { format!("{l}\n") })
        .collect();
    let how = if reused {
        format!(
            "`shrink run {}` (the run recorded by `cargo xtask bench {} --reuse`; `cargo xtask bench {}` reruns it)",
            b.pipeline, b.name, b.name
        )
    } else {
        format!("`cargo xtask bench {}` (runs `shrink run {}`; {:.0} s here)", b.name, b.pipeline, secs)
    };
    let machine = if reused { format!("{} (recorded)", machine_line()) } else { machine_line() };
    format!("## {}\n\n{how}. {}\n\n{machine}\n{body}", b.title, b.anchor)
}

/// The figures of a `shrink infer` run (its `infer.json`) that a bench records.
struct InferFigures {
    data: String,
    /// the profile of the `shrink` binary that measured (`unknown` in older files)
    build: String,
    samples: f64,
    /// timings per sample and model, the fastest kept (1 in older files)
    repeat: f64,
    policy: String,
    thresholds: Vec<f64>,
    accuracy: f64,
    full_accuracy: f64,
    exit_counts: Vec<f64>,
    mean_ms: f64,
    median_ms: f64,
    p90_ms: f64,
    full_mean_ms: f64,
    full_median_ms: f64,
    full_p90_ms: f64,
    latency_ratio: f64,
    mean_relative_macs: f64,
}

impl InferFigures {
    fn from_json(v: &serde_json::Value) -> anyhow::Result<InferFigures> {
        let num = |k: &str| v.get(k).and_then(|x| x.as_f64()).with_context(|| format!("no number `{k}`"));
        let str = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string).with_context(|| format!("no `{k}`"));
        let nums = |k: &str| -> anyhow::Result<Vec<f64>> {
            let a = v.get(k).and_then(|x| x.as_array()).with_context(|| format!("no array `{k}`"))?;
            a.iter().map(|x| x.as_f64().with_context(|| format!("`{k}`: {x} is not a number"))).collect()
        };
        Ok(InferFigures {
            data: str("data")?,
            build: str("build").unwrap_or_else(|_| "unknown".into()),
            samples: num("samples")?,
            repeat: num("repeat").unwrap_or(1.0),
            policy: str("policy")?,
            thresholds: nums("thresholds")?,
            accuracy: num("accuracy")?,
            full_accuracy: num("full_accuracy")?,
            exit_counts: nums("exit_counts")?,
            mean_ms: num("mean_ms")?,
            median_ms: num("median_ms")?,
            p90_ms: num("p90_ms")?,
            full_mean_ms: num("full_mean_ms")?,
            full_median_ms: num("full_median_ms")?,
            full_p90_ms: num("full_p90_ms")?,
            latency_ratio: num("latency_ratio")?,
            mean_relative_macs: num("mean_relative_macs")?,
        })
    }
}

/// A `shrink infer` measurement of a bench's output: the command that made
/// it, how it was made here, and what it wrote.
struct InferRun {
    command: String,
    /// seconds here; NaN when read back by `--reuse`
    secs: f64,
    reused: bool,
    report: serde_json::Value,
    figures: InferFigures,
}

/// Timings per sample and model in the bench's `shrink infer` (the fastest
/// kept): one preempted call on a shared machine does not move the mean.
const INFER_REPEAT: &str = "3";

/// Runs `shrink infer OUT/early-exit --data DATA --repeat 3 --json OUT/infer.json` with
/// the bench's binary, or (`shrink` None: `--reuse`) reads the `infer.json`
/// already there, provided it is newer than the run's manifest and measured
/// `data`.
fn run_infer(root: &Path, shrink: Option<&Path>, b: &PipelineBench, out: &str, data: &str) -> anyhow::Result<InferRun> {
    let (dir, json) = (format!("{out}/early-exit"), format!("{out}/infer.json"));
    let command = format!("shrink infer {dir} --data {data} --repeat {INFER_REPEAT} --json {json}");
    let manifest = root.join(&dir).join("early-exit.toml");
    anyhow::ensure!(manifest.is_file(), "{dir}/early-exit.toml is missing: is {} an early-exit pipeline?", b.pipeline);
    let t0 = std::time::Instant::now();
    let reused = shrink.is_none();
    if let Some(shrink) = shrink {
        let mut cmd = Command::new(shrink);
        cmd.current_dir(root).args(["infer", &dir, "--data", data, "--repeat", INFER_REPEAT, "--json", &json]);
        println!("bench {}: {:?}", b.name, cmd);
        crate::run_cmd(&mut cmd)?;
    } else {
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified());
        let j = modified(&root.join(&json)).with_context(|| format!("{json}: run `{command}` first"))?;
        let m = modified(&manifest).with_context(|| format!("reading {dir}/early-exit.toml"))?;
        anyhow::ensure!(j >= m, "{json} is older than the run in {out}: rerun `{command}`");
    }
    let secs = if reused { f64::NAN } else { t0.elapsed().as_secs_f64() };
    let text = std::fs::read_to_string(root.join(&json)).with_context(|| format!("reading {json}"))?;
    let report: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("parsing {json}"))?;
    let figures = InferFigures::from_json(&report).with_context(|| format!("{json}: rerun `{command}`"))?;
    anyhow::ensure!(figures.data == data, "{json} measured `{}`, not `{data}`: rerun `{command}`", figures.data);
    Ok(InferRun { command, secs, reused, report, figures })
}

/// Adds the `shrink infer` figures to the bench's entry of the results file.
fn record_infer(root: &Path, quick: bool, name: &str, i: &InferRun) -> anyhow::Result<()> {
    let path = root.join("bench").join(if quick { "results-quick.json" } else { "results.json" });
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut all: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let entry = all
        .get_mut(name)
        .and_then(|e| e.as_object_mut())
        .with_context(|| format!("{}: no entry `{name}`", path.display()))?;
    entry.insert(
        "infer".into(),
        serde_json::json!({
            "command": i.command,
            "reused": i.reused,
            "seconds": i.secs,
            "accuracy_drop_pp": (i.figures.full_accuracy - i.figures.accuracy) * 100.0,
            "report": i.report,
        }),
    );
    let text = serde_json::to_string_pretty(&all).context("encoding results")? + "\n";
    write_atomic(&path, &text)
}

/// The `shrink infer` part of an early-exit bench's section.
fn infer_section(b: &PipelineBench, i: &InferRun) -> String {
    let f = &i.figures;
    let how = if i.reused {
        format!("`{}` (its `infer.json`, recorded by `cargo xtask bench {} --reuse`)", i.command, b.name)
    } else {
        format!(
            "`{}` (run by `cargo xtask bench {}` after the pipeline, same binary; {:.0} s here)",
            i.command, b.name, i.secs
        )
    };
    let n = f.samples.max(1.0);
    let exits: Vec<String> = f
        .exit_counts
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let at = f.thresholds.get(k).map_or("final".to_string(), |t| format!("exit {k} (τ = {t})"));
            format!("{at}: {c:.0} ({:.2} %)", c * 100.0 / n)
        })
        .collect();
    format!(
        "\n### The segmented model in tract, batch 1 (`shrink infer`)\n\n\
         {how}: {:.0} {} test samples one at a time, 1 thread, segmented and full model interleaved sample by \
         sample after a warm-up, {}; policy `{}`; `shrink` {} build.\n\n\
         | model | accuracy | Δ pp | mean ms | median ms | p90 ms | mean relative MACs |\n\
         |---|---|---|---|---|---|---|\n\
         | full | {:.2} % | +0.00 | {:.4} | {:.4} | {:.4} | 1.000 |\n\
         | segmented | {:.2} % | {:+.2} | {:.4} | {:.4} | {:.4} | {:.3} |\n\n\
         Mean latency ratio (segmented / full): **{:.3}** ({:.2}× faster); accuracy drop {:.2} pp. \
         Exits taken: {}.\n",
        f.samples,
        f.data,
        if f.repeat > 1.0 {
            format!("each timed {:.0} times, fastest kept", f.repeat)
        } else {
            "each timed once".into()
        },
        f.policy,
        f.build,
        f.full_accuracy * 100.0,
        f.full_mean_ms,
        f.full_median_ms,
        f.full_p90_ms,
        f.accuracy * 100.0,
        (f.accuracy - f.full_accuracy) * 100.0,
        f.mean_ms,
        f.median_ms,
        f.p90_ms,
        f.mean_relative_macs,
        f.latency_ratio,
        1.0 / f.latency_ratio.max(1e-12),
        (f.full_accuracy - f.accuracy) * 100.0,
        exits.join(", ")
    )
}

/// The pipeline's own output folder, when it holds a finished run of it.
fn reused_run(root: &Path, b: &PipelineBench) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(root.join(b.pipeline)).with_context(|| format!("reading {}", b.pipeline))?;
    let doc: toml::Table = toml::from_str(&text).with_context(|| format!("parsing {}", b.pipeline))?;
    let out = doc
        .get("pipeline")
        .and_then(|p| p.get("output"))
        .and_then(|o| o.as_str())
        .with_context(|| format!("{}: no [pipeline] output", b.pipeline))?
        .to_string();
    let marker = std::fs::read_to_string(root.join(&out).join("shrink-run.json"))
        .with_context(|| format!("{out}/shrink-run.json: run `shrink run {}` first", b.pipeline))?;
    let marker: serde_json::Value = serde_json::from_str(&marker).context("parsing the run marker")?;
    anyhow::ensure!(
        marker.get("file").and_then(|f| f.as_str()) == Some(b.pipeline),
        "{out} holds a run of {:?}, not {}",
        marker.get("file"),
        b.pipeline
    );
    anyhow::ensure!(root.join(&out).join("report.md").is_file(), "{out} has no report.md (the run did not finish)");
    Ok(out)
}

/// Builds `shrink` (dev profile for quick runs: the build `cargo test` made;
/// release otherwise) and returns the binary's path.
pub(crate) fn build_shrink(quick: bool) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    if quick {
        // resolved as `cargo test --workspace` resolves features, so its build is reused
        // (`-p shrink-cli` alone would rebuild tract and burn with other features)
        cmd.current_dir(project_root()).args(["build", "--workspace", "--bin", "shrink", "--tests"]);
    } else {
        cmd.current_dir(project_root()).args(["build", "-p", "shrink-cli", "--release"]);
    }
    crate::run_cmd(&mut cmd)?;
    let dir = crate::plugins::target_dir(&cargo)?;
    Ok(dir.join(if quick { "debug" } else { "release" }).join(format!("shrink{}", std::env::consts::EXE_SUFFIX)))
}

fn read_golden(root: &Path) -> anyhow::Result<toml::Table> {
    let path = root.join("tests/golden.toml");
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("parsing {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(toml::Table::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The `quick` overrides of the golden case for `pipeline`.
fn quick_sets(golden: &toml::Table, pipeline: &str) -> Vec<String> {
    let cases = golden.get("case").and_then(|c| c.as_array()).cloned().unwrap_or_default();
    cases
        .iter()
        .filter_map(|c| c.as_table())
        .find(|c| c.get("pipeline").and_then(|p| p.as_str()) == Some(pipeline))
        .and_then(|c| c.get("quick").and_then(|q| q.as_array()).cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

fn record_result(
    root: &Path,
    quick: bool,
    name: &str,
    secs: f64,
    sets: &[String],
    report: serde_json::Value,
) -> anyhow::Result<()> {
    let dir = root.join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(if quick { "results-quick.json" } else { "results.json" });
    let mut all: serde_json::Map<String, serde_json::Value> = match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?,
        Err(_) => serde_json::Map::new(),
    };
    all.insert(
        name.to_string(),
        serde_json::json!({
            "git": git_rev(),
            "machine": machine_line(),
            "seconds": secs,
            "overrides": sets,
            "report": report,
        }),
    );
    let text = serde_json::to_string_pretty(&all).context("encoding results")? + "\n";
    write_atomic(&path, &text)
}

/// Replaces the text between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`
/// in `path` (appending the section when it is not there yet).
pub(crate) fn write_section(path: &Path, name: &str, body: &str) -> anyhow::Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| {
        "# Benchmarks\n\nEvery figure here is written by the command above its table; rerun it to reproduce.\n"
            .to_string()
    });
    let (open, close) = (format!("<!-- bench:{name} -->"), format!("<!-- /bench:{name} -->"));
    let block = format!("{open}\n{}\n{close}", body.trim_end());
    let new = match (old.find(&open), old.find(&close)) {
        (Some(a), Some(b)) if b > a => format!("{}{block}{}", &old[..a], &old[b + close.len()..]),
        _ => format!("{}\n{block}\n", old.trim_end()),
    };
    write_atomic(path, &new)?;
    println!("wrote the `{name}` section of {}", path.display());
    Ok(())
}

fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// The short commit, with `+dirty` when tracked files differ from it (the
/// files benches write, BENCHMARKS.md and bench/, not counted), so that a
/// figure measured on uncommitted code says so. README.md and docs/ are
/// not counted either: benches write them too, and they hold no code.
fn git_rev() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(project_root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let rev = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_default();
    let changes = git(&[
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        ".",
        ":!BENCHMARKS.md",
        ":!bench/",
        ":!README.md",
        ":!docs/",
    ]);
    match changes {
        Some(c) if !c.is_empty() => format!("{rev}+dirty"),
        _ => rev,
    }
}

/// "Machine: CPU, N cores; git REV; DATE" for the head of a section.
pub(crate) fn machine_line() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!("Machine: {cpu}, {cores} cores; git {}; {date}", git_rev())
}
