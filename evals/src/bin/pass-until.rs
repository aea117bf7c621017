//! `pass-until`: the command line of passuntil, a thin shell over the `evals` library.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use engine::models::{self, KNOWN_MODELS};

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
    #[arg(short, default_value_t = 1)]
    n: u64,
    /// Most tokens per sample.
    #[arg(long, default_value_t = 128)]
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
    #[arg(short, long)]
    threads: Option<u32>,
    /// Which engine runs the model.
    #[arg(long, value_enum, default_value_t = default_backend())]
    backend: evals::generate::BackendKind,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn default_backend() -> evals::generate::BackendKind {
    if cfg!(feature = "llama-cpp") {
        evals::generate::BackendKind::LlamaCpp
    } else {
        evals::generate::BackendKind::Native
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
                let model = models::known(&name).with_context(|| {
                    let names: Vec<&str> = KNOWN_MODELS.iter().map(|m| m.name).collect();
                    format!("unknown model '{name}'; known: {}", names.join(", "))
                })?;
                let path = models::fetch(model, &mut progress_line)?;
                writeln!(out, "{}", path.display())?;
                Ok(())
            }
        },
        Command::Generate(args) => generate(&mut out, args),
        Command::Inspect { model, json } => {
            let path = resolve_model(&model)?;
            let report = evals::inspect::inspect(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            if json {
                serde_json::to_writer_pretty(&mut out, &report)?;
                writeln!(out)?;
            } else {
                out.write_all(report.render().as_bytes())?;
            }
            Ok(())
        }
    }
}

fn list_models(out: &mut impl Write, json: bool) -> Result<()> {
    let mut rows = Vec::new();
    for m in KNOWN_MODELS {
        let cached = m.cached()?;
        let packages: Vec<String> = m
            .parts
            .iter()
            .map(|p| format!("{}=={}", p.package, p.version))
            .collect();
        rows.push(serde_json::json!({
            "name": m.name,
            "description": m.description,
            "default": m.name == models::DEFAULT_MODEL,
            "packages": packages,
            "sha256": m.sha256,
            "cached": cached.as_ref().map(|p| p.display().to_string()),
            "cache_path": m.cache_path()?.display().to_string(),
        }));
    }
    if json {
        serde_json::to_writer_pretty(&mut *out, &rows)?;
        writeln!(out)?;
        return Ok(());
    }
    let colour = std::io::stdout().is_terminal();
    for (m, row) in KNOWN_MODELS.iter().zip(&rows) {
        let default = if m.name == models::DEFAULT_MODEL {
            " (default)"
        } else {
            ""
        };
        let state = match row["cached"].as_str() {
            Some(p) => format!("cached at {p}"),
            None => "not cached: fetched on first use".to_owned(),
        };
        let name = if colour {
            format!("\x1b[1m{}\x1b[0m", m.name)
        } else {
            m.name.to_owned()
        };
        writeln!(out, "{name}{default}: {}", m.description)?;
        writeln!(
            out,
            "  packages: {}",
            row["packages"]
                .as_array()
                .map(|p| p
                    .iter()
                    .filter_map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()
        )?;
        writeln!(out, "  sha256:   {}", m.sha256)?;
        writeln!(out, "  {state}")?;
    }
    Ok(())
}

fn generate(out: &mut impl Write, a: GenerateArgs) -> Result<()> {
    let path = resolve_model(&a.model)?;
    let req = evals::generate::GenerateRequest {
        prompt: a.prompt,
        n: a.n,
        options: engine::generate::GenerateOptions {
            max_tokens: a.max_tokens,
            sampling: engine::sampling::SamplingParams {
                temperature: a.temp,
                top_k: a.top_k,
                top_p: a.top_p,
                min_p: a.min_p,
            },
            seed: a.seed,
            problem: 0,
            stop_at_eog: true,
        },
        threads: a.threads,
    };
    let report = evals::generate::run(a.backend, &path, &req)?;
    if a.json {
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
        return Ok(());
    }
    for s in &report.samples {
        if report.samples.len() > 1 {
            writeln!(
                out,
                "--- sample {} ({} tokens, logprob {:.2}, {})",
                s.index,
                s.tokens.len(),
                s.logprob,
                s.stop
            )?;
        }
        writeln!(out, "{}", s.text)?;
    }
    eprintln!(
        "{}: {} samples, {:.1} generated tokens/s",
        report.backend,
        report.samples.len(),
        report.tokens_per_second
    );
    Ok(())
}
