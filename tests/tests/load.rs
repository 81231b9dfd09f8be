//! The short form of the load campaign (`scripts/load.sh` runs the long one):
//! 50 clients pulling 20 images at once and 20 clients pushing distinct
//! images at once, every one with bearer tokens from the token endpoint, on
//! each metadata backend. Every request must get the answer the protocol
//! prescribes and every byte must hash to its digest; afterwards each pushed
//! image is whole. No timing is asserted: the figures are printed.

use std::time::Duration;

use damselfly_tests::http::{Cred, Http};
use damselfly_tests::load::{run, Plan};
use damselfly_tests::{on_both_backends, Backend, Registry, ADMIN_PASSWORD, ADMIN_USER};

async fn concurrent_pulls_and_pushes_with_bearer_tokens_all_succeed(backend: Backend) {
    let reg = Registry::start(backend);
    let plan = Plan {
        url: reg.url.clone(),
        user: ADMIN_USER.to_owned(),
        password: ADMIN_PASSWORD.to_owned(),
        namespace: "load".to_owned(),
        images: 20,
        layers: 2,
        layer_bytes: 64 * 1024,
        pullers: 50,
        pulls_per_client: 3,
        pushers: 20,
        registry_pid: reg.pid(),
        request_timeout: Duration::from_secs(120),
    };
    let report = run(&plan).await.unwrap_or_else(|e| panic!("{e}; registry log:\n{}", reg.log()));
    println!("{backend:?}:\n{}", report.table());
    assert_eq!(report.errors(), 0, "{}", report.table());
    let [pulls, pushes] = &report.phases[..] else { panic!("two phases: {}", report.table()) };
    assert_eq!(pulls.requests, plan.pull_requests());
    assert_eq!(pushes.requests, plan.push_requests());
    assert!(pulls.peak_fds.is_some_and(|n| n > 0) && pulls.peak_rss_kib.is_some_and(|k| k > 0));

    // Every pushed image is listed with its tag and its blobs are all there.
    let http = Http::new(&reg);
    for client in 0..plan.pushers {
        let repo = format!("load/pushed-{client}");
        let tags = http.get(&Cred::admin(), &format!("/v2/{repo}/tags/list")).await.expect(200).json();
        assert_eq!(tags["tags"], serde_json::json!(["latest"]), "{repo}");
        let manifest = http.get(&Cred::admin(), &format!("/v2/{repo}/manifests/latest")).await.expect(200).json();
        let layers = manifest["layers"].as_array().expect("layers");
        assert_eq!(layers.len(), plan.layers);
        for digest in layers.iter().chain([&manifest["config"]]).map(|d| d["digest"].as_str().expect("a digest")) {
            let blob = http.get(&Cred::admin(), &format!("/v2/{repo}/blobs/{digest}")).await.expect(200);
            assert_eq!(damselfly_tests::sha256_digest(&blob.body), digest);
        }
    }
}

on_both_backends!(concurrent_pulls_and_pushes_with_bearer_tokens_all_succeed);
