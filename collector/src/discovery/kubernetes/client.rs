//! The `kube::Client` of a `kubernetes_sd_configs` entry: in-cluster config,
//! a kubeconfig file, or `api_server` with Prometheus' HTTP client settings.
//!
//! The HTTP stack is built here rather than by `kube::Client::try_from`, so
//! that TLS uses the `ring` backend explicitly (`crate::tls`), whatever other
//! rustls backends the process links and without a process-wide default.
//! Credentials of `api_server` are read at every request (a
//! `bearer_token_file` or `password_file` may rotate), as Prometheus does.

use base64::Engine;
use http::{HeaderValue, Request};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::{Body, ConfigExt};
use secrecy::ExposeSecret;
use tower::ServiceBuilder;

use super::config::ApiAccess;
use crate::config::{ScrapeAuth, TlsConfig};

/// Builds the client; the error says what is wrong (unreadable kubeconfig,
/// not in a cluster, bad certificates).
pub async fn build(access: &ApiAccess) -> Result<kube::Client, String> {
    let (config, tls, auth) = match access {
        ApiAccess::InCluster => (
            kube::Config::incluster().map_err(|e| format!("in-cluster configuration: {e}"))?,
            TlsConfig::default(),
            None,
        ),
        ApiAccess::Kubeconfig(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| format!("kubeconfig {path}: {e}"))?;
            let config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| format!("kubeconfig {path}: {e}"))?;
            (config, TlsConfig::default(), None)
        }
        ApiAccess::Server { url, auth, tls } => {
            let uri: http::Uri = url.parse().map_err(|e| format!("api_server {url:?}: {e}"))?;
            (kube::Config::new(uri), tls.clone(), Some(auth.clone()))
        }
    };
    let identity = identity_pem(&config.auth_info)?;
    let rustls = crate::tls::api_server_config(
        &tls,
        config.root_cert.as_deref(),
        identity.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
        config.accept_invalid_certs,
    )?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let mut https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config((*rustls).clone()).https_or_http();
    if let Some(name) = &config.tls_server_name {
        https = https.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(
            rustls::pki_types::ServerName::try_from(name.clone()).map_err(|e| format!("tls_server_name: {e}"))?,
        ));
    }
    let https = https.enable_http1().wrap_connector(http);
    let hyper: HyperClient<_, Body> = HyperClient::builder(TokioExecutor::new()).build(https);
    let default_ns = config.default_namespace.clone();
    match auth {
        Some(auth) => {
            let svc = ServiceBuilder::new()
                .layer(config.base_uri_layer())
                .map_request(move |mut req: Request<Body>| {
                    if let Some(v) = authorization_header(&auth) {
                        req.headers_mut().insert(http::header::AUTHORIZATION, v);
                    }
                    req
                })
                .service(hyper);
            Ok(kube::Client::new(svc, default_ns))
        }
        None => {
            let auth_layer = config.auth_layer().map_err(|e| format!("credentials: {e}"))?;
            let svc = ServiceBuilder::new()
                .layer(config.base_uri_layer())
                .option_layer(auth_layer)
                .map_err(tower::BoxError::from)
                .service(hyper);
            Ok(kube::Client::new(svc, default_ns))
        }
    }
}

/// The `Authorization` header of Prometheus-style credentials, read now
/// (`None` when there are none or a file cannot be read, which the API
/// server then answers with 401).
fn authorization_header(auth: &ScrapeAuth) -> Option<HeaderValue> {
    let value = match auth {
        ScrapeAuth::None => return None,
        ScrapeAuth::Basic { username, password } => {
            let password = match password {
                Some(p) => p.read().map_err(|e| tracing::warn!(error = %e, "kubernetes SD password")).ok()?,
                None => String::new(),
            };
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}")))
        }
        ScrapeAuth::Header { kind, credentials } => {
            let c = match credentials {
                Some(c) => c.read().map_err(|e| tracing::warn!(error = %e, "kubernetes SD credentials")).ok()?,
                None => String::new(),
            };
            format!("{kind} {c}")
        }
    };
    HeaderValue::from_str(&value).ok()
}

/// A client certificate chain and key, as PEM.
type Identity = (Vec<u8>, Vec<u8>);

/// The client certificate and key of a kubeconfig user, as PEM.
fn identity_pem(a: &kube::config::AuthInfo) -> Result<Option<Identity>, String> {
    let b64 = |s: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|e| format!("kubeconfig certificate data is not base64: {e}"))
    };
    let read = |p: &str| std::fs::read(p).map_err(|e| format!("{p}: {e}"));
    let cert = match (&a.client_certificate_data, &a.client_certificate) {
        (Some(d), _) => Some(b64(d)?),
        (None, Some(p)) => Some(read(p)?),
        (None, None) => None,
    };
    let key = match (&a.client_key_data, &a.client_key) {
        (Some(d), _) => Some(b64(d.expose_secret())?),
        (None, Some(p)) => Some(read(p)?),
        (None, None) => None,
    };
    Ok(cert.zip(key))
}
