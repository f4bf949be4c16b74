//! `kubernetes_sd_configs` as written and validated, with Prometheus' rules
//! and messages (`discovery/kubernetes/kubernetes.go`, `SDConfig`).

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::config::{
    HttpClientFields, Problem, RawAuthorization, RawBasicAuth, RawTlsConfig, ScrapeAuth, TlsConfig, validate_auth,
    validate_tls,
};

/// The kind of object a `kubernetes_sd_configs` entry turns into targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// One target per node (the kubelet).
    Node,
    /// One target per declared container port (or container) of each pod.
    Pod,
    /// One target per service port.
    Service,
    /// One target per `Endpoints` address and port.
    Endpoints,
    /// One target per `EndpointSlice` endpoint address and port.
    EndpointSlice,
}

impl Role {
    /// The name used in configs and meta labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Node => "node",
            Self::Pod => "pod",
            Self::Service => "service",
            Self::Endpoints => "endpoints",
            Self::EndpointSlice => "endpointslice",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "node" => Self::Node,
            "pod" => Self::Pod,
            "service" => Self::Service,
            "endpoints" => Self::Endpoints,
            "endpointslice" => Self::EndpointSlice,
            _ => return None,
        })
    }
}

/// One `kubernetes_sd_configs` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKubernetesSdConfig {
    /// `node`, `pod`, `service`, `endpoints` or `endpointslice`.
    pub role: Option<Spanned<String>>,
    /// The API server URL; absent: in-cluster config (or `kubeconfig_file`).
    pub api_server: Option<Spanned<String>>,
    /// A kubeconfig file to read the server and credentials from.
    pub kubeconfig_file: Option<Spanned<String>>,
    /// HTTP basic authentication to the API server.
    pub basic_auth: Option<Spanned<RawBasicAuth>>,
    /// The `Authorization` header sent to the API server.
    pub authorization: Option<Spanned<RawAuthorization>>,
    /// Deprecated form of `authorization.credentials`.
    pub bearer_token: Option<Spanned<String>>,
    /// Deprecated form of `authorization.credentials_file`.
    pub bearer_token_file: Option<Spanned<String>>,
    /// TLS settings for an `https` API server.
    pub tls_config: Option<Spanned<RawTlsConfig>>,
    /// Whether to follow redirects (accepted for compatibility; the API server does not redirect).
    pub follow_redirects: Option<bool>,
    /// Whether to use HTTP/2 (accepted for compatibility; Strata speaks HTTP/1.1 to the API server).
    pub enable_http2: Option<bool>,
    /// Which namespaces to watch (default: all).
    #[serde(default)]
    pub namespaces: RawNamespaces,
    /// Label and field selectors per watched kind.
    #[serde(default)]
    pub selectors: Vec<Spanned<RawSelector>>,
    /// Extra metadata attached to targets.
    #[serde(default)]
    pub attach_metadata: RawAttachMetadata,
}

/// `namespaces` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNamespaces {
    /// Also watch the namespace this process runs in.
    #[serde(default)]
    pub own_namespace: bool,
    /// Namespaces to watch.
    #[serde(default)]
    pub names: Vec<String>,
}

/// One `selectors` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSelector {
    /// The kind the selectors apply to (`pod`, `service`, `endpoints`, `endpointslice`, `node`).
    pub role: String,
    /// A label selector (`app=web,tier!=db`).
    #[serde(default)]
    pub label: String,
    /// A field selector (`spec.nodeName=n1`).
    #[serde(default)]
    pub field: String,
}

/// `attach_metadata` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAttachMetadata {
    /// Attach the node's labels and annotations to pod (and endpoint) targets.
    #[serde(default)]
    pub node: bool,
}

/// A validated selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// The kind it applies to.
    pub role: Role,
    /// Label selector (may be empty).
    pub label: String,
    /// Field selector (may be empty).
    pub field: String,
}

/// Where the API server is and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiAccess {
    /// In-cluster config: `KUBERNETES_SERVICE_HOST`/`PORT`, the service account token and CA.
    InCluster,
    /// A kubeconfig file.
    Kubeconfig(String),
    /// An explicit URL with its credentials and TLS settings.
    Server {
        /// The URL.
        url: String,
        /// Credentials.
        auth: ScrapeAuth,
        /// TLS settings.
        tls: TlsConfig,
    },
}

/// A validated `kubernetes_sd_configs` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesSdConfig {
    /// What becomes targets.
    pub role: Role,
    /// How to reach the API server.
    pub access: ApiAccess,
    /// Also watch the own namespace.
    pub own_namespace: bool,
    /// Namespaces to watch (none and not `own_namespace`: all).
    pub namespaces: Vec<String>,
    /// Selectors per kind.
    pub selectors: Vec<Selector>,
    /// Attach node metadata.
    pub attach_node: bool,
}

impl KubernetesSdConfig {
    /// The selector for `kind`, if any.
    pub fn selector(&self, kind: Role) -> Option<&Selector> {
        self.selectors.iter().find(|s| s.role == kind)
    }

    /// Makes relative file paths relative to `dir` (the config file's directory).
    pub fn resolve_paths(&mut self, dir: &std::path::Path) {
        let join = |p: &mut String| {
            if !p.is_empty() && std::path::Path::new(p.as_str()).is_relative() {
                *p = dir.join(p.as_str()).display().to_string();
            }
        };
        match &mut self.access {
            ApiAccess::InCluster => {}
            ApiAccess::Kubeconfig(p) => join(p),
            ApiAccess::Server { auth, tls, .. } => {
                for p in [&mut tls.ca_file, &mut tls.cert_file, &mut tls.key_file] {
                    join(p);
                }
                match auth {
                    ScrapeAuth::Basic { password: Some(crate::config::Secret::File(p)), .. }
                    | ScrapeAuth::Header { credentials: Some(crate::config::Secret::File(p)), .. } => join(p),
                    _ => {}
                }
            }
        }
    }
}

/// The kinds a role may have selectors for, as Prometheus allows them.
fn allowed_selectors(role: Role, attach_node: bool) -> &'static [Role] {
    match (role, attach_node) {
        (Role::Pod, false) => &[Role::Pod],
        (Role::Pod, true) => &[Role::Pod, Role::Node],
        (Role::Service, _) => &[Role::Service],
        (Role::Endpoints, false) => &[Role::Pod, Role::Service, Role::Endpoints],
        (Role::Endpoints, true) => &[Role::Pod, Role::Service, Role::Endpoints, Role::Node],
        (Role::EndpointSlice, false) => &[Role::Pod, Role::Service, Role::EndpointSlice],
        (Role::EndpointSlice, true) => &[Role::Pod, Role::Service, Role::EndpointSlice, Role::Node],
        (Role::Node, _) => &[Role::Node],
    }
}

/// Checks a label or field selector's syntax (terms separated by commas,
/// outside parentheses; each `k`, `!k`, `k=v`, `k==v`, `k!=v`, `k in (..)`,
/// `k notin (..)`; field selectors only the three comparisons).
fn check_selector(s: &str, field: bool) -> Result<(), String> {
    let mut depth = 0i32;
    let mut terms = Vec::new();
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if depth < 0 {
            return Err(format!("unbalanced parentheses in {s:?}"));
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced parentheses in {s:?}"));
    }
    terms.push(&s[start..]);
    for t in terms {
        let t = t.trim();
        if t.is_empty() {
            if s.trim().is_empty() {
                continue;
            }
            return Err(format!("empty term in selector {s:?}"));
        }
        let has_op = t.contains('=');
        if field {
            if !has_op {
                return Err(format!("invalid selector: '{s}'; can't understand '{t}'"));
            }
        } else if !has_op {
            let set = t.split_once(" notin ").or_else(|| t.split_once(" in ")).map(|(_, rest)| rest.trim());
            match set {
                Some(rest) if rest.starts_with('(') && rest.ends_with(')') => {}
                Some(_) => return Err(format!("unable to parse requirement: {t:?}")),
                None if t.contains([' ', '(', ')']) => return Err(format!("unable to parse requirement: {t:?}")),
                None => {}
            }
        }
        let key = t.split(['=', '!', ' ']).find(|k| !k.is_empty()).unwrap_or("");
        if key.is_empty() {
            return Err(format!("unable to parse requirement: {t:?}: no key"));
        }
    }
    Ok(())
}

/// Validates one entry as Prometheus' `SDConfig.UnmarshalYAML` does.
pub fn validate(raw: &Spanned<RawKubernetesSdConfig>, problems: &mut Vec<Problem>) -> Option<KubernetesSdConfig> {
    let at = |line: u64, column: u64, message: String| Problem { line, column, message };
    let pos = |s: &Spanned<String>| (s.referenced.line(), s.referenced.column());
    let whole = (raw.referenced.line(), raw.referenced.column());
    let c = &raw.value;
    let before = problems.len();
    let role = match &c.role {
        None => {
            problems.push(at(
                whole.0,
                whole.1,
                "role missing (one of: pod, service, endpoints, endpointslice, node, ingress)".into(),
            ));
            None
        }
        Some(r) => match Role::parse(&r.value) {
            Some(role) => Some(role),
            None => {
                let (l, col) = pos(r);
                let msg = if r.value == "ingress" {
                    "Kubernetes SD role \"ingress\" is not supported by Strata".to_owned()
                } else {
                    format!("unknown Kubernetes SD role {:?}", r.value)
                };
                problems.push(at(l, col, msg));
                None
            }
        },
    };
    let fields = HttpClientFields {
        basic_auth: c.basic_auth.as_ref(),
        authorization: c.authorization.as_ref(),
        bearer_token: c.bearer_token.as_ref(),
        bearer_token_file: c.bearer_token_file.as_ref(),
        tls_config: c.tls_config.as_ref(),
    };
    let access = validate_access(c.api_server.as_ref(), c.kubeconfig_file.as_ref(), &fields, whole, problems);
    let attach_node = c.attach_metadata.node;
    let mut selectors: Vec<Selector> = Vec::new();
    for s in &c.selectors {
        let (l, col) = (s.referenced.line(), s.referenced.column());
        let Some(kind) = Role::parse(&s.value.role) else {
            problems.push(at(l, col, format!("invalid selector role {:?}", s.value.role)));
            continue;
        };
        if selectors.iter().any(|x| x.role == kind) {
            problems.push(at(l, col, format!("duplicated selector role: {}", kind.as_str())));
            continue;
        }
        if let Some(role) = role {
            let allowed = allowed_selectors(role, attach_node);
            if !allowed.contains(&kind) {
                let names: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
                problems.push(at(
                    l,
                    col,
                    format!("{} role supports only {} selectors", role.as_str(), names.join(", ")),
                ));
            }
        }
        if let Err(e) = check_selector(&s.value.label, false) {
            problems.push(at(l, col, format!("invalid label selector: {e}")));
        }
        if let Err(e) = check_selector(&s.value.field, true) {
            problems.push(at(l, col, format!("invalid field selector: {e}")));
        }
        selectors.push(Selector { role: kind, label: s.value.label.clone(), field: s.value.field.clone() });
    }
    let role = role?;
    if problems.len() > before {
        return None;
    }
    Some(KubernetesSdConfig {
        role,
        access,
        own_namespace: c.namespaces.own_namespace,
        namespaces: c.namespaces.names.clone(),
        selectors,
        attach_node,
    })
}

/// Where the API server is, from `api_server`, `kubeconfig_file` and the
/// HTTP client settings, with Prometheus' rules: `whole` locates the
/// section for problems without a field of their own.
pub(crate) fn validate_access(
    api_server: Option<&Spanned<String>>,
    kubeconfig_file: Option<&Spanned<String>>,
    fields: &HttpClientFields<'_>,
    whole: (u64, u64),
    problems: &mut Vec<Problem>,
) -> ApiAccess {
    let at = |line: u64, column: u64, message: String| Problem { line, column, message };
    let pos = |s: &Spanned<String>| (s.referenced.line(), s.referenced.column());
    let auth = validate_auth(fields, problems);
    let tls = validate_tls(fields, problems);
    let custom_http = !matches!(auth, ScrapeAuth::None) || fields.tls_config.is_some();
    match (api_server, kubeconfig_file) {
        (Some(a), Some(_)) => {
            let (l, col) = pos(a);
            problems.push(at(l, col, "cannot use 'kubeconfig_file' and 'api_server' simultaneously".into()));
            ApiAccess::InCluster
        }
        (None, Some(k)) => {
            if custom_http {
                let (l, col) = pos(k);
                problems.push(at(
                    l,
                    col,
                    "cannot use a custom HTTP client configuration together with 'kubeconfig_file'".into(),
                ));
            }
            ApiAccess::Kubeconfig(k.value.clone())
        }
        (None, None) => {
            if custom_http {
                problems.push(at(
                    whole.0,
                    whole.1,
                    "to use custom HTTP client configuration please provide the 'api_server' URL explicitly".into(),
                ));
            }
            ApiAccess::InCluster
        }
        (Some(a), None) => {
            let url = a.value.trim_end_matches('/');
            match url.parse::<http::Uri>() {
                Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {}
                _ => {
                    let (l, col) = pos(a);
                    problems.push(at(
                        l,
                        col,
                        format!("invalid api_server URL {:?}: must be http(s)://host[:port]", a.value),
                    ));
                }
            }
            ApiAccess::Server { url: url.to_owned(), auth, tls }
        }
    }
}
