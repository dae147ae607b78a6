//! Unit tests: loaders on hand-written IDX / npy / npz bytes, every error
//! message, preprocessing, batching, the PRNG and splits, builtin datasets
//! (with the real shipped MNIST).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::*;

// ---------------------------------------------------------------- helpers

/// IDX bytes: header (big-endian dims) followed by `data` as is.
fn idx(code: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, code, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// `.npy` version 1.0 bytes, laid out as numpy writes them: the header dict
/// padded with spaces and a newline so that the data starts at a multiple of 64.
fn npy_with(descr: &str, fortran: bool, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let fortran = if fortran { "True" } else { "False" };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape_text}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(header.len() as u16).to_le_bytes());
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    npy_with(descr, false, shape, data)
}

fn le_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn le_i64(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// An `.npz` archive as `numpy.savez` (stored) or `savez_compressed` (deflated) writes it.
fn npz(members: &[(&str, Vec<u8>)], deflate: bool) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let method = if deflate { zip::CompressionMethod::Deflated } else { zip::CompressionMethod::Stored };
    let opts = SimpleFileOptions::default().compression_method(method);
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes) in members {
        w.start_file(format!("{name}.npy"), opts).unwrap();
        w.write_all(bytes).unwrap();
    }
    w.finish().unwrap().into_inner()
}

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Dir {
        Dir(tempfile::tempdir().unwrap())
    }
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, bytes).unwrap();
        p
    }
    fn path(&self) -> &Path {
        self.0.path()
    }
}

/// Asserts that `r` failed and that its message contains every piece.
#[track_caller]
fn check_err<T: std::fmt::Debug>(r: Result<T, DataError>, pieces: &[&str]) -> DataError {
    let e = r.expect_err("expected an error");
    let msg = e.to_string();
    for p in pieces {
        assert!(msg.contains(p), "message {msg:?} lacks {p:?}");
    }
    assert_eq!(msg, msg.trim_end_matches('.'), "trailing period: {msg}");
    e
}

/// Two 2x3 grey images and their labels, as IDX files.
fn tiny_idx(dir: &Dir) -> (PathBuf, PathBuf) {
    let pixels: Vec<u8> = vec![0, 51, 102, 153, 204, 255, 255, 0, 255, 0, 255, 0];
    let images = dir.write("images.idx", &idx(0x08, &[2, 2, 3], &pixels));
    let labels = dir.write("labels.idx", &idx(0x08, &[2], &[3, 1]));
    (images, labels)
}

// ---------------------------------------------------------------- IDX

#[test]
fn idx_raw_and_gzip_read_the_same() {
    let dir = Dir::new();
    let bytes = idx(0x08, &[2, 2, 3], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    let raw = read_idx(&dir.write("a-ubyte", &bytes)).unwrap();
    let gz = read_idx(&dir.write("a-ubyte.gz", &gzip(&bytes))).unwrap();
    // gzip is told by magic bytes, not by name
    let disguised = read_idx(&dir.write("b-ubyte", &gzip(&bytes))).unwrap();
    assert_eq!(raw.shape, vec![2, 2, 3]);
    assert_eq!(raw.values, Values::U8((1..=12).collect()));
    assert_eq!(raw.values, gz.values);
    assert_eq!(raw.values, disguised.values);
}

#[test]
fn idx_wider_types_are_big_endian() {
    let dir = Dir::new();
    let i32s: Vec<u8> = [-1i32, 70000].iter().flat_map(|v| v.to_be_bytes()).collect();
    let a = read_idx(&dir.write("i", &idx(0x0C, &[2], &i32s))).unwrap();
    assert_eq!(a.values, Values::I64(vec![-1, 70000]));
    let i16s: Vec<u8> = [-2i16, 300].iter().flat_map(|v| v.to_be_bytes()).collect();
    let a = read_idx(&dir.write("s", &idx(0x0B, &[2], &i16s))).unwrap();
    assert_eq!(a.values, Values::I64(vec![-2, 300]));
    let a = read_idx(&dir.write("b", &idx(0x09, &[1], &[0xff]))).unwrap();
    assert_eq!(a.values, Values::I64(vec![-1]));
    let f32s: Vec<u8> = [0.5f32, -2.0].iter().flat_map(|v| v.to_be_bytes()).collect();
    let a = read_idx(&dir.write("f", &idx(0x0D, &[1, 2], &f32s))).unwrap();
    assert_eq!(a.values, Values::F32(vec![0.5, -2.0]));
    let f64s: Vec<u8> = [0.25f64].iter().flat_map(|v| v.to_be_bytes()).collect();
    let a = read_idx(&dir.write("d", &idx(0x0E, &[1], &f64s))).unwrap();
    assert_eq!(a.values, Values::F32(vec![0.25]));
}

#[test]
fn error_missing_file_names_the_path() {
    let dir = Dir::new();
    let p = dir.path().join("nope-ubyte.gz");
    let shown = p.display().to_string();
    let e = check_err(read_idx(&p), &[&shown, "no such file"]);
    assert!(matches!(e, DataError::MissingFile { path } if path == p));
    check_err(read_npy(&dir.path().join("x.npy")), &["x.npy", "no such file"]);
    check_err(read_npz_array(&dir.path().join("x.npz"), "x"), &["x.npz", "no such file"]);
    let p2 = dir.path().join("labels");
    check_err(load_pair(&p, &p2, None, &Preprocess::default()), &["nope-ubyte.gz", "no such file"]);
}

#[test]
fn error_bad_magic() {
    let dir = Dir::new();
    let p = dir.write("png", b"\x89PNG\r\n\x1a\n0000");
    check_err(read_idx(&p), &["png", "not an IDX file", "magic bytes 89 50 4e 47"]);
    let p = dir.write("code", &idx(0x07, &[1], &[0]));
    check_err(read_idx(&p), &["not an IDX file", "unknown element type code 0x07"]);
    let p = dir.write("rank0", &[0, 0, 8, 0]);
    check_err(read_idx(&p), &["not an IDX file", "rank 0"]);
    // the same checks apply inside gzip
    let p = dir.write("png.gz", &gzip(b"\x89PNG\r\n\x1a\n0000"));
    check_err(read_idx(&p), &["not an IDX file"]);
}

#[test]
fn error_truncated_idx() {
    let dir = Dir::new();
    check_err(read_idx(&dir.write("empty", b"")), &["truncated header: expected 4 bytes, found 0"]);
    check_err(
        read_idx(&dir.write("dims", &[0, 0, 8, 3, 0, 0, 0, 2, 0])),
        &["truncated header: expected 12 bytes, found 5"],
    );
    let full = idx(0x08, &[2, 2, 3], &[7; 12]);
    let cut = &full[..full.len() - 5];
    let p = dir.write("data", cut);
    check_err(read_idx(&p), &["data", "truncated data: expected 12 bytes, found 7"]);
    // a gzip stream cut in the middle
    let noise: Vec<u8> = (0..10_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let gz = gzip(&idx(0x08, &[100, 10, 10], &noise));
    let p = dir.write("cut.gz", &gz[..gz.len() / 2]);
    check_err(read_idx(&p), &["cut.gz", "truncated data: expected 10000 bytes"]);
    // a header that claims more than any machine holds costs nothing
    let p = dir.write("huge", &idx(0x08, &[u32::MAX, u32::MAX, u32::MAX], &[1, 2]));
    check_err(read_idx(&p), &["huge", "more elements than this machine can address"]);
}

#[test]
fn error_trailing_idx_data() {
    let dir = Dir::new();
    let p = dir.write("long", &idx(0x08, &[2], &[1, 2, 3]));
    check_err(read_idx(&p), &["long", "more data than the header's [2] of 2 bytes declares"]);
}

#[test]
fn error_wrong_shape() {
    let dir = Dir::new();
    let (images, _) = tiny_idx(&dir);
    let labels2d = dir.write("labels2d", &idx(0x08, &[2, 2], &[0, 1, 1, 0]));
    check_err(
        load_pair(&images, &labels2d, None, &Preprocess::default()),
        &["labels2d", "wrong shape [2, 2]", "labels must be a vector"],
    );
    let flat = dir.write("flat", &idx(0x08, &[6], &[0; 6]));
    check_err(load_pair(&flat, &labels2d, None, &Preprocess::default()), &["flat", "wrong shape [6]", "sample axis"]);
    // npy images must be rank >= 2 too
    let v = dir.write("v.npy", &npy("|u1", &[3], &[1, 2, 3]));
    let l = dir.write("l.npy", &npy("|u1", &[3], &[1, 2, 3]));
    check_err(load_pair(&v, &l, None, &Preprocess::default()), &["v.npy", "wrong shape [3]", "[N, ...]"]);
    let empty = dir.write("e.npy", &npy("|u1", &[3, 0], &[]));
    check_err(load_pair(&empty, &l, None, &Preprocess::default()), &["samples are empty"]);
}

#[test]
fn error_count_mismatch() {
    let dir = Dir::new();
    let (images, _) = tiny_idx(&dir);
    let three = dir.write("three", &idx(0x08, &[3], &[0, 1, 2]));
    check_err(
        load_pair(&images, &three, None, &Preprocess::default()),
        &["images.idx holds 2 samples but", "three holds 3 labels"],
    );
}

#[test]
fn error_label_out_of_range() {
    let dir = Dir::new();
    let (images, labels) = tiny_idx(&dir);
    check_err(
        load_pair(&images, &labels, Some(3), &Preprocess::default()),
        &["labels.idx", "label 3 at index 0 is out of range for 3 classes"],
    );
    let neg = dir.write("neg.npy", &npy("<i8", &[2], &le_i64(&[0, -1])));
    check_err(load_pair(&images, &neg, Some(10), &Preprocess::default()), &["neg.npy", "label -1 at index 1"]);
    let float = dir.write("float.npy", &npy("<f4", &[2], &le_f32(&[0.0, 1.0])));
    check_err(
        load_pair(&images, &float, None, &Preprocess::default()),
        &["float.npy", "f32", "labels must be integers"],
    );
}

// ---------------------------------------------------------------- datasets and batches

#[test]
fn idx_pair_batches_scaled_nchw() {
    let dir = Dir::new();
    let (images, labels) = tiny_idx(&dir);
    let data = load_pair(&images, &labels, None, &Preprocess::default()).unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data.num_classes(), 4, "largest label plus one");
    assert_eq!(data.sample_shape(), &[1, 2, 3]);
    assert_eq!(data.labels(), &[3, 1]);
    let b = data.batch(&[1, 0, 1]).unwrap();
    assert_eq!(b.shape, vec![3, 1, 2, 3]);
    assert_eq!(b.labels, vec![1, 3, 1]);
    assert_eq!(b.len(), 3);
    assert_eq!(&b.inputs[..6], &[1.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
    assert_eq!(&b.inputs[6..12], &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
    assert_eq!(&b.inputs[6..12], &[0.0, 51.0 / 255.0, 102.0 / 255.0, 0.6, 0.8, 1.0]);
    let empty = data.batch(&[]).unwrap();
    assert!(empty.is_empty());
    assert_eq!(empty.shape, vec![0, 1, 2, 3]);
}

#[test]
fn batch_into_reuses_buffers() {
    let dir = Dir::new();
    let (images, labels) = tiny_idx(&dir);
    let data = load_pair(&images, &labels, None, &Preprocess::default()).unwrap();
    let mut b = Batch::default();
    data.batch_into(&[0, 1], &mut b).unwrap();
    let ptr = b.inputs.as_ptr();
    data.batch_into(&[1, 0], &mut b).unwrap();
    assert_eq!(b.inputs.as_ptr(), ptr);
    assert_eq!(b.labels, vec![1, 3]);
}

#[test]
fn error_index_out_of_range() {
    let dir = Dir::new();
    let (images, labels) = tiny_idx(&dir);
    let data = load_pair(&images, &labels, None, &Preprocess::default()).unwrap();
    check_err(data.batch(&[0, 2]), &["sample index 2 is out of range for a dataset of 2 samples"]);
    let data: Arc<dyn Dataset> = Arc::new(data);
    check_err(Subset::new(data.clone(), vec![5]), &["sample index 5"]);
    let sub = Subset::new(data.clone(), vec![1]).unwrap();
    check_err(sub.batch(&[1]), &["sample index 1 is out of range for a dataset of 1 samples"]);
}

#[test]
fn subset_maps_indices() {
    let dir = Dir::new();
    let (images, labels) = tiny_idx(&dir);
    let data: Arc<dyn Dataset> = Arc::new(load_pair(&images, &labels, None, &Preprocess::default()).unwrap());
    let sub = Subset::new(data.clone(), vec![1, 1, 0]).unwrap();
    assert_eq!(sub.len(), 3);
    assert_eq!(sub.num_classes(), 4);
    assert_eq!(sub.sample_shape(), &[1, 2, 3]);
    assert_eq!(sub.batch(&[2, 0]).unwrap(), data.batch(&[0, 1]).unwrap());
}

#[test]
fn four_d_images_and_rank_two_features() {
    // [N, C, H, W] keeps its channels; [N, F] is a feature vector per sample
    let images = RawArray { origin: "mem".into(), shape: vec![1, 3, 1, 2], values: Values::U8(vec![0; 6]) };
    let labels = RawArray { origin: "mem-labels".into(), shape: vec![1, 1], values: Values::I64(vec![2]) };
    let d = InMemoryDataset::new(images, labels.clone(), Some(3), &Preprocess::default()).unwrap();
    assert_eq!(d.sample_shape(), &[3, 1, 2]);
    let feats = RawArray { origin: "feats".into(), shape: vec![1, 5], values: Values::I64(vec![1, 2, 3, 4, 5]) };
    let pp = Preprocess { scale: false, ..Preprocess::default() };
    let d = InMemoryDataset::new(feats, labels, None, &pp).unwrap();
    assert_eq!(d.sample_shape(), &[5]);
    assert_eq!(d.num_classes(), 3);
    assert_eq!(d.batch(&[0]).unwrap().inputs, vec![1.0, 2.0, 3.0, 4.0, 5.0]);
}

// ---------------------------------------------------------------- preprocessing

#[test]
fn preprocess_per_channel_and_flat() {
    // one sample, 2 channels of 2x1
    let images = RawArray { origin: "mem".into(), shape: vec![1, 2, 2, 1], values: Values::U8(vec![0, 255, 51, 102]) };
    let labels = RawArray { origin: "labels".into(), shape: vec![1], values: Values::U8(vec![0]) };
    let pp = Preprocess { mean: vec![0.5, 0.25], std: vec![0.5, 0.25], layout: Layout::Flat, ..Preprocess::default() };
    let mut d = InMemoryDataset::new(images, labels, Some(1), &pp).unwrap();
    assert_eq!(d.sample_shape(), &[4]);
    assert_eq!(d.stored_shape(), &[2, 2, 1]);
    let b = d.batch(&[0]).unwrap();
    assert_eq!(b.shape, vec![1, 4]);
    let expect = [(0.0 - 0.5) / 0.5, (1.0 - 0.5) / 0.5, (51.0 / 255.0 - 0.25) / 0.25, (102.0 / 255.0 - 0.25) / 0.25];
    assert_eq!(b.inputs, expect);
    // A black pixel's value per channel, through a subset too: what augmentation pads with.
    assert_eq!(d.background(), vec![expect[0], -1.0]);
    assert_eq!(crate::SubsetRef::new(&d, vec![0]).unwrap().background(), d.background());
    d.set_preprocess(&Preprocess::default()).unwrap();
    assert_eq!(d.background(), vec![0.0, 0.0]);
    assert_eq!(d.sample_shape(), &[2, 2, 1]);
    assert_eq!(d.batch(&[0]).unwrap().inputs[1], 1.0);
    // one value applies to every channel
    d.set_preprocess(&Preprocess { mean: vec![1.0], ..Preprocess::default() }).unwrap();
    assert_eq!(d.batch(&[0]).unwrap().inputs[..2], [-1.0, 0.0]);
}

#[test]
fn error_bad_preprocess() {
    let dir = Dir::new();
    let (images, labels) = tiny_idx(&dir);
    let pp = Preprocess { mean: vec![0.1, 0.2], ..Preprocess::default() };
    check_err(load_pair(&images, &labels, None, &pp), &["preprocess.mean: 2 values for 1 channel(s)"]);
    let pp = Preprocess { std: vec![0.0], ..Preprocess::default() };
    check_err(load_pair(&images, &labels, None, &pp), &["preprocess.std: 0 is not a finite positive"]);
    let pp = Preprocess { mean: vec![f32::NAN], ..Preprocess::default() };
    check_err(load_pair(&images, &labels, None, &pp), &["preprocess.mean: NaN is not finite"]);
}

#[test]
fn preprocess_deserializes_strictly() {
    let pp: Preprocess = serde_json::from_str("{}").unwrap();
    assert_eq!(pp, Preprocess::default());
    assert!(pp.scale);
    let pp: Preprocess =
        serde_json::from_str(r#"{"scale": false, "mean": [0.1307], "std": [0.3081], "layout": "flat"}"#).unwrap();
    assert_eq!(pp, Preprocess { scale: false, mean: vec![0.1307], std: vec![0.3081], layout: Layout::Flat });
    let e = serde_json::from_str::<Preprocess>(r#"{"scal": true}"#).unwrap_err();
    assert!(e.to_string().contains("unknown field `scal`"), "{e}");
    let e = serde_json::from_str::<Preprocess>(r#"{"layout": "nhwc"}"#).unwrap_err();
    assert!(e.to_string().contains("unknown variant `nhwc`"), "{e}");
}

// ---------------------------------------------------------------- npy / npz

#[test]
fn npy_pair_loads() {
    let dir = Dir::new();
    let x = dir.write("x.npy", &npy("<f4", &[2, 3], &le_f32(&[0.0, 0.5, 1.0, 1.5, 2.0, 2.5])));
    let y = dir.write("y.npy", &npy("<i8", &[2], &le_i64(&[1, 0])));
    let pp = Preprocess { scale: false, ..Preprocess::default() };
    let d = load_pair(&x, &y, Some(2), &pp).unwrap();
    assert_eq!(d.sample_shape(), &[3]);
    let b = d.batch(&[1]).unwrap();
    assert_eq!(b.inputs, vec![1.5, 2.0, 2.5]);
    assert_eq!(b.labels, vec![0]);
}

#[test]
fn npy_element_types() {
    let dir = Dir::new();
    let cases: Vec<(&str, Vec<u8>, Values)> = vec![
        ("|u1", vec![7, 255], Values::U8(vec![7, 255])),
        ("|b1", vec![1, 0], Values::U8(vec![1, 0])),
        ("|i1", vec![0xff, 1], Values::I64(vec![-1, 1])),
        ("<i2", vec![0xfe, 0xff, 1, 0], Values::I64(vec![-2, 1])),
        (">i4", vec![0, 0, 1, 0, 0xff, 0xff, 0xff, 0xff], Values::I64(vec![256, -1])),
        ("<u2", vec![0xff, 0xff, 1, 0], Values::I64(vec![65535, 1])),
        ("<u4", vec![1, 0, 0, 0, 2, 0, 0, 0], Values::I64(vec![1, 2])),
        ("<u8", [3u64, 4].iter().flat_map(|v| v.to_le_bytes()).collect(), Values::I64(vec![3, 4])),
        ("<f8", [0.5f64, -1.0].iter().flat_map(|v| v.to_le_bytes()).collect(), Values::F32(vec![0.5, -1.0])),
        (">f4", [1.5f32, 2.0].iter().flat_map(|v| v.to_be_bytes()).collect(), Values::F32(vec![1.5, 2.0])),
    ];
    for (descr, data, want) in cases {
        let p = dir.write("a.npy", &npy(descr, &[2], &data));
        let a = read_npy(&p).unwrap_or_else(|e| panic!("{descr}: {e}"));
        assert_eq!(a.values, want, "{descr}");
        assert_eq!(a.shape, vec![2]);
    }
}

#[test]
fn error_bad_npy() {
    let dir = Dir::new();
    let p = dir.write("c.npy", &npy("<c8", &[1], &[0; 8]));
    check_err(read_npy(&p), &["c.npy", "element type <c8 is not supported"]);
    let p = dir.write("s.npy", &npy("<U3", &[1], &[0; 12]));
    check_err(read_npy(&p), &["s.npy", "not supported"]);
    let p = dir.write("f.npy", &npy_with("<f4", true, &[2, 2], &le_f32(&[0.0; 4])));
    check_err(read_npy(&p), &["f.npy", "fortran-order arrays are not supported"]);
    // fortran order is harmless when at most one axis is longer than 1
    let p = dir.write("f1.npy", &npy_with("<f4", true, &[1, 2], &le_f32(&[1.0, 2.0])));
    assert_eq!(read_npy(&p).unwrap().values, Values::F32(vec![1.0, 2.0]));
    let p = dir.write("m.npy", b"PK\x03\x04 not numpy");
    check_err(read_npy(&p), &["m.npy", "not a .npy array", "magic"]);
    let full = npy("<f4", &[4], &le_f32(&[1.0; 4]));
    let p = dir.write("h.npy", &full[..40]);
    check_err(read_npy(&p), &["h.npy", "truncated header"]);
    let p = dir.write("t.npy", &full[..full.len() - 3]);
    check_err(read_npy(&p), &["t.npy", "reading the data"]);
    let p = dir.write("huge.npy", &npy("|u1", &[1 << 40, 1 << 40, 1 << 40], &[1, 2]));
    check_err(read_npy(&p), &["huge.npy", "shape does not fit in memory"]);
}

#[test]
fn npz_stored_and_deflated() {
    let dir = Dir::new();
    let x = npy("|u1", &[2, 2, 2], &[0, 255, 0, 255, 255, 0, 255, 0]);
    let y = npy("<i8", &[2], &le_i64(&[4, 9]));
    for deflate in [false, true] {
        let p = dir.write("d.npz", &npz(&[("x", x.clone()), ("y", y.clone())], deflate));
        assert_eq!(npz_names(&p).unwrap(), vec!["x", "y"]);
        let d = load_npz(&p, "x", "y", Some(10), &Preprocess::default()).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d.sample_shape(), &[1, 2, 2]);
        assert_eq!(d.labels(), &[4, 9]);
        assert_eq!(d.batch(&[1]).unwrap().inputs, vec![1.0, 0.0, 1.0, 0.0]);
        assert!(d.origin().ends_with("d.npz:x"), "{}", d.origin());
    }
}

#[test]
fn error_bad_npz() {
    let dir = Dir::new();
    let p =
        dir.write("d.npz", &npz(&[("images", npy("|u1", &[1, 1], &[0])), ("labels", npy("|u1", &[1], &[0]))], false));
    check_err(read_npz_array(&p, "x"), &["d.npz", "no array `x` in the archive (it holds: images, labels)"]);
    let p = dir.write("bad.npz", b"not a zip at all");
    check_err(read_npz_array(&p, "x"), &["bad.npz", "not an .npz (zip) archive"]);
    let p = dir.write("junk.npz", &npz(&[("x", b"junk".to_vec())], true));
    check_err(read_npz_array(&p, "x"), &["junk.npz", "not a .npy array"]);
    // labels inside an npz are checked like any other
    let p = dir.write("n.npz", &npz(&[("x", npy("|u1", &[1, 1], &[0])), ("y", npy("|u1", &[2], &[0, 0]))], false));
    check_err(
        load_npz(&p, "x", "y", None, &Preprocess::default()),
        &["n.npz:x holds 1 samples but", "n.npz:y holds 2 labels"],
    );
}

// ---------------------------------------------------------------- shuffling and splits

#[test]
fn splitmix64_reference_values() {
    // Vigna's splitmix64.c seeded with 0
    let mut r = SplitMix64::new(0);
    assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
    assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    assert_eq!(r.next_u64(), 0x06c4_5d18_8009_454f);
}

#[test]
fn below_stays_in_range_and_covers_it() {
    let mut r = SplitMix64::new(7);
    let mut seen = [0usize; 5];
    for _ in 0..1000 {
        seen[r.below(5) as usize] += 1;
    }
    assert!(seen.iter().all(|&c| c > 150), "{seen:?}");
    assert_eq!(r.below(0), 0);
    assert_eq!(r.below(1), 0);
}

#[test]
fn permutations_are_deterministic() {
    let a = permutation(100, 42);
    assert_eq!(a, permutation(100, 42));
    assert_ne!(a, permutation(100, 43));
    let mut sorted = a.clone();
    sorted.sort();
    assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    assert_ne!(a, sorted);
    // pinned: a change here changes every split made so far
    assert_eq!(permutation(8, 1), vec![0, 3, 7, 1, 2, 6, 5, 4]);
    assert!(permutation(0, 1).is_empty());
    assert_ne!(derive_seed(1, 0), derive_seed(1, 1));
    assert_ne!(derive_seed(1, 0), derive_seed(2, 0));
    let mut v = vec!['a', 'b', 'c'];
    shuffle(&mut v, &mut SplitMix64::new(3));
    v.sort();
    assert_eq!(v, vec!['a', 'b', 'c']);
}

#[test]
fn train_val_splits() {
    let s = train_val_split(10, Holdout::Fraction(0.3), 5).unwrap();
    assert_eq!(s.validation.len(), 3);
    assert_eq!(s.train.len(), 7);
    let mut all: Vec<usize> = s.train.iter().chain(&s.validation).copied().collect();
    all.sort();
    assert_eq!(all, (0..10).collect::<Vec<_>>());
    assert!(s.train.is_sorted() && s.validation.is_sorted());
    assert_eq!(s, train_val_split(10, Holdout::Fraction(0.3), 5).unwrap());
    assert_ne!(s, train_val_split(10, Holdout::Fraction(0.3), 6).unwrap());
    let c = train_val_split(10, Holdout::Count(4), 5).unwrap();
    assert_eq!(c.validation.len(), 4);
    // the same seed holds out a superset when asked for more
    assert!(s.validation.iter().all(|i| c.validation.contains(i)));
    assert_eq!(train_val_split(10, Holdout::Count(10), 5).unwrap().train, Vec::<usize>::new());
    assert_eq!(train_val_split(10, Holdout::Fraction(0.0), 5).unwrap().validation, Vec::<usize>::new());
}

#[test]
fn error_bad_split() {
    check_err(train_val_split(10, Holdout::Count(11), 0), &["split: validation count 11 is more than the 10 samples"]);
    check_err(train_val_split(10, Holdout::Fraction(1.5), 0), &["split: validation fraction 1.5 is not in [0, 1]"]);
    check_err(train_val_split(10, Holdout::Fraction(f64::NAN), 0), &["NaN"]);
}

#[test]
fn holdout_deserializes_count_or_fraction() {
    assert_eq!(serde_json::from_str::<Holdout>("5000").unwrap(), Holdout::Count(5000));
    assert_eq!(serde_json::from_str::<Holdout>("0.1").unwrap(), Holdout::Fraction(0.1));
    assert_eq!(serde_json::from_str::<Split>(r#""test""#).unwrap(), Split::Test);
}

// ---------------------------------------------------------------- builtin datasets

#[test]
fn error_unknown_builtin() {
    check_err(
        load_builtin_from(&DataDirs::default(), "cifar", Split::Train, &Preprocess::default()),
        &["unknown dataset `cifar` (builtin: mnist, fashion-mnist)"],
    );
}

#[test]
fn error_missing_fashion_mnist_says_how_to_fetch_it() {
    let dir = Dir::new();
    let dirs = DataDirs { data_dir: None, cache_dir: Some(dir.path().into()) };
    let e = check_err(
        load_builtin_from(&dirs, "fashion-mnist", Split::Test, &Preprocess::default()),
        &["dataset `fashion-mnist`", "t10k-images-idx3-ubyte.gz is missing", "run `cargo xtask data fashion-mnist`"],
    );
    assert!(
        matches!(e, DataError::MissingDataset { path, .. } if path.starts_with(dir.path().join("data/fashion-mnist")))
    );
    check_err(
        load_builtin_from(&DataDirs::default(), "fashion-mnist", Split::Test, &Preprocess::default()),
        &["cannot locate the cache folder"],
    );
}

#[test]
fn builtin_checks_the_shape_and_takes_raw_files() {
    // a fake data folder with 4x4 "MNIST" images
    let dir = Dir::new();
    dir.write("mnist/train-images-idx3-ubyte.gz", &gzip(&idx(0x08, &[1, 4, 4], &[0; 16])));
    dir.write("mnist/train-labels-idx1-ubyte", &idx(0x08, &[1], &[0]));
    let dirs = DataDirs { data_dir: Some(dir.path().into()), cache_dir: None };
    check_err(
        load_builtin_from(&dirs, "mnist", Split::Train, &Preprocess::default()),
        &["train-images-idx3-ubyte.gz", "wrong shape [1, 4, 4]", "mnist images are [N, 28, 28]"],
    );
    dir.write("mnist/train-images-idx3-ubyte.gz", &gzip(&idx(0x08, &[1, 28, 28], &[0; 784])));
    let d = load_builtin_from(&dirs, "mnist", Split::Train, &Preprocess::default()).unwrap();
    assert_eq!(d.len(), 1);
    check_err(
        load_builtin_from(&dirs, "mnist", Split::Test, &Preprocess::default()),
        &["dataset `mnist`", "t10k-images-idx3-ubyte.gz is missing", "cargo xtask data mnist"],
    );
}

#[test]
fn find_data_dir_walks_up() {
    let dir = Dir::new();
    std::fs::create_dir_all(dir.path().join("fixtures/data/mnist")).unwrap();
    std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
    assert_eq!(find_data_dir(&dir.path().join("a/b")), Some(dir.path().join("fixtures/data")));
    let other = Dir::new();
    assert_eq!(find_data_dir(other.path()), None);
}

/// The MNIST shipped under fixtures/data/mnist, found from the crate folder upwards.
#[test]
fn shipped_mnist_loads() {
    let start = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dirs = DataDirs { data_dir: find_data_dir(start), cache_dir: None };
    assert!(dirs.data_dir.is_some(), "no fixtures/data above {}", start.display());
    let test = load_builtin_from(&dirs, "mnist", Split::Test, &Preprocess::default()).unwrap();
    assert_eq!(test.len(), 10_000);
    assert_eq!(test.num_classes(), 10);
    assert_eq!(test.sample_shape(), &[1, 28, 28]);
    assert_eq!(test.labels()[0], 7);
    let train = load_builtin_from(&dirs, "mnist", Split::Train, &Preprocess::default()).unwrap();
    assert_eq!(train.len(), 60_000);
    assert_eq!(train.labels()[0], 5);
    assert!(train.labels().iter().all(|&l| l < 10));
    let mut counts = [0usize; 10];
    for &l in test.labels() {
        counts[l as usize] += 1;
    }
    assert_eq!(counts, [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]);
    let b = test.batch(&[0, 1]).unwrap();
    assert_eq!(b.shape, vec![2, 1, 28, 28]);
    assert!(b.inputs.iter().all(|v| (0.0..=1.0).contains(v)));
    assert!(b.inputs.contains(&1.0));
}

/// Fashion-MNIST, when `cargo xtask data fashion-mnist` has put it in the cache.
#[test]
fn cached_fashion_mnist_loads_if_fetched() {
    let dirs = DataDirs::from_env();
    let Ok(cache) = dirs.cache_dir() else {
        return;
    };
    if !cache.join("data/fashion-mnist").is_dir() {
        eprintln!("fashion-mnist not fetched; skipped (cargo xtask data fashion-mnist)");
        return;
    }
    let test = load_builtin_from(&dirs, "fashion-mnist", Split::Test, &Preprocess::default()).unwrap();
    assert_eq!(test.len(), 10_000);
    assert_eq!(test.sample_shape(), &[1, 28, 28]);
    // Zalando's README: the first test item is an ankle boot (class 9)
    assert_eq!(test.labels()[0], 9);
    let train = load_builtin_from(&dirs, "fashion-mnist", Split::Train, &Preprocess::default()).unwrap();
    assert_eq!(train.len(), 60_000);
    let mut counts = [0usize; 10];
    for &l in train.labels() {
        counts[l as usize] += 1;
    }
    assert_eq!(counts, [6000; 10]);
}
