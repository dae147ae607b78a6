//! The accuracy-vs-mean-cost curve as an SVG (plotters, as in the pipeline's report.svg).

use crate::policy::Calibration;

/// The sweep of one shared threshold, the chosen point marked.
pub fn curve_svg(cal: &Calibration, policy: &str) -> Result<String, String> {
    use plotters::prelude::*;
    fn e<E: std::fmt::Display>(e: E) -> String {
        e.to_string()
    }
    let pts: Vec<(f64, f64)> = cal.curve.iter().map(|p| (p.mean_cost, p.accuracy * 100.0)).collect();
    let chosen = (cal.chosen.mean_cost, cal.chosen.accuracy * 100.0);
    let all = pts.iter().chain([&chosen]);
    let (lo, hi) = all.fold((f64::MAX, f64::MIN), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    let pad = ((hi - lo) * 0.1).max(0.1);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(e)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("early exit ({policy}): accuracy vs mean cost"), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..1.05f64, (lo - pad)..(hi + pad))
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("mean MACs / full model (calibration split)")
            .y_desc("top-1 accuracy (%)")
            .draw()
            .map_err(e)?;
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), &BLUE))
            .map_err(e)?
            .label("one threshold at every exit")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE));
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, BLUE.filled()))).map_err(e)?;
        let final_acc = cal.final_accuracy * 100.0;
        chart
            .draw_series(LineSeries::new([(0.0, final_acc), (1.05, final_acc)], &BLACK))
            .map_err(e)?
            .label("final exit alone")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK));
        chart
            .draw_series([EmptyElement::at(chosen)
                + Circle::new((0, 0), 6, RED.filled())
                + Text::new(format!("chosen: {:.2} %, cost {:.3}", chosen.1, chosen.0), (8, 8), ("sans-serif", 12))])
            .map_err(e)?;
        chart.configure_series_labels().background_style(WHITE).border_style(BLACK).draw().map_err(e)?;
        root.present().map_err(e)?;
    }
    Ok(svg)
}
