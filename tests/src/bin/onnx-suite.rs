//! `onnx-suite DATA_DIR [--filter S] [--record FILE] [--jobs N] [--verbose]`: the ONNX
//! backend test data through shrink-graph, judged by tract.
//!
//! DATA_DIR is an unpacked `onnx/backend/test/data/` folder (`cargo xtask
//! onnx-suite` downloads and unpacks the one of onnx 1.22.0). Its groups
//! `node`, `pytorch-converted`, `pytorch-operator` and `simple` hold
//! `<test>/model.onnx` with `test_data_set_N/input_K.pb, output_K.pb`;
//! `light` holds `light_X.onnx` with `light_X_output_0.pb` only, and is fed
//! zeros of its declared input shapes. `real` only names download URLs (of
//! the `light` models) and is skipped.
//!
//! For every model: load it into the IR (`Model::from_bytes`; refused models
//! are listed with their error), save it again (`to_bytes`), run the original
//! bytes in tract on the test inputs (if tract cannot type the model so, once
//! more with the inputs folded in as constants) and, where tract runs them,
//! the round-tripped bytes on the same inputs, the same way. The two output lists must be
//! identical bit for bit. As extra information the original outputs are
//! compared with the expected `output_K.pb` within a tolerance.
//!
//! Exits non-zero when a round-tripped model differs or the loader panics.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use prost::Message;
use shrink_graph::onnx::{ModelProto, type_proto};
use shrink_verify::{
    Tensor, compare_close, compare_exact, run_onnx, run_onnx_folded, tensor_from_proto_bytes, zero_tensor,
};

/// The groups of the test data that are run, in this order.
const GROUPS: &[&str] = &["node", "pytorch-converted", "pytorch-operator", "simple", "light"];

const USAGE: &str = "usage: onnx-suite DATA_DIR [--filter S] [--record FILE] [--jobs N] [--verbose]";

struct Args {
    data_dir: PathBuf,
    filter: Option<String>,
    record: Option<PathBuf>,
    jobs: usize,
    verbose: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut data_dir = None;
    let mut filter = None;
    let mut record = None;
    let mut verbose = false;
    let mut jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |flag: &str| args.next().with_context(|| format!("{flag} needs a value\n{USAGE}"));
        match a.as_str() {
            "--filter" => filter = Some(value("--filter")?),
            "--record" => record = Some(PathBuf::from(value("--record")?)),
            "--jobs" => jobs = value("--jobs")?.parse().context("--jobs takes a number")?,
            "--verbose" => verbose = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            s if s.starts_with('-') => bail!("unknown option `{s}`\n{USAGE}"),
            s if data_dir.is_none() => data_dir = Some(PathBuf::from(s)),
            s => bail!("unexpected argument `{s}`\n{USAGE}"),
        }
    }
    let data_dir = data_dir.with_context(|| USAGE.to_string())?;
    Ok(Args { data_dir, filter, record, jobs: jobs.max(1), verbose })
}

/// One model of the test data and where its inputs and expected outputs are.
struct Case {
    /// `<group>/<name>`, the key of the record file.
    key: String,
    model: PathBuf,
    data: Data,
}

enum Data {
    /// `test_data_set_N` folders, in order of N.
    Sets(Vec<PathBuf>),
    /// No inputs given (the `light` models): zeros, and these expected outputs.
    Zeros { expected: Vec<PathBuf> },
}

fn collect_cases(data_dir: &Path) -> anyhow::Result<Vec<Case>> {
    let mut cases = Vec::new();
    for group in GROUPS {
        let dir = data_dir.join(group);
        if !dir.is_dir() {
            bail!("{} is not a folder: is {} an unpacked onnx/backend/test/data?", dir.display(), data_dir.display());
        }
        for entry in sorted_entries(&dir)? {
            let name = file_name(&entry);
            if *group == "light" {
                let Some(stem) = name.strip_suffix(".onnx") else { continue };
                let expected = numbered(&dir, &format!("{stem}_output_"));
                cases.push(Case { key: format!("{group}/{stem}"), model: entry, data: Data::Zeros { expected } });
            } else if entry.join("model.onnx").is_file() {
                let mut sets: Vec<(u64, PathBuf)> = sorted_entries(&entry)?
                    .into_iter()
                    .filter_map(|p| {
                        let n = file_name(&p).strip_prefix("test_data_set_")?.parse().ok()?;
                        Some((n, p))
                    })
                    .collect();
                sets.sort();
                let sets = sets.into_iter().map(|(_, p)| p).collect();
                cases.push(Case {
                    key: format!("{group}/{name}"),
                    model: entry.join("model.onnx"),
                    data: Data::Sets(sets),
                });
            }
        }
    }
    Ok(cases)
}

fn sorted_entries(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut v = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()?;
    v.sort();
    Ok(v)
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// `<prefix>0.pb`, `<prefix>1.pb`, ... as long as they exist.
fn numbered(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    (0..).map(|k| dir.join(format!("{prefix}{k}.pb"))).take_while(|p| p.is_file()).collect()
}

/// What happened to one model.
#[derive(Debug, Clone, PartialEq)]
enum Status {
    /// Loaded, ran in tract, and the round-tripped model gave identical outputs.
    Identical,
    /// Loaded, but tract does not run the original model.
    TractRefused(String),
    /// Our loader refused the model.
    Refused(String),
    /// The loader or the saver panicked.
    Panic(String),
    /// The round-tripped model's outputs differ from the original's.
    Differs(String),
}

impl Status {
    fn record(&self) -> String {
        match self {
            Status::Identical => "identical".into(),
            Status::TractRefused(_) => "tract-refused".into(),
            Status::Refused(r) => format!("refused: {}", one_line(r)),
            Status::Panic(r) => format!("PANIC: {}", one_line(r)),
            Status::Differs(r) => format!("DIFFERS: {}", one_line(r)),
        }
    }
}

fn one_line(s: &str) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > 300 { format!("{}...", s.chars().take(300).collect::<String>()) } else { s }
}

struct Outcome {
    key: String,
    status: Status,
    loaded: bool,
    /// The original bytes ran in tract (on every data set).
    tract_ran: bool,
    /// ... with the inputs folded in as constants.
    folded: bool,
    /// `to_bytes` gave back the original bytes exactly.
    bytes_identical: bool,
    /// The saved bytes are the original `ModelProto` re-encoded by prost.
    proto_identical: bool,
    /// Saving the reloaded model gave the same bytes again.
    resave_stable: bool,
    /// tract's outputs match the expected `output_K.pb` (None: not compared).
    expected_match: Option<bool>,
    /// Why the outputs are not within tolerance of the expected ones.
    expected_error: Option<String>,
}

thread_local! {
    /// The last panic of this thread, with its location (set by the panic hook).
    static LAST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f`, catching a panic as its message.
fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        LAST_PANIC.with(|p| p.borrow_mut().take()).unwrap_or_else(|| {
            payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into())
        })
    })
}

fn run_case(case: &Case) -> Outcome {
    let mut out = Outcome {
        key: case.key.clone(),
        status: Status::Identical,
        loaded: false,
        tract_ran: false,
        folded: false,
        bytes_identical: false,
        proto_identical: false,
        resave_stable: false,
        expected_match: None,
        expected_error: None,
    };
    let bytes = match std::fs::read(&case.model) {
        Ok(b) => b,
        Err(e) => {
            out.status = Status::Refused(format!("cannot read {}: {e}", case.model.display()));
            return out;
        }
    };

    // Load into the IR and save again.
    let round_tripped = match catch(|| shrink_graph::Model::from_bytes(&bytes).map(|m| m.to_bytes())) {
        Ok(Ok(rt)) => {
            out.loaded = true;
            Some(rt)
        }
        Ok(Err(e)) => {
            out.status = Status::Refused(format!("{e:#}"));
            None
        }
        Err(panic) => {
            out.status = Status::Panic(format!("loader or saver: {panic}"));
            None
        }
    };
    if let Some(rt) = &round_tripped {
        out.bytes_identical = *rt == bytes;
        // Re-encoding the decoded original with prost compares the content bit
        // for bit (a NaN in a float field included) whatever the original's
        // encoding choices (packed or not, field order) were.
        out.proto_identical =
            out.bytes_identical || ModelProto::decode(bytes.as_slice()).is_ok_and(|p| p.encode_to_vec() == *rt);
        out.resave_stable = out.bytes_identical
            || matches!(catch(|| shrink_graph::Model::from_bytes(rt).map(|m| m.to_bytes())), Ok(Ok(again)) if again == *rt);
    }

    // The original in tract, then the round trip on the same inputs.
    let data_sets = match data_sets(case, &bytes) {
        Ok(d) => d,
        Err(e) => {
            if out.loaded {
                out.status = Status::TractRefused(e);
            }
            return out;
        }
    };
    let mut all_ran = true;
    for (inputs, expected) in &data_sets {
        // tract types many models only with their inputs as constants (shapes,
        // axes, pads...): then both models run that way.
        let (original, folded) = match run_onnx(&bytes, inputs) {
            Ok(o) => (o, false),
            Err(plain) => match run_onnx_folded(&bytes, inputs) {
                Ok(o) => (o, true),
                Err(folded) => {
                    all_ran = false;
                    if out.loaded {
                        out.status = Status::TractRefused(format!("{plain} (inputs folded: {folded})"));
                    }
                    break;
                }
            },
        };
        out.folded |= folded;
        if let Some(expected) = expected {
            let result = compare_close(expected, &original);
            out.expected_match = Some(out.expected_match.unwrap_or(true) && result.is_ok());
            if let Err(e) = result {
                out.expected_error.get_or_insert(e.to_string());
            }
        }
        let Some(rt) = &round_tripped else { continue };
        let again = if folded { run_onnx_folded(rt, inputs) } else { run_onnx(rt, inputs) };
        match again {
            Err(e) => out.status = Status::Differs(format!("the round-tripped model fails in tract: {e}")),
            Ok(again) => {
                if let Err(e) = compare_exact(&original, &again) {
                    out.status = Status::Differs(e.to_string());
                }
            }
        }
        if matches!(out.status, Status::Differs(_)) {
            break;
        }
    }
    out.tract_ran = all_ran && !data_sets.is_empty();
    out
}

type DataSet = (Vec<Tensor>, Option<Vec<Tensor>>);

/// The inputs and expected outputs of every data set of a case.
fn data_sets(case: &Case, model_bytes: &[u8]) -> Result<Vec<DataSet>, String> {
    let proto = ModelProto::decode(model_bytes).map_err(|e| format!("not an ONNX model: {e}"))?;
    let graph = proto.graph.as_ref().ok_or("the model has no graph")?;
    let non_tensor = |infos: &[shrink_graph::onnx::ValueInfoProto]| {
        infos
            .iter()
            .find(|v| {
                !matches!(v.r#type.as_ref().and_then(|t| t.value.as_ref()), Some(type_proto::Value::TensorType(_)))
            })
            .map(|v| v.name.clone())
    };
    let inits: std::collections::HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<_> = graph.input.iter().filter(|i| !inits.contains(i.name.as_str())).cloned().collect();
    if let Some(name) = non_tensor(&inputs) {
        return Err(format!("input `{name}` is not a tensor"));
    }
    let outputs_are_tensors = non_tensor(&graph.output).is_none();
    let load = |files: &[PathBuf]| -> Result<Vec<Tensor>, String> {
        files
            .iter()
            .map(|f| {
                let bytes = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
                tensor_from_proto_bytes(&bytes).map_err(|e| format!("{}: {e}", file_name(f)))
            })
            .collect()
    };
    // Expected outputs are extra information: unreadable ones are not compared.
    let expected = |files: &[PathBuf]| if outputs_are_tensors { load(files).ok() } else { None };
    match &case.data {
        Data::Sets(sets) => {
            sets.iter().map(|set| Ok((load(&numbered(set, "input_"))?, expected(&numbered(set, "output_"))))).collect()
        }
        Data::Zeros { expected: files } => {
            let zeros = inputs
                .iter()
                .map(|i| {
                    let Some(type_proto::Value::TensorType(t)) = i.r#type.as_ref().and_then(|t| t.value.as_ref())
                    else {
                        unreachable!("checked above")
                    };
                    let shape: Vec<usize> = t
                        .shape
                        .iter()
                        .flat_map(|s| &s.dim)
                        .map(|d| match d.value {
                            Some(shrink_graph::onnx::tensor_shape_proto::dimension::Value::DimValue(v)) if v >= 0 => {
                                v as usize
                            }
                            _ => 1,
                        })
                        .collect();
                    zero_tensor(t.elem_type, &shape).map_err(|e| format!("input `{}`: {e}", i.name))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(vec![(zeros, expected(files))])
        }
    }
}

#[derive(Default)]
struct Counts {
    total: usize,
    loaded: usize,
    refused: usize,
    panics: usize,
    tract_runs: usize,
    folded: usize,
    identical: usize,
    tract_refused: usize,
    differing: usize,
    bytes_identical: usize,
    proto_differs: usize,
    resave_unstable: usize,
    expected_compared: usize,
    expected_match: usize,
}

impl Counts {
    fn add(&mut self, o: &Outcome) {
        self.total += 1;
        self.loaded += o.loaded as usize;
        self.tract_runs += o.tract_ran as usize;
        self.folded += (o.tract_ran && o.folded) as usize;
        self.bytes_identical += o.bytes_identical as usize;
        self.proto_differs += (o.loaded && !o.proto_identical) as usize;
        self.resave_unstable += (o.loaded && !o.resave_stable) as usize;
        if let Some(m) = o.expected_match {
            self.expected_compared += 1;
            self.expected_match += m as usize;
        }
        match o.status {
            Status::Identical => self.identical += 1,
            Status::TractRefused(_) => self.tract_refused += 1,
            Status::Refused(_) => self.refused += 1,
            Status::Panic(_) => self.panics += 1,
            Status::Differs(_) => self.differing += 1,
        }
    }

    fn lines(&self) -> Vec<String> {
        vec![
            format!(
                "total {}, loaded {}, refused {}, loader panics {}",
                self.total, self.loaded, self.refused, self.panics
            ),
            format!(
                "tract-runs {} (original model ran; {} of them with inputs folded as constants), identical {}, differing {}, tract-refused {} (loaded, not run by tract)",
                self.tract_runs, self.folded, self.identical, self.differing, self.tract_refused
            ),
            format!(
                "saved bytes identical to the original {}, content differs from the re-encoded original {}, re-save unstable {}",
                self.bytes_identical, self.proto_differs, self.resave_unstable
            ),
            format!(
                "tract outputs within tolerance of expected {} of {} compared",
                self.expected_match, self.expected_compared
            ),
        ]
    }
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let mut cases = collect_cases(&args.data_dir)?;
    if let Some(f) = &args.filter {
        cases.retain(|c| c.key.contains(f.as_str()));
    }
    if cases.is_empty() {
        bail!("no models to run (filter {:?})", args.filter);
    }
    // The `light` models are whole networks (VGG-19, ResNet-50...) that take
    // seconds each: start them first so that the small ones fill the gaps.
    cases.sort_by_key(|c| !c.key.starts_with("light/"));

    // Panics are caught and reported per model: keep them off the terminal.
    std::panic::set_hook(Box::new(|info| {
        LAST_PANIC.with(|p| *p.borrow_mut() = Some(info.to_string()));
    }));

    let start = Instant::now();
    let total = cases.len();
    eprintln!("onnx-suite: {total} models from {}, {} jobs", args.data_dir.display(), args.jobs);
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let outcomes = Mutex::new(Vec::with_capacity(total));
    std::thread::scope(|s| -> anyhow::Result<()> {
        let workers = (0..args.jobs.min(total))
            .map(|i| {
                std::thread::Builder::new().name(format!("onnx-suite-{i}")).stack_size(64 << 20).spawn_scoped(s, || {
                    loop {
                        let ix = next.fetch_add(1, Ordering::Relaxed);
                        let Some(case) = cases.get(ix) else { break };
                        let outcome = catch(|| run_case(case)).unwrap_or_else(|panic| Outcome {
                            key: case.key.clone(),
                            status: Status::Panic(format!("driver: {panic}")),
                            loaded: false,
                            tract_ran: false,
                            folded: false,
                            bytes_identical: false,
                            proto_identical: false,
                            resave_stable: false,
                            expected_match: None,
                            expected_error: None,
                        });
                        outcomes.lock().unwrap_or_else(|e| e.into_inner()).push(outcome);
                        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                        if n.is_multiple_of(100) || n == total {
                            eprintln!("[{n:>5}/{total}] {:.1}s", start.elapsed().as_secs_f64());
                        }
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for w in workers {
            if w.join().is_err() {
                bail!("a worker thread died");
            }
        }
        Ok(())
    })?;
    let elapsed = start.elapsed();
    let mut outcomes = outcomes.into_inner().unwrap_or_else(|e| e.into_inner());
    outcomes.sort_by(|a, b| a.key.cmp(&b.key));

    let mut counts = Counts::default();
    let mut per_group: BTreeMap<&str, Counts> = BTreeMap::new();
    for o in &outcomes {
        counts.add(o);
        per_group.entry(o.key.split('/').next().unwrap_or("")).or_default().add(o);
    }

    let list = |title: &str, pick: &dyn Fn(&Outcome) -> Option<String>| {
        let items: Vec<String> = outcomes.iter().filter_map(|o| pick(o).map(|r| format!("  {} {r}", o.key))).collect();
        if !items.is_empty() {
            println!("{title} ({}):", items.len());
            for i in items {
                println!("{i}");
            }
        }
    };
    if args.verbose {
        list("not run by tract", &|o| match &o.status {
            Status::TractRefused(r) => Some(one_line(r)),
            _ => None,
        });
    }
    if args.verbose {
        list("outside the tolerance of the expected outputs", &|o| o.expected_error.as_deref().map(one_line));
    }
    list("refused by the loader", &|o| match &o.status {
        Status::Refused(r) => Some(one_line(r)),
        _ => None,
    });
    list("PANICKED", &|o| match &o.status {
        Status::Panic(r) => Some(one_line(r)),
        _ => None,
    });
    list("DIFFER after the round trip", &|o| match &o.status {
        Status::Differs(r) => Some(one_line(r)),
        _ => None,
    });
    list("saved model differs from the re-encoded original", &|o| (o.loaded && !o.proto_identical).then(String::new));
    list("re-save unstable (save(load(save(m))) != save(m))", &|o| (o.loaded && !o.resave_stable).then(String::new));
    println!("per group:");
    for (g, c) in &per_group {
        println!(
            "  {g}: total {}, loaded {}, tract-runs {}, identical {}, differing {}",
            c.total, c.loaded, c.tract_runs, c.identical, c.differing
        );
    }
    for l in counts.lines() {
        println!("{l}");
    }
    println!("wall time {:.1}s", elapsed.as_secs_f64());

    if let Some(path) = &args.record {
        let mut text = String::new();
        text.push_str("# The ONNX backend test data of onnx==1.22.0 (groups: node, pytorch-converted,\n");
        text.push_str("# pytorch-operator, simple, light) loaded into the shrink-graph IR and saved\n");
        text.push_str("# again; both models run in tract on the test inputs, outputs compared bit for bit.\n");
        text.push_str("# Produced by `cargo xtask onnx-suite`; do not edit by hand.\n");
        for l in counts.lines() {
            text.push_str(&format!("# {l}\n"));
        }
        for o in &outcomes {
            text.push_str(&format!("{} {}\n", o.key, o.status.record()));
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("recorded {}", path.display());
    }

    if counts.differing > 0 || counts.panics > 0 {
        eprintln!("onnx-suite: FAILED: {} models differ, {} panicked", counts.differing, counts.panics);
        std::process::exit(1);
    }
    Ok(())
}
