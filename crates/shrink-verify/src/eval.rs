//! Accuracy on a dataset and agreement with a reference, in one streaming
//! pass: each batch goes through every model before the next batch is made.
//! A [`Reference`] keeps one model's logits instead, so that many models
//! judged one after another are compared with it without running it again.

use shrink_data::{Batch, Dataset};
use shrink_graph::{Model, summarize};

use crate::error::VerifyError;
use crate::judge::{Judge, Logits, top_k};
use crate::report::{AccuracyReport, AgreementReport, SizeReport};

/// Size figures of a model (from the IR; bytes of its inline ONNX encoding).
/// This exports the model; a caller that holds its bytes uses [`size_of_encoded`].
pub fn size(model: &Model) -> SizeReport {
    size_of_encoded(model, &model.to_bytes())
}

/// Size figures of `model`, whose inline ONNX encoding ([`Model::to_bytes`]) is `bytes`.
pub fn size_of_encoded(model: &Model, bytes: &[u8]) -> SizeReport {
    let s = summarize(model);
    SizeReport {
        onnx_bytes: bytes.len() as u64,
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

impl Tally {
    fn add(&mut self, logits: &Logits, labels: &[u32]) {
        for (i, &label) in labels.iter().enumerate() {
            let top = top_k(logits.row(i), 5);
            self.samples += 1;
            self.top1 += u64::from(top[0] == label as usize);
            self.top5 += u64::from(top.contains(&(label as usize)));
        }
    }

    fn report(&self, classes: usize) -> AccuracyReport {
        AccuracyReport {
            samples: self.samples,
            top1_correct: self.top1,
            top1: self.top1 as f64 / self.samples.max(1) as f64,
            top5: (classes > 5).then(|| self.top5 as f64 / self.samples.max(1) as f64),
        }
    }
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
            tallies[k].add(&logits, &buf.labels);
            match &first {
                None => first = Some(logits),
                Some(a) => agree[k].add(a, &logits),
            }
        }
        start += n;
        progress(start, total);
    }
    let accuracy = tallies.iter().map(|t| t.report(classes)).collect();
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

/// The inputs a [`Reference`] was run on.
enum Inputs<'d> {
    /// The first `total` samples of a dataset, in batches of `batch`.
    Data { data: &'d dyn Dataset, batch: usize, total: usize },
    /// `batches` seeded uniform [0, 1) batches of `batch` samples of input `shape`.
    Random { batch: usize, batches: usize, seed: u64, shape: Vec<usize> },
}

/// One model's logits over fixed inputs (a dataset, or seeded random
/// batches), computed once: [`Reference::compare`] then judges any number of
/// models against them with the same figures [`evaluate`] and
/// [`agreement_on_random`] give with the reference as judge 0, without
/// running the reference again.
pub struct Reference<'d> {
    inputs: Inputs<'d>,
    /// Per batch, in order.
    logits: Vec<Logits>,
    /// The reference's own accuracy (on a dataset).
    accuracy: Option<AccuracyReport>,
}

impl std::fmt::Debug for Reference<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reference").field("batches", &self.logits.len()).field("accuracy", &self.accuracy).finish()
    }
}

impl<'d> Reference<'d> {
    /// Runs `judge` over `data` (all of it, or the first `limit` samples) in
    /// batches of `batch`, as [`evaluate`] does.
    pub fn on_data(
        judge: &mut Judge,
        data: &'d dyn Dataset,
        batch: usize,
        limit: Option<usize>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Reference<'d>, VerifyError> {
        let total = limit.map_or(data.len(), |l| l.min(data.len()));
        let mut r = Reference { inputs: Inputs::Data { data, batch, total }, logits: Vec::new(), accuracy: None };
        let (accuracy, logits) = r.run(judge, &mut |_| Ok(()), progress)?;
        r.accuracy = accuracy;
        r.logits = logits;
        Ok(r)
    }

    /// Runs `judge` on `batches` seeded random batches of `batch` samples, as
    /// [`agreement_on_random`] does.
    pub fn on_random(
        judge: &mut Judge,
        batch: usize,
        batches: usize,
        seed: u64,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Reference<'d>, VerifyError> {
        let shape = judge.input_shape(batch);
        let inputs = Inputs::Random { batch, batches, seed, shape };
        let mut r = Reference { inputs, logits: Vec::new(), accuracy: None };
        let (_, logits) = r.run(judge, &mut |_| Ok(()), progress)?;
        r.logits = logits;
        Ok(r)
    }

    /// The reference's top-1/top-5 accuracy (`None` on random inputs).
    pub fn accuracy(&self) -> Option<&AccuracyReport> {
        self.accuracy.as_ref()
    }

    /// The reference's agreement with itself: what [`Reference::compare`]
    /// gives for a model with the same logits.
    pub fn self_agreement(&self) -> AgreementReport {
        let mut agree = Agree::default();
        for l in &self.logits {
            agree.add(l, l);
        }
        agree.report()
    }

    /// Runs `judge` over the reference's inputs: its accuracy (on a dataset)
    /// and its agreement with the reference.
    pub fn compare(
        &self,
        judge: &mut Judge,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<(Option<AccuracyReport>, AgreementReport), VerifyError> {
        let mut agree = Agree::default();
        let mut k = 0;
        let (accuracy, _) = self.run(
            judge,
            &mut |logits| {
                let reference = self.logits.get(k).filter(|r| r.batch == logits.batch).ok_or_else(|| {
                    VerifyError::Model { model: "reference".into(), reason: format!("has no logits for batch {k}") }
                })?;
                agree.add(reference, logits);
                k += 1;
                Ok(())
            },
            progress,
        )?;
        Ok((accuracy, agree.report()))
    }

    /// Runs `judge` over the inputs, batch by batch, handing each batch's
    /// logits to `each`; returns the accuracy (on a dataset) and, when
    /// nothing else wants them, the logits.
    fn run(
        &self,
        judge: &mut Judge,
        each: &mut dyn FnMut(&Logits) -> Result<(), VerifyError>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<(Option<AccuracyReport>, Vec<Logits>), VerifyError> {
        let keep = self.logits.is_empty();
        let mut kept = Vec::new();
        match self.inputs {
            Inputs::Data { data, batch, total } => {
                check_fit(judge, data)?;
                let classes = data.num_classes();
                let mut tally = Tally::default();
                let mut buf = Batch::default();
                let mut start = 0;
                while start < total {
                    let n = batch.min(total - start);
                    let idx: Vec<usize> = (start..start + n).collect();
                    data.batch_into(&idx, &mut buf)?;
                    let logits = judge.logits(&buf.inputs, n)?;
                    if logits.classes < classes {
                        return Err(VerifyError::Model {
                            model: judge.name().into(),
                            reason: format!("it gives {} logits, the dataset has {} classes", logits.classes, classes),
                        });
                    }
                    tally.add(&logits, &buf.labels);
                    each(&logits)?;
                    if keep {
                        kept.push(logits);
                    }
                    start += n;
                    progress(start, total);
                }
                Ok((Some(tally.report(classes)), kept))
            }
            Inputs::Random { batch, batches, seed, ref shape } => {
                if judge.input_shape(batch) != *shape {
                    return Err(VerifyError::Model {
                        model: judge.name().into(),
                        reason: format!("takes input {:?}, the reference takes {:?}", judge.input_shape(batch), shape),
                    });
                }
                let n: usize = shape.iter().product();
                let mut rng = shrink_data::SplitMix64::new(seed);
                for b in 0..batches {
                    let x: Vec<f32> = (0..n).map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32).collect();
                    let logits = judge.logits(&x, batch)?;
                    each(&logits)?;
                    if keep {
                        kept.push(logits);
                    }
                    progress((b + 1) * batch, batches * batch);
                }
                Ok((None, kept))
            }
        }
    }
}
