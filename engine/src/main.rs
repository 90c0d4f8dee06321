//! The `assay` command line.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A WebAssembly-extensible analysis engine: plugins analyse documents,
/// PostgreSQL stores what they find.
#[derive(Debug, Parser)]
#[command(name = "assay", version, about)]
struct Cli {
    /// Configuration file (missing is fine: every setting has a default).
    #[arg(
        long,
        global = true,
        default_value = "assay.toml",
        env = "ASSAY_CONFIG"
    )]
    config: PathBuf,
    /// More log output (-v: info, -vv: debug). `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Analyse documents with every loaded plugin and store the results.
    Analyze(cli::analyze::AnalyzeArgs),
    /// Run the engine as a service: watch the plugin directory and serve HTTP.
    Up,
    /// Apply the engine's database migrations (they also run on every start).
    Migrate,
    /// Inspect plugins.
    Plugins {
        #[command(subcommand)]
        command: cli::plugins::PluginsCommand,
    },
    /// The prompt library: import a prompt tree, list, show and trace prompts.
    Prompts {
        #[command(subcommand)]
        command: cli::prompts::PromptsCommand,
    },
    /// What the stored runs found (each document's latest run by default).
    Findings(cli::findings::FindingsArgs),
    /// The earlier documents most like a text (the bundled `similar` plugin's
    /// memory: full text, trigrams and embeddings).
    Search(cli::search::SearchArgs),
    /// Measure throughput and latency, each beside its native baseline.
    Bench {
        #[command(subcommand)]
        command: cli::bench::BenchCommand,
    },
}

/// Exit codes: 0 all well, 1 fatal, 2 some document or plugin failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything succeeded.
    Success,
    /// Some inputs or plugin calls failed; the rest was done and stored.
    Partial,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        let config = assay::config::Config::load(&cli.config)?;
        match cli.command {
            Command::Analyze(args) => cli::analyze::run(&config, args).await,
            Command::Up => cli::up::run(&config).await,
            Command::Migrate => cli::migrate(&config).await,
            Command::Plugins { command } => cli::plugins::run(&config, command).await,
            Command::Prompts { command } => cli::prompts::run(&config, command).await,
            Command::Findings(args) => cli::findings::run(&config, args).await,
            Command::Search(args) => cli::search::run(&config, args).await,
            Command::Bench { command } => cli::bench::run(&config, command).await,
        }
    });
    // A thread still blocked in a read (a plugin file on a stalled file
    // system) must not keep the process from exiting.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Partial) => ExitCode::from(2),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only for a person at a terminal: a log file or a pipe gets
    // plain text, not escape codes (and NO_COLOR is honoured either way).
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
