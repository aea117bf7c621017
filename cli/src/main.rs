//! `pass-until`: the command line of passuntil. Argument parsing and calls only: every
//! command's work, and every table it prints, lives in the libraries (`evals`, `engine`,
//! `quant`); this crate adds the progress bar and the choice between text and JSON.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use engine::models;

/// Sample until it passes: an LLM inference engine with evaluation built in.
#[derive(Parser)]
#[command(name = "pass-until", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Known models: list them, or fetch one into the cache.
    Models {
        #[command(subcommand)]
        action: Option<ModelsAction>,
    },
    /// Sample continuations of a prompt (the prompt is computed once and shared).
    Generate(GenerateArgs),
    /// Teacher-forced log-probabilities of a continuation after a prompt (loglikelihood).
    Score(ScoreArgs),
    /// Token ids and pieces of a text, as the model's tokenizer splits it.
    Tokenize(TokenizeArgs),
    /// Inside the model on a text (native engine hooks): matrix entropy of the final states,
    /// outlier features at the projections' inputs, and the logit lens for a prompt.
    Probe(ProbeArgs),
    /// Sample problems of a task until they pass (PassUntil) or n times each (pass@k).
    ///
    /// A later option overrides an earlier one (a batch script's own arguments, passed last,
    /// override its defaults).
    #[command(args_override_self = true)]
    Run(Box<RunArgs>),
    /// Continue a stopped run exactly where it stopped.
    Resume {
        /// The run directory.
        dir: PathBuf,
        #[command(flatten)]
        exec: ExecArgs,
    },
    /// Combine the shard directories of one run.
    Merge {
        /// Shard directories.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// The merged run's directory (must be new or empty).
        #[arg(long)]
        out: PathBuf,
        /// Merge shards whose problems are not all decided yet (the merged run can be
        /// resumed); refused otherwise, naming the shard.
        #[arg(long)]
        allow_incomplete: bool,
    },
    /// Per-problem and task tables of a run.
    Report {
        /// The run directory.
        dir: PathBuf,
        /// Also write an SVG plot of per-problem pass rates (and, with multiple-choice
        /// problems, their reliability diagram beside it, STEM-reliability.svg).
        #[arg(long)]
        plot: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// PassUntil across model sizes: fit the scaling law over runs of one task, predict a
    /// held-out run, test for emergence, and compare pass@k at equal compute.
    Scale(ScaleArgs),
    /// Requantize a model into one type or a llama.cpp K-quant mix (Q4_K_M, ...).
    Quantize {
        /// The input: a GGUF path or a known model name.
        input: String,
        /// The output GGUF file.
        output: PathBuf,
        /// A type (f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_K, q3_K, q4_K, q5_K,
        /// q6_K) or a mix (Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M).
        #[arg(long = "type")]
        target: engine::quantize::Target,
        /// Threads (default: every core).
        #[arg(short, long, value_parser = usize_in(1, MAX_THREADS))]
        threads: Option<usize>,
    },
    /// Perplexity and KL divergence of models against a reference on a text (llama.cpp's
    /// `llama-perplexity --kl-divergence` statistics).
    Compare {
        /// The reference: a GGUF path or a known model name.
        #[arg(long = "ref")]
        reference: String,
        /// The models to compare with it.
        #[arg(required = true)]
        models: Vec<String>,
        /// The text file.
        #[arg(long)]
        text: PathBuf,
        /// Tokens per chunk (the second half of each is scored).
        #[arg(long, default_value_t = 512)]
        ctx: usize,
        /// Most chunks (default: all the text holds).
        #[arg(long)]
        chunks: Option<usize>,
        /// Threads per model (default: every core).
        #[arg(short, long, value_parser = clap::builder::RangedU64ValueParser::<u32>::new().range(1..=MAX_THREADS))]
        threads: Option<u32>,
        /// The engine that runs every model.
        #[arg(long, default_value = "native", value_parser = backend_kind())]
        backend: evals::generate::BackendKind,
        /// The models' activations: `q8` rounds them to 8 bits before each product, as
        /// llama.cpp; `q8-fast` rounds them the same way but multiplies Q4_0/Q4_1/Q8_0
        /// weights on repacked kernels (faster, batch-invariant, not llama.cpp's bits);
        /// `exact` keeps them in f32 against the dequantized weight blocks (native engine
        /// for both).
        #[arg(long, default_value = "q8", value_parser = activation_mode())]
        activations: engine::Activations,
        /// The reference's activations (the same file as reference and model, `exact`
        /// against `q8`, measures what 8-bit activations alone do).
        #[arg(long, default_value = "q8", value_parser = activation_mode())]
        reference_activations: engine::Activations,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Requantize a model into several types, run the same task on each with the same seeds,
    /// and compare them with a reference.
    Study(Box<StudyArgs>),
    /// Show a GGUF file's metadata, tensor table and totals by type.
    Inspect {
        /// A GGUF path or a known model name (fetched on first use).
        #[arg(default_value = models::DEFAULT_MODEL)]
        model: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// A GGUF path or a known model name (fetched on first use).
    #[arg(short, long, default_value = models::DEFAULT_MODEL)]
    model: String,
    /// The prompt (special tokens such as <|im_start|> are recognised).
    #[arg(short, long)]
    prompt: String,
    /// Number of samples.
    #[arg(short, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    n: u64,
    /// Most tokens per sample.
    #[arg(long, default_value_t = 128, value_parser = usize_in(1, MAX_TOKENS))]
    max_tokens: usize,
    /// Temperature (0: greedy).
    #[arg(long, default_value_t = 0.8)]
    temp: f32,
    /// Keep the K most likely tokens (0: all).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Nucleus sampling threshold (1: off).
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Drop tokens below this fraction of the top token's probability (0: off).
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    /// Seed: sample i is a function of (seed, i) only.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Threads (default: every core).
    #[arg(short, long, value_parser = clap::builder::RangedU64ValueParser::<u32>::new().range(1..=MAX_THREADS))]
    threads: Option<u32>,
    #[command(flatten)]
    more: SamplingArgs,
    /// Stop a sample where its text reaches this string (repeatable; the text is cut
    /// before it).
    #[arg(long)]
    stop: Vec<String>,
    /// Report each token's log-probabilities with the N most likely alternatives.
    #[arg(long, value_name = "N")]
    logprobs: Option<usize>,
    /// Send the prompt as a user message through the model's chat template.
    #[arg(long)]
    chat: bool,
    /// Generate past the context the model was trained on (refused otherwise).
    #[arg(long)]
    allow_long_context: bool,
    /// Which engine runs the model.
    #[arg(long, default_value = "native", value_parser = backend_kind())]
    backend: evals::generate::BackendKind,
    /// Activations: `q8` rounds them to 8 bits before each product, as llama.cpp; `q8-fast`
    /// rounds them the same way but multiplies Q4_0/Q4_1/Q8_0 weights on repacked kernels
    /// (faster, batch-invariant, not llama.cpp's bits); `exact` keeps them in f32 against the
    /// dequantized weight blocks (native engine for both).
    #[arg(long, default_value = "q8", value_parser = activation_mode())]
    activations: engine::Activations,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct ScoreArgs {
    /// A GGUF path or a known model name (fetched on first use).
    #[arg(short, long, default_value = models::DEFAULT_MODEL)]
    model: String,
    /// The context.
    #[arg(short, long)]
    prompt: String,
    /// The continuation whose log-probability is wanted.
    #[arg(short, long)]
    continuation: String,
    /// Alternatives to show per continuation token.
    #[arg(long, default_value_t = 3)]
    top: usize,
    /// Threads (default: every core).
    #[arg(short, long, value_parser = clap::builder::RangedU64ValueParser::<u32>::new().range(1..=MAX_THREADS))]
    threads: Option<u32>,
    /// Which engine runs the model.
    #[arg(long, default_value = "native", value_parser = backend_kind())]
    backend: evals::generate::BackendKind,
    /// Activations: `q8` rounds them to 8 bits before each product, as llama.cpp; `q8-fast`
    /// rounds them the same way but multiplies Q4_0/Q4_1/Q8_0 weights on repacked kernels
    /// (faster, batch-invariant, not llama.cpp's bits); `exact` keeps them in f32 against the
    /// dequantized weight blocks (native engine for both).
    #[arg(long, default_value = "q8", value_parser = activation_mode())]
    activations: engine::Activations,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct ProbeArgs {
    /// A GGUF path or a known model name (fetched on first use).
    #[arg(short, long, default_value = models::DEFAULT_MODEL)]
    model: String,
    /// The text whose tokens are probed.
    #[arg(long)]
    text: PathBuf,
    /// Tokens per chunk.
    #[arg(long, default_value_t = 256)]
    ctx: usize,
    /// Most chunks of the text (0: all).
    #[arg(long, default_value_t = 2)]
    chunks: usize,
    /// Outlier magnitude threshold.
    #[arg(long, default_value_t = 6.0)]
    threshold: f32,
    /// Show the logit lens at the last token of this prompt.
    #[arg(long)]
    lens: Option<String>,
    /// Tokens per layer in the logit lens.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Threads (default: every core).
    #[arg(short, long, value_parser = usize_in(1, MAX_THREADS))]
    threads: Option<usize>,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct TokenizeArgs {
    /// A GGUF path or a known model name (fetched on first use).
    #[arg(short, long, default_value = models::DEFAULT_MODEL)]
    model: String,
    /// The text (or use --file).
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    text: Option<String>,
    /// Read the text from a file (bytes, not necessarily UTF-8).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Treat special-token text (<|im_start|>) as plain text.
    #[arg(long)]
    no_parse_special: bool,
    /// Do not add BOS/EOS even where the model's metadata asks for them.
    #[arg(long)]
    no_add_special: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct RunArgs {
    /// A GGUF path or a known model name (fetched on first use).
    #[arg(short, long, default_value = models::DEFAULT_MODEL)]
    model: String,
    /// Run only problems p with p % N == I (0-based I).
    #[arg(long, default_value = "0/1")]
    shard: evals::run::Shard,
    /// The run directory (an existing run with the same settings is continued).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    common: RunCommon,
}

/// What a run samples and how; shared by `run` and `study`.
#[derive(clap::Args)]
struct RunCommon {
    /// The task: a file, or a known benchmark fetched on first use (`humaneval`,
    /// `bigbench:NAME` for a JSON task of bigbench==1.0.0).
    #[arg(long)]
    task: String,
    /// The task file's format.
    #[arg(long, default_value = "auto", value_parser = task_format())]
    format: evals::tasks::Format,
    /// Put text prompts to the model through its chat template, as a user message (an
    /// instruction-tuned model's own format). HumanEval asks for the whole function in a
    /// Python code block and opens the reply with the block; the code up to its end replaces
    /// the stub's function when it is judged (leave --max-tokens room for a repeated
    /// docstring).
    #[arg(long)]
    chat: bool,
    /// PassUntil: stop a problem at its r-th success (in sample-index order).
    #[arg(long, default_value_t = 2, conflicts_with = "n")]
    r: u64,
    /// PassUntil: most samples per problem (a problem reaching it is censored).
    #[arg(long, default_value_t = 100_000, conflicts_with = "n")]
    max_samples: u64,
    /// pass@k: exactly N samples per problem instead of PassUntil.
    #[arg(long)]
    n: Option<u64>,
    /// pass@k: the k values to report (with --n).
    #[arg(long, value_delimiter = ',', default_values_t = vec![1u64, 10, 100], requires = "n")]
    k: Vec<u64>,
    /// Most tokens per sample.
    #[arg(long, default_value_t = 256, value_parser = usize_in(1, MAX_TOKENS))]
    max_tokens: usize,
    /// A stop string added to every problem's own (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Temperature.
    #[arg(long, default_value_t = 1.0)]
    temp: f32,
    /// Keep the K most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Nucleus sampling threshold (1: off).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Drop tokens below this fraction of the top token's probability (0: off).
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    #[command(flatten)]
    more: SamplingArgs,
    /// Seed: sample i of problem p is a function of (seed, p, i) only.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Which engine runs the model.
    #[arg(long, default_value = "native", value_parser = backend_kind())]
    backend: evals::generate::BackendKind,
    /// Activations: `q8` rounds them to 8 bits before each product, as llama.cpp; `q8-fast`
    /// rounds them the same way but multiplies Q4_0/Q4_1/Q8_0 weights on repacked kernels
    /// (faster, batch-invariant, not llama.cpp's bits); `exact` keeps them in f32 against the
    /// dequantized weight blocks (native engine for both).
    #[arg(long, default_value = "q8", value_parser = activation_mode())]
    activations: engine::Activations,
    #[command(flatten)]
    exec: ExecArgs,
}

impl RunCommon {
    fn options(self, model: PathBuf, out: PathBuf) -> Result<evals::run::RunOptions> {
        let task = evals::tasks::fetch::resolve(&self.task, &mut progress_line)
            .with_context(|| format!("cannot load task '{}'", self.task))?;
        let mut opts = evals::run::RunOptions::new(model, task, out);
        opts.backend = self.backend;
        opts.activations = self.activations;
        opts.format = self.format;
        opts.chat = self.chat;
        opts.sampling = self
            .more
            .params(self.temp, self.top_k, self.top_p, self.min_p);
        opts.max_tokens = self.max_tokens;
        opts.stop = self.stop;
        opts.rule = match self.n {
            Some(n) => evals::run::StopRule::Fixed { n, k: self.k },
            None => evals::run::StopRule::PassUntil {
                r: self.r,
                max_samples: self.max_samples,
            },
        };
        opts.seed = self.seed;
        opts.exec = self.exec.exec();
        Ok(opts)
    }
}

#[derive(clap::Args)]
struct StudyArgs {
    /// The base model: a GGUF path or a known model name.
    #[arg(short, long, default_value = models::DEFAULT_MODEL)]
    model: String,
    /// Types or mixes to study (comma-separated: q8_0,q5_1,q4_0,Q4_K_M,q3_K,q2_K).
    #[arg(long, value_delimiter = ',', required = true)]
    types: Vec<engine::quantize::Target>,
    /// The reference: `base` (the model file itself) or a type to requantize it to (`f32`).
    #[arg(long, default_value = "base")]
    reference: String,
    /// Split each type's shift into its weights' part and its 8-bit activations' part:
    /// every type also runs with exact activations, the reference only so (native engine).
    #[arg(long)]
    split_activations: bool,
    /// A text for perplexity and KL divergence against the reference.
    #[arg(long)]
    text: Option<PathBuf>,
    /// Tokens per chunk of the text.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Most chunks of the text.
    #[arg(long)]
    chunks: Option<usize>,
    /// The study directory (models, runs, report).
    #[arg(long)]
    out: PathBuf,
    /// Also write an SVG of score against bits per weight.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    common: RunCommon,
}

/// Sampling transforms beyond temperature and truncation, off by default.
#[derive(clap::Args)]
struct SamplingArgs {
    /// Locally typical sampling: keep this share of the mass nearest the entropy (1: off).
    #[arg(long, default_value_t = 1.0)]
    typical_p: f32,
    /// Divide the logits of recently seen tokens by this (1: off).
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    /// Subtract this times a recent token's count from its logit (0: off).
    #[arg(long, default_value_t = 0.0)]
    frequency_penalty: f32,
    /// Subtract this from the logit of any recently seen token (0: off).
    #[arg(long, default_value_t = 0.0)]
    presence_penalty: f32,
    /// How many of the latest tokens (prompt included) the penalties consider.
    #[arg(long, default_value_t = 64)]
    penalty_last_n: usize,
    /// Add BIAS to TOKEN's logit, as TOKEN=BIAS (repeatable; TOKEN=-inf bans it).
    #[arg(long, value_name = "TOKEN=BIAS", allow_hyphen_values = true)]
    logit_bias: Vec<engine::sampling::LogitBias>,
}

impl SamplingArgs {
    fn params(
        self,
        temperature: f32,
        top_k: usize,
        top_p: f32,
        min_p: f32,
    ) -> engine::sampling::SamplingParams {
        engine::sampling::SamplingParams {
            temperature,
            top_k,
            top_p,
            min_p,
            typical_p: self.typical_p,
            repeat_penalty: self.repeat_penalty,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            penalty_last_n: self.penalty_last_n,
            logit_bias: self.logit_bias,
        }
    }
}

/// The most threads any command takes (a typo like `-t 4294967295` is an error, not a pool
/// of four billion threads).
const MAX_THREADS: u64 = 1024;
/// The most new tokens per sample (any model's context is shorter).
const MAX_TOKENS: u64 = 1 << 20;

/// `--backend`: `native` or `llama-cpp`.
fn backend_kind() -> impl clap::builder::TypedValueParser<Value = engine::BackendKind> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(["native", "llama-cpp"])
        .map(|s| s.parse().expect("a listed backend"))
}

/// `--activations`: `q8` or `exact`.
/// `pass-until scale`.
#[derive(clap::Args)]
struct ScaleArgs {
    /// Run directories of one task to fit the law on; a study directory stands for its runs.
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// A held-out run to predict from the others and compare with what it measured.
    #[arg(long)]
    predict: Option<PathBuf>,
    /// Each run's size, comma-separated in the order given (the held-out run last), instead
    /// of reading it from the model files.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    x: Option<Vec<f64>>,
    /// The size read from the model files: `params` (billions) or `bpw` (bits per weight).
    /// Default: params, or bpw when every file has the same parameter count.
    #[arg(long, value_parser = ["params", "bpw"])]
    axis: Option<String>,
    /// The bootstrap's seed (default: the first run's seed).
    #[arg(long)]
    seed: Option<u64>,
    /// Write the SVG plot here (and pass@k against compute beside it, STEM-budget.svg).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn activation_mode() -> impl clap::builder::TypedValueParser<Value = engine::Activations> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(engine::Activations::ALL.map(|a| a.name()))
        .map(|s| s.parse().expect("a listed mode"))
}

/// `--format`: a task file format, or `auto`.
fn task_format() -> impl clap::builder::TypedValueParser<Value = evals::tasks::Format> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(evals::tasks::Format::ALL.map(|f| f.name()))
        .map(|s| s.parse().expect("a listed format"))
}

/// A parser for a `usize` argument in `lo..=hi`.
fn usize_in(lo: u64, hi: u64) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(lo..=hi)
}

#[derive(clap::Args)]
struct ExecArgs {
    /// Samples decoded together (never changes results).
    #[arg(long, default_value_t = 64, value_parser = usize_in(1, 4096))]
    batch: usize,
    /// Backend threads (default: every core).
    #[arg(short, long, value_parser = clap::builder::RangedU64ValueParser::<u32>::new().range(1..=MAX_THREADS))]
    threads: Option<u32>,
    /// Judge threads (default: 1 for text checks, up to 4 for programs).
    #[arg(long, value_parser = usize_in(1, 256))]
    judge_threads: Option<usize>,
    /// Sample past the context the model was trained on (refused otherwise).
    #[arg(long)]
    allow_long_context: bool,
}

impl ExecArgs {
    fn exec(&self) -> evals::run::Exec {
        evals::run::Exec {
            batch: self.batch,
            threads: self.threads,
            judge_threads: self.judge_threads,
            allow_long_context: self.allow_long_context,
        }
    }
}

#[derive(Subcommand)]
enum ModelsAction {
    /// List known models and whether they are cached.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Fetch a known model into the cache (no-op when already there).
    Fetch {
        /// The model's name.
        name: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // A closed pipe (`pass-until inspect | head`) is a normal way to stop reading.
            if err
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints `value` as JSON, or the text `render` gives.
fn emit(
    out: &mut impl Write,
    json: bool,
    value: &impl serde::Serialize,
    render: impl FnOnce() -> String,
) -> Result<()> {
    if json {
        serde_json::to_writer_pretty(&mut *out, value)?;
        writeln!(out)?;
    } else {
        out.write_all(render().as_bytes())?;
    }
    Ok(())
}

fn progress_line(msg: &str) {
    eprintln!("{msg}");
}

fn resolve_model(arg: &str) -> Result<PathBuf> {
    models::resolve(arg, &mut progress_line).with_context(|| format!("cannot load model '{arg}'"))
}

fn run(cli: Cli) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Models { action } => match action.unwrap_or(ModelsAction::List { json: false }) {
            ModelsAction::List { json } => list_models(&mut out, json),
            ModelsAction::Fetch { name } => {
                let model = models::known_or_list(&name).map_err(anyhow::Error::msg)?;
                let path = models::fetch(model, &mut progress_line)?;
                writeln!(out, "{}", path.display())?;
                Ok(())
            }
        },
        Command::Generate(args) => generate(&mut out, args),
        Command::Score(args) => score(&mut out, args),
        Command::Tokenize(args) => tokenize(&mut out, args),
        Command::Probe(args) => probe(&mut out, args),
        Command::Compare {
            reference,
            models,
            text,
            ctx,
            chunks,
            threads,
            backend,
            activations,
            reference_activations,
            json,
        } => {
            let reference = resolve_model(&reference)?;
            let models = models
                .iter()
                .map(|m| resolve_model(m))
                .collect::<Result<Vec<_>>>()?;
            let bytes =
                std::fs::read(&text).with_context(|| format!("cannot read {}", text.display()))?;
            let report = evals::compare::compare(
                &reference,
                &models,
                &bytes,
                &evals::compare::CompareOptions {
                    ctx,
                    chunks,
                    threads,
                    backend,
                    activations,
                    reference_activations,
                },
            )?;
            emit(&mut out, json, &report, || report.render())
        }
        Command::Quantize {
            input,
            output,
            target,
            threads,
        } => {
            let path = resolve_model(&input)?;
            let threads = threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let t0 = std::time::Instant::now();
            let plan = quant::requant::requantize(&path, &output, &target, threads, &mut |p| {
                if p.fallback {
                    eprintln!(
                        "{}: row of {} does not fit the target's blocks; {} instead",
                        p.name,
                        p.shape.first().copied().unwrap_or(0),
                        p.to.name()
                    );
                }
            })
            .with_context(|| format!("cannot requantize {}", path.display()))?;
            writeln!(
                out,
                "{} → {} ({target}): {:.3} bits per weight, {:.1} s",
                path.display(),
                output.display(),
                plan.bits_per_weight(),
                t0.elapsed().as_secs_f64()
            )?;
            out.write_all(plan.render_by_type().as_bytes())?;
            Ok(())
        }
        Command::Run(args) => run_task(&mut out, *args),
        Command::Study(args) => study(&mut out, *args),
        Command::Resume { dir, exec } => {
            let mut bar = RunProgress::new();
            let outcome = evals::run::resume(&dir, &exec.exec(), &mut bar);
            bar.finish();
            finish_run(&mut out, outcome?)
        }
        Command::Merge {
            dirs,
            out: dest,
            allow_incomplete,
        } => {
            let m = evals::run::merge(&dirs, &dest, allow_incomplete)?;
            out.write_all(m.render(&dest).as_bytes())?;
            Ok(())
        }
        Command::Report { dir, plot, json } => {
            let report = evals::run::report::report(&dir)?;
            if let Some(plot) = &plot {
                report.plot(plot)?;
                eprintln!("plot written to {}", plot.display());
                if report.choices.is_some() {
                    let stem = plot
                        .file_stem()
                        .map_or_else(|| "report".into(), |s| s.to_string_lossy().into_owned());
                    let path = plot.with_file_name(format!("{stem}-reliability.svg"));
                    report.plot_reliability(&path)?;
                    eprintln!("reliability diagram written to {}", path.display());
                }
            }
            emit(&mut out, json, &report, || report.render())
        }
        Command::Scale(a) => {
            let report = evals::scale::scale(&evals::scale::ScaleOptions {
                runs: a.runs,
                predict: a.predict,
                x: a.x,
                axis: a.axis.map(|a| match a.as_str() {
                    "bpw" => evals::scale::Axis::BitsPerWeight,
                    _ => evals::scale::Axis::Params,
                }),
                seed: a.seed,
            })?;
            if let Some(plot) = &a.plot {
                for f in report.plot(plot)? {
                    eprintln!("plot written to {}", f.display());
                }
            }
            emit(&mut out, a.json, &report, || report.render())
        }
        Command::Inspect { model, json } => {
            let path = resolve_model(&model)?;
            let report = evals::inspect::inspect(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            emit(&mut out, json, &report, || report.render())
        }
    }
}

fn list_models(out: &mut impl Write, json: bool) -> Result<()> {
    let rows = models::listing()?;
    emit(out, json, &rows, || {
        models::render_listing(&rows, std::io::stdout().is_terminal())
    })
}

fn generate(out: &mut impl Write, a: GenerateArgs) -> Result<()> {
    let path = resolve_model(&a.model)?;
    let req = evals::generate::GenerateRequest {
        prompt: a.prompt,
        n: a.n,
        options: engine::generate::GenerateOptions {
            max_tokens: a.max_tokens,
            sampling: a.more.params(a.temp, a.top_k, a.top_p, a.min_p),
            seed: a.seed,
            problem: 0,
            stop_at_eog: true,
            top_logprobs: 0,
            stop: a.stop,
        },
        threads: a.threads,
        activations: a.activations,
        chat: a.chat,
        logprobs: a.logprobs,
        allow_long_context: a.allow_long_context,
    };
    let report = evals::generate::run(a.backend, &path, &req)?;
    emit(out, a.json, &report, || report.render())?;
    if !a.json {
        eprintln!("{}", report.summary());
    }
    Ok(())
}

fn score(out: &mut impl Write, a: ScoreArgs) -> Result<()> {
    let path = resolve_model(&a.model)?;
    let req = evals::generate::ScoreRequest {
        prompt: a.prompt,
        continuation: a.continuation,
        top: a.top,
        threads: a.threads,
        activations: a.activations,
    };
    let r = evals::generate::score(a.backend, &path, &req)?;
    emit(out, a.json, &r, || r.render())
}

fn probe(out: &mut impl Write, a: ProbeArgs) -> Result<()> {
    let path = resolve_model(&a.model)?;
    let text =
        std::fs::read(&a.text).with_context(|| format!("cannot read {}", a.text.display()))?;
    let opts = evals::probe::ProbeOptions {
        ctx: a.ctx,
        chunks: (a.chunks > 0).then_some(a.chunks),
        threshold: a.threshold,
        lens_prompt: a.lens,
        lens_top: a.top,
        threads: a.threads,
    };
    let r = evals::probe::probe(&path, &text, &opts)?;
    emit(out, a.json, &r, || r.render())
}

fn tokenize(out: &mut impl Write, a: TokenizeArgs) -> Result<()> {
    let path = resolve_model(&a.model)?;
    let text = match (&a.text, &a.file) {
        (Some(t), _) => t.as_bytes().to_vec(),
        (None, Some(f)) => {
            std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?
        }
        (None, None) => anyhow::bail!("give a TEXT or --file"),
    };
    let tokens = evals::generate::tokenize(
        &path,
        &text,
        engine::backend::TokenizeOptions {
            add_special: !a.no_add_special,
            parse_special: !a.no_parse_special,
        },
    )?;
    emit(out, a.json, &tokens, || {
        evals::generate::render_tokens(&tokens)
    })
}

/// A progress bar on a terminal, plain lines every few seconds otherwise.
struct RunProgress {
    bar: Option<indicatif::ProgressBar>,
    last_line: std::time::Instant,
}

impl RunProgress {
    fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(0);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} problems  {msg}  ETA {eta}",
                )
                .expect("a valid template"),
            );
            b
        });
        RunProgress {
            bar,
            last_line: std::time::Instant::now(),
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl evals::run::Progress for RunProgress {
    fn update(&mut self, s: &evals::run::Stats) {
        let rate = |x: u64| x as f64 / s.elapsed.max(1e-9);
        let msg = format!(
            "{} samples  {:.1} samples/s  {:.1} tokens/s",
            s.samples,
            rate(s.samples),
            rate(s.tokens)
        );
        match &self.bar {
            Some(b) => {
                b.set_length(s.problems as u64);
                b.set_position(s.decided as u64);
                b.set_message(msg);
            }
            None if self.last_line.elapsed().as_secs() >= 5 => {
                self.last_line = std::time::Instant::now();
                eprintln!("{}/{} problems  {msg}", s.decided, s.problems);
            }
            None => {}
        }
    }

    fn note(&mut self, message: &str) {
        match &self.bar {
            Some(b) => b.println(format!("note: {message}")),
            None => eprintln!("note: {message}"),
        }
    }
}

fn run_task(out: &mut impl Write, a: RunArgs) -> Result<()> {
    let model = resolve_model(&a.model)?;
    let mut opts = a.common.options(model, a.out)?;
    opts.shard = a.shard;
    let mut bar = RunProgress::new();
    let outcome = evals::run::start(&opts, &mut bar);
    bar.finish();
    finish_run(out, outcome?)
}

fn study(out: &mut impl Write, a: StudyArgs) -> Result<()> {
    let base = resolve_model(&a.model)?;
    let reference = match a.reference.as_str() {
        "base" => None,
        t => Some(
            t.parse::<engine::quantize::Target>()
                .map_err(anyhow::Error::msg)?,
        ),
    };
    let threads = a.common.exec.threads;
    let run = a.common.options(base.clone(), a.out.clone())?;
    let (backend, activations) = (run.backend, run.activations);
    let opts = evals::study::StudyOptions {
        base,
        reference,
        types: a.types,
        run,
        text: a.text.map(|t| {
            (
                t,
                evals::compare::CompareOptions {
                    ctx: a.ctx,
                    chunks: a.chunks,
                    threads,
                    backend,
                    activations,
                    reference_activations: activations,
                },
            )
        }),
        out: a.out.clone(),
        split: a.split_activations,
    };
    let mut bar = RunProgress::new();
    let report = evals::study::study(&opts, &mut |m| eprintln!("{m}"), &mut bar);
    bar.finish();
    let report = report?;
    if let Some(plot) = &a.plot {
        for p in report.plot(plot)? {
            eprintln!("plot written to {}", p.display());
        }
    }
    emit(out, a.json, &report, || report.render())
}

fn finish_run(out: &mut impl Write, o: evals::run::Outcome) -> Result<()> {
    for w in o.warnings() {
        eprintln!("warning: {w}");
    }
    eprintln!("{}", o.summary());
    if o.choices_scored > 0 {
        eprintln!(
            "scored {} multiple-choice problems ({} in the run)",
            o.choices_scored, o.choices
        );
    }
    let report = evals::run::report::report(&o.dir)?;
    out.write_all(report.render().as_bytes())?;
    Ok(())
}
