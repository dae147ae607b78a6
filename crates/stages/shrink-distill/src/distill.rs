//! The `distill` stage: pick the teacher and the student, train the student
//! on the teacher's soft targets with the shared fine-tune loop, write its
//! weights back and hand it to the runner as the new model.

use std::cell::Cell;

use shrink_data::Dataset;
use shrink_graph::{Model, NodeKind, summarize};
use shrink_stage::{LayerNote, Stage, StageCx, StageError, StageReport};
use shrink_train::{Executor, HostTensor, Loss};
use tracing::{debug, info, instrument};

use crate::params::{DistillConfig, STAGE, StudentSpec, TeacherSpec};
use crate::student::{self, Interface};

/// Stage `distill`; see the crate docs.
#[derive(Debug, Clone)]
pub struct Distill {
    pub cfg: DistillConfig,
}

impl Distill {
    pub fn from_table(table: &toml::Table) -> Result<Distill, StageError> {
        Ok(Distill { cfg: DistillConfig::from_table(table)? })
    }
}

fn load(path: &std::path::Path, key: &str) -> Result<Model, StageError> {
    Model::load(path).map_err(|e| StageError::param(STAGE, key, format!("{}: {e}", path.display())))
}

fn executor(model: &Model, what: &str) -> Result<Executor, StageError> {
    Executor::new(model).map_err(|e| StageError::failed(STAGE, format!("{what}: {e}")))
}

/// The logits dims of `exec` on one sample of `data`.
fn probe(exec: &Executor, data: &dyn Dataset, what: &str) -> Result<Vec<usize>, StageError> {
    let batch = data.batch(&[0]).map_err(|e| StageError::failed(STAGE, format!("probing the {what}: {e}")))?;
    let out = exec
        .forward(&[HostTensor::new(batch.inputs, batch.shape)])
        .map_err(|e| StageError::failed(STAGE, format!("{what} on one training sample: {e}")))?;
    out.into_iter().next().map(|t| t.dims).ok_or_else(|| StageError::failed(STAGE, format!("the {what} has no output")))
}

/// The teacher's input and output value infos, with the data's sample shape and class count.
fn interface(teacher: &Model, data: &dyn Dataset, classes: usize) -> Result<Interface, StageError> {
    let g = &teacher.graph;
    let input = g.real_inputs().find_map(|id| match g.node(id) {
        NodeKind::Input(info) => Some(info.clone()),
        _ => None,
    });
    let output = g.outputs().first().and_then(|&id| match g.node(id) {
        NodeKind::Output(info) => Some(info.clone()),
        _ => None,
    });
    let (Some(input), Some(output)) = (input, output) else {
        return Err(StageError::failed(STAGE, "the teacher needs one graph input and one output"));
    };
    Ok(Interface { input, output, sample_shape: data.sample_shape().to_vec(), classes })
}

impl Stage for Distill {
    fn kind(&self) -> &str {
        STAGE
    }

    #[instrument(skip_all, fields(stage = STAGE))]
    fn run(&self, model: &mut Model, cx: &mut StageCx<'_>) -> Result<StageReport, StageError> {
        let cfg = &self.cfg;
        let train = cx.require_train(STAGE, "training the student")?;
        let teacher_model = match &cfg.teacher {
            TeacherSpec::Original => cx.original.clone(),
            TeacherSpec::Current => model.clone(),
            TeacherSpec::File(p) => load(p, "teacher")?,
        };
        let teacher = executor(&teacher_model, "teacher")?;
        let t_dims = probe(&teacher, train, "teacher")?;
        let classes = match t_dims.as_slice() {
            &[1, c] if c >= train.num_classes() => c,
            d => {
                return Err(StageError::failed(
                    STAGE,
                    format!("the teacher's logits are {d:?}, not [1, classes ≥ {}]", train.num_classes()),
                ));
            }
        };
        let seed = cfg.init_seed.unwrap_or(cx.seed);
        let mut student_model = match &cfg.student {
            StudentSpec::Current => model.clone(),
            StudentSpec::File(p) => load(p, "student")?,
            spec => student::build(spec, &interface(&teacher_model, train, classes)?, &teacher_model, seed)?,
        };
        let mut exec = executor(&student_model, "student")?;
        let s_dims = probe(&exec, train, "student")?;
        if s_dims != t_dims {
            return Err(StageError::failed(
                STAGE,
                format!("the student's logits {s_dims:?} differ from the teacher's {t_dims:?} on one sample"),
            ));
        }
        let t_params = summarize(&teacher_model).params;
        let s_params = summarize(&student_model).params;
        debug!(teacher = t_params, student = s_params, student_spec = cfg.student.describe(), "models ready");

        let loss = cfg.loss();
        let mut ft =
            cfg.finetune.to_finetune(cx.seed).map_err(|e| StageError::param(STAGE, "finetune", e.to_string()))?;
        ft.loss = loss;
        let teacher_ref = matches!(loss, Loss::Distill { .. }).then_some(&teacher);
        let fc = &cfg.finetune;
        let progress = &mut *cx.progress;
        progress.start("distill", fc.total_steps(train.len()) as u64);
        let last_val: Cell<Option<f64>> = Cell::new(None);
        let first_loss: Cell<Option<f32>> = Cell::new(None);
        let report = fc
            .run(
                &ft,
                &mut exec,
                train,
                teacher_ref,
                &mut |done, total, l| {
                    if done == 1 {
                        first_loss.set(Some(l));
                    }
                    if done % 20 == 0 || done == total {
                        let val =
                            last_val.get().map(|v| format!(", validation {:.2} %", v * 100.0)).unwrap_or_default();
                        progress.update(done as u64, &format!("loss {l:.4}{val}"));
                    }
                },
                &mut |e| {
                    last_val.set(e.val_accuracy);
                    debug!(epoch = e.epoch, loss = e.mean_loss, val = ?e.val_accuracy, "distill: epoch done");
                },
            )
            .map_err(|e| StageError::failed(STAGE, format!("training the student: {e}")))?;
        progress.finish();
        exec.write_back(&mut student_model.graph).map_err(|e| StageError::failed(STAGE, format!("write-back: {e}")))?;
        student_model.graph.verify().map_err(|e| StageError::graph(STAGE, e))?;

        let val = report.best_val_accuracy.or(report.epochs.last().and_then(|e| e.val_accuracy));
        let ratio = t_params as f64 / s_params.max(1) as f64;
        let how = match loss {
            Loss::Distill { alpha, temperature } => format!("distilled (alpha {alpha}, T {temperature})"),
            _ => "hard labels only (alpha 0)".to_string(),
        };
        let summary = format!(
            "student {}: {s_params} parameters ({ratio:.1}× fewer than the teacher's {t_params}), {how}, {} steps{}",
            cfg.student.describe(),
            report.steps,
            val.map(|v| format!(", validation {:.2} %", v * 100.0)).unwrap_or_default()
        );
        info!("{summary}");
        let layers = summarize(&student_model)
            .layers
            .into_iter()
            .filter(|l| l.params > 0)
            .map(|l| LayerNote {
                layer: l.name.clone(),
                note: format!("{} {:?}", l.op, l.weight_shapes),
                figures: [("params".to_string(), l.params as f64)]
                    .into_iter()
                    .chain(l.macs.map(|m| ("macs".to_string(), m as f64)))
                    .collect(),
            })
            .collect();
        let mut rep = StageReport::new(summary)
            .figure("teacher_params", t_params as f64)
            .figure("student_params", s_params as f64)
            .figure("param_ratio", ratio)
            .figure("alpha", cfg.alpha as f64)
            .figure("temperature", cfg.temperature as f64)
            .figure("steps", report.steps as f64);
        if let Some(v) = val {
            rep = rep.figure("val_accuracy", v);
        }
        // the loss of the first step (before any update): lets a test check the loss the stage trains with
        if let Some(l) = first_loss.get() {
            rep = rep.figure("first_step_loss", l as f64);
        }
        if let Some(e) = report.epochs.last() {
            rep = rep.figure("last_epoch_loss", e.mean_loss);
        }
        rep.layers = layers;
        *model = student_model;
        Ok(rep)
    }
}
