//! `damselfly-agent`, the per-node daemon: a registry mirror for container
//! runtimes, a piece server for other agents, and a piece engine that pulls
//! blobs from peers and the registry's seed, verifying every piece.

mod cache;
mod daemon;
mod get;
mod image;
mod metrics;
mod mirror;
mod node_setup;
mod peer;
mod piece;
mod preheat;
mod rate;
mod supernode;
mod webhook;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
// The settings and the error type are the library's (src/lib.rs), so the
// fuzz targets read a config file with the same code.
use damselfly_agent::{config, error};

use crate::config::{Config, LogFormat};
use crate::error::{Error, Report};

/// The command line.
#[derive(Parser, Debug)]
#[command(
    name = "damselfly-agent",
    version,
    about = "The Damselfly node agent: a registry mirror that pulls blobs piece by piece from peers"
)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
enum Command {
    /// Run the agent: the mirror, the peer piece server and the metrics endpoint.
    ///
    /// Every setting left out falls back to the TOML file given with `--config`, then to the default shown.
    Run(Config),
    /// Configure this node's container runtimes (containerd, CRI-O/podman, Docker) to pull the
    /// acceleration host through the agent, falling back to the registry; or undo it.
    NodeSetup(node_setup::NodeSetupArgs),
    /// Serve the image-rewrite admission webhook over HTTPS: Pods of labelled Kubernetes
    /// namespaces pull images of P2P-enabled registry namespaces from the acceleration address.
    Webhook(webhook::WebhookArgs),
    /// Fetch a file (a layer of an OCI artifact, or any blob) through this node's agent, or as a
    /// one-shot peer when no agent runs; resumes, verifies the digest, shows progress on a terminal.
    Get(get::GetArgs),
    /// The agent's container image: build it from this executable and push it into the registry.
    #[command(subcommand)]
    Image(image::ImageCommand),
}

fn main() {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // Every HTTPS client of the process (the registry, the Kubernetes API)
    // uses rustls with ring; an error only means it is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let flags = match cli.command {
        Command::Run(flags) => flags,
        Command::NodeSetup(args) => return exit_on_error("node-setup", node_setup::run(args)),
        Command::Webhook(args) => {
            init_logging(args.log_format);
            let result = block_on(async { webhook::run(args).await.map_err(Error::Webhook) });
            if let Err(e) = result {
                tracing::error!("{}", Report(&e));
                std::process::exit(1);
            }
            return;
        }
        Command::Get(args) => std::process::exit(get::main(args)),
        Command::Image(command) => return exit_on_error("image", block_on(image::run(command))),
    };
    let run_matches = matches.subcommand_matches("run").cloned().unwrap_or_default();
    let config = match Config::load(flags, &run_matches) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("damselfly-agent: {}", Report(&e));
            std::process::exit(2);
        }
    };
    init_logging(config.log_format);
    if let Err(e) = block_on(daemon::run(config)) {
        tracing::error!("{}", Report(&e));
        std::process::exit(1);
    }
}

/// Runs `future` to completion on a new async runtime.
fn block_on<T>(future: impl std::future::Future<Output = Result<T, Error>>) -> Result<T, Error> {
    tokio::runtime::Runtime::new().map_err(Error::Runtime)?.block_on(future)
}

/// Prints the error of subcommand `what`, if any, and exits with 1.
fn exit_on_error(what: &str, result: Result<(), Error>) {
    if let Err(e) = result {
        eprintln!("damselfly-agent {what}: {}", Report(&e));
        std::process::exit(1);
    }
}

fn init_logging(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(format == LogFormat::Text && std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// clap prints a default it knows; a help text that says it too makes
    /// `[default: 0, no limit] … [default: 0]`.
    #[test]
    fn no_help_text_states_a_default_clap_already_prints() {
        fn check(command: &clap::Command, path: &str) {
            for arg in command.get_arguments() {
                let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                if !arg.get_default_values().is_empty() && !arg.is_hide_default_value_set() {
                    assert!(!help.contains("[default:"), "{path} --{}: {help}", arg.get_id());
                }
            }
            for sub in command.get_subcommands() {
                check(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        check(&Cli::command(), "damselfly-agent");
    }
}
