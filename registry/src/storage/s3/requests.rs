//! The S3 calls `object_store` does not make for us, signed with its own
//! SigV4 signer: listing the multipart uploads in progress (to abort those a
//! crash orphaned); completing a multipart upload from parts whose numbers
//! have gaps (an upload session takes part numbers from a counter in the
//! database, so that two requests racing on one session never overwrite
//! each other's parts; `object_store` numbers parts 1, 2, 3… by position);
//! and copying a range of one object into a part of another (CopyObject
//! stops at 5 GiB).

use axum::http::{Method, StatusCode};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use object_store::aws::AwsAuthorizer;
use object_store::client::HttpRequestBody;
use serde::Deserialize;

use super::S3Store;

/// A multipart upload the bucket holds open.
#[derive(Debug)]
pub struct OpenUpload {
    /// The object key it will complete to.
    pub key: String,
    /// Its id.
    pub upload_id: String,
    /// When it was started.
    pub initiated: DateTime<Utc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListMultipartUploadsResult {
    #[serde(default)]
    is_truncated: bool,
    #[serde(default)]
    next_key_marker: Option<String>,
    #[serde(default)]
    next_upload_id_marker: Option<String>,
    #[serde(default, rename = "Upload")]
    uploads: Vec<ListedUpload>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListedUpload {
    key: String,
    upload_id: String,
    initiated: String,
}

/// Most pages of uploads one sweep reads (1,000 uploads a page).
const MAX_PAGES: usize = 20;

impl S3Store {
    /// Multipart uploads open under `prefix` (a full key prefix).
    pub(super) async fn list_open_uploads(&self, prefix: &str) -> Result<Vec<OpenUpload>, String> {
        let mut out = Vec::new();
        let mut markers: Option<(String, String)> = None;
        for _ in 0..MAX_PAGES {
            let mut query = vec![("uploads", String::new()), ("prefix", prefix.to_owned())];
            if let Some((key, id)) = &markers {
                query.push(("key-marker", key.clone()));
                query.push(("upload-id-marker", id.clone()));
            }
            let url = format!("{}?{}", self.inner.bucket_url, encode_query(&query));
            let (status, body) = self.signed(Method::GET, &url, Bytes::new()).await?;
            if status != StatusCode::OK {
                return Err(self.refusal("listing multipart uploads", status, &body));
            }
            let page: ListMultipartUploadsResult = quick_xml::de::from_reader(body.as_ref())
                .map_err(|e| format!("S3 answered a multipart upload listing that is not valid XML: {e}"))?;
            for u in page.uploads {
                let initiated =
                    DateTime::parse_from_rfc3339(&u.initiated).map(|t| t.with_timezone(&Utc)).map_err(|e| {
                        format!("S3 listed upload {} with a start time {:?}: {e}", u.upload_id, u.initiated)
                    })?;
                out.push(OpenUpload { key: u.key, upload_id: u.upload_id, initiated });
            }
            match (page.is_truncated, page.next_key_marker, page.next_upload_id_marker) {
                (true, Some(key), Some(id)) => markers = Some((key, id)),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Completes the multipart upload `upload_id` of `key` (a full key) from
    /// `parts`, `(number, etag)` in ascending order.
    pub(super) async fn complete_numbered(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
    ) -> Result<(), String> {
        let mut xml = String::from("<CompleteMultipartUpload>");
        for (number, etag) in parts {
            xml.push_str(&format!(
                "<Part><PartNumber>{number}</PartNumber><ETag>{}</ETag></Part>",
                quick_xml::escape::escape(etag.as_str())
            ));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let url = format!("{}/{key}?{}", self.inner.bucket_url, encode_query(&[("uploadId", upload_id.to_owned())]));
        let (status, body) = self.signed(Method::POST, &url, Bytes::from(xml)).await?;
        // S3 may answer 200 with an error document when completion fails late.
        if status != StatusCode::OK || body.windows(7).any(|w| w == b"<Error>") {
            return Err(self.refusal("completing a multipart upload", status, &body));
        }
        Ok(())
    }

    /// Copies bytes `first..=last` of `source` (a full key) into part
    /// `number` of the multipart upload `upload_id` of `key`; returns the part's ETag.
    pub(super) async fn copy_part(
        &self,
        key: &str,
        upload_id: &str,
        number: usize,
        source: &str,
        (first, last): (u64, u64),
    ) -> Result<String, String> {
        let query = encode_query(&[("partNumber", number.to_string()), ("uploadId", upload_id.to_owned())]);
        let url = format!("{}/{key}?{query}", self.inner.bucket_url);
        let headers = [
            ("x-amz-copy-source", format!("/{}/{source}", self.inner.bucket)),
            ("x-amz-copy-source-range", format!("bytes={first}-{last}")),
        ];
        let (status, body) = self.signed_with(Method::PUT, &url, &headers, Bytes::new()).await?;
        let text = String::from_utf8_lossy(&body);
        let etag = text.split_once("<ETag>").and_then(|(_, rest)| rest.split_once("</ETag>")).map(|(etag, _)| etag);
        match etag {
            Some(etag) if status == StatusCode::OK => {
                Ok(quick_xml::escape::unescape(etag).map_or_else(|_| etag.to_owned(), |e| e.into_owned()))
            }
            _ => Err(self.refusal("copying a part", status, &body)),
        }
    }

    /// Sends one request signed with the store's credentials.
    async fn signed(&self, method: Method, url: &str, body: Bytes) -> Result<(StatusCode, Bytes), String> {
        self.signed_with(method, url, &[], body).await
    }

    /// Sends one request with extra (signed) headers.
    async fn signed_with(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), String> {
        let credential = self.inner.store.credentials().get_credential().await.map_err(|e| {
            format!("no S3 credentials: {e}; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or --s3-credentials-file")
        })?;
        let mut request = axum::http::Request::builder().method(method.clone()).uri(url);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let mut request = request
            .body(HttpRequestBody::from(body.clone()))
            .map_err(|e| format!("S3 request to {url} is invalid: {e}"))?;
        AwsAuthorizer::new(&credential, "s3", &self.inner.region).authorize(&mut request, None);
        let response = self
            .inner
            .http
            .request(method, url)
            .headers(request.headers().clone())
            .body(body)
            .send()
            .await
            .map_err(|e| self.unreachable(&e.to_string()))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| self.unreachable(&e.to_string()))?;
        Ok((status, body))
    }

    fn refusal(&self, what: &str, status: StatusCode, body: &[u8]) -> String {
        let text = String::from_utf8_lossy(body);
        let detail = format!("{status}: {text}");
        super::explain(&self.inner.endpoint, &self.inner.bucket, what, &detail, &detail)
    }

    fn unreachable(&self, error: &str) -> String {
        super::explain(
            &self.inner.endpoint,
            &self.inner.bucket,
            "sending a request",
            &format!("connect error: {error}"),
            error,
        )
    }
}

fn encode_query(pairs: &[(&str, String)]) -> String {
    // S3 reads `+` as a plus sign, so spaces go as `%20`.
    serde_urlencoded::to_string(pairs).unwrap_or_default().replace('+', "%20")
}
