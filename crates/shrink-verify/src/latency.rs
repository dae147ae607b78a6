//! Latency, measured the same way everywhere:
//!
//! - the input is a seeded uniform [0, 1) tensor of the model's input shape
//!   (latency of these classifiers does not depend on the values);
//! - the tract plan is built before timing; then warm-up: 3 runs and 0.2 s,
//!   or a single run when one round takes a second or more;
//! - then timed runs of one `run` call each, until every model has at least
//!   [`LatencyConfig::min_runs`] and [`LatencyConfig::min_seconds`] have passed
//!   (capped at `max_runs` / `max_seconds`);
//! - models measured together (`shrink compare`) are **interleaved**: round
//!   after round, each model runs once, in an order that alternates, so that
//!   machine noise and thermal drift hit both alike;
//! - the statistic is the median, with the 90th percentile beside it;
//! - threads: 1 (tract's default single-threaded executor), and all cores
//!   through tract's multithreaded matrix-multiply executor (rayon), which is
//!   where tract uses threads.

use std::time::{Duration, Instant};

use tract_onnx::prelude::Tensor;
use tract_onnx::tract_core::tract_linalg::multithread::{Executor, multithread_tract_scope};

use crate::error::VerifyError;
use crate::judge::Judge;
use crate::report::LatencyReport;

/// How long to measure.
#[derive(Debug, Clone)]
pub struct LatencyConfig {
    pub min_runs: usize,
    pub max_runs: usize,
    pub min_seconds: f64,
    pub max_seconds: f64,
}

impl Default for LatencyConfig {
    fn default() -> LatencyConfig {
        LatencyConfig { min_runs: 30, max_runs: 5000, min_seconds: 1.0, max_seconds: 10.0 }
    }
}

/// The number of threads "all cores" means here.
pub fn all_cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Measures every judge at `batch` with `threads`, interleaved.
pub fn measure(
    judges: &mut [&mut Judge],
    batch: usize,
    threads: usize,
    cfg: &LatencyConfig,
) -> Result<Vec<LatencyReport>, VerifyError> {
    let inputs: Vec<Tensor> = judges
        .iter()
        .map(|j| {
            let shape = j.input_shape(batch);
            let n: usize = shape.iter().product();
            let mut rng = shrink_data::SplitMix64::new(0x5EED ^ batch as u64);
            let data: Vec<f32> = (0..n).map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32).collect();
            Tensor::from_shape(&shape, &data).expect("shape and data agree")
        })
        .collect();
    for j in judges.iter_mut() {
        j.prepare(batch)?;
    }
    let executor = if threads > 1 { Executor::multithread(threads) } else { Executor::SingleThread };
    multithread_tract_scope(executor, || {
        let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); judges.len()];
        // warm-up
        let warm = Instant::now();
        for round in 0.. {
            let elapsed = warm.elapsed().as_secs_f64();
            if (round >= 3 && elapsed >= 0.2) || (round >= 1 && elapsed >= 1.0) {
                break;
            }
            for (j, x) in judges.iter_mut().zip(&inputs) {
                j.run_tensor(x.clone(), batch)?;
            }
        }
        let start = Instant::now();
        for round in 0usize.. {
            let elapsed = start.elapsed().as_secs_f64();
            let runs = samples.iter().map(Vec::len).min().unwrap_or(0);
            let enough = runs >= cfg.min_runs && elapsed >= cfg.min_seconds;
            if enough || runs >= cfg.max_runs || (elapsed >= cfg.max_seconds && runs >= 3) {
                break;
            }
            let n = judges.len();
            for k in 0..n {
                let i = if round % 2 == 0 { k } else { n - 1 - k };
                let x = inputs[i].clone();
                let t = Instant::now();
                judges[i].run_tensor(x, batch)?;
                samples[i].push(t.elapsed());
            }
        }
        Ok(samples
            .into_iter()
            .map(|mut s| {
                s.sort();
                let ms = |d: Duration| d.as_secs_f64() * 1e3;
                LatencyReport {
                    batch,
                    threads,
                    runs: s.len(),
                    median_ms: ms(percentile(&s, 0.5)),
                    p90_ms: ms(percentile(&s, 0.9)),
                }
            })
            .collect())
    })
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
