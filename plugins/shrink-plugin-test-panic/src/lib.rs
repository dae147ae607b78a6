//! TEST FIXTURE (not a real plugin; `cargo xtask plugins` skips `shrink-plugin-test-*`):
//! built by the integration tests to check that the host survives a plugin
//! stage that panics (`test-panic`) and reports one that fails (`test-fail`).

use shrink_graph::Model;
use shrink_plugin_sdk::{ExportStage, export_stage};
use shrink_stage::{Stage, StageCx, StageError, StageReport};

/// Panics with a known text.
#[derive(Debug)]
pub struct Panic;

impl ExportStage for Panic {
    const KIND: &'static str = "test-panic";
    fn from_params(_: &toml::Table) -> Result<Self, StageError> {
        Ok(Panic)
    }
}

impl Stage for Panic {
    fn kind(&self) -> &str {
        Self::KIND
    }
    fn run(&self, model: &mut Model, _: &mut StageCx<'_>) -> Result<StageReport, StageError> {
        panic!("deliberate panic in a test plugin ({} nodes)", model.graph.node_count())
    }
}

/// Fails with a [`StageError`].
#[derive(Debug)]
pub struct Fail;

impl ExportStage for Fail {
    const KIND: &'static str = "test-fail";
    fn from_params(_: &toml::Table) -> Result<Self, StageError> {
        Ok(Fail)
    }
}

impl Stage for Fail {
    fn kind(&self) -> &str {
        Self::KIND
    }
    fn run(&self, _: &mut Model, _: &mut StageCx<'_>) -> Result<StageReport, StageError> {
        Err(StageError::failed(Self::KIND, "deliberate failure"))
    }
}

export_stage!(Panic, Fail);
