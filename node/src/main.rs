//! The `meridian` binary: `meridian server` runs a node, `meridian cli`
//! talks to one.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use meridian_node::cli::CliArgs;
use meridian_node::Config;

#[derive(Debug, Parser)]
#[command(
    name = "meridian",
    version,
    about = "Meridian: a geo-replicated key-value store"
)]
struct Arguments {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node (defaults: 127.0.0.1:7411, data in ./meridian-data).
    Server {
        /// TOML configuration file (see meridian.example.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides node.listen.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Overrides node.metrics_listen ("" disables).
        #[arg(long)]
        metrics_listen: Option<String>,
        /// Overrides storage.data_dir.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Talk to a node.
    Cli(CliArgs),
}

fn main() -> ExitCode {
    let arguments = Arguments::parse();
    match arguments.command {
        Command::Server {
            config,
            listen,
            metrics_listen,
            data_dir,
        } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .with_writer(std::io::stderr)
                .init();
            let mut config = match config {
                Some(path) => match std::fs::read_to_string(&path) {
                    Ok(text) => match Config::from_toml(&text) {
                        Ok(config) => config,
                        Err(error) => {
                            eprintln!("meridian: {}: {error}", path.display());
                            return ExitCode::from(2);
                        }
                    },
                    Err(error) => {
                        eprintln!("meridian: cannot read {}: {error}", path.display());
                        return ExitCode::from(2);
                    }
                },
                None => Config::default(),
            };
            if let Some(listen) = listen {
                config.node.listen = listen;
            }
            if let Some(metrics_listen) = metrics_listen {
                config.node.metrics_listen = metrics_listen;
            }
            if let Some(data_dir) = data_dir {
                config.storage.data_dir = data_dir;
            }
            match meridian_node::server::run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(reason) => {
                    eprintln!("meridian: {reason}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Cli(args) => ExitCode::from(meridian_node::cli::run(args) as u8),
    }
}
