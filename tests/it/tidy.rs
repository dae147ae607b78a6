//! Tidy checks (rust-analyzer's habit): the architecture invariants a test can check.

use std::path::{Path, PathBuf};

use crate::util::root;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if p.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&p, out);
            }
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

fn manifests() -> Vec<(String, PathBuf, String)> {
    let mut out = Vec::new();
    for group in ["crates", "crates/stages", "plugins"] {
        let Ok(rd) = std::fs::read_dir(root().join(group)) else { continue };
        for e in rd {
            let p = e.unwrap().path().join("Cargo.toml");
            if let Ok(text) = std::fs::read_to_string(&p) {
                let name =
                    text.lines().find_map(|l| l.strip_prefix("name = \"")).unwrap().trim_end_matches('"').to_string();
                out.push((name, p, text));
            }
        }
    }
    out
}

/// The `[dependencies]` section of a manifest (not dev-dependencies).
fn normal_deps(manifest: &str) -> String {
    let mut out = String::new();
    let mut on = false;
    for l in manifest.lines() {
        if l.starts_with('[') {
            on = l.trim() == "[dependencies]";
            continue;
        }
        if on {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let mut files = Vec::new();
    for d in ["crates", "tests", "xtask", "plugins"] {
        if root().join(d).exists() {
            rust_files(&root().join(d), &mut files);
        }
    }
    let bad: Vec<String> = files
        .iter()
        .filter(|p| !p.ends_with("generated.rs"))
        .filter(|p| !std::fs::read_to_string(p).unwrap().starts_with("//!"))
        .map(|p| p.strip_prefix(root()).unwrap().display().to_string())
        .collect();
    assert!(bad.is_empty(), "files without a leading `//!` doc comment: {bad:?}");
}

#[test]
fn library_crates_do_not_depend_on_anyhow() {
    let bad: Vec<String> = manifests()
        .into_iter()
        .filter(|(name, _, text)| name != "shrink-cli" && normal_deps(text).lines().any(|l| l.starts_with("anyhow")))
        .map(|(name, _, _)| name)
        .collect();
    assert!(bad.is_empty(), "library crates depending on anyhow: {bad:?}");
}

#[test]
fn only_shrink_verify_links_tract() {
    let bad: Vec<String> = manifests()
        .into_iter()
        .filter(|(name, _, text)| name != "shrink-verify" && normal_deps(text).lines().any(|l| l.starts_with("tract")))
        .map(|(name, _, _)| name)
        .collect();
    assert!(bad.is_empty(), "crates linking tract besides shrink-verify: {bad:?}");
}

#[test]
fn graph_crate_knows_nothing_of_stages_toml_training_or_tract() {
    let (_, _, text) = manifests().into_iter().find(|(n, _, _)| n == "shrink-graph").unwrap();
    let deps = normal_deps(&text);
    for banned in ["tract", "toml", "burn", "shrink-", "anyhow"] {
        assert!(!deps.lines().any(|l| l.starts_with(banned)), "shrink-graph depends on {banned}");
    }
}

#[test]
fn internal_crates_follow_the_manifest_conventions() {
    for (name, path, text) in manifests() {
        let dir = path.parent().unwrap().file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(dir, name, "{}: the folder must carry the crate's name", path.display());
        assert!(text.contains("version = \"0.0.0\""), "{name}: version must be 0.0.0");
        assert!(text.contains("publish = false"), "{name}: publish = false");
        assert!(text.contains("[lints]\nworkspace = true"), "{name}: [lints] workspace = true");
    }
}

#[test]
fn stage_crates_depend_on_no_other_stage_nor_on_the_pipeline_or_tract() {
    let stages: Vec<String> = manifests()
        .into_iter()
        .filter(|(_, path, _)| path.parent().and_then(|p| p.parent()).is_some_and(|p| p.ends_with("crates/stages")))
        .map(|(name, _, _)| name)
        .collect();
    assert!(!stages.is_empty(), "no stage crates found under crates/stages");
    for (name, _, text) in manifests().into_iter().filter(|(n, _, _)| stages.contains(n)) {
        let deps = normal_deps(&text);
        for line in deps.lines() {
            let dep = line.split(['.', ' ', '=']).next().unwrap_or("");
            let banned = stages.iter().any(|s| s == dep)
                || ["shrink-pipeline", "shrink-verify", "shrink-cli"].contains(&dep)
                || dep.starts_with("tract");
            assert!(!banned, "stage crate {name} depends on {dep}");
        }
    }
}

#[test]
fn every_stage_crate_has_test_data() {
    let Ok(rd) = std::fs::read_dir(root().join("crates/stages")) else { return };
    for e in rd {
        let p = e.unwrap().path();
        assert!(p.join("test_data").is_dir(), "{} has no test_data/", p.display());
    }
}

#[test]
fn every_pipeline_parses() {
    let dir = root().join("pipelines");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            shrink_pipeline::Pipeline::load(&p, &[]).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n > 0, "no pipelines in {}", dir.display());
}

/// Op knowledge (attributes, shapes, axes, channel rules) lives in
/// `shrink_graph::op`; elsewhere a line that compares or matches an op type
/// name is a second copy of it. The allow-list holds the dispatch on names a
/// user wrote, each with its reason.
#[test]
fn op_knowledge_lives_in_the_op_layer() {
    const ALLOWED: &[(&str, &str, &str)] = &[
        (
            "crates/shrink-stage/src/select.rs",
            "ops.contains(&op.op_type.as_str())",
            "the pipeline's `ops` key: op type names the user wrote",
        ),
        ("crates/stages/shrink-lowrank/src/lib.rs", "self.cfg.ops.contains(&o.op_type)", "the user's `ops` filter"),
        (
            "crates/stages/shrink-lowrank/src/params.rs",
            "\"Gemm\" | \"MatMul\" | \"Conv\"",
            "checks the op type names the user wrote in `ops`",
        ),
        ("crates/stages/shrink-lowrank/src/params.rs", "o == \"Conv\"", "checks the user's `ops` names"),
        ("crates/stages/shrink-quantize/src/kmeans.rs", "s.op_type == *key", "a `layer_bits` key naming an op type"),
    ];
    let op_types: Vec<&str> = shrink_graph::op::OP_TYPES.iter().flat_map(|t| t.iter().copied()).collect();
    let literal = |line: &str| {
        op_types.iter().any(|t| {
            let q = format!("\"{t}\"");
            [format!("{q} =>"), format!("{q} |"), format!("| {q}"), format!("== {q}"), format!("!= {q}")]
                .iter()
                .any(|p| line.contains(p.as_str()))
        })
    };
    let compares = |line: &str| {
        line.contains("op_type")
            && ["==", "!=", "match ", "matches!", "starts_with", "ends_with", "contains("]
                .iter()
                .any(|p| line.contains(p))
    };
    let mut files = Vec::new();
    for d in ["crates", "plugins"] {
        rust_files(&root().join(d), &mut files);
    }
    let mut bad = Vec::new();
    let mut used = vec![false; ALLOWED.len()];
    for f in files {
        let rel = f.strip_prefix(root()).unwrap().to_string_lossy().replace('\\', "/");
        let skip = rel.starts_with("crates/shrink-graph/src/op/")
            || rel.ends_with("/tests.rs")
            || rel.contains("/tests/")
            || rel.contains("/examples/")
            || rel.ends_with("onnx/generated.rs");
        if skip {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if !(compares(code) || literal(code)) {
                continue;
            }
            if let Some(k) = ALLOWED.iter().position(|(path, frag, _)| rel == *path && line.contains(frag)) {
                used[k] = true;
                continue;
            }
            bad.push(format!("{rel}:{}: {}", i + 1, line.trim()));
        }
    }
    for (k, (path, frag, _)) in ALLOWED.iter().enumerate() {
        assert!(used[k], "allow-list entry `{frag}` no longer occurs in {path}: remove it");
    }
    assert!(bad.is_empty(), "op knowledge outside shrink_graph::op (teach the op layer instead):\n{}", bad.join("\n"));
}

/// Every op type the layer lists is parsed by its family.
#[test]
fn op_layer_parses_every_listed_type_to_its_family() {
    for types in shrink_graph::op::OP_TYPES {
        for t in *types {
            let op = shrink_graph::Op::new(t, "n", 1, vec!["y".into()]);
            // a required attribute may be missing; an unknown type would be Ok(None)
            assert!(!matches!(shrink_graph::op::parse(&op), Ok(None)), "{t} is listed but not parsed");
        }
    }
}
