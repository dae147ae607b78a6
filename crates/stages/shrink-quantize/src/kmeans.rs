//! `method = "kmeans"`: Deep Compression's weight sharing (Han et al. 2016,
//! §3). Per layer, the (non-zero) weights are clustered into k = 2^bits
//! centroids by 1-D k-means; every weight becomes its centroid; then the
//! centroids are fine-tuned with the trainer's tied-weight hook (each
//! centroid gets the sum of its members' gradients) while pruned zeros stay
//! exactly zero. The export is the dense de-quantised f32 weights: every
//! weight equals one of its layer's ≤ 2^bits centroids exactly, so a later
//! Huffman stage can read the codebook off the distinct values.
//!
//! The 1-D k-means is written here rather than taken from a crate: on a line,
//! with the values sorted once (O(n log n)), each cluster is a contiguous run
//! of the sorted values between midpoints of neighbouring centroids, so one
//! Lloyd iteration is k binary searches and k prefix-sum means (O(k log n))
//! and the result is the exact Lloyd fixed point. The k-means crates (linfa,
//! kmeans) are general n-D, pull in ndarray/BLAS-sized dependencies, and do
//! not offer the paper's linear initialisation.

use shrink_data::SplitMix64;
use shrink_graph::builder::attr_int;
use shrink_graph::{DataType, Graph, Model, Op, Tensor, ValueRef};
use shrink_stage::{LayerNote, Stage, StageCx, StageError, StageReport, WeightSite, glob_match, select_weights};
use shrink_train::{Executor, FineTuneConfig};
use tracing::{debug, info, instrument};

use crate::KIND;
use crate::common::{dedup_sites, error_stats, finetune, finetune_note, set_weight_values, train_err, weight_values};
use crate::params::{Export, Init, KmeansParams, from_table};

/// Result of clustering one set of values.
#[derive(Debug, Clone, PartialEq)]
pub struct Clusters {
    /// Sorted, distinct, each with at least one member.
    pub centroids: Vec<f32>,
    /// For each input value, the index of its centroid.
    pub assignment: Vec<u32>,
    /// Lloyd iterations run.
    pub iterations: usize,
}

/// 1-D k-means of `values` into at most `k` clusters (fewer when there are
/// fewer distinct values or a cluster ends up empty). Deterministic for a seed.
pub fn kmeans_1d(values: &[f32], k: usize, init: Init, seed: u64, max_iter: usize) -> Clusters {
    let n = values.len();
    if n == 0 || k == 0 {
        return Clusters { centroids: Vec::new(), assignment: vec![0; n], iterations: 0 };
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let xs: Vec<f64> = order.iter().map(|&i| values[i] as f64).collect();
    let mut prefix = vec![0f64; n + 1];
    for (i, &x) in xs.iter().enumerate() {
        prefix[i + 1] = prefix[i] + x;
    }
    let (lo, hi) = (xs[0], xs[n - 1]);
    let mut c: Vec<f64> = match init {
        _ if k == 1 || lo == hi => vec![prefix[n] / n as f64],
        Init::Linear => (0..k).map(|j| lo + (hi - lo) * j as f64 / (k - 1) as f64).collect(),
        Init::Density => (0..k).map(|j| xs[((j as f64 + 0.5) / k as f64 * n as f64) as usize % n]).collect(),
        Init::Random => {
            // Forgy: k distinct values drawn without replacement
            let mut pool = xs.clone();
            pool.dedup();
            let mut rng = SplitMix64::new(seed);
            let take = k.min(pool.len());
            for i in 0..take {
                let j = i + rng.below((pool.len() - i) as u64) as usize;
                pool.swap(i, j);
            }
            pool.truncate(take);
            pool
        }
    };
    c.sort_by(f64::total_cmp);
    c.dedup();
    // cluster j holds the sorted values in starts[j]..starts[j + 1]
    let bounds = |c: &[f64]| -> Vec<usize> {
        let mut s = Vec::with_capacity(c.len() + 1);
        s.push(0);
        for w in c.windows(2) {
            let mid = 0.5 * (w[0] + w[1]);
            s.push(xs.partition_point(|&x| x < mid));
        }
        s.push(n);
        s
    };
    let mut starts = bounds(&c);
    let mut iterations = 0;
    while iterations < max_iter {
        iterations += 1;
        for j in 0..c.len() {
            let (a, b) = (starts[j], starts[j + 1]);
            if b > a {
                c[j] = (prefix[b] - prefix[a]) / (b - a) as f64;
            }
        }
        let next = bounds(&c);
        if next == starts {
            break;
        }
        starts = next;
    }
    // drop empty clusters and give each value its centroid
    let mut centroids = Vec::new();
    let mut assignment = vec![0u32; n];
    for j in 0..c.len() {
        let (a, b) = (starts[j], starts[j + 1]);
        if b == a {
            continue;
        }
        let cj = c[j] as f32;
        // neighbouring means can round to the same f32: merge them
        if centroids.last() != Some(&cj) {
            centroids.push(cj);
        }
        let idx = (centroids.len() - 1) as u32;
        for &i in &order[a..b] {
            assignment[i] = idx;
        }
    }
    Clusters { centroids, assignment, iterations }
}

/// Replaces a clustered weight by `Gather(codebook, Cast(indices))`.
fn insert_gather(graph: &mut Graph, pl: &Plan, cb: &[f32]) -> Result<(), StageError> {
    let name = &pl.site.weight_name;
    // pruned zeros get entry 0 = 0.0, the centroids follow
    let shift = u32::from(pl.keep.is_some());
    let mut book = Vec::with_capacity(cb.len() + 1);
    if pl.keep.is_some() {
        book.push(0.0f32);
    }
    book.extend_from_slice(cb);
    let idx: Vec<u32> = pl
        .original
        .iter()
        .zip(&pl.clusters.assignment)
        .map(|(&x, &a)| if x == 0.0 && pl.keep.is_some() { 0 } else { a + shift })
        .collect();
    let iname = format!("{name}_indices");
    let indices = if book.len() <= 256 {
        Tensor::from_raw(&iname, DataType::Uint8, &pl.site.dims, idx.iter().map(|&i| i as u8).collect())
    } else if book.len() <= 65536 {
        let raw = idx.iter().flat_map(|&i| (i as u16).to_le_bytes()).collect();
        Tensor::from_raw(&iname, DataType::Uint16, &pl.site.dims, raw)
    } else {
        let raw = idx.iter().flat_map(|&i| (i as i32).to_le_bytes()).collect();
        Tensor::from_raw(&iname, DataType::Int32, &pl.site.dims, raw)
    };
    let codebook = Tensor::from_f32(&format!("{name}_codebook"), &[book.len() as i64], &book);
    let (cast_out, out) = (format!("{name}_indices_i32"), format!("{name}_shared"));
    for n in [indices.name(), codebook.name(), cast_out.as_str(), out.as_str()] {
        if graph.find_value(n).is_some() {
            return Err(StageError::failed(KIND, format!("a value named `{n}` already exists")));
        }
    }
    let (inode, cnode) = (graph.add_weight(indices), graph.add_weight(codebook));
    let mut cast = Op::new("Cast", &format!("{name}_Cast"), 1, vec![cast_out]);
    cast.attributes.push(attr_int("to", DataType::Int32 as i64));
    let cast = graph.add_op(cast, &[Some(ValueRef(inode, 0))]);
    let mut gather = Op::new("Gather", &format!("{name}_Gather"), 2, vec![out]);
    gather.attributes.push(attr_int("axis", 0));
    let gather = graph.add_op(gather, &[Some(ValueRef(cnode, 0)), Some(ValueRef(cast, 0))]);
    graph.replace_uses(ValueRef(pl.site.weight, 0), ValueRef(gather, 0));
    graph.remove_node(pl.site.weight);
    Ok(())
}

/// The `kmeans` method with its parsed parameters.
#[derive(Debug)]
pub struct KmeansStage {
    p: KmeansParams,
    ft: Option<FineTuneConfig>,
}

/// Builds the stage from its `[[stage]]` table.
pub fn build(table: &toml::Table) -> Result<Box<dyn Stage>, StageError> {
    let p: KmeansParams = from_table(table, "kmeans")?;
    let check = |key: &str, b: u32| {
        if (1..=16).contains(&b) { Ok(()) } else { Err(StageError::param(KIND, key, format!("{b} is not in 1..=16"))) }
    };
    check("bits", p.bits)?;
    for (k, &b) in &p.layer_bits {
        check(&format!("layer_bits.{k}"), b)?;
    }
    let ft = crate::params::finetune(&p.finetune)?;
    Ok(Box::new(KmeansStage { p, ft }))
}

/// True for the op types `layer_bits` keys may name (the layer ops).
fn is_op_type(key: &str) -> bool {
    shrink_graph::op::is_layer_type(key)
}

impl KmeansStage {
    /// Bits of one layer: a matching glob, else its op type, else `bits`.
    fn bits_for(&self, site: &WeightSite, op: Option<&Op>) -> Result<u32, StageError> {
        let names = [site.op_name.as_str(), site.weight_name.as_str()];
        let mut by_glob: Option<(&str, u32)> = None;
        for (k, &b) in self.p.layer_bits.iter().filter(|(k, _)| !is_op_type(k)) {
            if names.iter().any(|n| glob_match(k, n)) {
                if let Some((k0, b0)) = by_glob
                    && b0 != b
                {
                    return Err(StageError::param(
                        KIND,
                        "layer_bits",
                        format!("`{k0}` and `{k}` both match layer `{}` with different bits", site.op_name),
                    ));
                }
                by_glob = Some((k, b));
            }
        }
        if let Some((_, b)) = by_glob {
            return Ok(b);
        }
        let ty = op.map_or("", |o| o.op_type.as_str());
        Ok(self.p.layer_bits.get(ty).copied().unwrap_or(self.p.bits))
    }
}

struct Plan {
    site: WeightSite,
    bits: u32,
    original: Vec<f32>,
    clusters: Clusters,
    /// Entries that are exactly zero (pruned) and stay zero; `None` when there are none.
    keep: Option<Vec<bool>>,
}

impl Stage for KmeansStage {
    fn kind(&self) -> &str {
        KIND
    }

    #[instrument(skip_all, fields(stage = KIND, method = "kmeans"))]
    fn run(&self, model: &mut Model, cx: &mut StageCx<'_>) -> Result<StageReport, StageError> {
        let p = &self.p;
        let sites = dedup_sites(select_weights(KIND, &model.graph, &p.ops, &p.layers, &p.exclude, "layers")?);
        if sites.is_empty() {
            return Err(StageError::failed(KIND, "no layer weight is selected"));
        }
        for key in p.layer_bits.keys() {
            let used = sites.iter().any(|s| {
                if is_op_type(key) {
                    s.op_type == *key
                } else {
                    glob_match(key, &s.op_name) || glob_match(key, &s.weight_name)
                }
            });
            if !used {
                return Err(StageError::param(KIND, "layer_bits", format!("`{key}` matches no selected layer")));
            }
        }
        let mut plans = Vec::new();
        for (li, site) in sites.into_iter().enumerate() {
            let bits = self.bits_for(&site, model.graph.op(site.op))?;
            let w = weight_values(&model.graph, &site)?;
            let nz: Vec<f32> = w.iter().copied().filter(|&x| x != 0.0).collect();
            let pruned = nz.len() < w.len();
            let k = 1usize << bits;
            let seed = shrink_data::derive_seed(cx.seed, li as u64);
            let cl = kmeans_1d(&nz, k, p.init, seed, p.max_iter);
            debug!(layer = %site.op_name, bits, k = cl.centroids.len(), iterations = cl.iterations, pruned, "clustered");
            // spread the clustering of the non-zeros back over the whole tensor (zeros: centroid 0, masked)
            let mut assignment = vec![0u32; w.len()];
            let mut it = cl.assignment.iter();
            for (a, &x) in assignment.iter_mut().zip(&w) {
                if x != 0.0 {
                    *a = it.next().copied().unwrap_or(0);
                }
            }
            let keep = pruned.then(|| w.iter().map(|&x| x != 0.0).collect());
            let clusters = Clusters { centroids: cl.centroids, assignment, iterations: cl.iterations };
            plans.push(Plan { site, bits, original: w, clusters, keep });
        }
        let mut note = String::new();
        let mut codebooks: Vec<Vec<f32>> = plans.iter().map(|pl| pl.clusters.centroids.clone()).collect();
        let mut ft_report = None;
        if let Some(cfg) = &self.ft {
            let mut exec = Executor::new(model).map_err(train_err)?;
            for info in exec.params() {
                exec.set_trainable(&info.name, false).map_err(train_err)?;
            }
            for pl in plans.iter().filter(|pl| !pl.clusters.centroids.is_empty()) {
                let name = &pl.site.weight_name;
                exec.tie(name, &pl.clusters.centroids, &pl.clusters.assignment).map_err(train_err)?;
                exec.set_trainable(name, true).map_err(train_err)?;
                if let Some(keep) = &pl.keep {
                    exec.set_mask(name, Some(keep)).map_err(train_err)?;
                }
            }
            let r = finetune(cfg, &mut exec, cx, "quantize: centroid fine-tuning")?;
            note = format!("; {}", finetune_note(&r));
            for (pl, cb) in plans.iter().zip(codebooks.iter_mut()) {
                if let Some(c) = exec.codebook(&pl.site.weight_name).map_err(train_err)? {
                    *cb = c;
                }
            }
            ft_report = Some(r);
        }
        let mut layers = Vec::new();
        let (mut n_weights, mut index_bits, mut codebook_entries) = (0usize, 0usize, 0usize);
        for (pl, cb) in plans.iter().zip(&codebooks) {
            let deq: Vec<f32> = pl
                .original
                .iter()
                .zip(&pl.clusters.assignment)
                .map(|(&x, &a)| if x == 0.0 || cb.is_empty() { 0.0 } else { cb[a as usize] })
                .collect();
            match p.export {
                Export::Dense => set_weight_values(&mut model.graph, &pl.site, &deq)?,
                Export::Gather => insert_gather(&mut model.graph, pl, cb)?,
            }
            let err = error_stats(&pl.original, &deq);
            let nz = pl.original.iter().filter(|&&x| x != 0.0).count();
            n_weights += nz;
            index_bits += nz * pl.bits as usize;
            codebook_entries += cb.len();
            let mut n = LayerNote {
                layer: pl.site.op_name.clone(),
                note: format!(
                    "{} centroids (≤ 2^{}) over {} non-zero weight(s){}, {} Lloyd iteration(s); max |w - ŵ| {:.3e}, relative L2 {:.3e}",
                    cb.len(),
                    pl.bits,
                    nz,
                    if pl.keep.is_some() { format!(", {} zeros kept", pl.original.len() - nz) } else { String::new() },
                    pl.clusters.iterations,
                    err.max_abs,
                    err.rel_l2
                ),
                ..LayerNote::default()
            };
            n.figures.insert("bits".into(), pl.bits as f64);
            n.figures.insert("centroids".into(), cb.len() as f64);
            n.figures.insert("max_abs_error".into(), err.max_abs);
            n.figures.insert("rel_l2_error".into(), err.rel_l2);
            layers.push(n);
        }
        let summary = format!(
            "k-means weight sharing on {} layer(s) ({} init, {} export), {} codebook entries for {} weights{note}",
            plans.len(),
            match p.init {
                Init::Linear => "linear",
                Init::Density => "density",
                Init::Random => "random",
            },
            match p.export {
                Export::Dense => "dense",
                Export::Gather => "gather",
            },
            codebook_entries,
            n_weights
        );
        info!("{summary}");
        let mut report = StageReport::new(summary)
            .figure("layers_quantized", plans.len() as f64)
            .figure("weights_shared", n_weights as f64)
            .figure("codebook_entries", codebook_entries as f64)
            // indices packed at `bits` each plus an f32 codebook per layer
            .figure("index_bytes", index_bits.div_ceil(8) as f64)
            .figure("codebook_bytes", (codebook_entries * 4) as f64);
        if let Some(r) = ft_report {
            report = report.figure("finetune_steps", r.steps as f64);
        }
        report.layers = layers;
        Ok(report)
    }
}
