//! `damselfly-agent node-setup`: configures the node's container runtimes to
//! pull the acceleration host through this agent (the DaemonSet's init step,
//! or by hand on a host without Kubernetes), and undoes it.

use std::path::PathBuf;

use clap::Args;
use damselfly_installer::node::{self, NodeSetup, Runtime};

use crate::error::{Error, Result};

/// Flags of `damselfly-agent node-setup`.
#[derive(Args, Debug)]
pub struct NodeSetupArgs {
    /// The registry's URL, e.g. https://registry.example.com; runtimes fall back to it when the agent is down.
    #[arg(long, env = "DAMSELFLY_AGENT_REGISTRY", required_unless_present = "uninstall")]
    pub registry: Option<String>,
    /// The address workloads pull from [default: p2p.<registry host>:65001; 127.0.0.1:65001 for a registry addressed by IP].
    #[arg(long, env = "DAMSELFLY_AGENT_ACCELERATION_HOST")]
    pub acceleration_host: Option<String>,
    /// The agent's mirror as runtimes on this node reach it.
    #[arg(long, env = "DAMSELFLY_AGENT_MIRROR", default_value = "127.0.0.1:65001")]
    pub mirror: String,
    /// Runtimes to configure, comma-separated: containerd, crio (also podman), docker
    /// [default: each whose directory exists: /etc/containerd, /etc/containers, /etc/docker].
    #[arg(long, env = "DAMSELFLY_AGENT_RUNTIMES", value_delimiter = ',')]
    pub runtime: Vec<String>,
    /// The node's root filesystem as this process sees it (the host's / mounted into a container, or a test directory).
    #[arg(long, env = "DAMSELFLY_AGENT_NODE_ROOT", default_value = "/")]
    pub root: PathBuf,
    /// Print the files that would be written, and write nothing.
    #[arg(long, conflicts_with = "uninstall")]
    pub dry_run: bool,
    /// Put back every file node-setup changed, as it was, and remove what it added.
    #[arg(long)]
    pub uninstall: bool,
    /// Then keep running until stopped (the main container of a one-shot DaemonSet).
    #[arg(long)]
    pub hold: bool,
}

/// Runs the subcommand; the error says what to do.
pub fn run(args: NodeSetupArgs) -> Result<()> {
    let hold = args.hold;
    apply(args)?;
    if hold {
        hold_until_stopped();
    }
    Ok(())
}

/// Sleeps until SIGTERM or SIGINT, which end the process.
fn hold_until_stopped() {
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

fn apply(args: NodeSetupArgs) -> Result<()> {
    if !args.root.is_dir() {
        return Err(usage(format!(
            "the root {} is not a directory: pass --root with the node's filesystem",
            args.root.display()
        )));
    }
    if args.uninstall {
        let report = node::uninstall(&args.root)?;
        for path in &report.written {
            println!("restored {path}");
        }
        if report.written.is_empty() && report.notes.is_empty() {
            println!("nothing to undo: node-setup has not changed this node");
        }
        print_notes(&report.notes);
        return Ok(());
    }
    let runtimes = if args.runtime.is_empty() {
        let found = Runtime::detect(&args.root);
        if found.is_empty() {
            return Err(usage(format!(
                "no container runtime found: none of /etc/containerd, /etc/containers, /etc/docker exists under {}; \
                 pass --runtime containerd,crio,docker to choose",
                args.root.display()
            )));
        }
        found
    } else {
        args.runtime.iter().map(|r| r.trim().parse()).collect::<Result<Vec<Runtime>, _>>()?
    };
    let registry = args.registry.as_deref().unwrap_or_default();
    let setup = NodeSetup::new(registry, args.acceleration_host.as_deref(), &args.mirror, runtimes)?;
    if args.dry_run {
        let plan = setup.plan(&args.root)?;
        for change in &plan.changes {
            println!("--- {}\n{}", change.path, change.content);
        }
        let notes: Vec<String> = plan.notes.into_iter().map(|n| n.text).collect();
        print_notes(&notes);
        return Ok(());
    }
    let report = setup.install(&args.root)?;
    for path in &report.written {
        println!("wrote {path}");
    }
    for path in &report.unchanged {
        println!("unchanged {path}");
    }
    println!(
        "{} is pulled through the agent at {} ({})",
        setup.acceleration_host,
        setup.mirror,
        setup.runtimes.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    );
    print_notes(&report.notes);
    Ok(())
}

/// A setting given on the command line that cannot work, with what to do instead.
fn usage(message: String) -> Error {
    Error::Installer(node::Error::Usage(message))
}

fn print_notes(notes: &[String]) {
    for note in notes {
        println!("note: {note}");
    }
}
