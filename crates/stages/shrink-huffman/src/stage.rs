//! The `huffman` stage: packs the model into `<output dir>/<output>` and
//! reports Deep Compression's per-layer columns. The model passes on unchanged.
//! It packs the model's ONNX bytes that the caller holds (`StageCx::model_bytes`)
//! and reads the original's size from its held bytes, so a pipeline run
//! exports neither again.

use std::path::Path;

use prost::Message;
use shrink_graph::Model;
use shrink_graph::onnx::ModelProto;
use shrink_stage::{LayerNote, Stage, StageCx, StageError, StageReport};
use tracing::{info, instrument};

use crate::format::{self, Encoding, Packed, UnpackOptions};
use crate::params::Params;

pub(crate) const KIND: &str = "huffman";

#[derive(Debug)]
pub(crate) struct HuffmanStage {
    params: Params,
}

pub(crate) fn build(table: &toml::Table) -> Result<Box<dyn Stage>, StageError> {
    let params: Params =
        table.clone().try_into().map_err(|e: toml::de::Error| StageError::param(KIND, "*", e.message().to_string()))?;
    if let Err((key, reason)) = params.pack_options().check() {
        return Err(StageError::param(KIND, key, reason));
    }
    let out = Path::new(&params.output);
    if params.output.is_empty() || out.file_name().is_none_or(|f| f != out.as_os_str()) {
        return Err(StageError::param(KIND, "output", format!("`{}` must be a plain file name", params.output)));
    }
    Ok(Box::new(HuffmanStage { params }))
}

impl Stage for HuffmanStage {
    fn kind(&self) -> &str {
        KIND
    }

    #[instrument(skip_all, fields(stage = KIND))]
    fn run(&self, model: &mut Model, cx: &mut StageCx<'_>) -> Result<StageReport, StageError> {
        cx.progress.start("huffman: packing", 0);
        // The model's bytes as the caller holds them (exported only when it
        // holds none): the stage packs them and checks the round trip against them.
        let bytes = cx.model_bytes(model);
        let proto = ModelProto::decode(&*bytes)
            .map_err(|e| StageError::failed(KIND, format!("the model's own bytes do not decode (a bug): {e}")))?;
        let packed = format::pack_proto(proto, &self.params.pack_options())
            .map_err(|e| StageError::failed(KIND, e.to_string()))?;
        // the artefact must unpack to exactly this model
        let back = format::unpack_proto(&packed.bytes, &UnpackOptions::default())
            .map_err(|e| StageError::failed(KIND, format!("the packed file does not unpack: {e}")))?;
        if back.encode_to_vec() != *bytes {
            return Err(StageError::failed(KIND, "the packed file does not unpack to the same model (a bug)"));
        }
        drop(bytes);
        let path = cx.output_dir.join(&self.params.output);
        shrink_graph::save_file(&path, &packed.bytes).map_err(|e| StageError::graph(KIND, e.in_file(&path)))?;
        cx.progress.finish();
        let original = cx.original_bytes().len() as u64;
        let report = report(&packed, original, &self.params.output);
        info!("{}", report.summary);
        Ok(report)
    }
}

/// Per-layer notes and the totals: Deep Compression's Table 2/3 columns.
pub fn report(packed: &Packed, original_bytes: u64, file: &str) -> StageReport {
    let total = packed.bytes.len() as u64;
    let ratio = original_bytes as f64 / total.max(1) as f64;
    let mut r = StageReport::new(format!(
        "packed into {file}: {total} bytes, {ratio:.1}x smaller than the original's {original_bytes} ONNX bytes"
    ));
    for t in &packed.tensors {
        let nz = t.nonzeros.max(1) as f64;
        let mut f = std::collections::BTreeMap::new();
        f.insert("elements".into(), t.numel as f64);
        f.insert("nonzeros".into(), t.nonzeros as f64);
        f.insert("nonzero_fraction".into(), t.nonzeros as f64 / t.numel.max(1) as f64);
        f.insert("bytes".into(), t.bytes as f64);
        f.insert("bits_per_nonzero".into(), t.bytes as f64 * 8.0 / nz);
        f.insert("compression".into(), t.raw_bytes as f64 / t.bytes.max(1) as f64);
        let note = match t.encoding {
            Encoding::Raw => "raw f32 (no encoding is smaller)".to_string(),
            e => {
                if t.index_bits > 0 {
                    f.insert("index_bits".into(), t.index_bits as f64);
                    f.insert("index_bits_per_weight".into(), t.index_bits_plain as f64 / nz);
                    f.insert("index_bits_per_weight_huffman".into(), t.index_bits_stored as f64 / nz);
                    f.insert("fillers".into(), t.fillers as f64);
                }
                if t.codebook > 0 {
                    f.insert("codebook".into(), t.codebook as f64);
                    f.insert("id_bits_per_weight".into(), t.id_bits_plain as f64 / nz);
                    f.insert("id_bits_per_weight_huffman".into(), t.id_bits_stored as f64 / nz);
                }
                let mut s = e.name().to_string();
                if t.transposed {
                    s.push_str(", transposed scan");
                }
                if t.index_bits > 0 {
                    s.push_str(&format!(", {}-bit indices", t.index_bits));
                }
                if t.codebook > 0 {
                    s.push_str(&format!(", {} values ({})", t.codebook, if t.codebook_f16 { "f16" } else { "f32" }));
                }
                s
            }
        };
        r.layers.push(LayerNote { layer: t.name.clone(), note, figures: f });
    }
    r.figures.insert("shrink_bytes".into(), total as f64);
    // The name the pipeline report reads as "the size this model is stored in".
    r.figures.insert("stored_bytes".into(), total as f64);
    r.figures.insert("graph_bytes".into(), packed.graph_bytes as f64);
    r.figures.insert("onnx_bytes".into(), packed.onnx_bytes as f64);
    r.figures.insert("original_bytes".into(), original_bytes as f64);
    r.figures.insert("compression".into(), ratio);
    r.files.push(file.to_string());
    r
}
