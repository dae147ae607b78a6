//! `shrink run`: a TOML pipeline, each stage verified in tract, with a
//! progress bar per phase.

use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use shrink_pipeline::{Pipeline, RunOptions};
use shrink_stage::Progress;

/// Draws the runner's and the stages' progress with indicatif (on stderr;
/// hidden when stderr is not a terminal).
#[derive(Debug, Default)]
pub(crate) struct Bars {
    bar: Option<ProgressBar>,
}

impl Progress for Bars {
    fn start(&mut self, phase: &str, total: u64) {
        self.finish();
        let bar = if total > 0 {
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template("{prefix} {bar:30} {pos}/{len} {msg} ({per_sec}, eta {eta})")
                    .expect("a valid template"),
            );
            b
        } else {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{spinner} {prefix} {msg} ({elapsed})").expect("a valid template"),
            );
            b.enable_steady_tick(std::time::Duration::from_millis(200));
            b
        };
        bar.set_prefix(phase.to_string());
        self.bar = Some(bar);
    }

    fn update(&mut self, done: u64, message: &str) {
        if let Some(b) = &self.bar {
            b.set_position(done);
            if !message.is_empty() {
                b.set_message(message.to_string());
            }
        }
    }

    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

pub(crate) fn run(path: &Path, set: &[String], opts: &RunOptions) -> anyhow::Result<()> {
    let pipeline = Pipeline::load(path, set)?;
    let registry = shrink_pipeline::builtin();
    let mut bars = Bars::default();
    let outcome = shrink_pipeline::run(&pipeline, &registry, opts, &mut bars);
    bars.finish();
    let outcome = outcome?;
    if opts.dry_run {
        println!(
            "{}: valid; {} stage(s) would run; output {}",
            path.display(),
            pipeline.file.stage.len(),
            outcome.output.display()
        );
        return Ok(());
    }
    if outcome.resumed > 0 {
        println!("resumed: {} finished stage(s) taken from checkpoints", outcome.resumed);
    }
    print!("{}", outcome.report.markdown());
    println!("\nwrote {}/model.onnx, report.json, report.md, report.svg, stages/", outcome.output.display());
    Ok(())
}
