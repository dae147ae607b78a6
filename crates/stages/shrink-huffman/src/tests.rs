//! Unit tests: the Huffman coder and relative indices (property tests), the
//! container's round trip on small models, and hostile input (every
//! truncation, flipped bytes, bad code lengths, huge declared sizes).

use proptest::prelude::*;
use shrink_graph::onnx::{GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, ValueInfoProto};

use crate::bits::{BitReader, BitWriter, put_varint};
use crate::format::{self, MAX_INDEX_BITS, PackOptions, UnpackOptions, f16_exact, f16_to_f32_bits};
use crate::huffman::{self, Decoder, MAX_CODE_LEN};
use crate::{Encoding, HuffmanError, sparse};

fn roundtrip_symbols(symbols: &[u16], alphabet: usize) -> Vec<u16> {
    let mut freqs = vec![0u64; alphabet];
    for &s in symbols {
        freqs[s as usize] += 1;
    }
    let lens = huffman::code_lengths(&freqs, MAX_CODE_LEN).unwrap();
    assert!(lens.iter().all(|&l| l <= MAX_CODE_LEN));
    let mut w = BitWriter::new();
    huffman::encode(symbols, &lens, &mut w);
    assert_eq!(w.bit_len(), huffman::encoded_bits(&freqs, &lens));
    let bytes = w.finish();
    let dec = Decoder::new(&lens).unwrap();
    let mut r = BitReader::new(&bytes);
    let out: Vec<u16> = (0..symbols.len()).map(|_| dec.decode(&mut r).unwrap()).collect();
    assert!(r.ends_cleanly());
    out
}

proptest! {
    #[test]
    fn huffman_round_trips(alphabet in 1usize..300, raw in prop::collection::vec(any::<u16>(), 0..2000), skew in 0u32..12) {
        // skewed streams (small symbols far more frequent) give long codes
        let symbols: Vec<u16> = raw.iter().map(|&x| ((x as u32 >> (x as u32 % (skew + 1))) as usize % alphabet) as u16).collect();
        prop_assert_eq!(roundtrip_symbols(&symbols, alphabet), symbols);
    }

    #[test]
    fn relative_indices_recover_positions(
        len in 1u64..5000,
        picks in prop::collection::vec(any::<u32>(), 0..200),
        bits in 1u8..=MAX_INDEX_BITS,
    ) {
        let mut pos: Vec<u32> = picks.iter().map(|&p| (p as u64 % len) as u32).collect();
        pos.sort_unstable();
        pos.dedup();
        let entries = sparse::encode(&pos, len, bits);
        prop_assert!(entries.iter().all(|e| (e.gap as u64) < 1 << bits));
        prop_assert!(len <= sparse::max_len(entries.len() as u64, bits));
        let gaps: Vec<u16> = entries.iter().map(|e| e.gap).collect();
        let at = sparse::positions(&gaps, len, bits).unwrap();
        let real: Vec<u32> = entries.iter().zip(&at).filter(|(e, _)| e.nonzero.is_some()).map(|(_, &p)| p as u32).collect();
        prop_assert_eq!(&real, &pos);
        for (k, e) in entries.iter().enumerate() {
            if let Some(r) = e.nonzero { prop_assert_eq!(at[k] as u32, pos[r as usize]); }
        }
    }

    #[test]
    fn packed_tensors_round_trip(
        dims in prop::collection::vec(1i64..9, 1..4),
        density in 0u32..4,
        levels in 1u32..400,
        seed in any::<u64>(),
    ) {
        let n: i64 = dims.iter().product();
        let mut x = seed | 1;
        let mut next = || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x };
        let values: Vec<f32> = (0..n).map(|_| {
            let r = next();
            if r % 4 >= density as u64 { 0.0 } else { ((r >> 8) % levels as u64) as f32 * 0.37 - 3.0 }
        }).collect();
        let m = model(vec![tensor("w", &dims, &values), tensor("b", &[3], &[1.0, -0.0, f32::NAN])]);
        let bytes = prost::Message::encode_to_vec(&m);
        let packed = format::pack_proto(m, &PackOptions::default()).unwrap();
        let back = format::unpack_proto(&packed.bytes, &UnpackOptions::default()).unwrap();
        prop_assert_eq!(prost::Message::encode_to_vec(&back), bytes);
    }
}

#[test]
fn huffman_edge_alphabets() {
    // 0 symbols, 1 symbol, a single used symbol in a large alphabet
    assert_eq!(roundtrip_symbols(&[], 1), Vec::<u16>::new());
    assert_eq!(roundtrip_symbols(&[0, 0, 0], 1), vec![0, 0, 0]);
    assert_eq!(roundtrip_symbols(&[7; 5], 9), vec![7; 5]);
    assert_eq!(huffman::code_lengths(&[0, 0], MAX_CODE_LEN), Some(vec![0, 0]));
    // Fibonacci counts would give a 40-deep tree: the limit holds
    let mut fib = vec![1u64, 1];
    while fib.len() < 40 {
        let n = fib[fib.len() - 1] + fib[fib.len() - 2];
        fib.push(n);
    }
    let lens = huffman::code_lengths(&fib, MAX_CODE_LEN).unwrap();
    assert!(lens.iter().all(|&l| (1..=MAX_CODE_LEN).contains(&l)), "{lens:?}");
    let kraft: f64 = lens.iter().map(|&l| 0.5f64.powi(l as i32)).sum();
    assert!(kraft <= 1.0);
    // more symbols than 2^limit codes
    assert_eq!(huffman::code_lengths(&[1; 5], 2), None);
}

#[test]
fn decoder_rejects_bad_code_lengths() {
    let e = Decoder::new(&[1, 1, 1]).unwrap_err();
    assert!(e.contains("over-subscribed"), "{e}");
    let e = Decoder::new(&[16, 1]).unwrap_err();
    assert!(e.contains("limit"), "{e}");
    // incomplete: decoding an unassigned code is an error, not a panic
    let dec = Decoder::new(&[2, 0, 0]).unwrap();
    let bytes = [0xFF];
    assert!(dec.decode(&mut BitReader::new(&bytes)).is_err());
    let empty = Decoder::new(&[0, 0]).unwrap();
    assert!(empty.decode(&mut BitReader::new(&bytes)).is_err());
}

#[test]
fn f16_codebooks_only_when_exact() {
    for v in [0.0f32, -0.0, 1.0, -2.5, 65504.0, 6.1035156e-5, 5.9604645e-8, f32::INFINITY] {
        let h = f16_exact(v.to_bits()).unwrap_or_else(|| panic!("{v} is an f16"));
        assert_eq!(f16_to_f32_bits(h), v.to_bits());
    }
    for v in [0.1f32, 65520.0, 1e-9, 1.0 + f32::EPSILON, f32::NAN] {
        assert_eq!(f16_exact(v.to_bits()), None, "{v}");
    }
}

fn tensor(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: 1,
        raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..TensorProto::default()
    }
}

fn model(initializer: Vec<TensorProto>) -> ModelProto {
    let input = ValueInfoProto { name: "x".into(), ..ValueInfoProto::default() };
    let node = NodeProto {
        op_type: "Identity".into(),
        input: vec!["x".into()],
        output: vec!["y".into()],
        ..NodeProto::default()
    };
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
        graph: Some(GraphProto {
            name: "g".into(),
            node: vec![node],
            input: vec![input],
            output: vec![ValueInfoProto { name: "y".into(), ..ValueInfoProto::default() }],
            initializer,
            ..GraphProto::default()
        }),
        ..ModelProto::default()
    }
}

/// A small sparse clustered layer (sparse ids) plus a dense layer.
fn small_packed() -> (Vec<u8>, Vec<u8>) {
    let w: Vec<f32> = (0..600).map(|i| if i % 7 == 0 { [0.5, -0.25, 1.5][i % 3] } else { 0.0 }).collect();
    let b: Vec<f32> = (0..20).map(|i| i as f32 * 0.1).collect();
    let m = model(vec![tensor("fc.weight", &[20, 30], &w), tensor("fc.bias", &[20], &b)]);
    let onnx = prost::Message::encode_to_vec(&m);
    let packed = format::pack_proto(m, &PackOptions::default()).unwrap();
    assert_eq!(packed.tensors[0].encoding, Encoding::SparseIds);
    assert!(packed.tensors[0].codebook_f16);
    (packed.bytes, onnx)
}

#[test]
fn small_model_round_trips() {
    let (bytes, onnx) = small_packed();
    assert_eq!(crate::unpack(&bytes).unwrap(), onnx);
    // each encoding decodes: dense ids (few zeros), sparse raw (many values)
    let dense: Vec<f32> = (0..256).map(|i| [0.0, 1.0, 2.0, 3.0][i % 4]).collect();
    let spread: Vec<f32> = (0..4000).map(|i| if i % 10 == 0 { i as f32 * 1.1 } else { 0.0 }).collect();
    let m = model(vec![tensor("d", &[16, 16], &dense), tensor("s", &[4000], &spread)]);
    let onnx = prost::Message::encode_to_vec(&m);
    let packed = format::pack_proto(m, &PackOptions::default()).unwrap();
    let kinds: Vec<Encoding> = packed.tensors.iter().map(|t| t.encoding).collect();
    assert_eq!(kinds, vec![Encoding::DenseIds, Encoding::SparseRaw]);
    assert_eq!(crate::unpack(&packed.bytes).unwrap(), onnx);
    // without the index search and with f32 codebooks
    let m = model(vec![tensor("d", &[16, 16], &dense)]);
    let opts = PackOptions { search_index_bits: false, codebook: crate::CodebookMode::F32, ..PackOptions::default() };
    let packed = format::pack_proto(m.clone(), &opts).unwrap();
    assert!(!packed.tensors[0].codebook_f16);
    assert_eq!(crate::unpack(&packed.bytes).unwrap(), prost::Message::encode_to_vec(&m));
}

#[test]
fn every_truncation_is_an_error() {
    let (bytes, _) = small_packed();
    for len in 0..bytes.len() {
        assert!(crate::unpack(&bytes[..len]).is_err(), "truncated to {len} bytes");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    let e = crate::unpack(&longer).unwrap_err().to_string();
    assert!(e.contains("after the last section"), "{e}");
}

#[test]
fn every_flipped_byte_is_an_error() {
    let (bytes, _) = small_packed();
    for i in 0..bytes.len() {
        for mask in [0x01u8, 0x80, 0xFF] {
            let mut b = bytes.clone();
            b[i] ^= mask;
            assert!(crate::unpack(&b).is_err(), "byte {i} ^ {mask:#x} went unnoticed");
        }
    }
}

/// Builds a file around one hand-made tensor payload, with valid checksums,
/// so the checks behind the checksum are reached.
fn forge(tensor_payload: &[u8], dims: &[i64]) -> Vec<u8> {
    let mut t = tensor("w", dims, &[]);
    t.raw_data.clear();
    let skeleton = prost::Message::encode_to_vec(&model(vec![t]));
    let mut graph = vec![0u8];
    put_varint(&mut graph, skeleton.len() as u64);
    graph.extend_from_slice(&skeleton);
    let mut out = b"SHRK\x01\x02".to_vec();
    for (kind, p) in [(1u8, &graph[..]), (2u8, tensor_payload)] {
        out.push(kind);
        put_varint(&mut out, p.len() as u64);
        out.extend_from_slice(p);
        let mut h = crc32fast::Hasher::new();
        h.update(&[kind]);
        h.update(p);
        out.extend_from_slice(&h.finalize().to_le_bytes());
    }
    out
}

fn forged_err(payload: &[u8], dims: &[i64]) -> String {
    match format::unpack_proto(&forge(payload, dims), &UnpackOptions::default()) {
        Ok(_) => panic!("a forged file unpacked: {payload:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn hostile_files_are_errors_naming_the_fault() {
    // a valid forged tensor first: 4 elements, sparse ids, 1 value, 2-bit gaps
    // index 0, enc 1, order 0, k=1, f32, 1.0, bits 2, 2 entries, fixed gaps [1, 1] → positions 1, 3
    let mut ok = vec![0, 1, 0, 1, 0];
    ok.extend_from_slice(&1.0f32.to_bits().to_le_bytes());
    ok.extend_from_slice(&[2, 2, 0, 1, 0b0101_0000, 0, 1, 0b0000_0000]);
    let m = format::unpack_proto(&forge(&ok, &[4]), &UnpackOptions::default()).unwrap();
    let raw = &m.graph.unwrap().initializer[0].raw_data;
    let want: Vec<u8> = [0.0f32, 1.0, 0.0, 1.0].iter().flat_map(|x| x.to_le_bytes()).collect();
    assert_eq!(raw, &want);

    // an index past the tensor's end (gaps [1, 2] → position 4 of 4)
    let mut past = ok.clone();
    let at = past.len() - 4;
    past[at] = 0b0110_0000;
    assert!(forged_err(&past, &[4]).contains("past the tensor's end"));
    // a huge declared tensor that the entries cannot cover
    let e = forged_err(&ok, &[1 << 40]);
    assert!(e.contains("exceed") || e.contains("cover at most"), "{e}");
    let e = forged_err(&ok, &[100]);
    assert!(e.contains("cover at most"), "{e}");
    // dims that overflow
    assert!(forged_err(&ok, &[1 << 40, 1 << 40]).contains("dims"));
    // counts that overflow: an entry count of 2^63
    let mut big = ok[..9].to_vec();
    big.push(2);
    big.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]);
    assert!(forged_err(&big, &[4]).contains("entry count"));
    // an over-subscribed Huffman table for the gaps: lengths [1, 1, 1, 0]
    let mut bad = ok[..9].to_vec();
    bad.extend_from_slice(&[2, 2, 1, 4, 0x11, 0x10, 1, 0]);
    assert!(forged_err(&bad, &[4]).contains("over-subscribed"));
    // a code length over the limit is not representable in a nibble; an unknown coding is refused
    let mut bad = ok[..9].to_vec();
    bad.extend_from_slice(&[2, 2, 7]);
    assert!(forged_err(&bad, &[4]).contains("unknown stream coding"));
    // a codebook larger than 256 values
    let e = forged_err(&[0, 1, 0, 0x81, 0x02, 0], &[4]);
    assert!(e.contains("codebook size"), "{e}");
    // set padding bits after the last symbol
    let mut pad = ok.clone();
    let at = pad.len() - 4;
    pad[at] = 0b0101_0001;
    assert!(forged_err(&pad, &[4]).contains("after its last symbol"));
    // not a .shrink file / another version / a deflated graph claiming a huge size
    assert!(matches!(crate::unpack(b"PK\x03\x04"), Err(HuffmanError::NotShrink(_))));
    assert!(matches!(crate::unpack(b"SHRK\x07\x00"), Err(HuffmanError::Version { found: 7, .. })));
    let mut g = vec![1u8];
    put_varint(&mut g, 1 << 40);
    g.extend_from_slice(&[0x03, 0x00]);
    let mut f = b"SHRK\x01\x01\x01".to_vec();
    put_varint(&mut f, g.len() as u64);
    f.extend_from_slice(&g);
    let mut h = crc32fast::Hasher::new();
    h.update(&[1]);
    h.update(&g);
    f.extend_from_slice(&h.finalize().to_le_bytes());
    let e = crate::unpack(&f).unwrap_err().to_string();
    assert!(e.contains("exceed") || e.contains("hold at most"), "{e}");
}

/// The models behind `test_data/*.shrink` (also the fuzz target's seeds).
fn golden_models() -> Vec<(&'static str, ModelProto)> {
    let w: Vec<f32> = (0..600).map(|i| if i % 7 == 0 { [0.5, -0.25, 1.5][i % 3] } else { 0.0 }).collect();
    let b: Vec<f32> = (0..20).map(|i| i as f32 * 0.1).collect();
    let small = model(vec![tensor("fc.weight", &[20, 30], &w), tensor("fc.bias", &[20], &b)]);
    let dense: Vec<f32> = (0..256).map(|i| [0.0, 1.0, 2.0, 3.0][i % 4]).collect();
    let spread: Vec<f32> = (0..4000).map(|i| if i % 10 == 0 { i as f32 * 1.1 } else { 0.0 }).collect();
    let mixed =
        model(vec![tensor("d", &[16, 16], &dense), tensor("s", &[4000], &spread), tensor("z", &[300], &[0.0; 300])]);
    // a conv kernel whose zeros follow whole input channels: a transposed scan wins
    let conv: Vec<f32> = (0..8 * 6 * 3 * 3)
        .map(|i| if (i / 9) % 6 < 2 { 0.0 } else { ((i * 7919) % 13) as f32 * 0.125 - 0.75 })
        .collect();
    let conv = model(vec![tensor("conv.weight", &[8, 6, 3, 3], &conv)]);
    vec![("small", small), ("mixed", mixed), ("conv", conv)]
}

/// `test_data/NAME.shrink` unpacks to `NAME.onnx`, and packing `NAME.onnx`
/// gives `NAME.shrink` (the format and the packer's choices are stable).
/// `UPDATE_EXPECT=1` rewrites the files.
#[test]
fn test_data_files_are_current() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data");
    for (name, m) in golden_models() {
        let onnx = prost::Message::encode_to_vec(&m);
        let packed = format::pack_proto(m, &PackOptions::default()).unwrap();
        let (onnx_path, shrink_path) = (dir.join(format!("{name}.onnx")), dir.join(format!("{name}.shrink")));
        if std::env::var_os("UPDATE_EXPECT").is_some() {
            std::fs::write(&onnx_path, &onnx).unwrap();
            std::fs::write(&shrink_path, &packed.bytes).unwrap();
        }
        let stored = std::fs::read(&shrink_path).unwrap();
        assert_eq!(std::fs::read(&onnx_path).unwrap(), onnx, "{name}.onnx is stale (UPDATE_EXPECT=1)");
        assert_eq!(crate::unpack(&stored).unwrap(), onnx, "{name}.shrink");
        assert_eq!(packed.bytes, stored, "{name}.shrink is stale (UPDATE_EXPECT=1)");
    }
}
