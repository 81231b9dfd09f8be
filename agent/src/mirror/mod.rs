//! The registry mirror (`--listen`, :65001) container runtimes pull from.
//!
//! Everything but blob reads is relayed to the registry as it is, with the
//! client's own credentials, so clients see the registry's own challenge,
//! manifests and errors. Blob GET/HEAD go through [`blob`].

mod blob;
mod offline;
mod relay;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, Response};
use axum::Router;
use damselfly_core::Digest;

use self::relay::relay;
pub use self::relay::MirrorState;

/// The mirror's routes: one handler that parses the path itself, since
/// repository names have any number of segments.
pub fn router(state: MirrorState) -> Router {
    Router::new().fallback(dispatch).with_state(state)
}

/// `/v2/<name>/blobs/<digest>`, split from the end of the path.
fn blob_path(path: &str) -> Option<(String, Digest)> {
    let rest = path.strip_prefix("/v2/")?;
    let (name, digest) = rest.rsplit_once("/blobs/")?;
    if name.is_empty() || digest.contains('/') {
        return None;
    }
    Some((name.to_owned(), digest.parse().ok()?))
}

async fn dispatch(State(state): State<MirrorState>, req: Request) -> Response<Body> {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        if let Some((name, digest)) = blob_path(req.uri().path()) {
            return blob::serve(&state, req.method() == Method::HEAD, &name, digest, req.headers()).await;
        }
    }
    relay(&state, req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_paths_parse_from_the_end() {
        let d = Digest::of(b"x");
        assert_eq!(blob_path(&format!("/v2/a/b/c/blobs/{d}")), Some(("a/b/c".to_owned(), d)));
        assert_eq!(blob_path(&format!("/v2/blobs/blobs/{d}")), Some(("blobs".to_owned(), d)));
        assert_eq!(blob_path(&format!("/v2/a/blobs/uploads/{d}")), None);
        assert_eq!(blob_path("/v2/a/manifests/latest"), None);
        assert_eq!(blob_path(&format!("/v2//blobs/{d}")), None);
    }
}
