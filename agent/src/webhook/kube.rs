//! The little of the Kubernetes API the webhook needs (read a namespace,
//! read and write secrets), over HTTPS with the Pod's service account: its
//! token (re-read for every call, as the kubelet rotates it) and the
//! cluster's CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio_rustls::TlsConnector;

/// How long one API call may take: the API server gives the webhook 5 s in all.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// A client of the Kubernetes API.
pub struct Kube {
    host: String,
    port: u16,
    token_file: PathBuf,
    tls: TlsConnector,
}

impl Kube {
    /// A client of `api` (`https://host[:port]`) with the service account in `account_dir`.
    pub fn new(api: &str, account_dir: &Path) -> Result<Kube, String> {
        let authority = api
            .strip_prefix("https://")
            .ok_or_else(|| format!("the Kubernetes API `{api}` must be an https:// URL"))?
            .trim_end_matches('/');
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h.trim_matches(['[', ']']).to_owned(), p.parse().map_err(|_| format!("bad port in {api}"))?)
            }
            _ => (authority.trim_matches(['[', ']']).to_owned(), 443),
        };
        let ca_file = account_dir.join("ca.crt");
        let mut roots = rustls::RootCertStore::empty();
        let cas = CertificateDer::pem_file_iter(&ca_file)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("cannot read the cluster CA {}: {e}", ca_file.display()))?;
        for ca in cas {
            roots.add(ca).map_err(|e| format!("the cluster CA {} is not usable: {e}", ca_file.display()))?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Kube { host, port, token_file: account_dir.join("token"), tls: TlsConnector::from(Arc::new(config)) })
    }

    /// `GET path`: the object, or `None` if it does not exist.
    pub async fn get(&self, path: &str) -> Result<Option<Value>, String> {
        match self.call(Method::GET, path, None).await? {
            (StatusCode::NOT_FOUND, _) => Ok(None),
            (s, body) if s.is_success() => Ok(Some(body)),
            (s, body) => Err(format!("GET {path}: {s}: {}", body["message"].as_str().unwrap_or_default())),
        }
    }

    /// One call; the status and the JSON body (`null` if there is none).
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<(StatusCode, Value), String> {
        tokio::time::timeout(CALL_TIMEOUT, self.call_once(method, path, body))
            .await
            .map_err(|_| format!("the Kubernetes API did not answer in {CALL_TIMEOUT:?}"))?
    }

    async fn call_once(&self, method: Method, path: &str, body: Option<&Value>) -> Result<(StatusCode, Value), String> {
        let token = std::fs::read_to_string(&self.token_file)
            .map_err(|e| format!("cannot read the service account token {}: {e}", self.token_file.display()))?;
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("cannot reach the Kubernetes API at {}:{}: {e}", self.host, self.port))?;
        let name = ServerName::try_from(self.host.clone()).map_err(|e| e.to_string())?;
        let tls = self.tls.connect(name, tcp).await.map_err(|e| format!("TLS with the Kubernetes API: {e}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, format!("{}:{}", self.host, self.port))
            .header(header::AUTHORIZATION, format!("Bearer {}", token.trim()))
            .header(header::ACCEPT, "application/json")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(bytes::Bytes::from(bytes)))
            .map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }
}
