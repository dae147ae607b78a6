//! The plugin host: loads stage plugins (shared libraries speaking
//! `shrink-plugin-abi` v1) and wraps each stage kind they offer as a
//! [`Stage`].
//!
//! [`Plugin::load`] opens the library, looks up `shrink_plugin_entry_v1` and
//! checks the descriptor's `abi`, `size` and stage kinds before any other
//! call. A library is never unloaded (its code may still be referenced by
//! panic hooks, thread-locals or a [`PluginStage`]): loading leaks it.
//!
//! A [`PluginStage`] exchanges only bytes with the plugin: the model as ONNX
//! (`Model::to_bytes`, or the bytes the runner holds: `StageCx::model_bytes`), the parameters as TOML text and a JSON context go in;
//! the whole rewritten model as ONNX and a JSON report come back, and the
//! host hands the result to the plugin's own `free`. The returned model is
//! decoded with [`Model::from_bytes`], which verifies the graph, so garbage
//! is an error naming the plugin rather than a broken model. A plugin's
//! error or panic text becomes [`StageError::Failed`] naming the stage and
//! the plugin's path. Plugins get no datasets in ABI v1.
//!
//! Loading a plugin runs its code with the host's rights: load only
//! libraries you trust.

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use shrink_graph::Model;
use shrink_plugin_abi::{
    ABI_VERSION, CheckFn, ENTRY_SYMBOL_V1, EntryFn, FreeFn, PluginDescriptor, RunFn, RunInput, RunOutput, STATUS_ERROR,
    STATUS_OK, Slice,
};
use shrink_stage::{LayerNote, Stage, StageCx, StageError, StageReport};

/// What can go wrong loading a plugin. Every variant names the library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    #[error("plugin {}: no such file", path.display())]
    NotFound { path: PathBuf },
    /// The dynamic loader refused the file.
    #[error("plugin {}: cannot load: {reason}", path.display())]
    Load { path: PathBuf, reason: String },
    #[error("plugin {}: not a shrink plugin (no `{symbol}` symbol)", path.display())]
    NoEntry { path: PathBuf, symbol: &'static str },
    #[error(
        "plugin {}: speaks plugin ABI version {found}, this shrink speaks version {expected}; rebuild the plugin against shrink-plugin-abi {expected}",
        path.display()
    )]
    Abi { path: PathBuf, found: u32, expected: u32 },
    /// The descriptor is malformed (too small, no kinds, bad names).
    #[error("plugin {}: bad descriptor: {reason}", path.display())]
    Descriptor { path: PathBuf, reason: String },
}

/// A loaded plugin: a cheap handle, shared by the stages built from it.
#[derive(Debug, Clone)]
pub struct Plugin {
    inner: Arc<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    path: PathBuf,
    name: String,
    version: String,
    kinds: Vec<String>,
    run: RunFn,
    check: CheckFn,
    free: FreeFn,
}

/// Most stage kinds one plugin may offer (a sanity bound on `n_kinds`).
const MAX_KINDS: usize = 1024;

impl Plugin {
    /// Loads the library at `path` and checks its descriptor. Calls nothing
    /// in it but its initialisers and the entry function.
    pub fn load(path: &Path) -> Result<Plugin, PluginError> {
        let p = || path.to_path_buf();
        if !path.is_file() {
            return Err(PluginError::NotFound { path: p() });
        }
        // SAFETY: loading runs the library's initialisers; a plugin is trusted
        // code by definition (see the module docs).
        let lib = unsafe { libloading::Library::new(path) }
            .map_err(|e| PluginError::Load { path: p(), reason: e.to_string() })?;
        // Never unloaded: nothing may outlive code that was unmapped.
        let lib: &'static libloading::Library = Box::leak(Box::new(lib));
        // SAFETY: every ABI version's entry symbol has type `EntryFn`.
        let entry: EntryFn = unsafe { lib.get::<EntryFn>(ENTRY_SYMBOL_V1.as_bytes()) }
            .map(|s| *s)
            .map_err(|_| PluginError::NoEntry { path: p(), symbol: ENTRY_SYMBOL_V1 })?;
        // SAFETY: the entry takes nothing and returns a pointer to a static.
        let desc = unsafe { entry() };
        let bad = |reason: String| PluginError::Descriptor { path: p(), reason };
        if desc.is_null() {
            return Err(bad("the entry returned null".into()));
        }
        // SAFETY: every version of the descriptor starts with `abi` and `size`;
        // nothing else is read before both are checked.
        let (abi, size) = unsafe { (std::ptr::addr_of!((*desc).abi).read(), std::ptr::addr_of!((*desc).size).read()) };
        if abi != ABI_VERSION {
            return Err(PluginError::Abi { path: p(), found: abi, expected: ABI_VERSION });
        }
        if size < PluginDescriptor::SIZE_V1 {
            return Err(bad(format!("it is {size} bytes, ABI v1 needs {}", PluginDescriptor::SIZE_V1)));
        }
        // SAFETY: `size` covers every v1 field; the descriptor is static.
        let d: &'static PluginDescriptor = unsafe { &*desc };
        // SAFETY: the descriptor's slices point to the library's statics.
        let text = |s: &Slice| String::from_utf8_lossy(unsafe { s.as_bytes() }).into_owned();
        if d.n_kinds == 0 || d.n_kinds > MAX_KINDS || d.kinds.is_null() {
            return Err(bad(format!("it offers {} stage kinds (1 to {MAX_KINDS} expected)", d.n_kinds)));
        }
        // SAFETY: a non-null array of `n_kinds` slices in static memory.
        let raw = unsafe { std::slice::from_raw_parts(d.kinds, d.n_kinds) };
        let mut kinds = Vec::with_capacity(raw.len());
        let mut seen = HashSet::new();
        for (i, s) in raw.iter().enumerate() {
            // SAFETY: as for `text`.
            let bytes = unsafe { s.as_bytes() };
            let kind = std::str::from_utf8(bytes).map_err(|_| bad(format!("stage kind {i} is not UTF-8")))?;
            if kind.is_empty() || kind.len() > 128 || kind.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(bad(format!("stage kind {i} ({kind:?}) is empty, too long or has spaces")));
            }
            if !seen.insert(kind) {
                return Err(bad(format!("stage kind `{kind}` is listed twice")));
            }
            kinds.push(kind.to_string());
        }
        Ok(Plugin {
            inner: Arc::new(Loaded {
                path: p(),
                name: text(&d.name),
                version: text(&d.version),
                kinds,
                run: d.run,
                check: d.check,
                free: d.free,
            }),
        })
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The name the plugin gives itself (its crate name for SDK plugins).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn version(&self) -> &str {
        &self.inner.version
    }

    /// The stage kinds it offers, in its order.
    pub fn kinds(&self) -> &[String] {
        &self.inner.kinds
    }

    /// Builds stage `kind` with `params` (its `[[stage]]` parameters). The
    /// plugin checks the parameters now, so a typo fails before any stage runs.
    pub fn stage(&self, kind: &str, params: &toml::Table) -> Result<Box<dyn Stage>, StageError> {
        if !self.inner.kinds.iter().any(|k| k == kind) {
            return Err(StageError::UnknownKind {
                kind: kind.into(),
                known: format!("{} (offered by plugin {})", self.inner.kinds.join(", "), self.inner.path.display()),
            });
        }
        let params = toml::to_string(params).map_err(|e| StageError::param(kind, "params", e.to_string()))?;
        self.inner.call(self.inner.check, kind, &[], &params, "").map_err(|reason| self.inner.failed(kind, reason))?;
        Ok(Box::new(PluginStage { plugin: self.clone(), kind: kind.into(), params }))
    }
}

/// The stage kinds the library at `path` offers (for `shrink plugins PATH`).
pub fn list_kinds(path: &Path) -> Result<Vec<String>, PluginError> {
    Ok(Plugin::load(path)?.inner.kinds.clone())
}

/// One stage kind of a plugin, with its parameters: a [`Stage`] like any other.
#[derive(Debug)]
pub struct PluginStage {
    plugin: Plugin,
    kind: String,
    /// The parameters as TOML text, as the plugin receives them.
    params: String,
}

impl PluginStage {
    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }
}

impl Stage for PluginStage {
    fn kind(&self) -> &str {
        &self.kind
    }

    fn run(&self, model: &mut Model, cx: &mut StageCx<'_>) -> Result<StageReport, StageError> {
        let p = &self.plugin.inner;
        let fail = |reason: String| p.failed(&self.kind, reason);
        let bytes = cx.model_bytes(model);
        let context = serde_json::json!({
            "pipeline": cx.pipeline,
            "index": cx.index,
            "seed": cx.seed,
            "scratch": cx.scratch.to_string_lossy(),
            "output_dir": cx.output_dir.to_string_lossy(),
        })
        .to_string();
        let out = p.call(p.run, &self.kind, &bytes, &self.params, &context).map_err(fail)?;
        drop(bytes);
        let mut new =
            Model::from_bytes(out.model()).map_err(|e| fail(format!("returned a model that does not load: {e}")))?;
        let report = parse_report(out.report()).map_err(|e| fail(format!("returned a bad report: {e}")))?;
        drop(out);
        new.source = model.source.take();
        *model = new;
        Ok(report)
    }
}

impl Loaded {
    fn failed(&self, kind: &str, reason: String) -> StageError {
        StageError::failed(kind, format!("plugin {}: {reason}", self.path.display()))
    }

    /// Calls `run` or `check`; the result is freed by the plugin when dropped.
    fn call(&self, f: RunFn, kind: &str, model: &[u8], params: &str, context: &str) -> Result<Output<'_>, String> {
        let input = RunInput {
            size: RunInput::SIZE_V1,
            kind: Slice::from_bytes(kind.as_bytes()),
            model: Slice::from_bytes(model),
            params: Slice::from_bytes(params.as_bytes()),
            context: Slice::from_bytes(context.as_bytes()),
        };
        // SAFETY: `input` and what it points to live across the call; the
        // descriptor was checked at load time.
        let ptr = unsafe { f(&input) };
        if ptr.is_null() {
            return Err("returned no result (null)".into());
        }
        let out = Output { ptr, free: self.free, _host: std::marker::PhantomData };
        // SAFETY: a non-null output of this plugin; every version starts with
        // `size` and `status`.
        let (size, status) =
            unsafe { (std::ptr::addr_of!((*ptr).size).read(), std::ptr::addr_of!((*ptr).status).read()) };
        if size < RunOutput::SIZE_V1 {
            return Err(format!("returned a result of {size} bytes, ABI v1 needs {}", RunOutput::SIZE_V1));
        }
        match status {
            STATUS_OK => Ok(out),
            STATUS_ERROR => {
                let text = String::from_utf8_lossy(out.error()).trim_end().to_string();
                Err(if text.is_empty() { "failed without a message".into() } else { text })
            }
            other => Err(format!("returned unknown status {other}")),
        }
    }
}

/// A plugin's result, handed back to its `free` on drop.
struct Output<'a> {
    ptr: *mut RunOutput,
    free: FreeFn,
    _host: std::marker::PhantomData<&'a Loaded>,
}

impl Output<'_> {
    fn slice(&self, pick: impl Fn(&RunOutput) -> Slice) -> &[u8] {
        // SAFETY: `ptr` is a checked v1 output that stays valid until `free`,
        // which only `drop` calls; the returned borrow ends before that.
        unsafe { pick(&*self.ptr).as_bytes() }
    }
    fn model(&self) -> &[u8] {
        self.slice(|o| o.model)
    }
    fn report(&self) -> &[u8] {
        self.slice(|o| o.report)
    }
    fn error(&self) -> &[u8] {
        self.slice(|o| o.error)
    }
}

impl Drop for Output<'_> {
    fn drop(&mut self) {
        // SAFETY: returned by this plugin's `run`/`check`, freed exactly once.
        unsafe { (self.free)(self.ptr) }
    }
}

/// The JSON report of `RunOutput::report` as a [`StageReport`].
fn parse_report(bytes: &[u8]) -> Result<StageReport, String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    let figures = |v: Option<&serde_json::Value>, at: &str| -> Result<BTreeMap<String, f64>, String> {
        let Some(v) = v else { return Ok(BTreeMap::new()) };
        let map = v.as_object().ok_or_else(|| format!("`{at}` is not an object"))?;
        map.iter()
            .map(|(k, x)| x.as_f64().map(|x| (k.clone(), x)).ok_or_else(|| format!("`{at}.{k}` is not a number")))
            .collect()
    };
    let string = |v: Option<&serde_json::Value>, at: &str| -> Result<String, String> {
        match v {
            None => Ok(String::new()),
            Some(v) => v.as_str().map(str::to_string).ok_or_else(|| format!("`{at}` is not a string")),
        }
    };
    let array = |key: &str| -> Result<&[serde_json::Value], String> {
        match obj.get(key) {
            None => Ok(&[]),
            Some(v) => v.as_array().map(Vec::as_slice).ok_or_else(|| format!("`{key}` is not an array")),
        }
    };
    let mut report = StageReport::new(string(obj.get("summary"), "summary")?);
    report.figures = figures(obj.get("figures"), "figures")?;
    for (i, l) in array("layers")?.iter().enumerate() {
        let at = format!("layers[{i}]");
        let l = l.as_object().ok_or_else(|| format!("`{at}` is not an object"))?;
        report.layers.push(LayerNote {
            layer: string(l.get("layer"), &format!("{at}.layer"))?,
            note: string(l.get("note"), &format!("{at}.note"))?,
            figures: figures(l.get("figures"), &format!("{at}.figures"))?,
        });
    }
    for (i, f) in array("files")?.iter().enumerate() {
        let f = string(Some(f), &format!("files[{i}]"))?;
        let path = Path::new(&f);
        if f.is_empty() || path.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
            return Err(format!("`files[{i}]` ({f:?}) is not a path inside the output folder"));
        }
        report.files.push(f);
    }
    Ok(report)
}
