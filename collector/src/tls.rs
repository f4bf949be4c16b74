//! `scheme: https` scrapes: a job's `tls_config` as a rustls client config,
//! and one request over a fresh TLS connection.
//!
//! The `ring` backend is passed explicitly to every config (never the process
//! default), so this works whatever else is in the dependency graph and
//! without anything installed at start. reqwest itself stays without TLS: an
//! `https` target's request is built by reqwest and sent here with hyper.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::{TlsConfig, TlsVersion};

/// The crypto backend of every TLS config built here.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file (at least one).
pub(crate) fn load_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    let certs =
        CertificateDer::pem_slice_iter(&bytes).collect::<Result<Vec<_>, _>>().map_err(|e| format!("{path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{path}: no PEM certificate found"));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub(crate) fn load_key(path: &str) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| format!("{path}: {e}"))
}

/// The rustls client config of a job's `tls_config`.
pub(crate) fn client_config(tls: &TlsConfig) -> Result<Arc<ClientConfig>, String> {
    let provider = provider();
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version {
        Some(TlsVersion::Tls13) => &[&rustls::version::TLS13],
        _ => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?;
    let builder = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerifier(provider.signature_verification_algorithms)))
    } else {
        let mut roots = RootCertStore::empty();
        if tls.ca_file.is_empty() {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        } else {
            for cert in load_certs(&tls.ca_file).map_err(|e| format!("unable to load specified CA cert {e}"))? {
                roots.add(cert).map_err(|e| format!("unable to use specified CA cert {}: {e}", tls.ca_file))?;
            }
        }
        builder.with_root_certificates(roots)
    };
    let config = if tls.cert_file.is_empty() {
        builder.with_no_client_auth()
    } else {
        let certs = load_certs(&tls.cert_file).map_err(|e| format!("unable to load specified client cert {e}"))?;
        let key = load_key(&tls.key_file).map_err(|e| format!("unable to load specified client key {e}"))?;
        builder.with_client_auth_cert(certs, key).map_err(|e| format!("unable to use client cert: {e}"))?
    };
    Ok(Arc::new(config))
}

/// The rustls client config for a Kubernetes API server: the job's
/// `tls_config` first; otherwise the CA certificates (DER) and client
/// identity (PEM certificate chain, PEM key) of a kubeconfig or the
/// in-cluster config.
pub(crate) fn api_server_config(
    tls: &TlsConfig,
    roots_der: Option<&[Vec<u8>]>,
    identity_pem: Option<(&[u8], &[u8])>,
    insecure: bool,
) -> Result<Arc<ClientConfig>, String> {
    if !tls.ca_file.is_empty()
        || !tls.cert_file.is_empty()
        || tls.insecure_skip_verify
        || roots_der.is_none() && identity_pem.is_none() && !insecure
    {
        return client_config(tls);
    }
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?;
    let builder = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerifier(provider.signature_verification_algorithms)))
    } else {
        let mut roots = RootCertStore::empty();
        match roots_der {
            Some(certs) => {
                for c in certs {
                    roots.add(CertificateDer::from(c.clone())).map_err(|e| format!("unable to use CA cert: {e}"))?;
                }
            }
            None => {
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            }
        }
        builder.with_root_certificates(roots)
    };
    let config = match identity_pem {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("client certificate: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("client key: {e}"))?;
            builder.with_client_auth_cert(certs, key).map_err(|e| format!("unable to use client cert: {e}"))?
        }
    };
    Ok(Arc::new(config))
}

/// `insecure_skip_verify`: any certificate and name, but still a valid
/// handshake signature.
#[derive(Debug)]
struct NoVerifier(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// Sends `req` (an `https` URL) over a new TLS connection and returns the
/// response, its body still streaming.
pub async fn send(tls: &TlsConfig, req: reqwest::Request) -> Result<reqwest::Response, String> {
    let url = req.url().clone();
    let host = url.host_str().ok_or("no host in URL")?.trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = url.port_or_known_default().unwrap_or(443);
    let config = client_config(tls)?;
    let name = if tls.server_name.is_empty() { host.clone() } else { tls.server_name.clone() };
    let server_name = ServerName::try_from(name).map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await.map_err(|e| format!("dial tcp: {e}"))?;
    let stream =
        tokio_rustls::TlsConnector::from(config).connect(server_name, tcp).await.map_err(|e| format!("tls: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut http_req: http::Request<reqwest::Body> = req.try_into().map_err(|e: reqwest::Error| e.to_string())?;
    if !http_req.headers().contains_key(http::header::USER_AGENT) {
        http_req.headers_mut().insert(
            http::header::USER_AGENT,
            http::HeaderValue::from_static(concat!("Strata/", env!("CARGO_PKG_VERSION"))),
        );
    }
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    *http_req.uri_mut() = path.parse().map_err(|e: http::uri::InvalidUri| e.to_string())?;
    let authority = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    };
    http_req
        .headers_mut()
        .insert(http::header::HOST, authority.parse().map_err(|e: http::header::InvalidHeaderValue| e.to_string())?);
    let resp = sender.send_request(http_req).await.map_err(|e| e.to_string())?;
    Ok(reqwest::Response::from(resp.map(reqwest::Body::wrap)))
}
