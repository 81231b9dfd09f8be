//! `oci-client`, the Rust OCI client, against the real registry: it logs in
//! through the token protocol, pushes an image and pulls it back intact.

use damselfly_tests::{on_both_backends, Backend, Registry, ADMIN_PASSWORD};
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

on_both_backends!(oci_client_pushes_and_pulls_with_a_token, oci_client_without_credentials_is_refused);

fn client() -> Client {
    // reqwest is built without a default TLS provider; the tests use plain HTTP.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::new(ClientConfig { protocol: ClientProtocol::Http, ..Default::default() })
}

async fn oci_client_pushes_and_pulls_with_a_token(backend: Backend) {
    let reg = Registry::start_paired(backend);
    let reference: Reference = format!("{}/rust/client/app:v1", reg.host).parse().expect("reference");
    let auth = RegistryAuth::Basic("admin".into(), ADMIN_PASSWORD.into());
    let layer_bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let layers = vec![ImageLayer::oci_v1(layer_bytes.clone(), None)];
    let config = Config::oci_v1(br#"{"architecture":"amd64","os":"linux"}"#.to_vec(), None);
    let c = client();
    let pushed = c.push(&reference, &layers, config, &auth, None).await.expect("oci-client push");
    // The registry answers with the manifest's location by digest.
    let prefix = format!("{}/v2/rust/client/app/manifests/sha256:", reg.url);
    assert!(pushed.manifest_url.starts_with(&prefix), "{}", pushed.manifest_url);

    let pulled = client()
        .pull(&reference, &auth, vec![oci_client::manifest::IMAGE_LAYER_MEDIA_TYPE])
        .await
        .expect("oci-client pull");
    assert_eq!(pulled.layers.len(), 1);
    assert_eq!(pulled.layers[0].data.to_vec(), layer_bytes);
    assert_eq!(pulled.config.data.to_vec(), br#"{"architecture":"amd64","os":"linux"}"#.to_vec());
    let tags = client().list_tags(&reference, &auth, None, None).await.expect("tags");
    assert_eq!(tags.tags, ["v1"]);
}

async fn oci_client_without_credentials_is_refused(backend: Backend) {
    let reg = Registry::start_paired(backend);
    let reference: Reference = format!("{}/rust/client/app:v1", reg.host).parse().expect("reference");
    let layers = vec![ImageLayer::oci_v1(b"layer".to_vec(), None)];
    let config = Config::oci_v1(b"{}".to_vec(), None);
    let err = client().push(&reference, &layers, config, &RegistryAuth::Anonymous, None).await;
    assert!(err.is_err(), "an anonymous push must fail");
    let err =
        client().pull(&reference, &RegistryAuth::Anonymous, vec![oci_client::manifest::IMAGE_LAYER_MEDIA_TYPE]).await;
    assert!(err.is_err(), "an anonymous pull of a private repository must fail");
}
