//! The run's report: one row per model state (the original, then each
//! stage), as `report.json`, a Markdown table (`report.md`) and an SVG plot
//! of accuracy against size and latency (`report.svg`).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use shrink_stage::StageReport;
use shrink_verify::{AgreementReport, LatencyReport, SizeReport};

/// The stage figure naming the bytes of a container the stage stored the
/// model in (the huffman stage's `.shrink`); the report shows it as the row's size.
pub const STORED_BYTES: &str = "stored_bytes";

/// What tract measured about one model state, and what the stage said.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Row {
    /// 0 for the original model, then the 1-based stage number.
    pub step: usize,
    /// `original` or the stage kind.
    pub kind: String,
    /// Top-1 accuracy on the test data (a fraction), when there is test data.
    pub accuracy: Option<f64>,
    pub samples: Option<u64>,
    /// Agreement with the original model (test data, or seeded random inputs).
    pub agreement: Option<AgreementReport>,
    pub nodes: usize,
    pub size: SizeReport,
    /// Latency of this state at each batch size (1 thread).
    pub latency: Vec<LatencyReport>,
    /// This state's median latency / the original's, measured in the same
    /// interleaved run, per batch size.
    pub latency_ratio: Vec<(usize, f64)>,
    /// The stage's own report (none for the original).
    pub stage: Option<StageReport>,
    /// Seconds the stage ran (not counting verification).
    pub seconds: f64,
    /// The checkpoint hash (see the runner's docs).
    pub hash: String,
}

impl Row {
    /// The size of the file a stage stored the model in, when it stored it in
    /// its own container (the huffman stage's `.shrink` reports
    /// `stored_bytes`): that file is what a user ships.
    pub fn stored_bytes(&self) -> Option<u64> {
        self.stage.as_ref().and_then(|s| s.figures.get(STORED_BYTES)).map(|&b| b as u64)
    }

    /// The size this state is reported at, in the table (marked † when
    /// stored) and on the plot: the stored file's, else the ONNX file's.
    pub fn shown_bytes(&self) -> u64 {
        self.stored_bytes().unwrap_or(self.size.onnx_bytes)
    }
}

/// The whole run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub pipeline: String,
    pub model: String,
    pub seed: u64,
    /// What accuracy was measured on (`mnist test`, ...), if anything.
    pub data: Option<String>,
    pub rows: Vec<Row>,
}

fn pct(x: Option<f64>) -> String {
    x.map(|v| format!("{:.2} %", v * 100.0)).unwrap_or_else(|| "-".into())
}

impl Report {
    /// The Markdown report: one table row per state.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# {}\n", self.pipeline);
        let _ = writeln!(out, "Model `{}`, seed {}. Every figure measured by tract.", self.model, self.seed);
        match &self.data {
            Some(d) => {
                let _ = writeln!(
                    out,
                    "Accuracy: top-1 on {d}; agreement: top-1 agreement with the original on the same data.\n"
                );
            }
            None => {
                let _ = writeln!(out, "No test data: agreement with the original on seeded random inputs.\n");
            }
        }
        let batches: Vec<usize> =
            self.rows.first().map(|r| r.latency.iter().map(|l| l.batch).collect()).unwrap_or_default();
        let mut header = String::from(
            "| step | stage | accuracy | Δ pp | agreement | max abs diff | nodes | params | non-zeros | bytes | ratio |",
        );
        let mut rule = String::from("|---|---|---|---|---|---|---|---|---|---|---|");
        for b in &batches {
            let _ = write!(header, " b{b} ms | b{b} ratio |");
            rule.push_str("---|---|");
        }
        let _ = writeln!(out, "{header}\n{rule}");
        let base = self.rows.first();
        for r in &self.rows {
            let delta = match (r.accuracy, base.and_then(|b| b.accuracy)) {
                (Some(a), Some(b)) => format!("{:+.2}", (a - b) * 100.0),
                _ => "-".into(),
            };
            let stored = r.stored_bytes();
            let bytes = r.shown_bytes();
            let ratio = base.map(|b| bytes as f64 / b.size.onnx_bytes.max(1) as f64).unwrap_or(1.0);
            let (agree, diff) = match &r.agreement {
                Some(a) => (format!("{:.2} %", a.top1_agreement * 100.0), format!("{:.2e}", a.max_abs_diff)),
                None => ("-".into(), "-".into()),
            };
            let _ = write!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.3}x |",
                r.step,
                r.kind,
                pct(r.accuracy),
                delta,
                agree,
                diff,
                r.nodes,
                r.size.params,
                r.size.nonzero_params,
                if stored.is_some() { format!("{bytes} †") } else { bytes.to_string() },
                ratio
            );
            for b in &batches {
                let l = r.latency.iter().find(|l| l.batch == *b);
                let q = r.latency_ratio.iter().find(|(x, _)| x == b);
                let _ = write!(
                    out,
                    " {} | {} |",
                    l.map(|l| format!("{:.3}", l.median_ms)).unwrap_or_else(|| "-".into()),
                    q.map(|(_, q)| format!("{q:.2}x")).unwrap_or_else(|| "-".into())
                );
            }
            out.push('\n');
        }
        let _ = writeln!(out);
        if self.rows.iter().any(|r| r.stage.as_ref().is_some_and(|s| s.figures.contains_key(STORED_BYTES))) {
            let _ = writeln!(
                out,
                "† the size of the file the stage stored the model in (e.g. `model.shrink`); `shrink unpack` gives back the ONNX model measured in that row.\n"
            );
        }
        for r in self.rows.iter().filter(|r| r.stage.is_some()) {
            let s = r.stage.as_ref().expect("filtered");
            let _ = writeln!(out, "- step {} `{}`: {}", r.step, r.kind, s.summary);
            for w in &s.warnings {
                let _ = writeln!(out, "  - **warning**: {w}");
            }
            for l in &s.layers {
                let _ = writeln!(out, "  - {}: {}", l.layer, l.note);
            }
        }
        out
    }

    /// The SVG plot: accuracy (or agreement) against size ratio, one point per
    /// step, and batch-1 latency ratio against size ratio beside it. A step's
    /// size is the one its table row shows (the stored file's, where the stage
    /// stored the model in one, e.g. `.shrink`); the size axis is logarithmic,
    /// so a 40× smaller file and an unchanged one both stay readable.
    pub fn svg(&self) -> Result<String, String> {
        use plotters::prelude::*;
        let base = self.rows.first().ok_or("no rows")?;
        let base_bytes = base.shown_bytes().max(1) as f64;
        let points: Vec<(f64, f64, f64, String)> = self
            .rows
            .iter()
            .map(|r| {
                let size = (r.shown_bytes() as f64 / base_bytes).max(1e-6);
                let quality = r.accuracy.or(r.agreement.as_ref().map(|a| a.top1_agreement)).unwrap_or(1.0);
                let lat = r.latency_ratio.first().map(|(_, q)| *q).unwrap_or(1.0);
                (size, quality, lat, format!("{} {}", r.step, r.kind))
            })
            .collect();
        let metric = if self.data.is_some() { "top-1 accuracy" } else { "top-1 agreement" };
        fn e<E: std::fmt::Display>(e: E) -> String {
            e.to_string()
        }
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (960, 420)).into_drawing_area();
            root.fill(&WHITE).map_err(e)?;
            let (left, right) = root.split_horizontally(480);
            let xmax = points.iter().map(|p| p.0).fold(1.0f64, f64::max) * 1.5;
            // down to the decade below the smallest size, so that it has a tick under it
            let xmin = 10f64.powf(points.iter().map(|p| p.0).fold(1.0f64, f64::min).log10().floor() - 1e-9);
            let tick = |x: &f64| {
                let s = format!("{x:.4}");
                s.trim_end_matches('0').trim_end_matches('.').to_string()
            };
            let (qmin, qmax) = points.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
            let pad = ((qmax - qmin) * 0.2).max(0.002);
            let mut chart = ChartBuilder::on(&left)
                .caption(format!("{metric} vs size"), ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d((xmin..xmax).log_scale(), (qmin - pad)..(qmax + pad).min(1.0 + pad))
                .map_err(e)?;
            chart
                .configure_mesh()
                .x_label_formatter(&tick)
                .x_desc("size / original (log)")
                .y_desc(metric)
                .draw()
                .map_err(e)?;
            chart.draw_series(LineSeries::new(points.iter().map(|p| (p.0, p.1)), &BLUE)).map_err(e)?;
            chart
                .draw_series(points.iter().map(|p| {
                    EmptyElement::at((p.0, p.1))
                        + Circle::new((0, 0), 4, BLUE.filled())
                        + Text::new(p.3.clone(), (6, -12), ("sans-serif", 12))
                }))
                .map_err(e)?;
            let lmax = points.iter().map(|p| p.2).fold(1.0f64, f64::max) * 1.2;
            let mut chart = ChartBuilder::on(&right)
                .caption("latency vs size (first batch size)", ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d((xmin..xmax).log_scale(), 0f64..lmax)
                .map_err(e)?;
            chart
                .configure_mesh()
                .x_label_formatter(&tick)
                .x_desc("size / original (log)")
                .y_desc("latency / original")
                .draw()
                .map_err(e)?;
            chart.draw_series(LineSeries::new(points.iter().map(|p| (p.0, p.2)), &RED)).map_err(e)?;
            chart
                .draw_series(points.iter().map(|p| {
                    EmptyElement::at((p.0, p.2))
                        + Circle::new((0, 0), 4, RED.filled())
                        + Text::new(p.3.clone(), (6, -12), ("sans-serif", 12))
                }))
                .map_err(e)?;
            root.present().map_err(e)?;
        }
        Ok(svg)
    }
}
