//! The `huffman` stage and `.shrink` files against tract: `unpack(pack(m))`
//! reproduces every initializer bit-exactly and tract's outputs exactly, for
//! every fixture (LeNet-300-100 only unless `SHRINK_SLOW_TESTS=1`) and for
//! pruned and clustered models; the stage writes its
//! file and leaves the model alone; the CLI packs, unpacks and evaluates
//! `.shrink` files. Prints the size ratio of LeNet-300-100 after a simulated
//! Deep Compression prune (8 %/9 %/26 % kept) and 32-value clustering.

use std::path::PathBuf;

use shrink_graph::{DataType, Model, NodeKind};
use shrink_huffman::{Encoding, PackOptions, UnpackOptions};
use shrink_verify::{InputSpec, Judge};

use crate::util::{Rng, shrink_bin, slow, tempdir};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/models").join(name)
}

/// The float weights of rank ≥ 2 (what pruning and k-means rewrite), in graph order.
fn layer_weights(model: &Model) -> Vec<shrink_graph::NodeId> {
    model
        .graph
        .initializers()
        .iter()
        .copied()
        .filter(|&id| match model.graph.node(id) {
            NodeKind::Weight(w) => w.tensor.dtype() == DataType::Float && w.tensor.dims().len() >= 2,
            _ => false,
        })
        .collect()
}

/// Simulated Deep Compression: keep the `keep[i]` fraction of layer i's
/// weights with the largest magnitude, then snap the survivors to `k` values
/// (1-D k-means from a linear initialisation, as the paper does).
fn prune_and_cluster(model: &mut Model, keep: &[f64], k: usize) {
    let ids = layer_weights(model);
    assert_eq!(ids.len(), keep.len(), "one keep fraction per layer");
    for (&id, &frac) in ids.iter().zip(keep) {
        let NodeKind::Weight(w) = model.graph.node_mut(id) else { unreachable!() };
        let mut v = w.tensor.to_f32().unwrap();
        let mut mags: Vec<f32> = v.iter().map(|x| x.abs()).collect();
        mags.sort_by(|a, b| b.total_cmp(a));
        let kept = ((v.len() as f64 * frac).round() as usize).clamp(1, v.len());
        let threshold = mags[kept - 1];
        let mut n_kept = 0;
        for x in v.iter_mut() {
            if x.abs() < threshold || n_kept >= kept {
                *x = 0.0;
            } else {
                n_kept += 1;
            }
        }
        let live: Vec<f32> = v.iter().copied().filter(|&x| x != 0.0).collect();
        let (lo, hi) = live.iter().fold((f32::MAX, f32::MIN), |(l, h), &x| (l.min(x), h.max(x)));
        let mut c: Vec<f32> = (0..k).map(|i| lo + (hi - lo) * i as f32 / (k - 1) as f32).collect();
        let nearest =
            |c: &[f32], x: f32| (0..c.len()).min_by(|&a, &b| (c[a] - x).abs().total_cmp(&(c[b] - x).abs())).unwrap();
        for _ in 0..10 {
            let mut sum = vec![0f64; k];
            let mut cnt = vec![0usize; k];
            for &x in &live {
                let j = nearest(&c, x);
                sum[j] += x as f64;
                cnt[j] += 1;
            }
            for j in 0..k {
                if cnt[j] > 0 {
                    c[j] = (sum[j] / cnt[j] as f64) as f32;
                }
            }
        }
        for x in v.iter_mut() {
            if *x != 0.0 {
                *x = c[nearest(&c, *x)];
                if *x == 0.0 {
                    *x = f32::MIN_POSITIVE; // keep the pruning pattern exact
                }
            }
        }
        w.tensor.set_f32(&v).unwrap();
    }
}

/// Packs, unpacks, and checks bytes, initializers and tract outputs.
fn check_round_trip(name: &str, model: &Model) -> shrink_huffman::Packed {
    let packed = shrink_huffman::pack(model, &PackOptions::default()).unwrap();
    let back = shrink_huffman::unpack_model(&packed.bytes, &UnpackOptions::default()).unwrap();
    assert_eq!(back.to_bytes(), model.to_bytes(), "{name}: unpacked ONNX bytes differ");
    for (a, b) in model.graph.weights().zip(back.graph.weights()) {
        assert_eq!(a.1.proto, b.1.proto, "{name}: initializer `{}` differs", a.1.name());
    }
    let spec = InputSpec::default();
    let mut ja = Judge::new("original", model, &spec).unwrap();
    let mut jb = Judge::new("unpacked", &back, &spec).unwrap();
    let batch = 4;
    let per: usize = ja.sample_shape().iter().product();
    let mut rng = Rng::new(7);
    let x: Vec<f32> = (0..batch * per).map(|_| (rng.f32() + 1.0) / 2.0).collect();
    let la = ja.logits(&x, batch).unwrap();
    let lb = jb.logits(&x, batch).unwrap();
    assert_eq!(
        la.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        lb.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        "{name}: tract outputs differ"
    );
    packed
}

/// LeNet-300-100 always; every fixture with `SHRINK_SLOW_TESTS=1`.
fn fixtures() -> &'static [&'static str] {
    if slow() { &["lenet-300-100", "lenet-5", "convnet-mix"] } else { &["lenet-300-100"] }
}

#[test]
fn every_fixture_round_trips_bit_exactly() {
    for &name in fixtures() {
        for suffix in [".onnx", ".dynamo.onnx"] {
            let file = format!("{name}{suffix}");
            let model = Model::load(fixture(&file)).unwrap();
            let packed = check_round_trip(&file, &model);
            // dense trained float weights gain nothing from codebooks: they stay raw
            assert!(packed.tensors.iter().all(|t| t.encoding == Encoding::Raw), "{file}: {:?}", packed.tensors);
        }
    }
}

#[test]
fn pruned_and_clustered_models_round_trip_and_compress() {
    for &name in fixtures() {
        let mut model = Model::load(fixture(&format!("{name}.onnx"))).unwrap();
        let n = layer_weights(&model).len();
        prune_and_cluster(&mut model, &vec![0.1; n], 32);
        let packed = check_round_trip(name, &model);
        for t in packed.tensors.iter().filter(|t| t.codebook > 0) {
            assert!(t.codebook <= 32, "{name}: `{}` has {} values", t.name, t.codebook);
        }
        let layers = packed.tensors.iter().filter(|t| t.encoding != Encoding::Raw).count();
        assert_eq!(layers, n, "{name}: every pruned layer is encoded: {:?}", packed.tensors);
        let ratio = packed.onnx_bytes as f64 / packed.bytes.len() as f64;
        eprintln!(
            "{name}: 90 % pruned, 32 values: {} -> {} bytes ({ratio:.1}x)",
            packed.onnx_bytes,
            packed.bytes.len()
        );
        assert!(ratio > 10.0, "{name}: only {ratio:.1}x");
    }
}

/// Deep Compression's LeNet-300-100 setting: 8 %, 9 %, 26 % of the weights
/// kept, 32 clusters per layer (5-bit ids). The paper reaches 40x.
#[test]
fn lenet_300_100_deep_compression_size() {
    let path = fixture("lenet-300-100.onnx");
    let file_bytes = std::fs::metadata(&path).unwrap().len();
    let mut model = Model::load(&path).unwrap();
    prune_and_cluster(&mut model, &[0.08, 0.09, 0.26], 32);
    let packed = check_round_trip("lenet-300-100", &model);
    let report = shrink_huffman::report(&packed, file_bytes, "model.shrink");
    for l in &report.layers {
        eprintln!("{:>16}  {}  {:?}", l.layer, l.note, l.figures);
    }
    let ratio = file_bytes as f64 / packed.bytes.len() as f64;
    eprintln!(
        "lenet-300-100 (8/9/26 % kept, 32 values): {file_bytes} -> {} bytes = {ratio:.1}x (graph part {} bytes)",
        packed.bytes.len(),
        packed.graph_bytes
    );
    // measured 50.2x; held within 2 %
    assert!(ratio >= 49.2, "only {ratio:.1}x");
    // the paper's fixed choice: 5-bit indices for every FC layer, no search
    let fixed = PackOptions { search_index_bits: false, ..PackOptions::default() };
    let plain = shrink_huffman::pack(&model, &fixed).unwrap();
    assert!(plain.bytes.len() >= packed.bytes.len(), "the search never loses");
    // the paper's claim for this setting, met with its own fixed 5-bit indices
    let plain_ratio = file_bytes as f64 / plain.bytes.len() as f64;
    assert!(plain_ratio >= 40.0, "5-bit indices only: {plain_ratio:.1}x, the paper's 40x not met");
    assert_eq!(shrink_huffman::unpack(&plain.bytes).unwrap(), model.to_bytes());
    eprintln!(
        "lenet-300-100 with 5-bit indices only: {} bytes = {:.1}x",
        plain.bytes.len(),
        file_bytes as f64 / plain.bytes.len() as f64
    );
}

#[test]
fn stage_writes_the_file_and_keeps_the_model() {
    let mut model = Model::load(fixture("lenet-300-100.onnx")).unwrap();
    prune_and_cluster(&mut model, &[0.1, 0.1, 0.3], 16);
    let original = model.clone();
    let before = model.to_bytes();
    let reg = shrink_pipeline::builtin();
    let mut table = toml::Table::new();
    table.insert("output".into(), toml::Value::String("lenet.shrink".into()));
    let stage = reg.build("huffman", &table).unwrap();
    let dir = tempdir();
    let mut progress = shrink_stage::NoProgress;
    let mut cx = shrink_stage::StageCx {
        pipeline: "test".into(),
        index: 0,
        train: None,
        test: None,
        original: &original,
        seed: 1,
        progress: &mut progress,
        scratch: dir.path().to_path_buf(),
        output_dir: dir.path().to_path_buf(),
        encoded: Default::default(),
    };
    let report = stage.run(&mut model, &mut cx).unwrap();
    assert_eq!(model.to_bytes(), before, "the stage changed the model");
    assert_eq!(report.files, vec!["lenet.shrink".to_string()]);
    let bytes = std::fs::read(dir.path().join("lenet.shrink")).unwrap();
    assert_eq!(report.figures["shrink_bytes"], bytes.len() as f64);
    assert_eq!(shrink_huffman::unpack(&bytes).unwrap(), before);
    assert_eq!(report.layers.len(), 6, "{report:?}");
    let fc1 = &report.layers[0].figures;
    assert!(fc1["index_bits_per_weight_huffman"] > 0.0 && fc1["id_bits_per_weight_huffman"] > 0.0, "{fc1:?}");
    assert!(fc1["id_bits_per_weight_huffman"] < fc1["id_bits_per_weight"] + 1.0, "{fc1:?}");
    // bad parameters fail at build time, naming the key
    let mut bad = toml::Table::new();
    bad.insert("index_bits_fc".into(), toml::Value::Integer(13));
    let e = reg.build("huffman", &bad).unwrap_err().to_string();
    assert!(e.contains("index_bits_fc"), "{e}");
    let mut bad = toml::Table::new();
    bad.insert("indx_bits".into(), toml::Value::Integer(3));
    assert!(reg.build("huffman", &bad).is_err());
    let mut bad = toml::Table::new();
    bad.insert("output".into(), toml::Value::String("../x.shrink".into()));
    assert!(reg.build("huffman", &bad).unwrap_err().to_string().contains("output"));
}

#[test]
fn cli_packs_unpacks_and_evaluates_shrink_files() {
    let dir = tempdir();
    let mut model = Model::load(fixture("lenet-300-100.onnx")).unwrap();
    prune_and_cluster(&mut model, &[0.1, 0.1, 0.3], 32);
    let onnx = dir.path().join("m.onnx");
    model.save(&onnx).unwrap();
    let packed = dir.path().join("m.shrink");
    let run = |args: &[&std::ffi::OsStr]| std::process::Command::new(shrink_bin()).args(args).output().unwrap();
    let out = run(&["pack".as_ref(), onnx.as_os_str(), "-o".as_ref(), packed.as_os_str()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let unpacked = dir.path().join("back.onnx");
    let out = run(&["unpack".as_ref(), packed.as_os_str(), "-o".as_ref(), unpacked.as_os_str()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(&unpacked).unwrap(), std::fs::read(&onnx).unwrap());
    // never over the input
    let out = run(&["unpack".as_ref(), packed.as_os_str(), "-o".as_ref(), packed.as_os_str()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("input"), "{}", String::from_utf8_lossy(&out.stderr));
    // eval and compare read .shrink files directly
    let out =
        run(&["compare".as_ref(), onnx.as_os_str(), packed.as_os_str(), "--no-latency".as_ref(), "--json".as_ref()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = v.to_string();
    assert!(text.contains("agreement"), "{text}");
    let out = run(&["eval".as_ref(), packed.as_os_str(), "--no-latency".as_ref()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // a corrupted file is an error naming what is wrong, not a panic
    let mut bytes = std::fs::read(&packed).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    let bad = dir.path().join("bad.shrink");
    std::fs::write(&bad, &bytes).unwrap();
    let out = run(&["unpack".as_ref(), bad.as_os_str(), "-o".as_ref(), dir.path().join("x.onnx").as_os_str()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("checksum"), "{}", String::from_utf8_lossy(&out.stderr));
}
