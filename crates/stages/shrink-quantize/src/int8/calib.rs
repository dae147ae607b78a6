//! Activation ranges from calibration data.
//!
//! Each observed tensor gets a [`Histogram`] (two passes: min/max, then
//! counts). Non-negative tensors (ReLU outputs, pixels) are binned over
//! `[0, max]` in [`BINS`] bins; others over `[-a, a]` (`a = max |x|`) in
//! `2 · BINS` bins, so that |x| folds onto whole bins. A [`Calibration`]
//! turns a histogram into a range `[lo, hi]`; [`ActQ::from_range`] into a
//! scale and zero point.

use crate::int8::params::{ActType, Calibration};

/// Bins per sign of a histogram.
pub const BINS: usize = 2048;

/// Counts of one tensor's values over calibration data.
#[derive(Debug, Clone)]
pub struct Histogram {
    pub min: f32,
    pub max: f32,
    /// Left edge of bin 0.
    start: f64,
    width: f64,
    pub counts: Vec<f64>,
    /// Exact zeros (ReLU outputs hold many), counted apart: zero is always
    /// exact, and a spike in the first bin would skew the entropy method.
    pub zeros: f64,
}

impl Histogram {
    /// An empty histogram for values known to lie in `[min, max]`.
    pub fn new(min: f32, max: f32) -> Histogram {
        let (min, max) = if min.is_finite() && max.is_finite() && min <= max { (min, max) } else { (0.0, 0.0) };
        let (start, n, end) = if min >= 0.0 {
            (0.0, BINS, max as f64)
        } else {
            let a = (min.abs().max(max.abs())) as f64;
            (-a, 2 * BINS, a)
        };
        let width = ((end - start) / n as f64).max(f64::MIN_POSITIVE);
        Histogram { min, max, start, width, counts: vec![0.0; n], zeros: 0.0 }
    }

    pub fn add(&mut self, values: &[f32]) {
        let n = self.counts.len();
        for &x in values {
            if x == 0.0 {
                self.zeros += 1.0;
                continue;
            }
            let i = ((x as f64 - self.start) / self.width).floor();
            let i = if i.is_nan() { 0 } else { (i.max(0.0) as usize).min(n - 1) };
            self.counts[i] += 1.0;
        }
    }

    fn center(&self, i: usize) -> f64 {
        self.start + (i as f64 + 0.5) * self.width
    }

    fn total(&self) -> f64 {
        self.counts.iter().sum::<f64>() + self.zeros
    }

    /// The bin whose left edge is 0 (where the zeros sit in the order of values).
    fn zero_bin(&self) -> usize {
        if self.counts.len() == BINS { 0 } else { BINS }
    }

    /// The value below which a fraction `q` of the samples lie (bin edges).
    pub fn quantile(&self, q: f64) -> f64 {
        let total = self.total();
        if total == 0.0 {
            return 0.0;
        }
        let target = q.clamp(0.0, 1.0) * total;
        let mut acc = 0.0;
        for (i, &c) in self.counts.iter().enumerate() {
            if i == self.zero_bin() {
                acc += self.zeros;
                if acc >= target {
                    return 0.0;
                }
            }
            acc += c;
            if acc >= target {
                return self.start + (i as f64 + 1.0) * self.width;
            }
        }
        self.start + self.counts.len() as f64 * self.width
    }

    /// Mean squared error of quantising the samples with `q` (bin centres
    /// stand for their samples; exact zeros quantise exactly).
    pub fn mse(&self, q: &ActQ) -> f64 {
        let total = self.total().max(1.0);
        let mut err = 0.0;
        for (i, &c) in self.counts.iter().enumerate() {
            if c > 0.0 {
                let x = self.center(i);
                let d = x - q.fake(x as f32) as f64;
                err += c * d * d;
            }
        }
        err / total
    }

    /// Signal-to-quantisation-noise ratio (dB) of `q` on these samples.
    pub fn sqnr_db(&self, q: &ActQ) -> f64 {
        let total = self.total().max(1.0);
        let power: f64 = self.counts.iter().enumerate().map(|(i, &c)| c * self.center(i).powi(2)).sum::<f64>() / total;
        let noise = self.mse(q);
        if noise <= 0.0 { f64::INFINITY } else { 10.0 * (power / noise).log10() }
    }

    /// Counts of the non-zero |x| over `[0, a]` in `BINS` bins.
    fn abs_counts(&self) -> Vec<f64> {
        if self.counts.len() == BINS {
            return self.counts.clone();
        }
        let mut out = vec![0.0; BINS];
        for (i, &c) in self.counts.iter().enumerate() {
            let j = if i >= BINS { i - BINS } else { BINS - 1 - i };
            out[j] += c;
        }
        out
    }

    /// The |x| bin width.
    fn abs_width(&self) -> f64 {
        self.width
    }
}

/// An activation quantiser: `q = saturate(round(x / scale) + zero_point)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActQ {
    pub ty: ActType,
    pub scale: f32,
    pub zero_point: i32,
}

impl ActQ {
    fn limits(ty: ActType) -> (i32, i32) {
        match ty {
            ActType::Uint8 => (0, 255),
            ActType::Int8 => (-128, 127),
        }
    }

    /// Scale and zero point covering `[lo, hi]` (widened to hold 0).
    pub fn from_range(lo: f64, hi: f64, ty: ActType) -> ActQ {
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        match ty {
            ActType::Uint8 => {
                let range = hi - lo;
                let scale = if range > 0.0 { (range / 255.0) as f32 } else { 1.0 };
                let zero_point = (-lo / scale as f64).round().clamp(0.0, 255.0) as i32;
                ActQ { ty, scale, zero_point }
            }
            ActType::Int8 => {
                let a = lo.abs().max(hi);
                let scale = if a > 0.0 { (a / 127.0) as f32 } else { 1.0 };
                ActQ { ty, scale, zero_point: 0 }
            }
        }
    }

    /// The code of `x` (ONNX QuantizeLinear: round half to even, saturate).
    pub fn quantize(&self, x: f32) -> i32 {
        let (qmin, qmax) = Self::limits(self.ty);
        let v = (x / self.scale).round_ties_even() as i64 + self.zero_point as i64;
        v.clamp(qmin as i64, qmax as i64) as i32
    }

    pub fn fake(&self, x: f32) -> f32 {
        (self.quantize(x) - self.zero_point) as f32 * self.scale
    }

    /// The representable range `[lo, hi]`.
    pub fn range(&self) -> (f32, f32) {
        let (qmin, qmax) = Self::limits(self.ty);
        ((qmin - self.zero_point) as f32 * self.scale, (qmax - self.zero_point) as f32 * self.scale)
    }
}

/// The range `method` picks from `h`, as `[lo, hi]`.
pub fn choose_range(h: &Histogram, method: Calibration, percentile: f64, ty: ActType) -> (f64, f64) {
    let (min, max) = (h.min as f64, h.max as f64);
    match method {
        Calibration::Minmax => (min, max),
        Calibration::Percentile => {
            let p = percentile / 100.0;
            let hi = h.quantile(p).min(max);
            let lo = if min >= 0.0 { min } else { h.quantile(1.0 - p).max(min) };
            (lo, hi)
        }
        Calibration::Mse => {
            let mut best = (f64::INFINITY, (min, max));
            for i in (10..=100).rev() {
                let a = i as f64 / 100.0;
                let r = (min * a, max * a);
                let err = h.mse(&ActQ::from_range(r.0, r.1, ty));
                if err < best.0 {
                    best = (err, r);
                }
            }
            best.1
        }
        Calibration::Entropy => {
            let levels = if min >= 0.0 && ty == ActType::Uint8 { 255 } else { 127 };
            let t = entropy_threshold(&h.abs_counts(), levels) * h.abs_width();
            (min.max(-t), max.min(t))
        }
    }
}

/// TensorRT's entropy calibration over |x| counts: the number of bins `i`
/// (a threshold at bin edge `i`) minimising KL(P‖Q), where P is the
/// reference distribution clipped at `i` (the outliers added to its last
/// bin) and Q is P merged into `levels` bins and expanded back over P's
/// non-empty bins.
pub fn entropy_threshold(counts: &[f64], levels: usize) -> f64 {
    let n = counts.len();
    if n <= levels || counts.iter().all(|&c| c == 0.0) {
        return n as f64;
    }
    let mut best = (f64::INFINITY, n);
    for i in levels..=n {
        let mut p: Vec<f64> = counts[..i].to_vec();
        let outliers: f64 = counts[i..].iter().sum();
        p[i - 1] += outliers;
        // Q: merge `i` bins into `levels`, spreading each merged count over its non-empty bins.
        let mut q = vec![0.0; i];
        for l in 0..levels {
            let (a, b) = (l * i / levels, ((l + 1) * i / levels).max(l * i / levels + 1));
            let sum: f64 = counts[a..b].iter().sum();
            let nonzero = counts[a..b].iter().filter(|&&c| c > 0.0).count();
            if nonzero > 0 {
                for j in a..b {
                    if counts[j] > 0.0 {
                        q[j] = sum / nonzero as f64;
                    }
                }
            }
        }
        let (sp, sq): (f64, f64) = (p.iter().sum(), q.iter().sum());
        if sp == 0.0 || sq == 0.0 {
            continue;
        }
        let mut kl = 0.0;
        for j in 0..i {
            if p[j] > 0.0 {
                let pj = p[j] / sp;
                // an empty Q bin where P has mass: smooth instead of infinity
                let qj = (q[j] / sq).max(1e-12);
                kl += pj * (pj / qj).ln();
            }
        }
        if kl < best.0 {
            best = (kl, i);
        }
    }
    best.1 as f64
}
