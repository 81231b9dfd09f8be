//! What cluster setup reads: the webhook's `AdmissionReview` from the API
//! server, the setup script's query from a cluster owner, and the agent's
//! TOML settings file.

use std::path::Path;
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use clap::{CommandFactory, FromArgMatches, Parser};
use damselfly_agent::config::Config;
use damselfly_installer::cluster::{script, ClusterSetup};
use damselfly_installer::webhook::{
    parse_review, pull_secret_patch, response, secret_write, Rewriter, SecretWrite, SECRET_SUFFIX,
};
use damselfly_registry::p2p::install::choose;
use serde_json::Value;

const REGISTRY_URL: &str = "https://registry.example.com";
const ACCELERATION_HOST: &str = "p2p.registry.example.com:65001";

/// An `AdmissionReview` as the API server may send it. Every patch
/// operation replaces an image the Pod has with the same image at the
/// acceleration address; the answer is an allowed review whose patch is
/// base64 of a JSON array; a pull secret's copy is only ever for a Secret
/// that holds the registry's credentials.
pub fn admission_review(data: &[u8]) {
    let Ok(review) = serde_json::from_slice::<Value>(data) else { return };
    let rewriter =
        Rewriter { registry_host: "registry.example.com".into(), acceleration_host: ACCELERATION_HOST.into() };
    if let Ok(request) = parse_review(&review) {
        let p2p_on = |ns: &str| ns.len().is_multiple_of(2);
        let plan = rewriter.plan(&request.pod, true, &p2p_on);
        for op in &plan.patch {
            let path = op["path"].as_str().expect("a path");
            let before = request.pod.pointer(path).and_then(Value::as_str).expect("the patch replaces an image");
            let after = op["value"].as_str().expect("an image");
            assert_eq!(op["op"], "replace");
            let (_, rest) = before.split_once('/').expect("a registry host before the path");
            assert_eq!(after, format!("{ACCELERATION_HOST}/{rest}"), "{op}");
        }
        assert!(plan.pull_secrets.iter().all(|s| !s.ends_with(SECRET_SUFFIX)));
        let mut patch = plan.patch.clone();
        patch.extend(pull_secret_patch(&request.pod, &plan.pull_secrets));
        let answer = response(&request.uid, &patch, &[]);
        assert_eq!(answer["response"]["allowed"], true);
        if let Some(encoded) = answer["response"]["patch"].as_str() {
            let decoded = STANDARD.decode(encoded).expect("base64");
            let ops: Value = serde_json::from_slice(&decoded).expect("JSON");
            assert_eq!(ops.as_array().map(Vec::len), Some(patch.len()));
        }
        let _ = rewriter.registry_namespaces(&request.pod);
    }
    // The same document as a pull secret the webhook might copy.
    if let Some(copy) = rewriter.accelerated_secret(&review) {
        assert_eq!(copy["type"], "kubernetes.io/dockerconfigjson");
        let name = copy["metadata"]["name"].as_str().expect("a name");
        assert!(name.ends_with(SECRET_SUFFIX));
        match secret_write(Some(&review), &copy) {
            SecretWrite::Create(_) => panic!("a Secret exists, so it is not created"),
            SecretWrite::Update(_) | SecretWrite::Unchanged | SecretWrite::Refuse(_) => {}
        }
    }
}

/// The query of `GET /p2p/v1/install.sh`. A query that is accepted renders
/// a script whose values are single-quoted shell words, and whose agent
/// settings the agent reads back.
pub fn install_query(data: &[u8]) {
    let Some(query) = super::text(data) else { return };
    let Ok(chosen) = choose(Some(query), REGISTRY_URL, ACCELERATION_HOST.into()) else { return };
    let setup = ClusterSetup {
        registry_url: REGISTRY_URL.into(),
        registry_ca: None,
        cluster: "default/edge".into(),
        cluster_token: "token".into(),
        acceleration_host: chosen.acceleration_host,
        agent_image: chosen.agent_image,
        cache_max_bytes: chosen.cache_max_bytes,
    };
    let rendered = script(&setup);
    for value in [&setup.acceleration_host, &setup.agent_image] {
        assert!(rendered.contains(&format!("'{value}'")), "{value:?} is not a quoted word of the script");
        assert!(!value.contains(['\'', '"', '\\', '$', '`', '\n', ' ', ';']), "{value:?} was accepted");
    }
    let toml = format!("{}cluster_token = \"t\"\n", setup.agent_toml("/var/lib/damselfly/cache"));
    let (flags, matches) = agent_command_line();
    let read = Config::with_file(flags.clone(), matches, Path::new("agent.toml"), &toml);
    let read = read.unwrap_or_else(|e| panic!("the agent cannot read the settings the script installs: {e}\n{toml}"));
    assert_eq!(read.cache_max_bytes, setup.cache_max_bytes);
}

#[derive(Parser)]
struct Run {
    #[command(flatten)]
    config: Config,
}

/// `damselfly-agent run --config agent.toml`, as clap reads it (no other
/// flag, and no `DAMSELFLY_AGENT_*` variable is set where the fuzzer runs).
fn agent_command_line() -> &'static (Config, clap::ArgMatches) {
    static PARSED: OnceLock<(Config, clap::ArgMatches)> = OnceLock::new();
    PARSED.get_or_init(|| {
        let matches = Run::command().get_matches_from(["run", "--config", "agent.toml"]);
        let flags = Run::from_arg_matches(&matches).expect("the flags parse").config;
        (flags, matches)
    })
}

/// The agent's `--config` file. What is read is settled: a registry and a
/// cluster token given, watermarks in order, slots at least one.
pub fn agent_config(data: &[u8]) {
    let Some(text) = super::text(data) else { return };
    let (flags, matches) = agent_command_line();
    match Config::with_file(flags.clone(), matches, Path::new("agent.toml"), text) {
        Ok(c) => {
            assert!(!c.registry.is_empty() && !c.cluster_token.is_empty());
            let (high, low) = c.cache_watermarks();
            assert!((1..=100).contains(&high) && low < high, "{c:?}");
            assert!(c.upload_slots >= 1 && c.fetch_slots >= 1, "{c:?}");
            assert!(!c.node_name.is_empty());
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}
