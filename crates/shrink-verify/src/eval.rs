//! Accuracy on a dataset and agreement with a reference, in one streaming
//! pass: each batch goes through every model before the next batch is made.

use shrink_data::{Batch, Dataset};
use shrink_graph::{Model, summarize};

use crate::error::VerifyError;
use crate::judge::{Judge, Logits, top_k};
use crate::report::{AccuracyReport, AgreementReport, SizeReport};

/// Size figures of a model (from the IR; bytes of its inline ONNX encoding).
pub fn size(model: &Model) -> SizeReport {
    let s = summarize(model);
    SizeReport {
        onnx_bytes: model.to_bytes().len() as u64,
        params: s.params,
        nonzero_params: s.nonzero_params,
        weight_bytes: s.weight_bytes,
    }
}

/// Checks that the dataset's samples have the shape the model takes.
pub fn check_fit(judge: &Judge, data: &dyn Dataset) -> Result<(), VerifyError> {
    if judge.sample_shape() != data.sample_shape() {
        return Err(VerifyError::DataShape {
            model: judge.name().into(),
            model_shape: judge.sample_shape().to_vec(),
            data_shape: data.sample_shape().to_vec(),
        });
    }
    Ok(())
}

/// Running tallies for one model.
#[derive(Debug, Default, Clone)]
struct Tally {
    samples: u64,
    top1: u64,
    top5: u64,
}

/// Running tallies of model `i` against model 0.
#[derive(Debug, Default, Clone)]
struct Agree {
    samples: u64,
    same_top1: u64,
    max_abs: f64,
    sum_abs: f64,
    values: u64,
}

impl Agree {
    fn add(&mut self, a: &Logits, b: &Logits) {
        for i in 0..a.batch {
            self.samples += 1;
            self.same_top1 += u64::from(a.argmax(i) == b.argmax(i));
        }
        for (x, y) in a.data.iter().zip(&b.data) {
            let d = (*x as f64 - *y as f64).abs();
            let d = if d.is_nan() { f64::INFINITY } else { d };
            self.max_abs = self.max_abs.max(d);
            self.sum_abs += d;
            self.values += 1;
        }
    }

    fn report(&self) -> AgreementReport {
        AgreementReport {
            samples: self.samples,
            top1_agreement: self.same_top1 as f64 / self.samples.max(1) as f64,
            max_abs_diff: self.max_abs,
            mean_abs_diff: self.sum_abs / self.values.max(1) as f64,
        }
    }
}

/// The result of [`evaluate`] for each judge, in order. Agreement is against
/// judge 0 (`None` for judge 0 itself).
#[derive(Debug, Clone)]
pub struct EvalResult {
    pub accuracy: Vec<AccuracyReport>,
    pub agreement: Vec<Option<AgreementReport>>,
}

/// Runs `data` (all of it, or the first `limit` samples) through every judge
/// in batches of `batch`, calling `progress(done, total)` after each batch.
pub fn evaluate(
    judges: &mut [&mut Judge],
    data: &dyn Dataset,
    batch: usize,
    limit: Option<usize>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<EvalResult, VerifyError> {
    for j in judges.iter() {
        check_fit(j, data)?;
    }
    let total = limit.map_or(data.len(), |l| l.min(data.len()));
    let classes = data.num_classes();
    let mut tallies = vec![Tally::default(); judges.len()];
    let mut agree = vec![Agree::default(); judges.len()];
    let mut buf = Batch::default();
    let mut start = 0;
    while start < total {
        let n = batch.min(total - start);
        let idx: Vec<usize> = (start..start + n).collect();
        data.batch_into(&idx, &mut buf)?;
        let mut first: Option<Logits> = None;
        for (k, j) in judges.iter_mut().enumerate() {
            let logits = j.logits(&buf.inputs, n)?;
            if logits.classes < classes {
                return Err(VerifyError::Model {
                    model: j.name().into(),
                    reason: format!("it gives {} logits, the dataset has {} classes", logits.classes, classes),
                });
            }
            let t = &mut tallies[k];
            for (i, &label) in buf.labels.iter().enumerate() {
                let top = top_k(logits.row(i), 5);
                t.samples += 1;
                t.top1 += u64::from(top[0] == label as usize);
                t.top5 += u64::from(top.contains(&(label as usize)));
            }
            match &first {
                None => first = Some(logits),
                Some(a) => agree[k].add(a, &logits),
            }
        }
        start += n;
        progress(start, total);
    }
    let accuracy = tallies
        .iter()
        .map(|t| AccuracyReport {
            samples: t.samples,
            top1_correct: t.top1,
            top1: t.top1 as f64 / t.samples.max(1) as f64,
            top5: (classes > 5).then(|| t.top5 as f64 / t.samples.max(1) as f64),
        })
        .collect();
    let agreement = agree.iter().enumerate().map(|(k, a)| (k > 0).then(|| a.report())).collect();
    Ok(EvalResult { accuracy, agreement })
}

/// Agreement of every judge with judge 0 on `batches` seeded random batches
/// (uniform [0, 1) inputs): for users with a model but no labelled data.
pub fn agreement_on_random(
    judges: &mut [&mut Judge],
    batch: usize,
    batches: usize,
    seed: u64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Option<AgreementReport>>, VerifyError> {
    let shape = judges[0].input_shape(batch);
    for j in judges.iter() {
        if j.input_shape(batch) != shape {
            return Err(VerifyError::Model {
                model: j.name().into(),
                reason: format!("takes input {:?}, the reference takes {:?}", j.input_shape(batch), shape),
            });
        }
    }
    let n: usize = shape.iter().product();
    let mut rng = shrink_data::SplitMix64::new(seed);
    let mut agree = vec![Agree::default(); judges.len()];
    for b in 0..batches {
        let x: Vec<f32> = (0..n).map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32).collect();
        let mut first: Option<Logits> = None;
        for (k, j) in judges.iter_mut().enumerate() {
            let logits = j.logits(&x, batch)?;
            match &first {
                None => first = Some(logits),
                Some(a) => agree[k].add(a, &logits),
            }
        }
        progress((b + 1) * batch, batches * batch);
    }
    Ok(agree.iter().enumerate().map(|(k, a)| (k > 0).then(|| a.report())).collect())
}
