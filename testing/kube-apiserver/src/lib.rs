//! A fake Kubernetes API server for tests, speaking the real list+watch HTTP
//! protocol over an in-memory object store.
//!
//! What it serves, as the real API server does:
//! - `GET` of a collection: a JSON `List` (`kind: <Kind>List`) whose
//!   `metadata.resourceVersion` is the store's current version; `labelSelector`
//!   and `fieldSelector` filter it.
//! - `GET ...?watch=true&resourceVersion=N`: a chunked stream of
//!   newline-delimited `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":...}`
//!   events for every change after `N` (`N` empty or `0`: synthetic `ADDED`
//!   events for the current objects first). `allowWatchBookmarks=true` adds
//!   periodic `BOOKMARK`s; `timeoutSeconds` ends the stream. A watch from a
//!   version older than the kept history (see [`FakeApiServer::compact`]) gets
//!   an `ERROR` event carrying a `Status` with code 410 and reason `Expired`
//!   (or, with [`FakeApiServer::set_gone_as_http_status`], an HTTP 410 with
//!   that `Status`), so the client must relist. With selectors, an object
//!   that stops matching is sent as `DELETED` and one that starts matching as
//!   `ADDED`.
//! - `GET`, `POST`, `PUT` (optimistic concurrency on `resourceVersion`: 409
//!   on conflict) and `DELETE` of single objects.
//! - Namespaced (`/api/v1/namespaces/<ns>/pods`) and cluster-wide
//!   (`/api/v1/pods`) paths for core/v1 `pods`, `services`, `endpoints`,
//!   `events`, `configmaps`, `secrets`, cluster-scoped `nodes` and
//!   `namespaces`, `discovery.k8s.io/v1` `endpointslices`,
//!   `coordination.k8s.io/v1` `leases` and `monitoring.coreos.com/v1`
//!   `servicemonitors`, `podmonitors`, `prometheusrules`; `/version`.
//!
//! Tests drive it with [`FakeApiServer::apply`] (create or replace: `ADDED`
//! or `MODIFIED`), [`FakeApiServer::delete`], [`FakeApiServer::compact`],
//! [`FakeApiServer::end_watches`] and [`FakeApiServer::pause_watches`] /
//! [`FakeApiServer::resume_watches`]. It listens on 127.0.0.1 on a free port
//! ([`FakeApiServer::url`], [`FakeApiServer::write_kubeconfig`]) and can be
//! used in-process through [`FakeApiServer::router`] (e.g.
//! `kube::Client::new(router, "default")`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, Method, StatusCode, Uri};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

/// One kind of object the server stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceType {
    /// API group (`""` for core).
    pub group: &'static str,
    /// API version (`v1`).
    pub version: &'static str,
    /// The plural used in paths.
    pub plural: &'static str,
    /// The object kind.
    pub kind: &'static str,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
}

impl ResourceType {
    /// `apiVersion` of its objects (`v1`, `discovery.k8s.io/v1`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_owned() } else { format!("{}/{}", self.group, self.version) }
    }
}

/// Every resource the server knows.
pub const RESOURCES: &[ResourceType] = &[
    ResourceType { group: "", version: "v1", plural: "pods", kind: "Pod", namespaced: true },
    ResourceType { group: "", version: "v1", plural: "services", kind: "Service", namespaced: true },
    ResourceType { group: "", version: "v1", plural: "endpoints", kind: "Endpoints", namespaced: true },
    ResourceType { group: "", version: "v1", plural: "events", kind: "Event", namespaced: true },
    ResourceType { group: "", version: "v1", plural: "configmaps", kind: "ConfigMap", namespaced: true },
    ResourceType { group: "", version: "v1", plural: "secrets", kind: "Secret", namespaced: true },
    ResourceType { group: "", version: "v1", plural: "nodes", kind: "Node", namespaced: false },
    ResourceType { group: "", version: "v1", plural: "namespaces", kind: "Namespace", namespaced: false },
    ResourceType {
        group: "discovery.k8s.io",
        version: "v1",
        plural: "endpointslices",
        kind: "EndpointSlice",
        namespaced: true,
    },
    ResourceType { group: "coordination.k8s.io", version: "v1", plural: "leases", kind: "Lease", namespaced: true },
    ResourceType {
        group: "monitoring.coreos.com",
        version: "v1",
        plural: "servicemonitors",
        kind: "ServiceMonitor",
        namespaced: true,
    },
    ResourceType {
        group: "monitoring.coreos.com",
        version: "v1",
        plural: "podmonitors",
        kind: "PodMonitor",
        namespaced: true,
    },
    ResourceType {
        group: "monitoring.coreos.com",
        version: "v1",
        plural: "prometheusrules",
        kind: "PrometheusRule",
        namespaced: true,
    },
];

/// Why a test's call on the server failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeError(pub String);

impl std::fmt::Display for FakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FakeError {}

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One change, as kept in the history and broadcast to watches.
#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    resource: usize,
    kind: ChangeKind,
    /// The object before (modifications only).
    old: Option<Value>,
    /// The object after (for deletions: as it was, with the deletion's version).
    new: Value,
}

#[derive(Debug, Clone)]
enum Broadcast {
    Change(Box<Change>),
    EndWatches,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ObjKey {
    resource: usize,
    namespace: String,
    name: String,
}

#[derive(Debug, Default)]
struct Inner {
    rv: u64,
    uid: u64,
    objects: BTreeMap<ObjKey, Value>,
    history: Vec<Change>,
    /// Versions below this are compacted: watching from before it is `410 Gone`.
    oldest: u64,
}

/// Counters tests assert on.
#[derive(Debug, Default)]
struct Counters {
    lists: AtomicU64,
    watches: AtomicU64,
    gone: AtomicU64,
}

struct Shared {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Broadcast>,
    counters: Counters,
    bookmark_interval_ms: AtomicU64,
    gone_as_status: AtomicBool,
    authorization: Mutex<Option<String>>,
    /// Every request: method, path and query.
    requests: Mutex<Vec<String>>,
    /// While true, new watch requests wait (before their version is checked).
    paused: tokio::sync::watch::Sender<bool>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data: keep going.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The fake API server: an object store plus its HTTP face.
#[derive(Clone)]
pub struct FakeApiServer {
    shared: Arc<Shared>,
    addr: Option<SocketAddr>,
    task: Option<Arc<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for FakeApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeApiServer").field("addr", &self.addr).finish()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        if let Some(t) = self.task.take()
            && let Some(t) = Arc::into_inner(t)
        {
            t.abort();
        }
    }
}

impl Default for FakeApiServer {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeApiServer {
    /// A server that is not listening (use [`Self::router`] in-process).
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(4096);
        Self {
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner { rv: 1, oldest: 1, ..Inner::default() }),
                tx,
                counters: Counters::default(),
                bookmark_interval_ms: AtomicU64::new(1000),
                gone_as_status: AtomicBool::new(false),
                authorization: Mutex::new(None),
                paused: tokio::sync::watch::channel(false).0,
                requests: Mutex::new(Vec::new()),
            }),
            addr: None,
            task: None,
        }
    }

    /// Starts a server listening on 127.0.0.1 on a free port.
    pub async fn start() -> std::io::Result<Self> {
        let mut s = Self::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        s.addr = Some(listener.local_addr()?);
        let router = s.router();
        s.task = Some(Arc::new(tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::warn!(error = %e, "fake API server stopped");
            }
        })));
        Ok(s)
    }

    /// The HTTP router (for in-process clients).
    pub fn router(&self) -> Router {
        Router::new().fallback(handle).with_state(Arc::clone(&self.shared))
    }

    /// `http://127.0.0.1:<port>` once started.
    pub fn url(&self) -> String {
        self.addr.map_or_else(String::new, |a| format!("http://{a}"))
    }

    /// Writes a kubeconfig pointing at this server (with `token` as bearer
    /// token when given) and `namespace` as default namespace.
    pub fn write_kubeconfig(
        &self,
        path: &std::path::Path,
        token: Option<&str>,
        namespace: &str,
    ) -> std::io::Result<()> {
        let user = match token {
            Some(t) => format!("    token: {t}\n"),
            None => "    username: test\n".to_owned(),
        };
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\nusers:\n- name: fake\n  user:\n{user}contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {namespace}\ncurrent-context: fake\n",
            self.url()
        );
        std::fs::write(path, text)
    }

    /// Requires this exact `Authorization` header on every request
    /// (`Bearer <token>`, `Basic <base64>`); `None`: no check.
    pub fn require_authorization(&self, header: Option<&str>) {
        *self.shared.authorization.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            header.map(str::to_owned);
    }

    /// How often watches that allow them get a `BOOKMARK` (default 1s).
    pub fn set_bookmark_interval(&self, every: Duration) {
        self.shared.bookmark_interval_ms.store(every.as_millis().max(1) as u64, Ordering::Relaxed);
    }

    /// Answers an expired watch with HTTP 410 instead of an `ERROR` event.
    pub fn set_gone_as_http_status(&self, yes: bool) {
        self.shared.gone_as_status.store(yes, Ordering::Relaxed);
    }

    /// Every request so far, as `METHOD /path?query` (percent-encoded as sent).
    pub fn requests(&self) -> Vec<String> {
        self.shared.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Lists served so far.
    pub fn list_count(&self) -> u64 {
        self.shared.counters.lists.load(Ordering::Relaxed)
    }

    /// Watches opened so far.
    pub fn watch_count(&self) -> u64 {
        self.shared.counters.watches.load(Ordering::Relaxed)
    }

    /// Watches refused with 410 Gone so far.
    pub fn gone_count(&self) -> u64 {
        self.shared.counters.gone.load(Ordering::Relaxed)
    }

    /// The current resource version.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// Forgets the change history: a watch resuming from any version seen so
    /// far gets `410 Gone` and must relist.
    pub fn compact(&self) {
        let mut inner = self.shared.lock();
        inner.history.clear();
        inner.oldest = inner.rv + 1;
    }

    /// Ends every open watch stream (clients then re-watch from their last
    /// version, as after a dropped connection).
    pub fn end_watches(&self) {
        let _ = self.shared.tx.send(Broadcast::EndWatches);
    }

    /// Ends every open watch and holds new watch requests until
    /// [`Self::resume_watches`]: changes made meanwhile reach clients only
    /// through what they do when they resume (after a [`Self::compact`]:
    /// `410 Gone`, then a relist).
    pub fn pause_watches(&self) {
        self.shared.paused.send_replace(true);
        self.end_watches();
    }

    /// Lets held and new watch requests proceed.
    pub fn resume_watches(&self) {
        self.shared.paused.send_replace(false);
    }

    /// Creates or replaces an object (its `apiVersion`, `kind`,
    /// `metadata.name` and, when namespaced, `metadata.namespace`, default
    /// `default`, say where); returns it as stored.
    pub fn apply(&self, obj: Value) -> Result<Value, FakeError> {
        let resource = resource_of(&obj)?;
        let rt = RESOURCES[resource];
        let name = str_at(&obj, &["metadata", "name"]).to_owned();
        if name.is_empty() {
            return Err(FakeError("metadata.name is required".into()));
        }
        let namespace = if rt.namespaced {
            let ns = str_at(&obj, &["metadata", "namespace"]);
            if ns.is_empty() { "default".to_owned() } else { ns.to_owned() }
        } else {
            String::new()
        };
        Ok(self.store(&ObjKey { resource, namespace, name }, obj, None))
    }

    /// Deletes an object; false when there was none.
    pub fn delete(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> bool {
        let Some(resource) = RESOURCES.iter().position(|r| r.api_version() == api_version && r.kind == kind) else {
            return false;
        };
        let ns = if RESOURCES[resource].namespaced { namespace } else { "" };
        self.remove(&ObjKey { resource, namespace: ns.to_owned(), name: name.to_owned() }).is_some()
    }

    /// The stored object, if any.
    pub fn get(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let resource = RESOURCES.iter().position(|r| r.api_version() == api_version && r.kind == kind)?;
        let ns = if RESOURCES[resource].namespaced { namespace } else { "" };
        self.shared.lock().objects.get(&ObjKey { resource, namespace: ns.to_owned(), name: name.to_owned() }).cloned()
    }

    /// Stores `obj` under `key`, stamping metadata; with `expect_rv`, fails
    /// (returns the stored object unchanged) unless it matches.
    fn store(&self, key: &ObjKey, mut obj: Value, created: Option<&mut bool>) -> Value {
        let rt = RESOURCES[key.resource];
        let mut inner = self.shared.lock();
        inner.rv += 1;
        let rv = inner.rv;
        let old = inner.objects.get(key).cloned();
        if let Some(map) = obj.as_object_mut() {
            map.insert("apiVersion".into(), json!(rt.api_version()));
            map.insert("kind".into(), json!(rt.kind));
            let meta = map.entry("metadata").or_insert_with(|| json!({}));
            if let Some(meta) = meta.as_object_mut() {
                meta.insert("name".into(), json!(key.name));
                if rt.namespaced {
                    meta.insert("namespace".into(), json!(key.namespace));
                } else {
                    meta.remove("namespace");
                }
                meta.insert("resourceVersion".into(), json!(rv.to_string()));
                let old_uid = old.as_ref().map(|o| str_at(o, &["metadata", "uid"]).to_owned());
                if !meta.get("uid").is_some_and(Value::is_string) {
                    let uid = match old_uid {
                        Some(u) if !u.is_empty() => u,
                        _ => {
                            inner.uid += 1;
                            format!("00000000-0000-0000-0000-{:012}", inner.uid)
                        }
                    };
                    meta.insert("uid".into(), json!(uid));
                }
                meta.entry("creationTimestamp").or_insert_with(|| json!("2024-01-01T00:00:00Z"));
            }
        }
        inner.objects.insert(key.clone(), obj.clone());
        let kind = if old.is_some() { ChangeKind::Modified } else { ChangeKind::Added };
        if let Some(c) = created {
            *c = old.is_none();
        }
        let change = Change { rv, resource: key.resource, kind, old, new: obj.clone() };
        inner.history.push(change.clone());
        let _ = self.shared.tx.send(Broadcast::Change(Box::new(change)));
        obj
    }

    fn remove(&self, key: &ObjKey) -> Option<Value> {
        let mut inner = self.shared.lock();
        let mut obj = inner.objects.remove(key)?;
        inner.rv += 1;
        let rv = inner.rv;
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), json!(rv.to_string()));
        }
        let change = Change { rv, resource: key.resource, kind: ChangeKind::Deleted, old: None, new: obj.clone() };
        inner.history.push(change.clone());
        let _ = self.shared.tx.send(Broadcast::Change(Box::new(change)));
        Some(obj)
    }
}

fn resource_of(obj: &Value) -> Result<usize, FakeError> {
    let api_version = str_at(obj, &["apiVersion"]);
    let kind = str_at(obj, &["kind"]);
    RESOURCES
        .iter()
        .position(|r| r.api_version() == api_version && r.kind == kind)
        .ok_or_else(|| FakeError(format!("unknown resource {api_version}/{kind}")))
}

/// The string at `path` in `v`, or `""`.
fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(n) => cur = n,
            None => return "",
        }
    }
    cur.as_str().unwrap_or("")
}

/// A field selector's value at a dotted path (numbers and booleans as text).
fn field_at(v: &Value, path: &str) -> String {
    let mut cur = v;
    for p in path.split('.') {
        match cur.get(p) {
            Some(n) => cur = n,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------- selectors

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// Parses a `labelSelector` (`a=b,c!=d,e in (f,g),h notin (i),j,!k`).
fn parse_label_selector(s: &str) -> Result<Vec<LabelReq>, String> {
    let mut terms = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&s[start..]);
    let mut out = Vec::new();
    for t in terms {
        let t = t.trim();
        if t.is_empty() {
            continue;
        }
        let set = |rest: &str| -> Result<Vec<String>, String> {
            let rest = rest.trim();
            let inner = rest
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| format!("invalid label selector term {t:?}: expected (values)"))?;
            Ok(inner.split(',').map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()).collect())
        };
        if let Some(k) = t.strip_prefix('!') {
            out.push(LabelReq::NotExists(k.trim().to_owned()));
        } else if let Some((k, v)) = t.split_once("!=") {
            out.push(LabelReq::NotEq(k.trim().to_owned(), v.trim().to_owned()));
        } else if let Some((k, v)) = t.split_once("==") {
            out.push(LabelReq::Eq(k.trim().to_owned(), v.trim().to_owned()));
        } else if let Some((k, v)) = t.split_once('=') {
            out.push(LabelReq::Eq(k.trim().to_owned(), v.trim().to_owned()));
        } else if let Some((k, rest)) = t.split_once(" notin ") {
            out.push(LabelReq::NotIn(k.trim().to_owned(), set(rest)?));
        } else if let Some((k, rest)) = t.split_once(" in ") {
            out.push(LabelReq::In(k.trim().to_owned(), set(rest)?));
        } else if t.contains([' ', '(', ')']) {
            return Err(format!("invalid label selector term {t:?}"));
        } else {
            out.push(LabelReq::Exists(t.to_owned()));
        }
    }
    Ok(out)
}

/// One requirement of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldReq {
    path: String,
    value: String,
    equal: bool,
}

fn parse_field_selector(s: &str) -> Result<Vec<FieldReq>, String> {
    let mut out = Vec::new();
    for t in s.split(',') {
        let t = t.trim();
        if t.is_empty() {
            continue;
        }
        let (path, value, equal) = if let Some((k, v)) = t.split_once("!=") {
            (k, v, false)
        } else if let Some((k, v)) = t.split_once("==") {
            (k, v, true)
        } else if let Some((k, v)) = t.split_once('=') {
            (k, v, true)
        } else {
            return Err(format!("invalid field selector term {t:?}"));
        };
        out.push(FieldReq { path: path.trim().to_owned(), value: value.trim().to_owned(), equal });
    }
    Ok(out)
}

#[derive(Debug, Clone, Default)]
struct Filter {
    namespace: Option<String>,
    labels: Vec<LabelReq>,
    fields: Vec<FieldReq>,
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        if let Some(ns) = &self.namespace
            && str_at(obj, &["metadata", "namespace"]) != ns
        {
            return false;
        }
        let labels = obj.get("metadata").and_then(|m| m.get("labels"));
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        for r in &self.labels {
            let ok = match r {
                LabelReq::Eq(k, v) => label(k) == Some(v.as_str()),
                LabelReq::NotEq(k, v) => label(k) != Some(v.as_str()),
                LabelReq::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
                LabelReq::NotIn(k, vs) => !label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
                LabelReq::Exists(k) => label(k).is_some(),
                LabelReq::NotExists(k) => label(k).is_none(),
            };
            if !ok {
                return false;
            }
        }
        self.fields.iter().all(|f| (field_at(obj, &f.path) == f.value) == f.equal)
    }
}

// ---------------------------------------------------------------- HTTP

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
    });
    json_response(code, &body)
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = code;
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}

/// A parsed request path.
struct Target {
    resource: usize,
    namespace: Option<String>,
    name: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let find =
        |plural: &str| RESOURCES.iter().position(|r| r.group == group && r.version == version && r.plural == plural);
    let (namespace, plural, name) = match rest {
        ["namespaces", ns, plural] => (Some((*ns).to_owned()), *plural, None),
        ["namespaces", ns, plural, name] => (Some((*ns).to_owned()), *plural, Some((*name).to_owned())),
        ["namespaces", name] => (None, "namespaces", Some((*name).to_owned())),
        [plural] => (None, *plural, None),
        [plural, name] => (None, *plural, Some((*name).to_owned())),
        _ => return None,
    };
    let resource = find(plural)?;
    if namespace.is_some() && !RESOURCES[resource].namespaced {
        return None;
    }
    Some(Target { resource, namespace, name })
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(format!(
        "{method} {}",
        uri.path_and_query().map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned())
    ));
    let required = shared.authorization.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    if let Some(want) = required {
        let got = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if got != Some(want.as_str()) {
            return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
        }
    }
    if uri.path() == "/version" {
        return json_response(
            StatusCode::OK,
            &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64"}),
        );
    }
    let Some(target) = parse_path(uri.path()) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("the server could not find the requested resource ({})", uri.path()),
        );
    };
    let params: BTreeMap<String, String> = form_urlencoded_pairs(uri.query().unwrap_or("")).into_iter().collect();
    let server = FakeApiServer { shared: Arc::clone(&shared), addr: None, task: None };
    let rt = RESOURCES[target.resource];
    match (method, &target.name) {
        (Method::GET, None) => {
            let labels = match parse_label_selector(params.get("labelSelector").map_or("", String::as_str)) {
                Ok(l) => l,
                Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e),
            };
            let fields = match parse_field_selector(params.get("fieldSelector").map_or("", String::as_str)) {
                Ok(f) => f,
                Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e),
            };
            let filter = Filter { namespace: target.namespace.clone(), labels, fields };
            if params.get("watch").is_some_and(|w| w == "true" || w == "1") {
                let mut paused = shared.paused.subscribe();
                if paused.wait_for(|p| !*p).await.is_err() {
                    return status(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", "shutting down");
                }
                watch(&shared, target.resource, filter, &params)
            } else {
                shared.counters.lists.fetch_add(1, Ordering::Relaxed);
                let inner = shared.lock();
                let items: Vec<Value> = inner
                    .objects
                    .iter()
                    .filter(|(k, v)| k.resource == target.resource && filter.matches(v))
                    .map(|(_, v)| v.clone())
                    .collect();
                json_response(
                    StatusCode::OK,
                    &json!({
                        "kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(),
                        "metadata": {"resourceVersion": inner.rv.to_string()}, "items": items,
                    }),
                )
            }
        }
        (Method::GET, Some(name)) => {
            let key = ObjKey {
                resource: target.resource,
                namespace: target.namespace.clone().unwrap_or_default(),
                name: name.clone(),
            };
            match shared.lock().objects.get(&key) {
                Some(o) => json_response(StatusCode::OK, o),
                None => not_found(rt, name),
            }
        }
        (Method::DELETE, Some(name)) => {
            let key = ObjKey {
                resource: target.resource,
                namespace: target.namespace.clone().unwrap_or_default(),
                name: name.clone(),
            };
            match server.remove(&key) {
                Some(o) => json_response(StatusCode::OK, &o),
                None => not_found(rt, name),
            }
        }
        (m @ (Method::POST | Method::PUT), name) => {
            let Ok(mut obj) = serde_json::from_slice::<Value>(&body) else {
                return status(StatusCode::BAD_REQUEST, "BadRequest", "the body is not a JSON object");
            };
            let obj_name = match (&m, name) {
                (&Method::PUT, Some(n)) => n.clone(),
                (&Method::POST, None) => str_at(&obj, &["metadata", "name"]).to_owned(),
                _ => return status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "method not allowed"),
            };
            if obj_name.is_empty() {
                return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", "metadata.name: Required value");
            }
            let namespace = if rt.namespaced { target.namespace.clone().unwrap_or_default() } else { String::new() };
            let key = ObjKey { resource: target.resource, namespace, name: obj_name.clone() };
            let sent_rv = str_at(&obj, &["metadata", "resourceVersion"]).to_owned();
            {
                let inner = shared.lock();
                let existing = inner.objects.get(&key);
                match (&m, existing) {
                    (&Method::POST, Some(_)) => {
                        return status(
                            StatusCode::CONFLICT,
                            "AlreadyExists",
                            &format!("{} {obj_name:?} already exists", rt.plural),
                        );
                    }
                    (&Method::PUT, None) => return not_found(rt, &obj_name),
                    (&Method::PUT, Some(e))
                        if !sent_rv.is_empty() && str_at(e, &["metadata", "resourceVersion"]) != sent_rv =>
                    {
                        return status(
                            StatusCode::CONFLICT,
                            "Conflict",
                            &format!(
                                "Operation cannot be fulfilled on {} {obj_name:?}: the object has been modified; please apply your changes to the latest version and try again",
                                rt.plural
                            ),
                        );
                    }
                    _ => {}
                }
            }
            if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("resourceVersion");
            }
            let mut created = false;
            let stored = server.store(&key, obj, Some(&mut created));
            json_response(if created { StatusCode::CREATED } else { StatusCode::OK }, &stored)
        }
        _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "method not allowed"),
    }
}

fn not_found(rt: ResourceType, name: &str) -> Response {
    let what = if rt.group.is_empty() { rt.plural.to_owned() } else { format!("{}.{}", rt.plural, rt.group) };
    status(StatusCode::NOT_FOUND, "NotFound", &format!("{what} {name:?} not found"))
}

/// `application/x-www-form-urlencoded` pairs, percent-decoded.
fn form_urlencoded_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(v) => {
                    out.push(v);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut s = json!({"type": kind, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

fn gone_status(from: u64, oldest: u64) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("too old resource version: {from} ({})", oldest.saturating_sub(1)),
        "reason": "Expired", "code": 410,
    })
}

/// The watch event a change is for a watcher with `filter`, if any.
fn event_for(change: &Change, filter: &Filter) -> Option<&'static str> {
    let now = filter.matches(&change.new);
    match change.kind {
        ChangeKind::Added => now.then_some("ADDED"),
        ChangeKind::Deleted => now.then_some("DELETED"),
        ChangeKind::Modified => {
            let before = change.old.as_ref().is_some_and(|o| filter.matches(o));
            match (before, now) {
                (true, true) => Some("MODIFIED"),
                (false, true) => Some("ADDED"),
                (true, false) => Some("DELETED"),
                (false, false) => None,
            }
        }
    }
}

fn watch(shared: &Arc<Shared>, resource: usize, filter: Filter, params: &BTreeMap<String, String>) -> Response {
    shared.counters.watches.fetch_add(1, Ordering::Relaxed);
    let rt = RESOURCES[resource];
    let bookmarks = params.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let from = params.get("resourceVersion").map_or("", String::as_str);
    let (initial, mut sub, mut last_seen): (Vec<Bytes>, _, u64) = {
        let inner = shared.lock();
        let sub = shared.tx.subscribe();
        if from.is_empty() || from == "0" {
            let adds = inner
                .objects
                .iter()
                .filter(|(k, v)| k.resource == resource && filter.matches(v))
                .map(|(_, v)| event_line("ADDED", v))
                .collect();
            (adds, sub, inner.rv)
        } else {
            let Ok(n) = from.parse::<u64>() else {
                return status(StatusCode::BAD_REQUEST, "BadRequest", &format!("invalid resourceVersion {from:?}"));
            };
            if n + 1 < inner.oldest {
                shared.counters.gone.fetch_add(1, Ordering::Relaxed);
                let st = gone_status(n, inner.oldest);
                if shared.gone_as_status.load(Ordering::Relaxed) {
                    return json_response(StatusCode::GONE, &st);
                }
                let mut r = Response::new(Body::from(event_line("ERROR", &st)));
                r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
                return r;
            }
            let events = inner
                .history
                .iter()
                .filter(|c| c.rv > n && c.resource == resource)
                .filter_map(|c| event_for(c, &filter).map(|t| event_line(t, &c.new)))
                .collect();
            (events, sub, inner.rv.max(n))
        }
    };
    let interval = Duration::from_millis(shared.bookmark_interval_ms.load(Ordering::Relaxed));
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    tokio::spawn(async move {
        for line in initial {
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        loop {
            tokio::select! {
                msg = sub.recv() => match msg {
                    Ok(Broadcast::Change(c)) => {
                        if c.rv <= last_seen {
                            continue;
                        }
                        last_seen = c.rv;
                        if c.resource != resource {
                            continue;
                        }
                        if let Some(t) = event_for(&c, &filter)
                            && tx.send(Ok(event_line(t, &c.new))).await.is_err()
                        {
                            return;
                        }
                    }
                    // Lagging behind or told to stop: end the stream; the client re-watches.
                    Ok(Broadcast::EndWatches) | Err(_) => return,
                },
                _ = tick.tick(), if bookmarks => {
                    let bm = json!({
                        "kind": rt.kind, "apiVersion": rt.api_version(),
                        "metadata": {"resourceVersion": last_seen.to_string()},
                    });
                    if tx.send(Ok(event_line("BOOKMARK", &bm))).await.is_err() {
                        return;
                    }
                }
                _ = &mut deadline => return,
                _ = tx.closed() => return,
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors_parse_and_match() {
        let reqs = parse_label_selector("app=web, tier!=db,env in (prod, staging),!canary,team").expect("valid");
        assert_eq!(reqs.len(), 5);
        let f = Filter { labels: reqs, ..Filter::default() };
        let obj = |labels: Value| json!({"metadata": {"labels": labels}});
        assert!(f.matches(&obj(json!({"app": "web", "env": "prod", "team": "a"}))));
        assert!(!f.matches(&obj(json!({"app": "web", "env": "dev", "team": "a"}))));
        assert!(!f.matches(&obj(json!({"app": "web", "env": "prod", "team": "a", "canary": "1"}))));
        assert!(!f.matches(&obj(json!({"app": "web", "env": "prod"}))));
        let f = Filter { labels: parse_label_selector("env notin (a,b)").expect("valid"), ..Filter::default() };
        assert!(f.matches(&obj(json!({}))));
        assert!(!f.matches(&obj(json!({"env": "a"}))));
        assert!(parse_label_selector("a in b").is_err());
    }

    #[test]
    fn field_selectors_use_dotted_paths() {
        let f = Filter {
            fields: parse_field_selector("spec.nodeName=n1,metadata.name!=x").expect("valid"),
            ..Filter::default()
        };
        assert!(f.matches(&json!({"metadata": {"name": "a"}, "spec": {"nodeName": "n1"}})));
        assert!(!f.matches(&json!({"metadata": {"name": "x"}, "spec": {"nodeName": "n1"}})));
        assert!(!f.matches(&json!({"metadata": {"name": "a"}})));
        assert!(parse_field_selector("nonsense").is_err());
    }

    #[test]
    fn paths_name_resources() {
        let t = parse_path("/api/v1/namespaces/ns1/pods/p").expect("pod path");
        assert_eq!(
            (RESOURCES[t.resource].kind, t.namespace.as_deref(), t.name.as_deref()),
            ("Pod", Some("ns1"), Some("p"))
        );
        let t = parse_path("/apis/discovery.k8s.io/v1/endpointslices").expect("slices");
        assert_eq!(RESOURCES[t.resource].kind, "EndpointSlice");
        assert!(parse_path("/api/v1/namespaces/x/nodes").is_none(), "nodes are cluster-scoped");
        let t = parse_path("/api/v1/namespaces/x").expect("namespace object");
        assert_eq!((RESOURCES[t.resource].kind, t.name.as_deref()), ("Namespace", Some("x")));
        assert!(parse_path("/apis/monitoring.coreos.com/v1/namespaces/a/servicemonitors").is_some());
    }

    #[test]
    fn changes_become_the_events_a_filtered_watch_sees() {
        let f = Filter { labels: parse_label_selector("a=1").expect("valid"), ..Filter::default() };
        let o = |v: &str| json!({"metadata": {"labels": {"a": v}}});
        let c = |kind, old: Option<Value>, new| Change { rv: 2, resource: 0, kind, old, new };
        assert_eq!(event_for(&c(ChangeKind::Modified, Some(o("1")), o("2")), &f), Some("DELETED"));
        assert_eq!(event_for(&c(ChangeKind::Modified, Some(o("2")), o("1")), &f), Some("ADDED"));
        assert_eq!(event_for(&c(ChangeKind::Modified, Some(o("1")), o("1")), &f), Some("MODIFIED"));
        assert_eq!(event_for(&c(ChangeKind::Modified, Some(o("2")), o("2")), &f), None);
        assert_eq!(event_for(&c(ChangeKind::Deleted, None, o("1")), &f), Some("DELETED"));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%3Db%2Cc+d"), "a=b,c d");
        assert_eq!(percent_decode("100%"), "100%");
    }

    #[tokio::test]
    async fn store_versions_objects_and_compaction_expires_old_versions() {
        let s = FakeApiServer::new();
        let p = s.apply(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}})).expect("apply");
        assert_eq!(str_at(&p, &["metadata", "namespace"]), "default");
        assert_eq!(str_at(&p, &["metadata", "resourceVersion"]), "2");
        let p2 = s.apply(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}})).expect("apply");
        assert_eq!(str_at(&p2, &["metadata", "uid"]), str_at(&p, &["metadata", "uid"]), "uid survives updates");
        assert!(s.delete("v1", "Pod", "default", "a"));
        assert!(!s.delete("v1", "Pod", "default", "a"));
        assert_eq!(s.resource_version(), 4);
        s.compact();
        let params: BTreeMap<String, String> = [("resourceVersion".to_owned(), "3".to_owned())].into();
        let r = watch(&s.shared, 0, Filter::default(), &params);
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.expect("body");
        let v: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["type"], "ERROR");
        assert_eq!(v["object"]["code"], 410);
        assert_eq!(v["object"]["reason"], "Expired");
        assert_eq!(s.gone_count(), 1);
        assert!(s.apply(json!({"apiVersion": "v9", "kind": "Nope", "metadata": {"name": "a"}})).is_err());
    }
}
