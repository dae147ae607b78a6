//! `shrink info`: a model at a glance, as tables or JSON.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use shrink_graph::{Model, ModelSummary, summarize};

pub(crate) fn run(path: &Path, json: bool) -> anyhow::Result<()> {
    let model = Model::load(path)?;
    let summary = summarize(&model);
    if json {
        println!("{}", serde_json::to_string_pretty(&summary).context("encoding JSON")?);
    } else {
        print!("{}", render(path, &summary));
    }
    Ok(())
}

/// Thousands separators: 266610 → "266,610".
pub(crate) fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn table(rows: &[Vec<String>], right: &[bool]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..cols).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            let w = widths[c];
            if right.get(c).copied().unwrap_or(false) {
                let _ = write!(line, "{cell:>w$}  ");
            } else {
                let _ = write!(line, "{cell:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub(crate) fn render(path: &Path, s: &ModelSummary) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "model     {}", path.display());
    let _ = writeln!(out, "producer  {}", if s.producer.is_empty() { "?" } else { &s.producer });
    let opsets: Vec<String> = s.opsets.iter().map(|(d, v)| format!("{d} {v}")).collect();
    let _ = writeln!(out, "ir        {}   opsets: {}", s.ir_version, opsets.join(", "));
    let shape = |v: &shrink_graph::ValueSummary| match &v.shape {
        Some(d) => format!("[{}]", d.join(", ")),
        None => "?".into(),
    };
    let mut rows = vec![vec!["".into(), "name".into(), "dtype".into(), "shape".into()]];
    for v in &s.inputs {
        rows.push(vec!["input".into(), v.name.clone(), v.dtype.clone(), shape(v)]);
    }
    for v in &s.outputs {
        rows.push(vec!["output".into(), v.name.clone(), v.dtype.clone(), shape(v)]);
    }
    out.push('\n');
    out.push_str(&table(&rows, &[]));
    let hist: Vec<String> = s.op_histogram.iter().map(|(op, n)| format!("{op} {n}")).collect();
    let _ = writeln!(out, "\nops ({} nodes): {}", s.nodes, hist.join(", "));
    let mut rows =
        vec![vec!["layer".into(), "op".into(), "weights".into(), "params".into(), "MACs".into(), "bytes".into()]];
    for l in &s.layers {
        let shapes: Vec<String> =
            l.weight_shapes.iter().map(|d| d.iter().map(ToString::to_string).collect::<Vec<_>>().join("x")).collect();
        rows.push(vec![
            l.name.clone(),
            l.op.clone(),
            shapes.join(" + "),
            group(l.params),
            match l.macs {
                Some(m) => group(m),
                // a MAC op whose shapes could not be derived, or an op that does none
                None if l.is_layer => "?".into(),
                None => "-".into(),
            },
            group(l.bytes),
        ]);
    }
    let macs = if s.macs_unknown > 0 {
        format!("{} (+{} layers unknown)", group(s.macs), s.macs_unknown)
    } else {
        group(s.macs)
    };
    rows.push(vec!["total".into(), "".into(), "".into(), group(s.params), macs, group(s.weight_bytes)]);
    out.push('\n');
    out.push_str(&table(&rows, &[false, false, false, true, true, true]));
    let _ = writeln!(
        out,
        "\nparameters {} ({} non-zero), weights {} bytes, MACs per sample {}",
        group(s.params),
        group(s.nonzero_params),
        group(s.weight_bytes),
        group(s.macs)
    );
    out
}
