//! `kubernetes_sd_configs`: targets from the Kubernetes API, with the
//! `__meta_kubernetes_*` labels and addresses Prometheus produces.
//!
//! A [`KubernetesDiscoverer`] runs kube-rs watchers (list, then watch from
//! the list's `resourceVersion`, relisting after `410 Gone`) for every kind
//! its role needs, in every configured namespace, into one [`Store`]. Once
//! every watcher has listed, and after every batch of changes, the role's
//! builder (`pod.rs`, `service.rs`, `endpoints.rs`, `endpointslice.rs`,
//! `node.rs`) turns the store into one [`TargetGroup`] per object (sources
//! `pod/<ns>/<name>`, `svc/<ns>/<name>`, `endpoints/<ns>/<name>`,
//! `endpointslice/<ns>/<name>`, `node/<name>`, as in Prometheus) and only
//! the groups that changed are sent; a vanished object's group is sent empty.

pub mod client;
pub mod config;
mod endpoints;
mod endpointslice;
pub mod monitors;
mod node;
mod pod;
mod service;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::stream::{BoxStream, SelectAll};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};

use prometheus_client::metrics::counter::Counter;
use strata_model::{BoxFuture, LabelsBuilder};
use tokio::sync::watch;

pub use config::{KubernetesSdConfig, Role};

use super::{Discoverer, GroupSender, TargetGroup};

/// Prefix of every label this discovery sets.
pub const META_PREFIX: &str = "__meta_kubernetes_";
/// `__meta_kubernetes_namespace`
pub const NAMESPACE_LABEL: &str = "__meta_kubernetes_namespace";
/// How long to wait before retrying a client that could not be built.
const CLIENT_RETRY: Duration = Duration::from_secs(5);

/// Prometheus' `strutil.SanitizeLabelName`: every character outside
/// `[a-zA-Z0-9_]` becomes `_`.
pub fn sanitize_label_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

/// Go's `net.JoinHostPort`: IPv6 hosts in brackets.
pub(crate) fn join_host_port(host: &str, port: impl std::fmt::Display) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// `__meta_kubernetes_<role>_name`, `_label_*`, `_labelpresent_*`,
/// `_annotation_*`, `_annotationpresent_*` (Prometheus' `addObjectMetaLabels`).
pub(crate) fn add_object_meta(b: &mut LabelsBuilder, meta: &ObjectMeta, role: &str) {
    b.set(format!("{META_PREFIX}{role}_name"), meta.name.clone().unwrap_or_default());
    for (k, v) in meta.labels.iter().flatten() {
        let ln = sanitize_label_name(k);
        b.set(format!("{META_PREFIX}{role}_label_{ln}"), v.clone());
        b.set(format!("{META_PREFIX}{role}_labelpresent_{ln}"), "true");
    }
    for (k, v) in meta.annotations.iter().flatten() {
        let ln = sanitize_label_name(k);
        b.set(format!("{META_PREFIX}{role}_annotation_{ln}"), v.clone());
        b.set(format!("{META_PREFIX}{role}_annotationpresent_{ln}"), "true");
    }
}

/// Sets every label of `from` in `b` (Prometheus' `LabelSet.Merge`: `from` wins).
pub(crate) fn merge(b: &mut LabelsBuilder, from: &strata_model::Labels) {
    for l in from {
        b.set(l.name.clone(), l.value.clone());
    }
}

/// Node metadata (`__meta_kubernetes_node_name`, labels, annotations) of
/// `node_name`, when the node is known (`attach_metadata.node`).
pub(crate) fn add_node_meta(b: &mut LabelsBuilder, store: &Store, node_name: Option<&str>) {
    if let Some(node) = node_name.and_then(|n| store.nodes.get(n)) {
        add_object_meta(b, &node.metadata, "node");
    }
}

/// `(namespace, name)` of an object.
pub(crate) fn key_of(meta: &ObjectMeta) -> (String, String) {
    (meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
}

/// Every object the watchers of one discoverer know.
#[derive(Debug, Default, Clone)]
pub struct Store {
    /// Pods by (namespace, name).
    pub pods: BTreeMap<(String, String), Pod>,
    /// Services by (namespace, name).
    pub services: BTreeMap<(String, String), Service>,
    /// Endpoints by (namespace, name).
    pub endpoints: BTreeMap<(String, String), Endpoints>,
    /// EndpointSlices by (namespace, name).
    pub slices: BTreeMap<(String, String), EndpointSlice>,
    /// Nodes by name.
    pub nodes: BTreeMap<String, Node>,
}

/// One watched object of any kind.
#[derive(Debug, Clone)]
pub enum Object {
    /// A pod.
    Pod(Box<Pod>),
    /// A service.
    Service(Box<Service>),
    /// An Endpoints object.
    Endpoints(Box<Endpoints>),
    /// An EndpointSlice.
    EndpointSlice(Box<EndpointSlice>),
    /// A node.
    Node(Box<Node>),
}

impl Store {
    /// Adds or replaces an object.
    pub fn apply(&mut self, o: Object) {
        match o {
            Object::Pod(p) => {
                self.pods.insert(key_of(&p.metadata), *p);
            }
            Object::Service(s) => {
                self.services.insert(key_of(&s.metadata), *s);
            }
            Object::Endpoints(e) => {
                self.endpoints.insert(key_of(&e.metadata), *e);
            }
            Object::EndpointSlice(e) => {
                self.slices.insert(key_of(&e.metadata), *e);
            }
            Object::Node(n) => {
                self.nodes.insert(n.metadata.name.clone().unwrap_or_default(), *n);
            }
        }
    }

    /// Removes an object.
    pub fn remove(&mut self, o: &Object) {
        match o {
            Object::Pod(p) => {
                self.pods.remove(&key_of(&p.metadata));
            }
            Object::Service(s) => {
                self.services.remove(&key_of(&s.metadata));
            }
            Object::Endpoints(e) => {
                self.endpoints.remove(&key_of(&e.metadata));
            }
            Object::EndpointSlice(e) => {
                self.slices.remove(&key_of(&e.metadata));
            }
            Object::Node(n) => {
                self.nodes.remove(n.metadata.name.as_deref().unwrap_or_default());
            }
        }
    }

    /// Replaces every object of `kind` in `namespace` (all namespaces when
    /// `None`) with `objects`: a watcher's (re)list.
    fn replace(&mut self, kind: Kind, namespace: Option<&str>, objects: Vec<Object>) {
        let keep = |ns: &str| namespace.is_some_and(|n| n != ns);
        match kind {
            Kind::Pod => self.pods.retain(|(ns, _), _| keep(ns)),
            Kind::Service => self.services.retain(|(ns, _), _| keep(ns)),
            Kind::Endpoints => self.endpoints.retain(|(ns, _), _| keep(ns)),
            Kind::EndpointSlice => self.slices.retain(|(ns, _), _| keep(ns)),
            Kind::Node => self.nodes.clear(),
        }
        for o in objects {
            self.apply(o);
        }
    }
}

/// A watched kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pod,
    Service,
    Endpoints,
    EndpointSlice,
    Node,
}

impl Kind {
    fn role(self) -> Role {
        match self {
            Self::Pod => Role::Pod,
            Self::Service => Role::Service,
            Self::Endpoints => Role::Endpoints,
            Self::EndpointSlice => Role::EndpointSlice,
            Self::Node => Role::Node,
        }
    }
}

/// The kinds a role watches.
fn kinds(role: Role, attach_node: bool) -> Vec<Kind> {
    let mut k = match role {
        Role::Pod => vec![Kind::Pod],
        Role::Service => vec![Kind::Service],
        Role::Endpoints => vec![Kind::Endpoints, Kind::Service, Kind::Pod],
        Role::EndpointSlice => vec![Kind::EndpointSlice, Kind::Service, Kind::Pod],
        Role::Node => vec![Kind::Node],
    };
    if attach_node && matches!(role, Role::Pod | Role::Endpoints | Role::EndpointSlice) {
        k.push(Kind::Node);
    }
    k
}

/// The groups of every object the role turns into targets, by source
/// (objects with no targets have no group).
pub fn build_groups(role: Role, store: &Store, attach_node: bool) -> BTreeMap<String, TargetGroup> {
    let groups: Vec<TargetGroup> = match role {
        Role::Pod => store.pods.values().map(|p| pod::build(p, store, attach_node)).collect(),
        Role::Service => store.services.values().map(service::build).collect(),
        Role::Endpoints => store.endpoints.values().map(|e| endpoints::build(e, store, attach_node)).collect(),
        Role::EndpointSlice => store.slices.values().map(|e| endpointslice::build(e, store, attach_node)).collect(),
        Role::Node => store.nodes.values().filter_map(node::build).collect(),
    };
    groups.into_iter().filter(|g| !g.targets.is_empty()).map(|g| (g.source.clone(), g)).collect()
}

/// What changed between two group maps: new or different groups, and
/// empty groups for vanished sources.
pub fn diff(before: &BTreeMap<String, TargetGroup>, after: &BTreeMap<String, TargetGroup>) -> Vec<TargetGroup> {
    let mut out: Vec<TargetGroup> =
        after.iter().filter(|(k, g)| before.get(*k) != Some(*g)).map(|(_, g)| g.clone()).collect();
    out.extend(
        before
            .keys()
            .filter(|k| !after.contains_key(*k))
            .map(|k| TargetGroup { source: k.clone(), ..TargetGroup::default() }),
    );
    out
}

/// A change from one watcher.
enum WatchEvent {
    Init,
    InitApply(Object),
    InitDone,
    Apply(Object),
    Delete(Object),
}

type EventStream = BoxStream<'static, (usize, Result<WatchEvent, String>)>;

/// A kube-rs watcher (with its default backoff) that also relists when the
/// API server refuses to start a watch with HTTP 410 Gone: kube-rs relists
/// on a 410 `ERROR` event inside a watch stream, but retries a refused watch
/// start forever with the same expired version. Here the watcher is
/// recreated, which lists again.
pub(crate) fn watch_relisting<K>(
    api: Api<K>,
    cfg: watcher::Config,
) -> BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    type Inner<K> = BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>;
    futures::stream::unfold(None::<Inner<K>>, move |current| {
        let (api, cfg) = (api.clone(), cfg.clone());
        async move {
            let mut s = current.unwrap_or_else(|| watcher(api, cfg).default_backoff().boxed());
            let item = s.next().await?;
            let gone = matches!(&item, Err(watcher::Error::WatchStartFailed(kube::Error::Api(st))) if st.code == 410);
            Some((item, if gone { None } else { Some(s) }))
        }
    })
    .boxed()
}

fn watch_stream<K>(api: Api<K>, cfg: watcher::Config, id: usize, wrap: fn(K) -> Object) -> EventStream
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watch_relisting(api, cfg)
        .map(move |r| {
            let ev = r
                .map(|e| match e {
                    watcher::Event::Init => WatchEvent::Init,
                    watcher::Event::InitApply(o) => WatchEvent::InitApply(wrap(o)),
                    watcher::Event::InitDone => WatchEvent::InitDone,
                    watcher::Event::Apply(o) => WatchEvent::Apply(wrap(o)),
                    watcher::Event::Delete(o) => WatchEvent::Delete(wrap(o)),
                })
                .map_err(|e| e.to_string());
            (id, ev)
        })
        .boxed()
}

/// One watcher's scope and progress.
struct Watch {
    kind: Kind,
    namespace: Option<String>,
    /// Objects of a list in progress.
    buffer: Option<Vec<Object>>,
    /// Listed at least once.
    synced: bool,
}

/// Runs one `kubernetes_sd_configs` entry.
pub struct KubernetesDiscoverer {
    config: KubernetesSdConfig,
    client: Option<kube::Client>,
    failures: Counter,
}

impl KubernetesDiscoverer {
    /// A discoverer that builds its client from the config.
    pub fn new(config: KubernetesSdConfig) -> Self {
        Self { config, client: None, failures: Counter::default() }
    }

    /// A discoverer using `client` (tests: an in-process fake API server).
    pub fn with_client(config: KubernetesSdConfig, client: kube::Client) -> Self {
        Self { config, client: Some(client), failures: Counter::default() }
    }

    /// Counts client and watch failures in `counter`.
    pub fn with_failures(mut self, counter: Counter) -> Self {
        self.failures = counter;
        self
    }

    /// The client, retried every [`CLIENT_RETRY`] until shutdown.
    async fn client(&mut self, shutdown: &mut watch::Receiver<bool>) -> Option<kube::Client> {
        if let Some(c) = self.client.take() {
            return Some(c);
        }
        loop {
            match client::build(&self.config.access).await {
                Ok(c) => return Some(c),
                Err(e) => {
                    self.failures.inc();
                    tracing::warn!(error = %e, role = self.config.role.as_str(), "kubernetes SD: cannot build the API client");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(CLIENT_RETRY) => {}
                _ = shutdown.changed() => return None,
            }
        }
    }

    fn namespaces(&self, client: &kube::Client) -> Vec<String> {
        let mut ns = self.config.namespaces.clone();
        if self.config.own_namespace {
            let own = std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| client.default_namespace().to_owned());
            if !ns.contains(&own) {
                ns.push(own);
            }
        }
        ns
    }

    fn streams(&self, client: &kube::Client) -> (Vec<Watch>, SelectAll<EventStream>) {
        let namespaces = self.namespaces(client);
        let mut watches = Vec::new();
        let mut all = SelectAll::new();
        for kind in kinds(self.config.role, self.config.attach_node) {
            let mut cfg = watcher::Config::default();
            if let Some(s) = self.config.selector(kind.role()) {
                if !s.label.is_empty() {
                    cfg = cfg.labels(&s.label);
                }
                if !s.field.is_empty() {
                    cfg = cfg.fields(&s.field);
                }
            }
            let scopes: Vec<Option<String>> = if kind == Kind::Node || namespaces.is_empty() {
                vec![None]
            } else {
                namespaces.iter().cloned().map(Some).collect()
            };
            for ns in scopes {
                let id = watches.len();
                let c = client.clone();
                let stream = match (kind, ns.as_deref()) {
                    (Kind::Pod, Some(n)) => {
                        watch_stream(Api::<Pod>::namespaced(c, n), cfg.clone(), id, |o| Object::Pod(Box::new(o)))
                    }
                    (Kind::Pod, None) => {
                        watch_stream(Api::<Pod>::all(c), cfg.clone(), id, |o| Object::Pod(Box::new(o)))
                    }
                    (Kind::Service, Some(n)) => watch_stream(Api::<Service>::namespaced(c, n), cfg.clone(), id, |o| {
                        Object::Service(Box::new(o))
                    }),
                    (Kind::Service, None) => {
                        watch_stream(Api::<Service>::all(c), cfg.clone(), id, |o| Object::Service(Box::new(o)))
                    }
                    (Kind::Endpoints, Some(n)) => {
                        watch_stream(Api::<Endpoints>::namespaced(c, n), cfg.clone(), id, |o| {
                            Object::Endpoints(Box::new(o))
                        })
                    }
                    (Kind::Endpoints, None) => {
                        watch_stream(Api::<Endpoints>::all(c), cfg.clone(), id, |o| Object::Endpoints(Box::new(o)))
                    }
                    (Kind::EndpointSlice, Some(n)) => {
                        watch_stream(Api::<EndpointSlice>::namespaced(c, n), cfg.clone(), id, |o| {
                            Object::EndpointSlice(Box::new(o))
                        })
                    }
                    (Kind::EndpointSlice, None) => watch_stream(Api::<EndpointSlice>::all(c), cfg.clone(), id, |o| {
                        Object::EndpointSlice(Box::new(o))
                    }),
                    (Kind::Node, _) => {
                        watch_stream(Api::<Node>::all(c), cfg.clone(), id, |o| Object::Node(Box::new(o)))
                    }
                };
                all.push(stream);
                watches.push(Watch { kind, namespace: ns, buffer: None, synced: false });
            }
        }
        (watches, all)
    }
}

impl Discoverer for KubernetesDiscoverer {
    fn run(mut self: Box<Self>, out: GroupSender, mut shutdown: watch::Receiver<bool>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let Some(client) = self.client(&mut shutdown).await else { return };
            let (mut watches, mut streams) = self.streams(&client);
            let mut store = Store::default();
            let mut sent: BTreeMap<String, TargetGroup> = BTreeMap::new();
            let role = self.config.role;
            loop {
                let first = tokio::select! {
                    ev = streams.next() => ev,
                    _ = shutdown.changed() => return,
                };
                let Some(first) = first else { return };
                let mut dirty = false;
                let mut next = Some(first);
                // Apply the event and every one already waiting, then rebuild once.
                while let Some((id, ev)) = next {
                    dirty |= self.handle(&mut watches[id], &mut store, ev);
                    next = streams.next().now_or_never().flatten();
                }
                if !dirty || !watches.iter().all(|w| w.synced) {
                    continue;
                }
                let groups = build_groups(role, &store, self.config.attach_node);
                let changed = diff(&sent, &groups);
                sent = groups;
                if !changed.is_empty() && !out.send(changed).await {
                    return;
                }
            }
        })
    }
}

impl KubernetesDiscoverer {
    /// Applies one watcher event; true when the store changed.
    fn handle(&self, w: &mut Watch, store: &mut Store, ev: Result<WatchEvent, String>) -> bool {
        match ev {
            Err(e) => {
                self.failures.inc();
                tracing::warn!(error = %e, kind = w.kind.role().as_str(), namespace = ?w.namespace, "kubernetes SD watch failed; retrying");
                false
            }
            Ok(WatchEvent::Init) => {
                w.buffer = Some(Vec::new());
                false
            }
            Ok(WatchEvent::InitApply(o)) => {
                w.buffer.get_or_insert_with(Vec::new).push(o);
                false
            }
            Ok(WatchEvent::InitDone) => {
                store.replace(w.kind, w.namespace.as_deref(), w.buffer.take().unwrap_or_default());
                w.synced = true;
                true
            }
            Ok(WatchEvent::Apply(o)) => {
                store.apply(o);
                true
            }
            Ok(WatchEvent::Delete(o)) => {
                store.remove(&o);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests;
