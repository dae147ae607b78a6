//! `shrink finetune`: train a model's weights on a dataset with the trainer
//! (burn), write them back into the ONNX model, and measure the result in tract.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use shrink_data::{Augment, Dataset, Holdout, Layout, Preprocess, Split, Subset, train_val_split};
use shrink_graph::Model;
use shrink_train::{EpochInfo, Executor, FineTune, LrPlan, LrSchedule, OptimizerKind, StepInfo};
use shrink_verify::{InputSpec, Judge, evaluate};

#[derive(Debug, Args)]
pub(crate) struct FinetuneArgs {
    /// The ONNX model to train (never overwritten).
    model: PathBuf,
    /// Where to write the trained model.
    #[arg(short, long, value_name = "OUT.onnx")]
    output: PathBuf,
    /// A builtin dataset: `mnist`, `fashion-mnist` or `cifar10` (train split to train, test split to measure).
    #[arg(long, default_value = "mnist")]
    data: String,
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Base learning rate.
    #[arg(long, default_value_t = 0.01)]
    lr: f64,
    #[arg(long, value_enum, default_value = "cosine")]
    schedule: ScheduleArg,
    #[arg(long, value_enum, default_value = "sgd")]
    optimizer: OptimizerArg,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Training samples held out for validation each epoch (the best epoch is kept).
    #[arg(long, default_value_t = 5000)]
    validation: usize,
    /// Stop when validation accuracy has not improved for this many epochs.
    #[arg(long)]
    patience: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Shift each training image by up to this many pixels each way (0: none; image models only).
    #[arg(long, default_value_t = 0, value_name = "PIXELS")]
    augment_shift: usize,
    /// Mirror half of the training images left-right (image models only).
    #[arg(long)]
    augment_flip: bool,
    /// BatchNormalization while training: `frozen` keeps the running
    /// statistics (an affine map whose scale and shift train); `batch`
    /// normalises by each batch's statistics and updates the running ones,
    /// as PyTorch's `train()` (the written model uses the running ones).
    #[arg(long, value_enum, default_value = "frozen")]
    batchnorm: BatchNormArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BatchNormArg {
    Frozen,
    Batch,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ScheduleArg {
    Constant,
    Cosine,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OptimizerArg {
    Sgd,
    Adam,
    Adamw,
}

struct Bar {
    bar: ProgressBar,
}

impl shrink_train::Progress for Bar {
    fn step(&mut self, info: &StepInfo) {
        if self.bar.length() != Some(info.total_steps as u64) {
            self.bar.set_length(info.total_steps as u64);
        }
        self.bar.set_position(info.step as u64);
        self.bar.set_message(format!("epoch {} loss {:.4} lr {:.4}", info.epoch + 1, info.loss, info.lr));
    }
    fn epoch(&mut self, info: &EpochInfo) {
        let val = info.val_accuracy.map(|a| format!(", validation {:.2} %", a * 100.0)).unwrap_or_default();
        self.bar.println(format!(
            "epoch {}: mean loss {:.4}{val} ({:.1} s)",
            info.epoch + 1,
            info.mean_loss,
            info.seconds
        ));
    }
}

fn tract_accuracy(name: &str, model: &Model, test: &dyn Dataset) -> anyhow::Result<(f64, u64)> {
    let mut judge = Judge::new(name, model, &InputSpec::default())?;
    let res = evaluate(&mut [&mut judge], test, 256, None, &mut |_, _| {})?;
    Ok((res.accuracy[0].top1, res.accuracy[0].samples))
}

pub(crate) fn run(a: &FinetuneArgs) -> anyhow::Result<()> {
    let mut model = Model::load(&a.model)?;
    if let (Ok(x), Ok(y)) = (a.model.canonicalize(), a.output.canonicalize()) {
        anyhow::ensure!(
            x != y,
            "{}: refusing to overwrite the input model; choose another --output",
            a.output.display()
        );
    }
    let mut exec = Executor::new(&model).with_context(|| format!("{}: building the trainer", a.model.display()))?;
    let judge = Judge::new("model", &model, &InputSpec::default())?;
    let layout = Layout::for_sample(judge.sample_shape());
    let pre = Preprocess { layout, ..Preprocess::default() };
    let train_all = std::sync::Arc::new(shrink_data::load_builtin(&a.data, Split::Train, &pre)?);
    let test = shrink_data::load_builtin(&a.data, Split::Test, &pre)?;
    let split = train_val_split(train_all.len(), Holdout::Count(a.validation), a.seed)?;
    let train = Subset::new(train_all.clone(), split.train)?;
    let val = if split.validation.is_empty() { None } else { Some(Subset::new(train_all.clone(), split.validation)?) };
    let (before, n) = tract_accuracy("before", &model, &test)?;
    let optimizer = match a.optimizer {
        OptimizerArg::Sgd => OptimizerKind::Sgd {
            momentum: a.momentum,
            dampening: 0.0,
            nesterov: a.momentum > 0.0,
            weight_decay: a.weight_decay,
        },
        OptimizerArg::Adam => {
            OptimizerKind::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: a.weight_decay as f32 }
        }
        OptimizerArg::Adamw => {
            OptimizerKind::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: a.weight_decay as f32 }
        }
    };
    let schedule = match a.schedule {
        ScheduleArg::Constant => LrSchedule::Constant,
        ScheduleArg::Cosine => LrSchedule::Cosine { min_lr: 0.0 },
    };
    let ft = FineTune {
        epochs: a.epochs,
        batch_size: a.batch,
        seed: a.seed,
        lr: LrPlan { base: a.lr, schedule, warmup_steps: 0 },
        optimizer,
        patience: a.patience,
        augment: Augment { shift: a.augment_shift, flip: a.augment_flip },
        ..FineTune::default()
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("train {bar:30} {pos}/{len} steps {msg} ({per_sec}, eta {eta})")
            .expect("a valid template"),
    );
    let mut progress = Bar { bar };
    exec.set_batchnorm(match a.batchnorm {
        BatchNormArg::Frozen => shrink_train::BatchNormMode::Frozen,
        BatchNormArg::Batch => shrink_train::BatchNormMode::Batch,
    });
    let report = ft.run(&mut exec, &train, val.as_ref().map(|v| v as &dyn Dataset), None, &mut progress)?;
    progress.bar.finish_and_clear();
    exec.write_back(&mut model.graph)?;
    model.graph.verify()?;
    let (after, _) = tract_accuracy("after", &model, &test)?;
    save(&model, &a.output)?;
    println!(
        "{} steps; test top-1 in tract: {:.2} % → {:.2} % on {n} {} test samples{}",
        report.steps,
        before * 100.0,
        after * 100.0,
        a.data,
        report.best_epoch.map(|e| format!(" (kept epoch {})", e + 1)).unwrap_or_default()
    );
    println!("wrote {}", a.output.display());
    Ok(())
}

fn save(model: &Model, path: &Path) -> anyhow::Result<()> {
    Ok(model.save(path)?)
}
