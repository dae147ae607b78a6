//! Stage kinds by name.

use std::collections::BTreeMap;

use crate::{Stage, StageError};

/// Builds a stage from the parameters of its `[[stage]]` table (every key
/// but `kind`). Parameter structs use `#[serde(deny_unknown_fields)]`.
#[derive(Debug, Clone, Copy)]
pub struct StageFactory {
    pub kind: &'static str,
    /// One line for `shrink stages` and error messages.
    pub summary: &'static str,
    pub build: fn(&toml::Table) -> Result<Box<dyn Stage>, StageError>,
}

/// The stage kinds a pipeline may name.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    factories: BTreeMap<&'static str, StageFactory>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds a kind. Registering a kind twice is a bug in the caller: the
    /// second registration panics, naming the kind.
    pub fn register(&mut self, factory: StageFactory) {
        let old = self.factories.insert(factory.kind, factory);
        assert!(old.is_none(), "stage kind `{}` registered twice", factory.kind);
    }

    pub fn get(&self, kind: &str) -> Option<&StageFactory> {
        self.factories.get(kind)
    }

    /// Registered kinds, sorted.
    pub fn kinds(&self) -> Vec<&'static str> {
        self.factories.keys().copied().collect()
    }

    /// Builds a stage, or says which kinds exist.
    pub fn build(&self, kind: &str, params: &toml::Table) -> Result<Box<dyn Stage>, StageError> {
        let f = self.get(kind).ok_or_else(|| StageError::UnknownKind {
            kind: kind.into(),
            // `plugin` is handled by the pipeline runner, not by a factory
            known: self.kinds().into_iter().chain(["plugin"]).collect::<Vec<_>>().join(", "),
        })?;
        (f.build)(params)
    }
}
