//! `damselfly-load`: the load campaign's client side (see `damselfly_tests::load`).
//! Seeds images into a running registry, then pulls them with many clients at
//! once and pushes distinct images with many more, all with bearer tokens;
//! prints a markdown table and exits 1 if any request failed.
//! `scripts/load.sh` starts the registry and runs this against it.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use damselfly_tests::load::{run, Plan};

/// Load a running Damselfly registry with concurrent pulls and pushes.
#[derive(Parser)]
#[command(name = "damselfly-load")]
struct Args {
    /// The registry, e.g. http://127.0.0.1:5000.
    #[arg(long, env = "DAMSELFLY_LOAD_URL")]
    url: String,
    /// Login the clients send to the token endpoint (it must be able to push to --namespace).
    #[arg(long, env = "DAMSELFLY_LOAD_USER", default_value = "admin")]
    user: String,
    /// Its password.
    #[arg(long, env = "DAMSELFLY_LOAD_PASSWORD")]
    password: String,
    /// Namespace of the default tenant the images go to.
    #[arg(long, default_value = "load")]
    namespace: String,
    /// Images seeded for the pullers.
    #[arg(long, default_value_t = 20)]
    images: usize,
    /// Layers of each image.
    #[arg(long, default_value_t = 2)]
    layers: usize,
    /// KiB of each layer.
    #[arg(long, default_value_t = 256)]
    layer_kib: usize,
    /// Clients pulling at once.
    #[arg(long, default_value_t = 1000)]
    pullers: usize,
    /// Images each puller pulls, one after another.
    #[arg(long, default_value_t = 5)]
    pulls_per_client: usize,
    /// Clients pushing at once, one distinct image each.
    #[arg(long, default_value_t = 200)]
    pushers: usize,
    /// The registry's process id, to sample its open descriptors and peak RSS.
    #[arg(long)]
    registry_pid: Option<u32>,
    /// Seconds a single request may take before it counts as an error.
    #[arg(long, default_value_t = 120)]
    request_timeout_secs: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let plan = Plan {
        url: args.url.trim_end_matches('/').to_owned(),
        user: args.user,
        password: args.password,
        namespace: args.namespace,
        images: args.images.max(1),
        layers: args.layers,
        layer_bytes: args.layer_kib * 1024,
        pullers: args.pullers,
        pulls_per_client: args.pulls_per_client,
        pushers: args.pushers,
        registry_pid: args.registry_pid,
        request_timeout: Duration::from_secs(args.request_timeout_secs),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    match runtime.block_on(run(&plan)) {
        Ok(report) => {
            print!("{}", report.table());
            if report.errors() == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("damselfly-load: {e}");
            ExitCode::from(2)
        }
    }
}
