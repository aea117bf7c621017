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
