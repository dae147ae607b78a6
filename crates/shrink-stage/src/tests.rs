//! Registry and error-message tests.

use crate::{Registry, Stage, StageCx, StageError, StageFactory, StageReport};

#[derive(Debug)]
struct Nop;

impl Stage for Nop {
    fn kind(&self) -> &str {
        "nop"
    }
    fn run(&self, _: &mut shrink_graph::Model, _: &mut StageCx<'_>) -> Result<StageReport, StageError> {
        Ok(StageReport::new("nothing"))
    }
}

fn build_nop(params: &toml::Table) -> Result<Box<dyn Stage>, StageError> {
    if let Some(k) = params.keys().next() {
        return Err(StageError::param("nop", k, "unknown parameter"));
    }
    Ok(Box::new(Nop))
}

#[test]
fn unknown_kinds_list_the_known_ones() {
    let mut reg = Registry::new();
    assert_eq!(
        reg.build("prune", &toml::Table::new()).unwrap_err().to_string(),
        "unknown stage kind `prune` (known kinds: plugin)"
    );
    reg.register(StageFactory { kind: "nop", summary: "does nothing", build: build_nop });
    assert_eq!(reg.kinds(), ["nop"]);
    assert_eq!(
        reg.build("prune", &toml::Table::new()).unwrap_err().to_string(),
        "unknown stage kind `prune` (known kinds: nop, plugin)"
    );
    assert_eq!(reg.build("nop", &toml::Table::new()).unwrap().kind(), "nop");
    let mut t = toml::Table::new();
    t.insert("x".into(), toml::Value::Integer(1));
    assert_eq!(reg.build("nop", &t).unwrap_err().to_string(), "stage `nop`: parameter `x`: unknown parameter");
}

#[test]
fn needs_data_says_which_key_to_add() {
    let e = StageError::NeedsData { stage: "prune".into(), key: "data.train".into(), why: "fine-tuning".into() };
    assert_eq!(
        e.to_string(),
        "stage `prune` needs data (fine-tuning): add `data.train` to the pipeline's [data] table"
    );
}

#[test]
fn globs_match_whole_names() {
    use crate::glob_match;
    for (p, n, want) in [
        ("fc*", "fc1", true),
        ("fc*", "xfc1", false),
        ("*conv*", "features.conv2.weight", true),
        ("fc?", "fc12", false),
        ("fc?", "fc1", true),
        ("*", "", true),
        ("a*b*c", "axxbyyc", true),
        ("a*b*c", "axxbyy", false),
        ("", "a", false),
    ] {
        assert_eq!(glob_match(p, n), want, "{p} vs {n}");
    }
}
