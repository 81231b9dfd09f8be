//! The `damselfly-registry` binary.

use damselfly_registry::auth::bootstrap::Bootstrap;
use damselfly_registry::config::{Config, ConfigError, LogFormat};
use damselfly_registry::metadata::redact_url;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = match Config::load() {
        Ok(c) => c,
        // Help, version, or a flag that did not parse: clap says it and exits.
        Err(ConfigError::CommandLine(e)) => e.exit(),
        Err(e) => {
            eprintln!("damselfly-registry: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    init_logging(config.log_format);
    let listen = config.listen;
    let public_url = config.public_url();
    let database = redact_url(&config.database_url());
    let data_dir = config.data_dir.clone();
    let state = match damselfly_registry::build_state(config).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "registry failed to start");
            eprintln!("damselfly-registry: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let first_start = match damselfly_registry::bootstrap(&state).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "registry failed to start");
            eprintln!("damselfly-registry: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let blobs = state.blobs.describe(&data_dir);
    tracing::info!(%listen, %public_url, database, data_dir = %data_dir.display(), blobs, "registry ready");
    let host = public_url.trim_start_matches("http://").trim_start_matches("https://").to_owned();
    // Podman and skopeo refuse plain HTTP unless told; over HTTPS they need no flag.
    let tls = if public_url.starts_with("http://") { " --tls-verify=false" } else { "" };
    match first_start {
        Bootstrap::CreatedWithGeneratedPassword(password) => eprintln!(
            "\nFirst start: created the tenant `default` and the user `admin` with the password\n\n    {password}\n\n\
             It is shown only this once. Sign in to the console with it, or log in with `podman login{tls} {host} -u admin`.\n\
             Change it on the console's Password page ({public_url}/console/password), or with\n\
             curl -u admin -X PUT {public_url}/api/v1/users/admin/password -H 'content-type: application/json' -d '{{\"password\":\"…\"}}'\n\
             (or start with DAMSELFLY_ADMIN_PASSWORD set to choose it).\n"
        ),
        Bootstrap::CreatedWithConfiguredPassword => {
            eprintln!("\nFirst start: created the tenant `default` and the user `admin` with the password from DAMSELFLY_ADMIN_PASSWORD.\n")
        }
        Bootstrap::Existing => {}
    }
    eprintln!("{}", banner(&public_url, &host, tls, &data_dir.display().to_string(), &blobs, &database));
    match damselfly_registry::serve(state, shutdown_signal()).await {
        Ok(()) => {
            tracing::info!("registry stopped");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "registry stopped with an error");
            eprintln!("damselfly-registry: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// What the registry prints once it is ready: where it serves, the console,
/// and the README's first push (`team/hello:1`, a namespace the admin's
/// first push creates).
fn banner(public_url: &str, host: &str, tls: &str, data_dir: &str, blobs: &str, database: &str) -> String {
    format!(
        "\nDamselfly registry is serving {public_url}\n  \
         console:  {public_url}/console\n  \
         data:     {data_dir}\n  \
         blobs:    {blobs}\n  \
         metadata: {database}\n  \
         try:      podman login{tls} {host} -u admin\n            \
         podman push{tls} <image> {host}/team/hello:1\n"
    )
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
