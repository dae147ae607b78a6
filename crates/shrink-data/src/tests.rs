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
    // The preprocessing reads back as given (what the early-exit manifest records), through a subset too.
    assert_eq!(d.preprocess(), Some(pp.clone()));
    assert_eq!(crate::SubsetRef::new(&d, vec![0]).unwrap().preprocess(), Some(pp.clone()));
    d.set_preprocess(&Preprocess::default()).unwrap();
    assert_eq!(d.preprocess(), Some(Preprocess { mean: vec![0.0, 0.0], std: vec![1.0, 1.0], ..Preprocess::default() }));
    assert_eq!(d.background(), vec![0.0, 0.0]);
    assert_eq!(d.sample_shape(), &[2, 2, 1]);
    assert_eq!(d.batch(&[0]).unwrap().inputs[1], 1.0);
    // one value applies to every channel
    d.set_preprocess(&Preprocess { mean: vec![1.0], scale: false, ..Preprocess::default() }).unwrap();
    assert_eq!(d.batch(&[0]).unwrap().inputs[..2], [-1.0, 254.0]);
    assert_eq!(d.preprocess().map(|p| (p.scale, p.mean)), Some((false, vec![1.0, 1.0])));
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
        &["unknown dataset `cifar` (builtin: mnist, fashion-mnist, cifar10)"],
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

/// IDX bytes of a synthetic CIFAR-10 split of `n` images, as `cargo xtask
/// data cifar10` writes them: image `i`'s pixel (channel c, row y, column x)
/// is `i + 10 * c + y + 3 * x` (mod 256), its label `(3 + 7 * i) % 10`.
fn cifar10_split(n: usize) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let mut pixels = Vec::with_capacity(n * 3 * 32 * 32);
    for i in 0..n {
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    pixels.push((i + 10 * c + y + 3 * x) as u8);
                }
            }
        }
    }
    let labels: Vec<u8> = (0..n).map(|i| ((3 + 7 * i) % 10) as u8).collect();
    (idx(0x08, &[n as u32, 3, 32, 32], &pixels), idx(0x08, &[n as u32], &labels), pixels)
}

#[test]
fn builtin_cifar10_reads_channels_first_idx_from_the_cache() {
    let dir = Dir::new();
    let (train_images, train_labels, train_pixels) = cifar10_split(3);
    let (test_images, test_labels, _) = cifar10_split(2);
    dir.write("data/cifar10/train-images-idx4-ubyte", &train_images);
    dir.write("data/cifar10/train-labels-idx1-ubyte", &train_labels);
    dir.write("data/cifar10/test-images-idx4-ubyte", &test_images);
    // a gzip file is read as well
    dir.write("data/cifar10/test-labels-idx1-ubyte.gz", &gzip(&test_labels));
    let dirs = DataDirs { data_dir: None, cache_dir: Some(dir.path().into()) };
    let raw = Preprocess { scale: false, ..Preprocess::default() };

    let train = load_builtin_from(&dirs, "cifar10", Split::Train, &raw).unwrap();
    assert_eq!(train.len(), 3);
    assert_eq!(train.num_classes(), 10);
    assert_eq!(train.sample_shape(), &[3, 32, 32]);
    assert_eq!(train.labels(), &[3, 0, 7]);
    let b = train.batch(&[2, 0]).unwrap();
    assert_eq!(b.shape, vec![2, 3, 32, 32]);
    assert_eq!(b.labels, vec![7, 3]);
    let want: Vec<f32> = train_pixels[2 * 3072..].iter().chain(&train_pixels[..3072]).map(|&v| f32::from(v)).collect();
    assert_eq!(b.inputs, want);
    // sample 2, channel 1 (green), row 4, column 5: 2 + 10 + 4 + 15
    assert_eq!(b.inputs[1024 + 4 * 32 + 5], 31.0);

    let test = load_builtin_from(&dirs, "cifar10", Split::Test, &Preprocess::default()).unwrap();
    assert_eq!(test.len(), 2);
    assert_eq!(test.labels(), &[3, 0]);
    let flat = Preprocess { layout: Layout::Flat, ..Preprocess::default() };
    assert_eq!(load_builtin_from(&dirs, "cifar10", Split::Test, &flat).unwrap().sample_shape(), &[3072]);

    // MNIST-shaped images under the cifar10 name are refused
    dir.write("data/cifar10/test-images-idx4-ubyte", &idx(0x08, &[1, 1, 28, 28], &[0; 784]));
    check_err(
        load_builtin_from(&dirs, "cifar10", Split::Test, &raw),
        &["test-images-idx4-ubyte", "wrong shape [1, 1, 28, 28]", "cifar10 images are [N, 3, 32, 32]"],
    );
}

#[test]
fn error_missing_cifar10_says_how_to_install_it() {
    let dir = Dir::new();
    let dirs = DataDirs { data_dir: None, cache_dir: Some(dir.path().into()) };
    for (split, file) in [(Split::Train, "train-images-idx4-ubyte"), (Split::Test, "test-images-idx4-ubyte")] {
        let e = check_err(
            load_builtin_from(&dirs, "cifar10", split, &Preprocess::default()),
            &["dataset `cifar10`", &format!("{file} is missing"), "run `cargo xtask data cifar10`"],
        );
        assert!(
            matches!(&e, DataError::MissingDataset { path, .. } if *path == dir.path().join("data/cifar10").join(file)),
            "{e:?}"
        );
    }
    // images without labels
    let (images, _, _) = cifar10_split(1);
    dir.write("data/cifar10/train-images-idx4-ubyte", &images);
    check_err(
        load_builtin_from(&dirs, "cifar10", Split::Train, &Preprocess::default()),
        &["train-labels-idx1-ubyte is missing", "cargo xtask data cifar10"],
    );
    check_err(
        load_builtin_from(&DataDirs::default(), "cifar10", Split::Test, &Preprocess::default()),
        &["cannot locate the cache folder"],
    );
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

/// CIFAR-10, when `cargo xtask data cifar10` has put it in the cache: the
/// known facts that xtask checks, read back through the loader.
#[test]
fn cached_cifar10_loads_if_fetched() {
    let dirs = DataDirs::from_env();
    let Ok(cache) = dirs.cache_dir() else {
        return;
    };
    if !cache.join("data/cifar10").is_dir() {
        eprintln!("cifar10 not fetched; skipped (cargo xtask data cifar10)");
        return;
    }
    let raw = Preprocess { scale: false, ..Preprocess::default() };
    let test = load_builtin_from(&dirs, "cifar10", Split::Test, &raw).unwrap();
    assert_eq!(test.len(), 10_000);
    assert_eq!(test.sample_shape(), &[3, 32, 32]);
    assert_eq!(&test.labels()[..10], &[3, 8, 8, 0, 6, 6, 1, 6, 3, 1]);
    let b = test.batch(&[0]).unwrap();
    // test image 0 starts with RGB (158, 112, 49), (159, 111, 47)
    assert_eq!([b.inputs[0], b.inputs[1024], b.inputs[2048]], [158.0, 112.0, 49.0]);
    assert_eq!([b.inputs[1], b.inputs[1025], b.inputs[2049]], [159.0, 111.0, 47.0]);
    let train = load_builtin_from(&dirs, "cifar10", Split::Train, &raw).unwrap();
    assert_eq!(train.len(), 50_000);
    let mut counts = [0usize; 10];
    for &l in train.labels() {
        counts[l as usize] += 1;
    }
    assert_eq!(counts, [5000; 10]);
}

// ---------------------------------------------------------------- image folders

/// A `w`x`h` RGB image whose pixel (x, y) is `[x, y, x + 10 * y]`.
fn gradient(w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, (x + 10 * y) as u8]))
}

fn save(dir: &Dir, name: &str, img: impl Into<image::DynamicImage>) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    img.into().save(&p).unwrap();
    p
}

fn folder(dir: &Dir, resize: Option<u32>, crop: Option<u32>) -> Result<InMemoryDataset, DataError> {
    load_image_folder(dir.path(), &FolderOptions { resize, crop }, &Preprocess::default())
}

/// The raw pixel (c, y, x) of sample `i`, read back through an unscaled batch.
fn pixel(d: &InMemoryDataset, i: usize, c: usize, y: usize, x: usize) -> f32 {
    let mut d = d.clone();
    d.set_preprocess(&Preprocess { scale: false, ..Preprocess::default() }).unwrap();
    let b = d.batch(&[i]).unwrap();
    let (h, w) = (b.shape[2], b.shape[3]);
    b.inputs[(c * h + y) * w + x]
}

#[test]
fn image_folder_labels_from_sorted_classes_and_files_in_name_order() {
    let dir = Dir::new();
    // "cat" is written first but "ant" sorts first: label 0
    save(&dir, "cat/z.jpg", image::RgbImage::from_pixel(4, 3, image::Rgb([200, 40, 40])));
    save(&dir, "ant/b.png", gradient(4, 3));
    save(&dir, "ant/a.PNG", image::RgbImage::from_pixel(4, 3, image::Rgb([1, 2, 3])));
    dir.write("ant/notes.txt", b"not an image"); // skipped, counted, warned about
    dir.write("README.md", b"loose files in the root are ignored");
    let d = folder(&dir, None, None).unwrap();
    assert_eq!(d.len(), 3);
    assert_eq!(d.num_classes(), 2);
    assert_eq!(d.labels(), &[0, 0, 1]);
    assert_eq!(d.sample_shape(), &[3, 3, 4]);
    assert_eq!(d.origin(), dir.path().display().to_string());
    // a.PNG before b.png; PNG pixels exactly
    assert_eq!([0, 1, 2].map(|c| pixel(&d, 0, c, 2, 3)), [1.0, 2.0, 3.0]);
    assert_eq!([0, 1, 2].map(|c| pixel(&d, 1, c, 2, 3)), [3.0, 2.0, 23.0]);
    // JPEG is lossy: a flat colour comes back close
    let jpeg = [0, 1, 2].map(|c| pixel(&d, 2, c, 1, 1));
    assert!(jpeg.iter().zip([200.0, 40.0, 40.0]).all(|(a, b)| (a - b).abs() <= 4.0), "{jpeg:?}");
    // the default preprocessing scales to [0, 1]; mean/std per channel apply
    let b = d.batch(&[1]).unwrap();
    assert_eq!(b.shape, vec![1, 3, 3, 4]);
    assert_eq!(b.inputs[2 * 4 + 3], 3.0 / 255.0);
    let mut d = d;
    d.set_preprocess(&Preprocess { mean: vec![0.5, 0.25, 0.0], std: vec![0.5, 0.25, 2.0], ..Preprocess::default() })
        .unwrap();
    assert_eq!(d.background(), vec![-1.0, -1.0, 0.0]);
    assert_eq!(d.batch(&[1]).unwrap().inputs[2 * 12 + 2 * 4 + 3], 23.0 / 255.0 / 2.0);
    // and augmentation takes its batches
    let mut b = d.batch(&[0, 1, 2]).unwrap();
    Augment { shift: 1, flip: true }.apply(&mut b, &d.background(), &mut SplitMix64::new(3)).unwrap();
    assert_eq!(b.shape, vec![3, 3, 3, 4]);
}

#[test]
fn image_folder_resize_and_centre_crop() {
    // torchvision's sizes and offsets
    assert_eq!(crate::folder::resized(8, 4, 4), (8, 4));
    assert_eq!(crate::folder::resized(3, 5, 4), (4, 6));
    assert_eq!(crate::folder::resized(640, 480, 256), (341, 256));
    assert_eq!(crate::folder::resized(4, 4, 4), (4, 4));
    // round((size - n) / 2), halves to even: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2
    let offsets = [5, 6, 7, 9].map(|s| crate::folder::centre_offset(s, 4));
    assert_eq!(offsets, [0, 1, 2, 2]);

    let dir = Dir::new();
    save(&dir, "a/wide.png", image::RgbImage::from_pixel(8, 4, image::Rgb([10, 20, 30])));
    save(&dir, "a/tall.png", image::RgbImage::from_pixel(3, 5, image::Rgb([10, 20, 30])));
    save(&dir, "b/square.png", gradient(6, 6));
    let d = folder(&dir, Some(4), Some(4)).unwrap();
    assert_eq!(d.sample_shape(), &[3, 4, 4]);
    assert_eq!(d.labels(), &[0, 0, 1]);
    // a flat colour stays that colour through the bilinear filter
    for i in 0..2 {
        for (c, want) in [10.0, 20.0, 30.0].into_iter().enumerate() {
            assert!((pixel(&d, i, c, 3, 3) - want).abs() <= 1.0);
        }
    }

    // a crop alone cuts the centre: pixel (0, 0) is the 6x6 image's (1, 1)
    let dir = Dir::new();
    save(&dir, "b/square.png", gradient(6, 6));
    save(&dir, "b/bigger.png", gradient(7, 9));
    let d = folder(&dir, None, Some(4)).unwrap();
    assert_eq!(d.sample_shape(), &[3, 4, 4]);
    assert_eq!([0, 1, 2].map(|c| pixel(&d, 1, c, 0, 0)), [1.0, 1.0, 11.0]);
    // 7x9: left round(1.5) = 2, top round(2.5) = 2
    assert_eq!([0, 1, 2].map(|c| pixel(&d, 0, c, 0, 0)), [2.0, 2.0, 22.0]);
}

#[test]
fn image_folder_channels_grey_stays_grey_unless_mixed() {
    let dir = Dir::new();
    save(&dir, "0/a.png", image::GrayImage::from_pixel(2, 2, image::Luma([7])));
    save(&dir, "1/b.png", image::GrayImage::from_pixel(2, 2, image::Luma([9])));
    let d = folder(&dir, None, None).unwrap();
    assert_eq!(d.sample_shape(), &[1, 2, 2]);
    assert_eq!(pixel(&d, 1, 0, 1, 1), 9.0);
    // one colour image: every image is RGB, grey repeated, alpha dropped
    save(&dir, "1/c.png", image::RgbaImage::from_pixel(2, 2, image::Rgba([1, 2, 3, 0])));
    let d = folder(&dir, None, None).unwrap();
    assert_eq!(d.sample_shape(), &[3, 2, 2]);
    assert_eq!([0, 1, 2].map(|c| pixel(&d, 0, c, 0, 0)), [7.0; 3]);
    assert_eq!([0, 1, 2].map(|c| pixel(&d, 2, c, 0, 0)), [1.0, 2.0, 3.0]);
}

#[test]
fn error_image_folders_name_the_file_or_folder() {
    let dir = Dir::new();
    let root = dir.path().display().to_string();
    check_err(folder(&dir, None, None), &[&root, "no class folders"]);
    dir.write("loose.png", b"");
    check_err(folder(&dir, None, None), &[&root, "no class folders", "1 image(s) lie directly in it"]);
    let missing = load_image_folder(&dir.path().join("nope"), &FolderOptions::default(), &Preprocess::default());
    check_err(missing, &["nope: no such file"]);

    std::fs::create_dir_all(dir.path().join("a")).unwrap();
    save(&dir, "b/x.png", gradient(4, 4));
    check_err(folder(&dir, None, None), &[&dir.path().join("a").display().to_string(), "holds no image"]);

    save(&dir, "a/x.png", gradient(4, 4));
    save(&dir, "a/y.png", gradient(5, 4));
    let e =
        check_err(folder(&dir, None, None), &["a/y.png: image is 5x4 but ", "a/x.png is 4x4", "give resize and crop"]);
    assert!(matches!(e, DataError::Image { .. }));
    check_err(folder(&dir, Some(4), None), &["a/y.png: image is 5x4 but", "after resize; add crop"]);
    check_err(folder(&dir, None, Some(5)), &["a/x.png: image is 4x4, smaller than the 5x5 crop"]);
    check_err(folder(&dir, Some(0), None), &["resize: must be at least 1"]);
    assert_eq!(folder(&dir, Some(4), Some(4)).unwrap().len(), 3);

    dir.write("b/broken.jpg", b"\xff\xd8\xff garbage");
    check_err(folder(&dir, Some(4), Some(4)), &["b/broken.jpg: cannot decode the image"]);
    dir.write("b/broken.jpg", b"");
    check_err(folder(&dir, Some(4), Some(4)), &["b/broken.jpg: cannot decode the image"]);
}

#[test]
fn folder_options_deserialize_strictly() {
    let o: FolderOptions = serde_json::from_str(r#"{"resize": 256, "crop": 224}"#).unwrap();
    assert_eq!(o, FolderOptions { resize: Some(256), crop: Some(224) });
    assert_eq!(serde_json::from_str::<FolderOptions>("{}").unwrap(), FolderOptions::default());
    let e = serde_json::from_str::<FolderOptions>(r#"{"size": 3}"#).unwrap_err();
    assert!(e.to_string().contains("unknown field `size`"), "{e}");
}

#[test]
fn channels_last_arrays_turn_around() {
    // one 2x2 image with 3 channels, channels last: pixel p has [p, 10 + p, 20 + p]
    let nhwc: Vec<u8> = (0..4).flat_map(|p| [p, 10 + p, 20 + p]).collect();
    let a = RawArray { origin: "x.npy".into(), shape: vec![1, 2, 2, 3], values: Values::U8(nhwc) };
    let a = a.nhwc_to_nchw().unwrap();
    assert_eq!(a.shape, vec![1, 3, 2, 2]);
    assert_eq!(a.values, Values::U8(vec![0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23]));
    let f = RawArray { origin: "f.npy".into(), shape: vec![2, 1, 1, 2], values: Values::F32(vec![1.0, 2.0, 3.0, 4.0]) };
    assert_eq!(f.nhwc_to_nchw().unwrap().values, Values::F32(vec![1.0, 2.0, 3.0, 4.0]));
    let grey = RawArray { origin: "g.npy".into(), shape: vec![1, 2, 2], values: Values::U8(vec![0; 4]) };
    check_err(grey.nhwc_to_nchw(), &["g.npy: wrong shape [1, 2, 2]: channels-last images must be [N, H, W, C]"]);
}
