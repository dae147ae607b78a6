//! Unit tests of the int8 method: range choice on known histograms, the
//! quantiser's ONNX semantics, parameter errors, and the graph each form
//! writes (node types and placement; running them in tract is
//! `tests/it/int8.rs`).

use super::calib::{ActQ, Histogram, choose_range, entropy_threshold};
use super::params::{ActType, Calibration};

fn hist(values: &[f32]) -> Histogram {
    let (lo, hi) = values.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
    let mut h = Histogram::new(lo, hi);
    h.add(values);
    h
}

#[test]
fn uint8_covers_relu_range_with_zero_point_zero() {
    let q = ActQ::from_range(0.0, 2.55, ActType::Uint8);
    assert_eq!(q.zero_point, 0);
    assert!((q.scale - 0.01).abs() < 1e-7);
    assert_eq!(q.quantize(-1.0), 0);
    assert_eq!(q.quantize(10.0), 255);
    assert!((q.fake(1.234) - 1.23).abs() < 1e-5);
}

#[test]
fn affine_range_keeps_zero_exact() {
    let q = ActQ::from_range(-1.0, 3.0, ActType::Uint8);
    assert_eq!(q.fake(0.0), 0.0);
    let s = ActQ::from_range(-1.0, 3.0, ActType::Int8);
    assert_eq!(s.zero_point, 0);
    assert!((s.scale - 3.0 / 127.0).abs() < 1e-7);
}

#[test]
fn round_half_to_even_like_onnx() {
    let q = ActQ { ty: ActType::Int8, scale: 1.0, zero_point: 0 };
    assert_eq!(q.quantize(2.5), 2);
    assert_eq!(q.quantize(3.5), 4);
    assert_eq!(q.quantize(-2.5), -2);
}

/// 10 000 values uniform on [0, 1] and one outlier at 100.
fn with_outlier() -> Vec<f32> {
    let mut v: Vec<f32> = (0..10_000).map(|i| i as f32 / 10_000.0).collect();
    v.push(100.0);
    v
}

#[test]
fn minmax_keeps_the_outlier_percentile_and_mse_clip_it() {
    let h = hist(&with_outlier());
    let (lo, hi) = choose_range(&h, Calibration::Minmax, 99.99, ActType::Uint8);
    assert_eq!((lo, hi), (0.0, 100.0));
    let (_, hi) = choose_range(&h, Calibration::Percentile, 99.9, ActType::Uint8);
    assert!(hi < 2.0, "percentile upper {hi}");
}

#[test]
fn mse_clips_a_heavy_tail_and_beats_minmax() {
    // exponential samples (quantiles of Exp(1)): a long thin tail
    let v: Vec<f32> = (0..20_000).map(|i| -(1.0 - (i as f64 + 0.5) / 20_000.0).ln() as f32).collect();
    let h = hist(&v);
    let (_, hi) = choose_range(&h, Calibration::Mse, 99.99, ActType::Uint8);
    let max = h.max as f64;
    assert!(hi < max, "mse upper {hi} of max {max}");
    let mse = h.mse(&ActQ::from_range(0.0, hi, ActType::Uint8));
    assert!(mse < h.mse(&ActQ::from_range(0.0, max, ActType::Uint8)));
}

#[test]
fn entropy_clips_a_long_tail() {
    let h = hist(&with_outlier());
    let (_, hi) = choose_range(&h, Calibration::Entropy, 99.99, ActType::Uint8);
    assert!(hi < 20.0 && hi > 0.5, "entropy upper {hi}");
    // a uniform distribution over all bins: nothing to clip
    let counts = vec![1.0; 512];
    assert_eq!(entropy_threshold(&counts, 128), 512.0);
}

#[test]
fn signed_histogram_is_symmetric() {
    let v: Vec<f32> = (-1000..=1000).map(|i| i as f32 / 1000.0).collect();
    let h = hist(&v);
    let (lo, hi) = choose_range(&h, Calibration::Percentile, 99.0, ActType::Int8);
    assert!((lo + 0.98).abs() < 0.01 && (hi - 0.98).abs() < 0.01, "{lo} {hi}");
    let q = ActQ::from_range(lo, hi, ActType::Int8);
    assert!(h.sqnr_db(&q) > 30.0);
}

#[test]
fn params_errors_name_the_key() {
    let bad = |extra: &str| {
        let t: toml::Table = toml::from_str(&format!("kind = \"quantize\"\nmethod = \"int8\"\n{extra}")).unwrap();
        match super::build(&t) {
            Err(e) => e.to_string(),
            Ok(_) => String::new(),
        }
    };
    assert!(bad("form = \"fast\"").contains("form"), "{}", bad("form = \"fast\""));
    assert!(bad("calibration = \"kl\"").contains("calibration"));
    assert!(bad("calibration_samples = 0").contains("calibration_samples"));
    assert!(bad("percentile = 20.0").contains("percentile"));
    assert!(bad("bits = 4").contains("bits"));
    assert_eq!(bad("form = \"qdq\"\ncalibration = \"mse\"\nkeep_float = []"), "");
    // a known failure: refused with the reason, naming the key
    let e = bad("form = \"qdq\"\ncalibration = \"entropy\"");
    assert!(e.contains("calibration") && e.contains("refused") && e.contains("percentile"), "{e}");
}

#[test]
fn entropy_ignores_the_relu_zero_spike() {
    // half exact zeros (a ReLU output), half Exp(1): the zeros must not pull the threshold down
    let mut v = vec![0f32; 10_000];
    v.extend((0..10_000).map(|i| -(1.0 - (i as f64 + 0.5) / 10_000.0).ln() as f32));
    let h = hist(&v);
    assert_eq!(h.zeros, 10_000.0);
    let (lo, hi) = choose_range(&h, Calibration::Entropy, 99.99, ActType::Uint8);
    assert_eq!(lo, 0.0);
    assert!(hi > 2.5 && hi <= h.max as f64, "entropy upper {hi} of max {}", h.max);
    // the zeros count in percentiles: the median is 0
    assert_eq!(h.quantile(0.4), 0.0);
}
