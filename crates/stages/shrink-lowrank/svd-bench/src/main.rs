//! SVD speed: nalgebra (what stage `lowrank` called before it moved to faer, `try_svd(true, true, ε, 10_000)`)
//! against faer (`thin_svd`, sequential and on the rayon pool; the stage calls it sequentially), on seeded random
//! matrices. Each run is a full thin SVD, U, Σ and Vᵀ, which is what the stage needs.
//!
//! `svd-bench [--dtype f64|f32] [--runs N] [--cap-secs S] [SHAPE...]`, SHAPE `N` (square) or
//! `ROWSxCOLS`; default `512 1024 2048 4096`, f64 (the stage's precision), 3 runs (the median
//! is reported), 1 run for shapes of 4096² elements or more. A nalgebra SVD whose time,
//! extrapolated from the previous shape by `rows·cols·min(rows, cols)`, exceeds the cap
//! (default 900 s) is skipped and reported as `-`. The two crates must agree: singular values
//! within a relative 1e-3 (floored at √ε·σ₁), and each factorisation must reconstruct the
//! matrix (‖A − UΣVᵀ‖/‖A‖ below 1e-4 in f32, 1e-10 in f64); otherwise the exit status is 1.
//!
//! Prints one `svd key=value ...` line per shape (read by `cargo xtask bench svd`), then a table.

use std::process::ExitCode;
use std::time::Instant;

use faer::{Mat, Par};
use nalgebra::DMatrix;

/// splitmix64: a seeded uniform generator, so both crates see the same matrix on every machine.
struct Rng(u64);

impl Rng {
    fn next_unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // uniform in [-1, 1)
        (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The work of an SVD of a rows × cols matrix, up to a constant.
fn work(rows: usize, cols: usize) -> f64 {
    rows as f64 * cols as f64 * rows.min(cols) as f64
}

#[derive(Debug)]
struct Row {
    rows: usize,
    cols: usize,
    runs: usize,
    /// Seconds, or the extrapolated seconds when skipped.
    nalgebra: Result<f64, f64>,
    faer_seq: f64,
    faer_par: f64,
    sv_rel_diff: Option<f64>,
    nalgebra_recon: Option<f64>,
    faer_recon: f64,
    ok: bool,
}

macro_rules! bench_dtype {
    ($name:ident, $t:ty, $recon_tol:expr) => {
        /// Times both crates on one shape; `last` is the previous nalgebra (work, secs), for the cap.
        fn $name(rows: usize, cols: usize, runs: usize, cap: f64, last: &mut Option<(f64, f64)>, par: Par) -> Row {
            let mut rng = Rng(0x5EED ^ ((rows as u64) << 32) ^ cols as u64);
            // row-major values, as the stage reads a weight
            let data: Vec<$t> = (0..rows * cols).map(|_| rng.next_unit() as $t).collect();
            let a_faer = Mat::<$t>::from_fn(rows, cols, |i, j| data[i * cols + j]);
            let a_na = DMatrix::<$t>::from_fn(rows, cols, |i, j| data[i * cols + j]);
            let a_norm = a_faer.norm_l2() as f64;

            // faer, sequential then parallel
            let time_faer = |p: Par| {
                let mut secs = Vec::new();
                let mut last_svd = None;
                for _ in 0..runs {
                    faer::set_global_parallelism(p);
                    let t = Instant::now();
                    let d = a_faer.thin_svd();
                    secs.push(t.elapsed().as_secs_f64());
                    last_svd = Some(d);
                }
                (median(secs), last_svd.expect("at least one run"))
            };
            let (faer_seq, _) = time_faer(Par::Seq);
            let (faer_par, d) = time_faer(par);
            faer::set_global_parallelism(par);
            let faer_svd = d.ok();
            let (faer_s, faer_recon) = match &faer_svd {
                Some(d) => {
                    let s: Vec<f64> = d.S().column_vector().iter().map(|&x| x as f64).collect();
                    let vt = d.V().transpose().to_owned();
                    (s, recon(&a_faer, d.U().to_owned(), d.S().column_vector().iter().copied().collect(), vt, a_norm))
                }
                None => (Vec::new(), f64::INFINITY),
            };

            // nalgebra, unless the previous shape says it would run past the cap
            let w = work(rows, cols);
            let predicted = last.map(|(w0, s0)| s0 * w / w0);
            let (nalgebra, nalgebra_svd) = match predicted {
                Some(p) if p > cap => (Err(p), None),
                _ => {
                    let mut secs = Vec::new();
                    let mut svd = None;
                    for _ in 0..runs {
                        let m = a_na.clone();
                        let t = Instant::now();
                        let d = m.try_svd(true, true, <$t>::EPSILON, 10_000);
                        secs.push(t.elapsed().as_secs_f64());
                        svd = Some(d);
                    }
                    let s = median(secs);
                    *last = Some((w, s));
                    (Ok(s), svd.flatten())
                }
            };
            let (sv_rel_diff, nalgebra_recon) = match nalgebra_svd {
                Some(d) => match (d.u, d.v_t) {
                    (Some(u), Some(vt)) => {
                        let q = d.singular_values.len();
                        let s: Vec<$t> = d.singular_values.iter().copied().collect();
                        let u = Mat::<$t>::from_fn(rows, q, |i, j| u[(i, j)]);
                        let vt = Mat::<$t>::from_fn(q, cols, |i, j| vt[(i, j)]);
                        let r = recon(&a_faer, u, s.clone(), vt, a_norm);
                        let mut ns: Vec<f64> = s.iter().map(|&x| x as f64).collect();
                        ns.sort_by(|x, y| y.total_cmp(x));
                        let top = ns.first().copied().unwrap_or(0.0).max(faer_s.first().copied().unwrap_or(0.0));
                        let floor = (<$t>::EPSILON as f64).sqrt() * top;
                        let diff = if ns.len() == faer_s.len() {
                            ns.iter()
                                .zip(&faer_s)
                                .map(|(x, y)| (x - y).abs() / x.abs().max(y.abs()).max(floor).max(f64::MIN_POSITIVE))
                                .fold(0.0, f64::max)
                        } else {
                            f64::INFINITY
                        };
                        (Some(diff), Some(r))
                    }
                    _ => (Some(f64::INFINITY), Some(f64::INFINITY)),
                },
                None if nalgebra.is_ok() => (Some(f64::INFINITY), Some(f64::INFINITY)),
                None => (None, None),
            };
            let tol: f64 = $recon_tol;
            let ok =
                faer_recon < tol && nalgebra_recon.is_none_or(|r| r < tol) && sv_rel_diff.is_none_or(|d| d <= 1e-3);
            Row { rows, cols, runs, nalgebra, faer_seq, faer_par, sv_rel_diff, nalgebra_recon, faer_recon, ok }
        }
    };
}

/// ‖A − U·diag(s)·Vᵀ‖_F / ‖A‖_F, computed with faer's matrix product.
fn recon<T: faer::traits::RealField + Copy + Into<f64>>(
    a: &Mat<T>,
    mut u: Mat<T>,
    s: Vec<T>,
    vt: Mat<T>,
    a_norm: f64,
) -> f64 {
    for (j, &sj) in s.iter().enumerate() {
        for i in 0..u.nrows() {
            u[(i, j)] *= sj;
        }
    }
    let r = &u * &vt - a;
    let n: f64 = r.norm_l2().into();
    if a_norm > 0.0 { n / a_norm } else { n }
}

bench_dtype!(bench_f64, f64, 1e-10);
bench_dtype!(bench_f32, f32, 1e-4);

fn parse_shape(s: &str) -> Result<(usize, usize), String> {
    let (r, c) = s.split_once('x').unwrap_or((s, s));
    match (r.parse::<usize>(), c.parse::<usize>()) {
        (Ok(r), Ok(c)) if r > 0 && c > 0 => Ok((r, c)),
        _ => Err(format!("`{s}` is not a shape (N or ROWSxCOLS)")),
    }
}

fn fmt_secs(s: f64) -> String {
    if s < 1.0 { format!("{:.1} ms", s * 1e3) } else { format!("{s:.2} s") }
}

fn run(args: &[String]) -> Result<bool, String> {
    let mut dtype = "f64".to_string();
    let mut runs = 3usize;
    let mut cap = 900.0f64;
    let mut shapes = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--dtype" => dtype = value("--dtype")?,
            "--runs" => runs = value("--runs")?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--cap-secs" => cap = value("--cap-secs")?.parse().map_err(|e| format!("--cap-secs: {e}"))?,
            s if s.starts_with('-') => return Err(format!("unknown option `{s}`")),
            s => shapes.push(parse_shape(s)?),
        }
    }
    if runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    if shapes.is_empty() {
        shapes = vec![(512, 512), (1024, 1024), (2048, 2048), (4096, 4096)];
    }
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let par = Par::rayon(threads);
    let mut last = None;
    let mut rows = Vec::new();
    for &(r, c) in &shapes {
        let n = if r * c >= 4096 * 4096 { 1 } else { runs };
        let row = match dtype.as_str() {
            "f64" => bench_f64(r, c, n, cap, &mut last, par),
            "f32" => bench_f32(r, c, n, cap, &mut last, par),
            other => return Err(format!("--dtype `{other}`: f64 or f32")),
        };
        let opt = |v: Option<f64>| v.map(|x| format!("{x:.3e}")).unwrap_or_else(|| "-".into());
        println!(
            "svd dtype={dtype} rows={r} cols={c} runs={} nalgebra_secs={} nalgebra_predicted_secs={} \
             faer_seq_secs={:.6} faer_par_secs={:.6} faer_threads={threads} sv_rel_diff={} nalgebra_recon={} \
             faer_recon={:.3e} agree={}",
            row.runs,
            row.nalgebra.map(|s| format!("{s:.6}")).unwrap_or_else(|_| "-".into()),
            row.nalgebra.err().map(|p| format!("{p:.0}")).unwrap_or_else(|| "-".into()),
            row.faer_seq,
            row.faer_par,
            opt(row.sv_rel_diff),
            opt(row.nalgebra_recon),
            row.faer_recon,
            if row.ok { "yes" } else { "no" },
        );
        rows.push(row);
    }
    println!(
        "\n{dtype}: | shape | runs | nalgebra | faer 1 thread | faer {threads} threads | nalgebra / faer 1 thread | agree |"
    );
    for r in &rows {
        let (na, ratio) = match r.nalgebra {
            Ok(s) => (fmt_secs(s), format!("{:.1}×", s / r.faer_seq)),
            Err(p) => (format!("over {cap:.0} s (≈ {p:.0} s)"), "-".into()),
        };
        println!(
            "| {}×{} | {} | {na} | {} | {} | {ratio} | {} |",
            r.rows,
            r.cols,
            r.runs,
            fmt_secs(r.faer_seq),
            fmt_secs(r.faer_par),
            if r.ok { "yes" } else { "no" }
        );
    }
    Ok(rows.iter().all(|r| r.ok))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("svd-bench: the two crates disagree (see `agree=no`)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("svd-bench: {e}\nusage: svd-bench [--dtype f64|f32] [--runs N] [--cap-secs S] [SHAPE...]");
            ExitCode::from(2)
        }
    }
}
