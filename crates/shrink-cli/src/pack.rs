//! `shrink pack` and `shrink unpack`: Deep Compression's storage as files
//! (`.shrink`, see docs/format.md), and [`load_model`], which lets `eval` and
//! `compare` read `.shrink` files directly (unpacked in memory).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use shrink_graph::Model;
use shrink_huffman::{CodebookMode, PackOptions, UnpackOptions};

/// Options of `shrink pack` (the `huffman` stage's parameters as flags).
#[derive(Debug, clap::Args)]
pub struct PackArgs {
    /// The ONNX model to pack (external data is read from beside it).
    pub model: PathBuf,
    /// The .shrink file to write (never the input).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Bits per relative index of weights of rank ≤ 2 (fully connected), 1 to 12.
    #[arg(long, default_value_t = 5)]
    pub index_bits_fc: u8,
    /// Bits per relative index of weights of rank ≥ 3 (convolutions), 1 to 12.
    #[arg(long, default_value_t = 8)]
    pub index_bits_conv: u8,
    /// Use only the two index widths above instead of trying 1 to 12 per tensor.
    #[arg(long)]
    pub no_index_search: bool,
    /// Store tensors with at most 2^N distinct non-zero values as cluster ids (1 to 8).
    #[arg(long, default_value_t = 8)]
    pub max_codebook_bits: u8,
    /// Codebook values as f16 when exact (`auto`) or always f32.
    #[arg(long, value_enum, default_value_t = CodebookArg::Auto)]
    pub codebook: CodebookArg,
    /// Print JSON (the stage report) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CodebookArg {
    Auto,
    F32,
}

pub fn run_pack(args: &PackArgs) -> anyhow::Result<()> {
    refuse_same(&args.model, &args.output)?;
    let model = Model::load(&args.model)?;
    let opts = PackOptions {
        index_bits_fc: args.index_bits_fc,
        index_bits_conv: args.index_bits_conv,
        search_index_bits: !args.no_index_search,
        max_codebook_bits: args.max_codebook_bits,
        codebook: match args.codebook {
            CodebookArg::Auto => CodebookMode::Auto,
            CodebookArg::F32 => CodebookMode::F32,
        },
    };
    if let Err((key, reason)) = opts.check() {
        bail!("--{}: {reason}", key.replace('_', "-"));
    }
    let packed = shrink_huffman::pack(&model, &opts).with_context(|| format!("packing {}", args.model.display()))?;
    let input_bytes = std::fs::metadata(&args.model)?.len();
    let file = args.output.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let report = shrink_huffman::report(&packed, input_bytes, &file);
    shrink_graph::save_file(&args.output, &packed.bytes).map_err(|e| e.in_file(&args.output))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{:<24} {:>9} {:>9} {:>6}  {:>10} {:>10}  {:>9}  encoding",
        "tensor", "elements", "nonzeros", "kept", "index b/w", "id b/w", "bytes"
    );
    for (t, l) in packed.tensors.iter().zip(&report.layers) {
        let f = &l.figures;
        let pair = |a: &str, b: &str| match (f.get(a), f.get(b)) {
            (Some(x), Some(y)) => format!("{x:.1}→{y:.1}"),
            _ => "-".into(),
        };
        println!(
            "{:<24} {:>9} {:>9} {:>5.1}%  {:>10} {:>10}  {:>9}  {}",
            t.name,
            t.numel,
            t.nonzeros,
            100.0 * t.nonzeros as f64 / t.numel.max(1) as f64,
            pair("index_bits_per_weight", "index_bits_per_weight_huffman"),
            pair("id_bits_per_weight", "id_bits_per_weight_huffman"),
            t.bytes,
            l.note
        );
    }
    println!(
        "graph part {} bytes{}; {} → {} bytes ({:.1}x)",
        packed.graph_bytes,
        if packed.graph_deflated { " (deflated)" } else { "" },
        input_bytes,
        packed.bytes.len(),
        input_bytes as f64 / packed.bytes.len().max(1) as f64
    );
    Ok(())
}

pub fn run_unpack(input: &Path, output: &Path) -> anyhow::Result<()> {
    refuse_same(input, output)?;
    let bytes = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    let onnx = shrink_huffman::unpack(&bytes).with_context(|| format!("unpacking {}", input.display()))?;
    shrink_graph::save_file(output, &onnx).map_err(|e| e.in_file(output))?;
    println!("{} → {} ({} → {} bytes)", input.display(), output.display(), bytes.len(), onnx.len());
    Ok(())
}

/// Loads an ONNX file, or a `.shrink` file unpacked in memory.
pub fn load_model(path: &Path) -> anyhow::Result<Model> {
    let mut head = [0u8; 4];
    let is_shrink = {
        use std::io::Read;
        let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        f.read_exact(&mut head).is_ok() && shrink_huffman::is_shrink(&head)
    };
    if !is_shrink {
        return Ok(Model::load(path)?);
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut model = shrink_huffman::unpack_model(&bytes, &UnpackOptions::default())
        .with_context(|| format!("unpacking {}", path.display()))?;
    model.source = Some(path.to_path_buf());
    Ok(model)
}

fn refuse_same(input: &Path, output: &Path) -> anyhow::Result<()> {
    let same = match (input.canonicalize(), output.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        bail!("refusing to overwrite the input {}; choose another output path", input.display());
    }
    Ok(())
}
