//! Reading and writing model files: size limit, external data, atomic writes.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use prost::Message;

use crate::error::GraphError;
use crate::graph::{Model, NodeKind};
use crate::onnx::tensor_proto::DataLocation;
use crate::onnx::{ModelProto, StringStringEntryProto, TensorProto};

/// How a model is read.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Refuse model files larger than this (the protobuf format itself stops at 2 GiB;
    /// larger models keep their weights in external data files, which do not count).
    pub max_bytes: u64,
    /// Run [`crate::Graph::verify`] after loading (on by default).
    pub verify: bool,
}

impl Default for LoadOptions {
    fn default() -> LoadOptions {
        LoadOptions { max_bytes: 2 << 30, verify: true }
    }
}

impl Model {
    /// Loads an ONNX file, with external data from beside it.
    pub fn load(path: impl AsRef<Path>) -> Result<Model, GraphError> {
        Model::load_with(path, &LoadOptions::default())
    }

    pub fn load_with(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Model, GraphError> {
        let path = path.as_ref();
        let inner = || -> Result<Model, GraphError> {
            let size = std::fs::metadata(path)?.len();
            if size > opts.max_bytes {
                return Err(GraphError::TooLarge { size, limit: opts.max_bytes });
            }
            let bytes = std::fs::read(path)?;
            let mut proto = ModelProto::decode(bytes.as_slice())?;
            drop(bytes);
            let dir = path.parent().unwrap_or(Path::new("."));
            load_external(&mut proto, dir)?;
            let mut model = crate::import::import(proto)?;
            if opts.verify {
                model.graph.verify()?;
            }
            model.source = Some(path.to_path_buf());
            Ok(model)
        };
        inner().map_err(|e| e.in_file(path))
    }

    /// Decodes a model from protobuf bytes (external data is refused: there is
    /// no folder to read it from).
    pub fn from_bytes(bytes: &[u8]) -> Result<Model, GraphError> {
        let proto = ModelProto::decode(bytes)?;
        Model::from_proto(proto)
    }

    /// Imports a decoded `ModelProto` and verifies it.
    pub fn from_proto(proto: ModelProto) -> Result<Model, GraphError> {
        if let Some(g) = &proto.graph
            && let Some(t) = g.initializer.iter().find(|t| t.data_location == DataLocation::External as i32)
        {
            return Err(GraphError::ExternalData {
                tensor: t.name.clone(),
                reason: "the model was given as bytes, so there is no folder to read its data file from".into(),
            });
        }
        let model = crate::import::import(proto)?;
        model.graph.verify()?;
        Ok(model)
    }

    /// The model as a `ModelProto`, every tensor inline.
    pub fn to_proto(&self) -> ModelProto {
        crate::export::export(self, &mut inline_tensor)
    }

    /// The model as protobuf bytes, every tensor inline.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    /// Writes the model atomically (temp file in the same folder, fsync,
    /// rename). Tensors loaded from external data go to `<file name>.data`
    /// beside it. Refuses to write over the file the model was loaded from.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), GraphError> {
        let path = path.as_ref();
        let inner = || -> Result<(), GraphError> {
            if let Some(src) = &self.source
                && same_file(src, path)
            {
                return Err(GraphError::Io(std::io::Error::other(
                    "refusing to overwrite the input model; choose another output path",
                )));
            }
            let data_name = format!("{}.data", path.file_name().and_then(|s| s.to_str()).unwrap_or("model.onnx"));
            let mut side: Vec<u8> = Vec::new();
            let mut move_out = |t: &mut TensorProto| {
                if t.data_location != DataLocation::External as i32 {
                    return;
                }
                while !side.len().is_multiple_of(64) {
                    side.push(0); // keep every tensor 64-byte aligned for mmap readers
                }
                let offset = side.len();
                side.extend_from_slice(&t.raw_data);
                t.external_data = vec![
                    entry("location", &data_name),
                    entry("offset", &offset.to_string()),
                    entry("length", &t.raw_data.len().to_string()),
                ];
                t.raw_data = Vec::new();
            };
            let proto = crate::export::export(self, &mut move_out);
            if !side.is_empty() {
                save_file(&path.with_file_name(&data_name), &side)?;
            }
            save_file(path, &proto.encode_to_vec())
        };
        inner().map_err(|e| e.in_file(path))
    }
}

fn entry(key: &str, value: &str) -> StringStringEntryProto {
    StringStringEntryProto { key: key.into(), value: value.into() }
}

fn inline_tensor(t: &mut TensorProto) {
    if t.data_location == DataLocation::External as i32 {
        t.data_location = DataLocation::Default as i32;
        t.external_data.clear();
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Writes `bytes` to `path` atomically: a temp file in the same folder,
/// fsync, then rename, so a reader sees the old file or the new one, never half.
pub fn save_file(path: &Path, bytes: &[u8]) -> Result<(), GraphError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().and_then(|s| s.to_str()).unwrap_or("out");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        GraphError::Io(e)
    })
}

/// Reads every external tensor's bytes into `raw_data`; the tensor keeps its
/// `data_location` so that saving writes it to a side file again.
fn load_external(proto: &mut ModelProto, dir: &Path) -> Result<(), GraphError> {
    let Some(g) = proto.graph.as_mut() else { return Ok(()) };
    let mut tensors: Vec<&mut TensorProto> = g.initializer.iter_mut().collect();
    for n in &mut g.node {
        for a in &mut n.attribute {
            tensors.extend(a.t.iter_mut());
        }
    }
    for t in tensors {
        if t.data_location != DataLocation::External as i32 {
            continue;
        }
        let err = |reason: String| GraphError::ExternalData { tensor: t.name.clone(), reason };
        let get = |k: &str| t.external_data.iter().find(|e| e.key == k).map(|e| e.value.clone());
        let location = get("location").ok_or_else(|| err("no `location` entry".into()))?;
        let rel = Path::new(&location);
        if rel.is_absolute() || rel.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
            return Err(err(format!("location `{location}` must be a relative path inside the model's folder")));
        }
        let parse = |k: &str| -> Result<Option<u64>, GraphError> {
            get(k).map(|v| v.parse::<u64>().map_err(|_| err(format!("`{k}` is not a number: `{v}`")))).transpose()
        };
        let offset = parse("offset")?.unwrap_or(0);
        let file = dir.join(rel);
        let bytes = std::fs::read(&file).map_err(|e| err(format!("{}: {e}", file.display())))?;
        let length = parse("length")?.unwrap_or((bytes.len() as u64).saturating_sub(offset));
        let end = offset.checked_add(length).filter(|&e| e <= bytes.len() as u64).ok_or_else(|| {
            err(format!("bytes {offset}..+{length} lie past the end of {} ({} bytes)", file.display(), bytes.len()))
        })?;
        t.raw_data = bytes[offset as usize..end as usize].to_vec();
    }
    Ok(())
}

impl crate::graph::Graph {
    /// Dense weights (initializers), in `graph.initializer` order.
    pub fn weights(&self) -> impl Iterator<Item = (crate::NodeId, &crate::Tensor)> + '_ {
        self.initializers.iter().filter_map(|&id| match self.node(id) {
            NodeKind::Weight(w) => Some((id, &w.tensor)),
            _ => None,
        })
    }
}
