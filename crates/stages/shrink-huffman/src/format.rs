//! The `.shrink` container: pack an ONNX model, unpack it bit-exactly.
//! The byte layout is in `docs/format.md`; this module is its reference.
//!
//! Packing works on the `ModelProto`: each dense float32 initializer is
//! encoded every way that applies (sparse cluster ids, dense cluster ids,
//! sparse raw values; row-major or transposed scan; each index width), and
//! the smallest wins; if nothing beats its raw bytes it stays in the graph.
//! The compressed initializers keep name, dims and dtype in the graph part
//! with their `raw_data` emptied; a tensor section names its initializer by
//! index. Unpacking fills `raw_data` back in, so `encode(unpack(pack(m)))`
//! equals `encode(m)` byte for byte.
//!
//! Decoding never trusts a count: each is checked against what the bytes
//! left could hold before anything is allocated, and the whole output is
//! capped by [`UnpackOptions::max_output_bytes`].

use std::collections::HashMap;
use std::io::Read;

use prost::Message;
use serde::{Deserialize, Serialize};
use shrink_graph::Model;
use shrink_graph::onnx::tensor_proto::{DataLocation, DataType};
use shrink_graph::onnx::{ModelProto, TensorProto};

use crate::bits::{BitReader, BitWriter, Cursor, put_varint, varint_len};
use crate::error::HuffmanError;
use crate::huffman::{self, Decoder, MAX_CODE_LEN};
use crate::sparse;

/// The first bytes of every `.shrink` file.
pub const MAGIC: [u8; 4] = *b"SHRK";
/// The format version this build writes and reads.
pub const VERSION: u8 = 1;
/// The widest relative index.
pub const MAX_INDEX_BITS: u8 = 12;
/// The largest codebook is `2^MAX_CODEBOOK_BITS` values.
pub const MAX_CODEBOOK_BITS: u8 = 8;

const SECTION_GRAPH: u8 = 1;
const SECTION_TENSOR: u8 = 2;
const GRAPH_RAW: u8 = 0;
const GRAPH_DEFLATE: u8 = 1;
const ENC_SPARSE_IDS: u8 = 1;
const ENC_DENSE_IDS: u8 = 2;
const ENC_SPARSE_RAW: u8 = 3;
const ORDER_ROW: u8 = 0;
const ORDER_COL: u8 = 1;
const CB_F32: u8 = 0;
const CB_F16: u8 = 1;
const STREAM_FIXED: u8 = 0;
const STREAM_HUFFMAN: u8 = 1;
/// kind (1) + length (1) + CRC (4): the smallest section.
const MIN_SECTION: usize = 6;
/// Deflate cannot expand more than about 1032:1.
const MAX_DEFLATE_RATIO: u64 = 1032;

/// How codebook values are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CodebookMode {
    /// f16 when every value converts to f16 and back exactly, else f32.
    #[default]
    Auto,
    /// Always f32.
    F32,
}

/// What `pack` may try.
#[derive(Debug, Clone)]
pub struct PackOptions {
    /// Bits per relative index for weights of rank ≤ 2 (fully connected).
    pub index_bits_fc: u8,
    /// Bits per relative index for weights of rank ≥ 3 (convolutions).
    pub index_bits_conv: u8,
    /// Also try every index width from 1 to [`MAX_INDEX_BITS`] and keep the smallest.
    pub search_index_bits: bool,
    /// Tensors with at most `2^max_codebook_bits` distinct non-zero values are stored as cluster ids.
    pub max_codebook_bits: u8,
    pub codebook: CodebookMode,
}

impl Default for PackOptions {
    fn default() -> PackOptions {
        PackOptions {
            index_bits_fc: 5,
            index_bits_conv: 8,
            search_index_bits: true,
            max_codebook_bits: MAX_CODEBOOK_BITS,
            codebook: CodebookMode::Auto,
        }
    }
}

impl PackOptions {
    /// Which option is out of range, and why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        for (key, v) in [("index_bits_fc", self.index_bits_fc), ("index_bits_conv", self.index_bits_conv)] {
            if !(1..=MAX_INDEX_BITS).contains(&v) {
                return Err((key, format!("{v} is outside 1..={MAX_INDEX_BITS}")));
            }
        }
        if !(1..=MAX_CODEBOOK_BITS).contains(&self.max_codebook_bits) {
            return Err((
                "max_codebook_bits",
                format!("{} is outside 1..={MAX_CODEBOOK_BITS}", self.max_codebook_bits),
            ));
        }
        Ok(())
    }
}

/// How one tensor was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum Encoding {
    /// Left in the graph part as its ONNX raw bytes.
    #[default]
    Raw,
    /// Relative indices of the non-zeros and their cluster ids.
    SparseIds,
    /// One cluster id per element, zero having its own id.
    DenseIds,
    /// Relative indices of the non-zeros and their f32 values.
    SparseRaw,
}

impl Encoding {
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Raw => "raw",
            Encoding::SparseIds => "sparse ids",
            Encoding::DenseIds => "dense ids",
            Encoding::SparseRaw => "sparse raw",
        }
    }
}

/// What packing one float initializer gave: Deep Compression's columns.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TensorStats {
    pub name: String,
    pub numel: u64,
    pub nonzeros: u64,
    pub encoding: Encoding,
    /// Scanned column-major (the transpose of its `[dims[0], rest]` view).
    pub transposed: bool,
    /// Width of a relative index (0 without indices).
    pub index_bits: u8,
    /// Index entries, fillers included.
    pub entries: u64,
    pub fillers: u64,
    /// Codebook values (0 without ids).
    pub codebook: u64,
    pub codebook_f16: bool,
    /// Bits of the index stream at fixed width, and as stored (Huffman table included when coded).
    pub index_bits_plain: u64,
    pub index_bits_stored: u64,
    /// Bits of the id stream at fixed width, and as stored.
    pub id_bits_plain: u64,
    pub id_bits_stored: u64,
    /// Bytes this tensor takes in the file (section framing and codebook included; raw: its data bytes).
    pub bytes: u64,
    /// Its bytes as f32.
    pub raw_bytes: u64,
}

/// A packed model and what each tensor became.
#[derive(Debug, Clone)]
pub struct Packed {
    pub bytes: Vec<u8>,
    /// Every float initializer considered, in graph order.
    pub tensors: Vec<TensorStats>,
    /// Bytes of the graph section (raw tensors included).
    pub graph_bytes: u64,
    /// Whether the graph part is deflated.
    pub graph_deflated: bool,
    /// Bytes of the model as ONNX (every tensor inline).
    pub onnx_bytes: u64,
}

/// Limits for [`unpack`].
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// The most bytes the graph part and the tensors may unpack to (2 GiB: a
    /// protobuf message cannot be larger).
    pub max_output_bytes: u64,
}

impl Default for UnpackOptions {
    fn default() -> UnpackOptions {
        UnpackOptions { max_output_bytes: 2 << 30 }
    }
}

/// Whether `bytes` start like a `.shrink` file.
pub fn is_shrink(bytes: &[u8]) -> bool {
    bytes.starts_with(&MAGIC)
}

/// Packs `model` (the model itself is not changed).
pub fn pack(model: &Model, opts: &PackOptions) -> Result<Packed, HuffmanError> {
    pack_proto(model.to_proto(), opts)
}

/// Packs a decoded `ModelProto` (tensors inline).
pub fn pack_proto(mut proto: ModelProto, opts: &PackOptions) -> Result<Packed, HuffmanError> {
    if let Err((key, reason)) = opts.check() {
        return Err(HuffmanError::Tensor { tensor: "*".into(), reason: format!("option `{key}`: {reason}") });
    }
    let onnx_bytes = proto.encoded_len() as u64;
    let mut tensors = Vec::new();
    let mut sections: Vec<(u8, Vec<u8>)> = Vec::new();
    if let Some(g) = proto.graph.as_mut() {
        for (index, t) in g.initializer.iter_mut().enumerate() {
            let Some(values) = packable(t) else { continue };
            let conv = t.dims.len() >= 3;
            let best = best_encoding(index as u64, &t.dims, &values, opts, conv);
            let raw_bytes = values.len() as u64 * 4;
            let mut stats = TensorStats {
                name: t.name.clone(),
                numel: values.len() as u64,
                nonzeros: values.iter().filter(|&&v| v != 0).count() as u64,
                bytes: raw_bytes,
                raw_bytes,
                ..TensorStats::default()
            };
            match best {
                Some((payload, mut s)) if section_len(&payload) < raw_bytes => {
                    s.bytes = section_len(&payload);
                    s.name = stats.name;
                    s.numel = stats.numel;
                    s.nonzeros = stats.nonzeros;
                    s.raw_bytes = raw_bytes;
                    stats = s;
                    t.raw_data = Vec::new();
                    sections.push((SECTION_TENSOR, payload));
                }
                _ => {}
            }
            tracing::debug!(
                tensor = %stats.name,
                encoding = stats.encoding.name(),
                bytes = stats.bytes,
                raw = raw_bytes,
                "packed"
            );
            tensors.push(stats);
        }
    }
    let skeleton = proto.encode_to_vec();
    let deflated = deflate(&skeleton);
    let mut graph = Vec::new();
    let graph_deflated = deflated.len() < skeleton.len();
    if graph_deflated {
        graph.push(GRAPH_DEFLATE);
        put_varint(&mut graph, skeleton.len() as u64);
        graph.extend_from_slice(&deflated);
    } else {
        graph.push(GRAPH_RAW);
        put_varint(&mut graph, skeleton.len() as u64);
        graph.extend_from_slice(&skeleton);
    }
    let graph_bytes = section_len(&graph);
    sections.insert(0, (SECTION_GRAPH, graph));

    let mut bytes = Vec::new();
    bytes.extend_from_slice(&MAGIC);
    bytes.push(VERSION);
    put_varint(&mut bytes, sections.len() as u64);
    for (kind, payload) in &sections {
        bytes.push(*kind);
        put_varint(&mut bytes, payload.len() as u64);
        bytes.extend_from_slice(payload);
        bytes.extend_from_slice(&section_crc(*kind, payload).to_le_bytes());
    }
    Ok(Packed { bytes, tensors, graph_bytes, graph_deflated, onnx_bytes })
}

fn section_len(payload: &[u8]) -> u64 {
    (1 + varint_len(payload.len() as u64) + payload.len() + 4) as u64
}

fn section_crc(kind: u8, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[kind]);
    h.update(payload);
    h.finalize()
}

fn deflate(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    // writing into a Vec cannot fail
    if enc.write_all(bytes).is_err() {
        return Vec::new();
    }
    enc.finish().unwrap_or_default()
}

/// The values (as bits) of an initializer this format can take out of the
/// graph: float32, inline `raw_data` of the right length, not a segment,
/// fewer than 2^32 elements.
fn packable(t: &TensorProto) -> Option<Vec<u32>> {
    if t.data_type != DataType::Float as i32
        || t.data_location == DataLocation::External as i32
        || t.segment.is_some()
        || !t.float_data.is_empty()
        || t.raw_data.is_empty()
    {
        return None;
    }
    let n = numel(&t.dims)?;
    if n > u32::MAX as u64 || n.checked_mul(4)? != t.raw_data.len() as u64 {
        return None;
    }
    Some(t.raw_data.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

fn numel(dims: &[i64]) -> Option<u64> {
    dims.iter().try_fold(1u64, |acc, &d| u64::try_from(d).ok().and_then(|d| acc.checked_mul(d)))
}

/// The `[rows, cols]` view a transposed scan uses, when it differs from row-major.
fn col_view(dims: &[i64], numel: u64) -> Option<(u64, u64)> {
    let rows = u64::try_from(*dims.first()?).ok()?;
    if dims.len() < 2 || rows < 2 || numel / rows < 2 {
        return None;
    }
    Some((rows, numel / rows))
}

/// Position in the tensor of scan position `p` (column-major over `[rows, cols]`).
fn unscan(p: u64, view: Option<(u64, u64)>) -> u64 {
    match view {
        Some((rows, cols)) => (p % rows) * cols + p / rows,
        None => p,
    }
}

/// Every applicable encoding of one tensor, smallest first wins.
fn best_encoding(
    index: u64,
    dims: &[i64],
    values: &[u32],
    opts: &PackOptions,
    conv: bool,
) -> Option<(Vec<u8>, TensorStats)> {
    let n = values.len() as u64;
    let default_bits = if conv { opts.index_bits_conv } else { opts.index_bits_fc };
    let widths: Vec<u8> = if opts.search_index_bits { (1..=MAX_INDEX_BITS).collect() } else { vec![default_bits] };
    // distinct non-zero values, up to the codebook limit
    let limit = 1usize << opts.max_codebook_bits;
    let mut distinct: HashMap<u32, ()> = HashMap::new();
    for &v in values {
        if v != 0 {
            distinct.insert(v, ());
            if distinct.len() > limit {
                break;
            }
        }
    }
    let codebook: Option<Codebook> = (distinct.len() <= limit).then(|| {
        let mut vals: Vec<u32> = distinct.into_keys().collect();
        vals.sort_by(|a, b| f32::from_bits(*a).total_cmp(&f32::from_bits(*b)));
        let f16 = match opts.codebook {
            CodebookMode::Auto => vals.iter().map(|&v| f16_exact(v)).collect::<Option<Vec<u16>>>(),
            CodebookMode::F32 => None,
        };
        let ids = vals.iter().enumerate().map(|(i, &v)| (v, i as u16)).collect();
        Codebook { vals, f16, ids }
    });
    let mut best: Option<(Vec<u8>, TensorStats)> = None;
    let mut consider = |cand: (Vec<u8>, TensorStats)| {
        if best.as_ref().is_none_or(|b| cand.0.len() < b.0.len()) {
            best = Some(cand);
        }
    };
    let nnz = values.iter().filter(|&&v| v != 0).count() as u64;
    if codebook.is_none() && nnz * 4 + nnz / 8 >= n * 4 {
        return best; // sparse raw values cannot beat the raw bytes
    }
    let mut views = vec![None];
    if let Some(v) = col_view(dims, n) {
        views.push(Some(v));
    }
    for view in views {
        let positions: Vec<u32> = match view {
            None => (0..n as u32).filter(|&p| values[p as usize] != 0).collect(),
            Some((rows, cols)) => {
                (0..n as u32).filter(|&p| values[unscan(p as u64, Some((rows, cols))) as usize] != 0).collect()
            }
        };
        let nz: Vec<u32> = positions.iter().map(|&p| values[unscan(p as u64, view) as usize]).collect();
        for &bits in &widths {
            let entries = sparse::encode(&positions, n, bits);
            match &codebook {
                Some(cb) => consider(sparse_ids(index, view.is_some(), bits, &entries, &nz, cb)),
                None => consider(sparse_raw(index, view.is_some(), bits, &entries, &nz)),
            }
        }
    }
    if let Some(cb) = &codebook {
        consider(dense_ids(index, values, cb));
    }
    best
}

struct Codebook {
    vals: Vec<u32>,
    f16: Option<Vec<u16>>,
    ids: HashMap<u32, u16>,
}

fn put_header(out: &mut Vec<u8>, index: u64, enc: u8, transposed: bool) {
    put_varint(out, index);
    out.push(enc);
    out.push(if transposed { ORDER_COL } else { ORDER_ROW });
}

fn put_codebook(out: &mut Vec<u8>, cb: &Codebook) {
    put_varint(out, cb.vals.len() as u64);
    match &cb.f16 {
        Some(h) => {
            out.push(CB_F16);
            h.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        }
        None => {
            out.push(CB_F32);
            cb.vals.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        }
    }
}

fn sparse_ids(
    index: u64,
    transposed: bool,
    bits: u8,
    entries: &[sparse::Entry],
    nz: &[u32],
    cb: &Codebook,
) -> (Vec<u8>, TensorStats) {
    let mut out = Vec::new();
    put_header(&mut out, index, ENC_SPARSE_IDS, transposed);
    put_codebook(&mut out, cb);
    out.push(bits);
    put_varint(&mut out, entries.len() as u64);
    let gaps: Vec<u16> = entries.iter().map(|e| e.gap).collect();
    let filler = cb.vals.len() as u16;
    let ids: Vec<u16> = entries.iter().map(|e| e.nonzero.map_or(filler, |k| cb.ids[&nz[k as usize]])).collect();
    let (ip, is) = put_stream(&mut out, &gaps, 1 << bits);
    let (dp, ds) = put_stream(&mut out, &ids, cb.vals.len() + 1);
    let stats = TensorStats {
        encoding: Encoding::SparseIds,
        transposed,
        index_bits: bits,
        entries: entries.len() as u64,
        fillers: entries.iter().filter(|e| e.nonzero.is_none()).count() as u64,
        codebook: cb.vals.len() as u64,
        codebook_f16: cb.f16.is_some(),
        index_bits_plain: ip,
        index_bits_stored: is,
        id_bits_plain: dp,
        id_bits_stored: ds,
        ..TensorStats::default()
    };
    (out, stats)
}

fn dense_ids(index: u64, values: &[u32], cb: &Codebook) -> (Vec<u8>, TensorStats) {
    let mut out = Vec::new();
    put_header(&mut out, index, ENC_DENSE_IDS, false);
    put_codebook(&mut out, cb);
    let zero = cb.vals.len() as u16;
    let ids: Vec<u16> = values.iter().map(|&v| if v == 0 { zero } else { cb.ids[&v] }).collect();
    let (dp, ds) = put_stream(&mut out, &ids, cb.vals.len() + 1);
    let stats = TensorStats {
        encoding: Encoding::DenseIds,
        codebook: cb.vals.len() as u64,
        codebook_f16: cb.f16.is_some(),
        id_bits_plain: dp,
        id_bits_stored: ds,
        ..TensorStats::default()
    };
    (out, stats)
}

fn sparse_raw(index: u64, transposed: bool, bits: u8, entries: &[sparse::Entry], nz: &[u32]) -> (Vec<u8>, TensorStats) {
    let mut out = Vec::new();
    put_header(&mut out, index, ENC_SPARSE_RAW, transposed);
    out.push(bits);
    put_varint(&mut out, entries.len() as u64);
    let gaps: Vec<u16> = entries.iter().map(|e| e.gap).collect();
    let (ip, is) = put_stream(&mut out, &gaps, 1 << bits);
    for e in entries {
        let v = e.nonzero.map_or(0, |k| nz[k as usize]);
        out.extend_from_slice(&v.to_le_bytes());
    }
    let stats = TensorStats {
        encoding: Encoding::SparseRaw,
        transposed,
        index_bits: bits,
        entries: entries.len() as u64,
        fillers: entries.iter().filter(|e| e.nonzero.is_none()).count() as u64,
        index_bits_plain: ip,
        index_bits_stored: is,
        ..TensorStats::default()
    };
    (out, stats)
}

/// Bits of a fixed-width symbol of an alphabet of `n` symbols (at least 1).
fn width(n: usize) -> u8 {
    (usize::BITS - n.saturating_sub(1).leading_zeros()).max(1) as u8
}

/// Writes a symbol stream at fixed width or Huffman coded, whichever is
/// smaller. Returns its bits at fixed width and as stored (with its table).
fn put_stream(out: &mut Vec<u8>, symbols: &[u16], alphabet: usize) -> (u64, u64) {
    let w = width(alphabet);
    let plain_bits = symbols.len() as u64 * w as u64;
    let fixed_len = 1 + varint_len(plain_bits.div_ceil(8)) + plain_bits.div_ceil(8) as usize;
    let mut freqs = vec![0u64; alphabet];
    for &s in symbols {
        freqs[s as usize] += 1;
    }
    let huff = huffman::code_lengths(&freqs, MAX_CODE_LEN).map(|lens| {
        let n_len = lens.iter().rposition(|&l| l > 0).map_or(0, |i| i + 1);
        let data_bits = huffman::encoded_bits(&freqs, &lens);
        let len = 1
            + varint_len(n_len as u64)
            + n_len.div_ceil(2)
            + varint_len(data_bits.div_ceil(8))
            + data_bits.div_ceil(8) as usize;
        (lens, n_len, len)
    });
    let start = out.len();
    match huff {
        Some((lens, n_len, len)) if len < fixed_len => {
            out.push(STREAM_HUFFMAN);
            put_varint(out, n_len as u64);
            for pair in lens[..n_len].chunks(2) {
                out.push((pair[0] << 4) | pair.get(1).copied().unwrap_or(0));
            }
            let mut w = BitWriter::new();
            huffman::encode(symbols, &lens, &mut w);
            let data = w.finish();
            put_varint(out, data.len() as u64);
            out.extend_from_slice(&data);
        }
        _ => {
            out.push(STREAM_FIXED);
            let mut bw = BitWriter::new();
            for &s in symbols {
                bw.write(s as u32, w);
            }
            let data = bw.finish();
            put_varint(out, data.len() as u64);
            out.extend_from_slice(&data);
        }
    }
    (plain_bits, (out.len() - start) as u64 * 8)
}

/// Reads `count` symbols of an alphabet of `alphabet` symbols.
fn get_stream(c: &mut Cursor<'_>, count: u64, alphabet: usize, what: &str) -> Result<Vec<u16>, HuffmanError> {
    let start = c.offset();
    let mode = c.u8(&format!("{what}: coding"))?;
    let lens = match mode {
        STREAM_FIXED => None,
        STREAM_HUFFMAN => {
            let n_len = c.varint_max(&format!("{what}: code length count"), alphabet as u64)? as usize;
            let table = c.bytes(n_len.div_ceil(2) as u64, &format!("{what}: code lengths"))?;
            let mut lens: Vec<u8> = table.iter().flat_map(|b| [b >> 4, b & 0x0F]).collect();
            if lens.len() > n_len && lens.pop() != Some(0) {
                return Err(c.err(format!("{what}: padding nibble of the code lengths is not zero")));
            }
            Some(lens)
        }
        m => return Err(HuffmanError::corrupt(start, format!("{what}: unknown stream coding {m}"))),
    };
    let data_len = c.varint_max(&format!("{what}: data length"), c.remaining() as u64)?;
    let data_at = c.offset();
    let data = c.bytes(data_len, &format!("{what}: data"))?;
    let bad = |m: String| HuffmanError::corrupt(data_at, format!("{what}: {m}"));
    // every symbol takes at least one bit: bound `count` before allocating
    if count > data_len * 8 {
        return Err(bad(format!("{count} symbols declared, {data_len} bytes hold at most {}", data_len * 8)));
    }
    let mut r = BitReader::new(data);
    let mut out = Vec::with_capacity(count as usize);
    match lens {
        None => {
            let w = width(alphabet);
            if count * w as u64 > data_len * 8 {
                return Err(bad(format!("{count} symbols of {w} bits do not fit in {data_len} bytes")));
            }
            for _ in 0..count {
                let s = r.read(w).ok_or_else(|| bad("ends early".into()))?;
                if s as usize >= alphabet {
                    return Err(bad(format!("symbol {s} outside the alphabet of {alphabet}")));
                }
                out.push(s as u16);
            }
        }
        Some(lens) => {
            let dec = Decoder::new(&lens).map_err(bad)?;
            for k in 0..count {
                out.push(dec.decode(&mut r).map_err(|e| bad(format!("symbol {k}: {e}")))?);
            }
        }
    }
    if !r.ends_cleanly() {
        return Err(bad("has bytes or set bits after its last symbol".into()));
    }
    Ok(out)
}

/// Unpacks a `.shrink` file into ONNX bytes.
pub fn unpack(bytes: &[u8]) -> Result<Vec<u8>, HuffmanError> {
    Ok(unpack_proto(bytes, &UnpackOptions::default())?.encode_to_vec())
}

/// Unpacks a `.shrink` file into a verified [`Model`].
pub fn unpack_model(bytes: &[u8], opts: &UnpackOptions) -> Result<Model, HuffmanError> {
    Ok(Model::from_proto(unpack_proto(bytes, opts)?)?)
}

/// Unpacks a `.shrink` file into its `ModelProto`.
pub fn unpack_proto(bytes: &[u8], opts: &UnpackOptions) -> Result<ModelProto, HuffmanError> {
    let mut c = Cursor::new(bytes, 0);
    if !is_shrink(bytes) {
        return Err(HuffmanError::NotShrink(format!("the file does not start with {:?}", "SHRK")));
    }
    c.bytes(4, "magic")?;
    let version = c.u8("format version")?;
    if version != VERSION {
        return Err(HuffmanError::Version { found: version, supported: VERSION });
    }
    let n_sections = c.varint_max("section count", (c.remaining() / MIN_SECTION) as u64)?;
    let mut budget = opts.max_output_bytes;
    let mut proto: Option<ModelProto> = None;
    let mut filled: Vec<bool> = Vec::new();
    for s in 0..n_sections {
        let kind_at = c.offset();
        let kind = c.u8(&format!("section {s}: kind"))?;
        let len = c.varint_max(&format!("section {s}: length"), c.remaining() as u64)?;
        let at = c.offset();
        let payload = c.bytes(len, &format!("section {s}: payload"))?;
        let crc = c.u32_le(&format!("section {s}: checksum"))?;
        if section_crc(kind, payload) != crc {
            return Err(HuffmanError::corrupt(
                kind_at,
                format!("section {s}: checksum mismatch (the file is corrupted)"),
            ));
        }
        let mut p = Cursor::new(payload, at);
        match (kind, proto.as_mut()) {
            (SECTION_GRAPH, None) => {
                let m = read_graph(&mut p, &mut budget)?;
                filled = vec![false; m.graph.as_ref().map_or(0, |g| g.initializer.len())];
                proto = Some(m);
            }
            (SECTION_GRAPH, Some(_)) => {
                return Err(HuffmanError::corrupt(kind_at, format!("section {s}: a second graph section")));
            }
            (SECTION_TENSOR, Some(m)) => read_tensor(&mut p, m, &mut filled, &mut budget, opts.max_output_bytes)?,
            (SECTION_TENSOR, None) => {
                return Err(HuffmanError::corrupt(kind_at, format!("section {s}: a tensor before the graph section")));
            }
            (k, _) => return Err(HuffmanError::corrupt(kind_at, format!("section {s}: unknown section kind {k}"))),
        }
        if !p.is_empty() {
            return Err(p.err(format!("section {s}: {} bytes left over after its content", p.remaining())));
        }
    }
    if !c.is_empty() {
        return Err(c.err(format!("{} bytes after the last section", c.remaining())));
    }
    proto.ok_or_else(|| HuffmanError::corrupt(c.offset(), "no graph section"))
}

fn read_graph(c: &mut Cursor<'_>, budget: &mut u64) -> Result<ModelProto, HuffmanError> {
    let enc_at = c.offset();
    let enc = c.u8("graph: encoding")?;
    let raw_len = c.varint("graph: size")?;
    let at = c.offset();
    let data = c.bytes(c.remaining() as u64, "graph: data")?;
    if raw_len > *budget {
        return Err(HuffmanError::TooLarge {
            limit: *budget,
            what: format!("the graph part declares {raw_len} bytes"),
        });
    }
    let skeleton = match enc {
        GRAPH_RAW => {
            if raw_len != data.len() as u64 {
                return Err(HuffmanError::corrupt(
                    at,
                    format!("graph: declares {raw_len} bytes, holds {}", data.len()),
                ));
            }
            data.to_vec()
        }
        GRAPH_DEFLATE => {
            let most = (data.len() as u64).saturating_mul(MAX_DEFLATE_RATIO).saturating_add(16);
            if raw_len > most {
                return Err(HuffmanError::corrupt(
                    at,
                    format!("graph: declares {raw_len} bytes, {} deflated bytes hold at most {most}", data.len()),
                ));
            }
            // reserve what is likely, not what is declared: the inflater proves the rest
            let mut out = Vec::with_capacity(raw_len.min(data.len() as u64 * 8) as usize);
            flate2::read::DeflateDecoder::new(data)
                .take(raw_len + 1)
                .read_to_end(&mut out)
                .map_err(|e| HuffmanError::corrupt(at, format!("graph: bad deflate data: {e}")))?;
            if out.len() as u64 != raw_len {
                return Err(HuffmanError::corrupt(
                    at,
                    format!("graph: declares {raw_len} bytes, inflates to {}", out.len()),
                ));
            }
            out
        }
        e => return Err(HuffmanError::corrupt(enc_at, format!("graph: unknown encoding {e}"))),
    };
    *budget -= raw_len;
    ModelProto::decode(skeleton.as_slice())
        .map_err(|e| HuffmanError::corrupt(at, format!("graph: not an ONNX ModelProto: {e}")))
}

fn read_tensor(
    c: &mut Cursor<'_>,
    proto: &mut ModelProto,
    filled: &mut [bool],
    budget: &mut u64,
    limit: u64,
) -> Result<(), HuffmanError> {
    let at = c.offset();
    let n_init = filled.len() as u64;
    if n_init == 0 {
        return Err(c.err("a tensor section, but the graph has no initializers"));
    }
    let index = c.varint_max("tensor: initializer index", n_init - 1)? as usize;
    let Some(t) = proto.graph.as_mut().and_then(|g| g.initializer.get_mut(index)) else {
        return Err(HuffmanError::corrupt(at, format!("tensor: no initializer {index}")));
    };
    let name = t.name.clone();
    let what = format!("tensor #{index} `{name}`");
    let bad = |m: String| HuffmanError::corrupt(at, format!("{what}: {m}"));
    if filled[index] {
        return Err(bad("stored twice".into()));
    }
    filled[index] = true;
    if t.data_type != DataType::Float as i32
        || !t.raw_data.is_empty()
        || !t.float_data.is_empty()
        || t.data_location == DataLocation::External as i32
        || t.segment.is_some()
    {
        return Err(bad("the graph's initializer is not an empty inline float tensor".into()));
    }
    let n = numel(&t.dims).ok_or_else(|| bad(format!("bad dims {:?}", t.dims)))?;
    let bytes = n
        .checked_mul(4)
        .filter(|&b| b <= *budget)
        .ok_or_else(|| HuffmanError::TooLarge { limit, what: format!("{what} declares dims {:?}", t.dims) })?;
    let enc_at = c.offset();
    let enc = c.u8(&format!("{what}: encoding"))?;
    let order = c.u8(&format!("{what}: scan order"))?;
    let view = match order {
        ORDER_ROW => None,
        ORDER_COL => {
            Some(col_view(&t.dims, n).ok_or_else(|| bad("a transposed scan of a tensor without two axes".into()))?)
        }
        o => return Err(HuffmanError::corrupt(enc_at, format!("{what}: unknown scan order {o}"))),
    };
    let values: Vec<u32> = match enc {
        ENC_SPARSE_IDS => {
            let cb = read_codebook(c, &what)?;
            let (bits, gaps, positions) = read_indices(c, n, &what)?;
            let ids = get_stream(c, gaps.len() as u64, cb.len() + 1, &format!("{what}: ids"))?;
            let mut v = vec![0u32; n as usize];
            for (p, id) in positions.into_iter().zip(ids) {
                if let Some(&x) = cb.get(id as usize) {
                    v[unscan(p, view) as usize] = x;
                }
            }
            let _ = bits;
            v
        }
        ENC_DENSE_IDS => {
            if view.is_some() {
                return Err(bad("dense ids are stored row-major only".into()));
            }
            let cb = read_codebook(c, &what)?;
            let ids = get_stream(c, n, cb.len() + 1, &format!("{what}: ids"))?;
            ids.into_iter().map(|id| cb.get(id as usize).copied().unwrap_or(0)).collect()
        }
        ENC_SPARSE_RAW => {
            let (_, gaps, positions) = read_indices(c, n, &what)?;
            let raw = c.bytes(gaps.len() as u64 * 4, &format!("{what}: values"))?;
            let mut v = vec![0u32; n as usize];
            for (p, x) in positions.into_iter().zip(raw.chunks_exact(4)) {
                v[unscan(p, view) as usize] = u32::from_le_bytes([x[0], x[1], x[2], x[3]]);
            }
            v
        }
        e => return Err(HuffmanError::corrupt(enc_at, format!("{what}: unknown encoding {e}"))),
    };
    *budget -= bytes;
    t.raw_data = values.iter().flat_map(|x| x.to_le_bytes()).collect();
    Ok(())
}

fn read_codebook(c: &mut Cursor<'_>, what: &str) -> Result<Vec<u32>, HuffmanError> {
    let k = c.varint_max(&format!("{what}: codebook size"), 1 << MAX_CODEBOOK_BITS)?;
    let ty_at = c.offset();
    match c.u8(&format!("{what}: codebook type"))? {
        CB_F32 => {
            let b = c.bytes(k * 4, &format!("{what}: codebook"))?;
            Ok(b.chunks_exact(4).map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]])).collect())
        }
        CB_F16 => {
            let b = c.bytes(k * 2, &format!("{what}: codebook"))?;
            Ok(b.chunks_exact(2).map(|x| f16_to_f32_bits(u16::from_le_bytes([x[0], x[1]]))).collect())
        }
        t => Err(HuffmanError::corrupt(ty_at, format!("{what}: unknown codebook type {t}"))),
    }
}

/// Reads index width, entry count and the gap stream; returns the positions.
fn read_indices(c: &mut Cursor<'_>, n: u64, what: &str) -> Result<(u8, Vec<u16>, Vec<u64>), HuffmanError> {
    let at = c.offset();
    let bits = c.u8(&format!("{what}: index bits"))?;
    if !(1..=MAX_INDEX_BITS).contains(&bits) {
        return Err(HuffmanError::corrupt(at, format!("{what}: index bits {bits} outside 1..={MAX_INDEX_BITS}")));
    }
    let entries = c.varint_max(&format!("{what}: entry count"), c.remaining() as u64 * 8)?;
    let most = sparse::max_len(entries, bits);
    if n > most {
        return Err(HuffmanError::corrupt(
            at,
            format!("{what}: {n} elements declared, {entries} entries of {bits}-bit gaps cover at most {most}"),
        ));
    }
    let gaps = get_stream(c, entries, 1 << bits, &format!("{what}: indices"))?;
    let positions = sparse::positions(&gaps, n, bits).map_err(|e| HuffmanError::corrupt(at, format!("{what}: {e}")))?;
    Ok((bits, gaps, positions))
}

/// The f16 bits of an f32 (given as bits) that f16 represents exactly; NaN never.
pub fn f16_exact(bits: u32) -> Option<u16> {
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xFF) as i32;
    let man = bits & 0x7F_FFFF;
    let h = if exp == 0xFF {
        if man != 0 {
            return None;
        }
        sign | 0x7C00
    } else if exp == 0 && man == 0 {
        sign
    } else if exp == 0 {
        return None; // f32 subnormals are far below f16's range
    } else {
        let e = exp - 127;
        if (-14..=15).contains(&e) {
            if man & 0x1FFF != 0 {
                return None;
            }
            sign | (((e + 15) as u16) << 10) | (man >> 13) as u16
        } else if (-24..-14).contains(&e) {
            let full = man | 0x80_0000;
            let shift = (-1 - e) as u32; // 14..=23
            if full & ((1 << shift) - 1) != 0 {
                return None;
            }
            sign | (full >> shift) as u16
        } else {
            return None;
        }
    };
    (f16_to_f32_bits(h) == bits).then_some(h)
}

/// The f32 bits of an f16.
pub fn f16_to_f32_bits(h: u16) -> u32 {
    let sign = ((h & 0x8000) as u32) << 16;
    let exp = ((h >> 10) & 0x1F) as u32;
    let man = (h & 0x3FF) as u32;
    match (exp, man) {
        (0, 0) => sign,
        (0, m) => {
            // subnormal: m * 2^-24
            let v = m as f32 * f32::from_bits(0x3380_0000); // 2^-24
            sign | v.to_bits()
        }
        (0x1F, 0) => sign | 0x7F80_0000,
        (0x1F, m) => sign | 0x7F80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    }
}
