//! Remote object stores: the `--storage.object-store.*` settings, their
//! validation, and building an S3-compatible [`ObjectStore`] from them.
//!
//! HTTP goes through [`HyperConnector`]: hyper over plain TCP or rustls with
//! the `ring` backend passed explicitly (no process-wide crypto provider is
//! needed or installed), with a small pool of idle connections per host.
//! Credentials come from the settings or, where not given, from the standard
//! `AWS_*` environment variables (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL`, ...), as `object_store`'s `AmazonS3Builder::from_env` reads them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper::client::conn::http1::SendRequest;
use object_store::aws::AmazonS3Builder;
use object_store::client::{
    ClientOptions, HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpRequestBody, HttpResponse,
    HttpResponseBody, HttpService,
};
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, RetryConfig};
use serde::Deserialize;

use crate::BlockError;

/// The object store settings as the user gives them (flags or a file).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ObjectStoreConfig {
    /// Where blocks go: `s3://bucket` or `s3://bucket/prefix`. Empty: the
    /// local filesystem under the storage path.
    #[serde(default)]
    pub url: String,
    /// S3 endpoint for S3-compatible servers (MinIO, Ceph, ...), e.g.
    /// `http://127.0.0.1:9000`; default AWS (or `AWS_ENDPOINT_URL`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Region; default `AWS_REGION` or `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
    /// Access key id; default `AWS_ACCESS_KEY_ID`.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Secret access key; default `AWS_SECRET_ACCESS_KEY`.
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// Allow plain `http://` endpoints (default false: https only).
    #[serde(default)]
    pub allow_http: bool,
    /// Virtual-hosted-style requests (`bucket.endpoint`) instead of path style.
    #[serde(default)]
    pub virtual_hosted_style: bool,
}

/// Validated object store settings.
#[derive(Clone, PartialEq, Eq)]
pub enum ObjectStoreSettings {
    /// Blocks on the local filesystem (under the storage path).
    Local,
    /// Blocks in an S3 bucket, under `prefix`.
    S3 {
        /// The bucket.
        bucket: String,
        /// Key prefix inside the bucket (empty: the bucket's root).
        prefix: String,
        /// The validated user settings.
        config: ObjectStoreConfig,
    },
}

impl std::fmt::Debug for ObjectStoreSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local => f.write_str("Local"),
            Self::S3 { bucket, prefix, config } => f
                .debug_struct("S3")
                .field("bucket", bucket)
                .field("prefix", prefix)
                .field("endpoint", &config.endpoint)
                .field("region", &config.region)
                .field("access_key_id", &config.access_key_id)
                .field("secret_access_key", &config.secret_access_key.as_ref().map(|_| "<secret>"))
                .finish(),
        }
    }
}

impl ObjectStoreConfig {
    /// Checks every setting and reports every problem at once.
    pub fn validate(&self) -> Result<ObjectStoreSettings, Vec<String>> {
        let mut errors = Vec::new();
        let url = self.url.trim();
        let others_set = self.endpoint.is_some()
            || self.region.is_some()
            || self.access_key_id.is_some()
            || self.secret_access_key.is_some()
            || self.allow_http
            || self.virtual_hosted_style;
        if url.is_empty() {
            if others_set {
                errors.push("object store options are set but the object store url is empty".to_owned());
            }
            return if errors.is_empty() { Ok(ObjectStoreSettings::Local) } else { Err(errors) };
        }
        let (bucket, prefix) = match url.split_once("://") {
            Some(("s3" | "s3a", rest)) => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if !valid_bucket(bucket) {
                    errors.push(format!(
                        "object store url {url:?}: bucket {bucket:?} is not a valid bucket name \
                         (3-63 characters: lowercase letters, digits, '.', '-')"
                    ));
                }
                (bucket.to_owned(), prefix.trim_matches('/').to_owned())
            }
            Some((scheme, _)) => {
                errors.push(format!(
                    "object store url {url:?}: scheme {scheme:?} is not supported (use s3://bucket[/prefix])"
                ));
                (String::new(), String::new())
            }
            None => {
                errors.push(format!("object store url {url:?} is not of the form s3://bucket[/prefix]"));
                (String::new(), String::new())
            }
        };
        if let Some(e) = &self.endpoint {
            match e.split_once("://") {
                Some(("http", rest)) | Some(("https", rest)) if !rest.is_empty() => {
                    if e.starts_with("http://") && !self.allow_http {
                        errors.push(format!("object store endpoint {e:?} is plain http: set allow_http to use it"));
                    }
                }
                _ => errors.push(format!("object store endpoint {e:?} is not an http:// or https:// URL")),
            }
        }
        if self.region.as_deref().is_some_and(|r| r.trim().is_empty()) {
            errors.push("object store region is empty".to_owned());
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            errors.push("object store access_key_id and secret_access_key must be given together".to_owned());
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(ObjectStoreSettings::S3 { bucket, prefix, config: self.clone() })
    }
}

/// S3's bucket naming rules (the part a typo breaks).
fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && b.bytes().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && b.bytes().last().is_some_and(|c| c.is_ascii_alphanumeric())
}

/// How long object_store retries one request (with its own backoff) before
/// it reports the failure to the caller, whose retry then takes over.
const REQUEST_RETRY_TIMEOUT: Duration = Duration::from_secs(10);

impl ObjectStoreSettings {
    /// Builds the remote store; `None` for [`ObjectStoreSettings::Local`]
    /// (the caller opens its own directory).
    pub fn build_remote(&self) -> Result<Option<Arc<dyn ObjectStore>>, BlockError> {
        let Self::S3 { bucket, prefix, config } = self else { return Ok(None) };
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_allow_http(config.allow_http)
            .with_virtual_hosted_style_request(config.virtual_hosted_style)
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: REQUEST_RETRY_TIMEOUT,
                backoff: object_store::BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(2),
                    base: 2.0,
                },
            })
            .with_http_connector(HyperConnector::new()?);
        if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none() {
            b = b.with_region("us-east-1");
        }
        if let Some(e) = &config.endpoint {
            b = b.with_endpoint(e);
        }
        if let Some(r) = &config.region {
            b = b.with_region(r);
        }
        if let (Some(k), Some(s)) = (&config.access_key_id, &config.secret_access_key) {
            b = b.with_access_key_id(k).with_secret_access_key(s);
        }
        let s3 = b.build()?;
        Ok(Some(if prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(PrefixStore::new(s3, object_store::path::Path::from(prefix.as_str())))
        }))
    }

    /// A short description for logs: `local` or `s3://bucket/prefix`.
    pub fn describe(&self) -> String {
        match self {
            Self::Local => "local".to_owned(),
            Self::S3 { bucket, prefix, .. } if prefix.is_empty() => format!("s3://{bucket}"),
            Self::S3 { bucket, prefix, .. } => format!("s3://{bucket}/{prefix}"),
        }
    }
}

/// `object_store`'s HTTP client: hyper HTTP/1.1 over TCP or rustls (`ring`).
#[derive(Debug, Clone)]
pub struct HyperConnector {
    tls: Arc<rustls::ClientConfig>,
}

impl HyperConnector {
    /// A connector trusting the system's root certificates.
    pub fn new() -> Result<Self, BlockError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| BlockError::Config(format!("TLS client config: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self { tls: Arc::new(tls) })
    }
}

impl HttpConnector for HyperConnector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(HyperService { tls: Arc::clone(&self.tls), idle: Default::default() }))
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_IDLE_PER_HOST: usize = 32;

#[derive(Debug)]
struct HyperService {
    tls: Arc<rustls::ClientConfig>,
    /// Idle connections by `scheme://authority`.
    idle: Mutex<HashMap<String, Vec<SendRequest<HttpRequestBody>>>>,
}

fn http_error(kind: HttpErrorKind, e: impl std::error::Error + Send + Sync + 'static) -> HttpError {
    HttpError::new(kind, e)
}

fn io_error(kind: HttpErrorKind, msg: String) -> HttpError {
    HttpError::new(kind, std::io::Error::other(msg))
}

impl HyperService {
    fn take_idle(&self, key: &str) -> Option<SendRequest<HttpRequestBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let list = idle.get_mut(key)?;
        list.retain(|s| !s.is_closed());
        let i = list.iter().position(SendRequest::is_ready)?;
        Some(list.swap_remove(i))
    }

    fn put_idle(&self, key: String, sender: SendRequest<HttpRequestBody>) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let list = idle.entry(key).or_default();
        list.retain(|s| !s.is_closed());
        if list.len() < MAX_IDLE_PER_HOST {
            list.push(sender);
        }
    }

    async fn dial(&self, https: bool, host: &str, port: u16) -> Result<SendRequest<HttpRequestBody>, HttpError> {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect((host, port)))
            .await
            .map_err(|_| io_error(HttpErrorKind::Connect, format!("connecting to {host}:{port} timed out")))?
            .map_err(|e| http_error(HttpErrorKind::Connect, e))?;
        let _ = tcp.set_nodelay(true);
        if https {
            let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                .map_err(|e| io_error(HttpErrorKind::Connect, format!("server name {host:?}: {e}")))?;
            let stream = tokio::time::timeout(
                CONNECT_TIMEOUT,
                tokio_rustls::TlsConnector::from(Arc::clone(&self.tls)).connect(name, tcp),
            )
            .await
            .map_err(|_| io_error(HttpErrorKind::Connect, format!("TLS handshake with {host}:{port} timed out")))?
            .map_err(|e| http_error(HttpErrorKind::Connect, e))?;
            handshake(hyper_util::rt::TokioIo::new(stream)).await
        } else {
            handshake(hyper_util::rt::TokioIo::new(tcp)).await
        }
    }
}

async fn handshake<T>(io: T) -> Result<SendRequest<HttpRequestBody>, HttpError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) =
        hyper::client::conn::http1::handshake(io).await.map_err(|e| http_error(HttpErrorKind::Connect, e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "object store connection closed");
        }
    });
    Ok(sender)
}

#[async_trait::async_trait]
impl HttpService for HyperService {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let (mut parts, body) = req.into_parts();
        let https = match parts.uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            other => return Err(io_error(HttpErrorKind::Request, format!("unsupported URL scheme {other:?}"))),
        };
        let authority = parts
            .uri
            .authority()
            .cloned()
            .ok_or_else(|| io_error(HttpErrorKind::Request, format!("URL {} has no host", parts.uri)))?;
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let key = format!("{}://{authority}", if https { "https" } else { "http" });
        if !parts.headers.contains_key(http::header::HOST) {
            let v =
                http::HeaderValue::from_str(authority.as_str()).map_err(|e| http_error(HttpErrorKind::Request, e))?;
            parts.headers.insert(http::header::HOST, v);
        }
        // HTTP/1.1 origin form: the path and query only.
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        parts.uri = path.parse().map_err(|e| http_error(HttpErrorKind::Request, e))?;
        let req = http::Request::from_parts(parts, body);

        let mut sender = match self.take_idle(&key) {
            Some(s) => s,
            None => self.dial(https, &host, port).await?,
        };
        let response = tokio::time::timeout(RESPONSE_TIMEOUT, sender.send_request(req))
            .await
            .map_err(|_| io_error(HttpErrorKind::Timeout, format!("no response from {key} in {RESPONSE_TIMEOUT:?}")))?
            .map_err(|e| {
                let kind = if e.is_canceled() || e.is_closed() || e.is_incomplete_message() {
                    HttpErrorKind::Interrupted
                } else {
                    HttpErrorKind::Request
                };
                http_error(kind, e)
            })?;
        // The connection is reusable once this response's body is read; the
        // pool hands it out only when hyper says it is ready again.
        self.put_idle(key, sender);
        let (parts, incoming) = response.into_parts();
        let body = http_body_util::BodyExt::map_err(incoming, |e| http_error(HttpErrorKind::Interrupted, e));
        Ok(HttpResponse::from_parts(parts, HttpResponseBody::new(body)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_reports_every_problem() {
        let c = ObjectStoreConfig {
            url: "gs://Bad_Bucket".into(),
            endpoint: Some("127.0.0.1:9000".into()),
            region: Some(" ".into()),
            access_key_id: Some("k".into()),
            ..Default::default()
        };
        let errs = c.validate().expect_err("invalid");
        assert_eq!(errs.len(), 4, "{errs:?}");

        let c = ObjectStoreConfig {
            url: "s3://Bad_Bucket/p".into(),
            endpoint: Some("http://127.0.0.1:9000".into()),
            ..Default::default()
        };
        let errs = c.validate().expect_err("invalid");
        assert_eq!(errs.len(), 2, "bucket and allow_http: {errs:?}");

        let c = ObjectStoreConfig { allow_http: true, ..Default::default() };
        assert_eq!(c.validate().expect_err("options without url").len(), 1);
        assert_eq!(ObjectStoreConfig::default().validate(), Ok(ObjectStoreSettings::Local));
    }

    #[test]
    fn url_gives_bucket_and_prefix() {
        let c = ObjectStoreConfig {
            url: "s3://metrics-1/strata/prod/".into(),
            endpoint: Some("http://127.0.0.1:9000".into()),
            allow_http: true,
            access_key_id: Some("k".into()),
            secret_access_key: Some("s".into()),
            ..Default::default()
        };
        let s = c.validate().expect("valid");
        assert_eq!(s.describe(), "s3://metrics-1/strata/prod");
        assert!(!format!("{s:?}").contains("\"s\""), "secret not in Debug: {s:?}");
        assert!(s.build_remote().expect("build").is_some());
    }
}
