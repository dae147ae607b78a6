//! `shrink sensitivity`: prune each layer alone by magnitude at a range of
//! ratios (no fine-tuning), measure test accuracy in tract, print the table
//! and draw the curves as SVG. The curves show which layers tolerate
//! pruning, to pick per-layer sparsities for a `prune` stage.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use shrink_data::{Dataset, Layout, Preprocess, Split};
use shrink_graph::{Model, NodeKind};
use shrink_verify::{InputSpec, Judge, evaluate};

#[derive(Debug, Args)]
pub(crate) struct SensitivityArgs {
    /// The ONNX model (never modified).
    model: PathBuf,
    /// A builtin dataset (`mnist`, `fashion-mnist`, `cifar10`); accuracy is measured on its test split.
    #[arg(long, default_value = "mnist")]
    data: String,
    /// Layer globs (matched against op and weight names; default: every Conv/Gemm/MatMul layer).
    #[arg(long, value_delimiter = ',', value_name = "GLOB,...")]
    layers: Vec<String>,
    /// Pruning ratios (fraction of the layer's weights set to zero).
    #[arg(long, value_delimiter = ',', value_name = "R,...", default_value = "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9")]
    ratios: Vec<f64>,
    /// Only the first N test samples.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Batch size of the accuracy passes.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Where to write the SVG (default: <model name>.sensitivity.svg in the current folder).
    #[arg(short, long, value_name = "OUT.svg")]
    output: Option<PathBuf>,
}

/// One layer's curve: accuracy at each ratio.
struct Curve {
    layer: String,
    params: usize,
    accuracy: Vec<f64>,
}

pub(crate) fn run(args: &SensitivityArgs) -> anyhow::Result<()> {
    if args.ratios.is_empty() || args.ratios.iter().any(|r| !(0.0..=1.0).contains(r)) {
        bail!("--ratios: every ratio must be in [0, 1]");
    }
    if args.batch == 0 {
        bail!("--batch must be positive");
    }
    let mut ratios = args.ratios.clone();
    ratios.sort_by(f64::total_cmp);
    ratios.dedup();
    let model = Model::load(&args.model).with_context(|| format!("loading {}", args.model.display()))?;
    let spec = InputSpec::default();
    let mut judge = Judge::new("original", &model, &spec)?;
    let pre = Preprocess { layout: Layout::for_sample(judge.sample_shape()), ..Preprocess::default() };
    let data = shrink_data::load_builtin(&args.data, Split::Test, &pre)
        .with_context(|| format!("--data {}: loading the test split", args.data))?;
    let samples = args.limit.map_or(data.len(), |l| l.min(data.len()));
    let sites = shrink_stage::select_weights("sensitivity", &model.graph, &[], &args.layers, &[], "--layers")?;
    if sites.is_empty() {
        bail!("the model has no Conv/Gemm/MatMul weight to prune");
    }
    let bar = ProgressBar::new((sites.len() * ratios.len() + 1) as u64);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed}]").expect("valid template"));
    bar.set_message("original");
    let accuracy = |m: &Model, judge: Option<&mut Judge>| -> anyhow::Result<f64> {
        let mut fresh;
        let j = match judge {
            Some(j) => j,
            None => {
                fresh = Judge::new("pruned", m, &spec)?;
                &mut fresh
            }
        };
        let r = evaluate(&mut [j], &data, args.batch, args.limit, &mut |_, _| {})?;
        bar.inc(1);
        Ok(r.accuracy[0].top1)
    };
    let base = accuracy(&model, Some(&mut judge))?;
    let mut curves = Vec::new();
    for site in &sites {
        let NodeKind::Weight(w) = model.graph.node(site.weight) else {
            bail!("`{}` is not an initializer", site.weight_name)
        };
        let values = w.tensor.to_f32()?;
        let layer = if site.op_name.is_empty() { site.weight_name.clone() } else { site.op_name.clone() };
        let mut acc = Vec::new();
        for &r in &ratios {
            bar.set_message(format!("{layer} at {:.0} %", r * 100.0));
            let mut m = model.clone();
            let mut v = values.clone();
            shrink_prune::prune_to_ratio(&mut v, r);
            shrink_graph::rewrite::set_weight_f32(&mut m.graph, site.weight, &v)?;
            acc.push(accuracy(&m, None)?);
        }
        curves.push(Curve { layer, params: values.len(), accuracy: acc });
    }
    bar.finish_and_clear();
    print!("{}", table(&ratios, base, &curves, &args.data, samples));
    let out = match &args.output {
        Some(p) => p.clone(),
        None => {
            let stem =
                args.model.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "model".into());
            PathBuf::from(format!("{stem}.sensitivity.svg"))
        }
    };
    let title = args.model.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    let svg = svg(&title, &ratios, base, &curves).map_err(|e| anyhow::anyhow!("drawing the SVG: {e}"))?;
    write_file(&out, svg.as_bytes())?;
    println!("wrote {}", out.display());
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn table(ratios: &[f64], base: f64, curves: &[Curve], data: &str, samples: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "top-1 accuracy (%) in tract on {samples} {data} test samples, each layer pruned alone by magnitude, no fine-tuning; unpruned: {:.2} %",
        base * 100.0
    );
    let _ = write!(out, "{:<24} {:>9}", "layer", "weights");
    for r in ratios {
        let _ = write!(out, " {:>6}", format!("{:.0}%", r * 100.0));
    }
    out.push('\n');
    for c in curves {
        let _ = write!(out, "{:<24} {:>9}", c.layer, c.params);
        for a in &c.accuracy {
            let _ = write!(out, " {:>6.2}", a * 100.0);
        }
        out.push('\n');
    }
    out
}

fn svg(title: &str, ratios: &[f64], base: f64, curves: &[Curve]) -> Result<String, String> {
    use plotters::prelude::*;
    fn e<E: std::fmt::Display>(e: E) -> String {
        e.to_string()
    }
    let lo = curves.iter().flat_map(|c| c.accuracy.iter().copied()).fold(base, f64::min) * 100.0;
    let ymin = (lo - (100.0 - lo) * 0.1).max(0.0);
    let xmax = ratios.iter().copied().fold(0.0, f64::max).max(0.1) * 100.0;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (800, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(e)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("pruning sensitivity: {title}"), ("sans-serif", 20))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..xmax, ymin..100.0)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("weights pruned in the layer (%)")
            .y_desc("top-1 accuracy (%)")
            .draw()
            .map_err(e)?;
        chart
            .draw_series(LineSeries::new([(0.0, base * 100.0), (xmax, base * 100.0)], BLACK.mix(0.4)))
            .map_err(e)?
            .label("unpruned")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK.mix(0.4)));
        for (i, c) in curves.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let pts: Vec<(f64, f64)> = std::iter::once((0.0, base * 100.0))
                .chain(ratios.iter().zip(&c.accuracy).map(|(r, a)| (r * 100.0, a * 100.0)))
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(e)?
                .label(c.layer.clone())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(e)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(e)?;
        root.present().map_err(e)?;
    }
    Ok(out)
}
