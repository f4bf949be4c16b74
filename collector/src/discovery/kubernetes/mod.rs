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
//! After a (re)list every group is rebuilt; after single changes only the
//! groups they can touch (an Endpoints object when its service or one of its
//! pods changes, a pod when its node changes, ...), checked against a full
//! rebuild by `tests.rs`.

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

/// What changed in a store since the groups were last built.
#[derive(Debug, Default)]
pub struct Dirty {
    /// Rebuild everything (after a (re)list).
    pub full: bool,
    /// Objects applied or deleted: kind, namespace, name.
    objects: Vec<(Kind, String, String)>,
}

impl Dirty {
    /// Records a change of `o`.
    pub fn mark(&mut self, o: &Object) {
        let (kind, meta) = match o {
            Object::Pod(p) => (Kind::Pod, &p.metadata),
            Object::Service(s) => (Kind::Service, &s.metadata),
            Object::Endpoints(e) => (Kind::Endpoints, &e.metadata),
            Object::EndpointSlice(e) => (Kind::EndpointSlice, &e.metadata),
            Object::Node(n) => (Kind::Node, &n.metadata),
        };
        let (ns, name) = key_of(meta);
        self.objects.push((kind, ns, name));
    }

    fn is_empty(&self) -> bool {
        !self.full && self.objects.is_empty()
    }

    fn of(&self, kind: Kind) -> impl Iterator<Item = (&str, &str)> {
        self.objects.iter().filter(move |(k, _, _)| *k == kind).map(|(_, ns, n)| (ns.as_str(), n.as_str()))
    }
}

type Key = (String, String);

/// The keys of the role's objects whose groups the changes in `dirty` may
/// change; `None`: all of them.
fn affected(role: Role, store: &Store, attach_node: bool, dirty: &Dirty) -> Option<std::collections::BTreeSet<Key>> {
    use std::collections::BTreeSet;
    if dirty.full {
        return None;
    }
    let own = |k: Kind| -> BTreeSet<Key> { dirty.of(k).map(|(ns, n)| (ns.to_owned(), n.to_owned())).collect() };
    let nodes: BTreeSet<&str> = dirty.of(Kind::Node).map(|(_, n)| n).collect();
    let pods: BTreeSet<(&str, &str)> = dirty.of(Kind::Pod).collect();
    let refers = |r: Option<&k8s_openapi::api::core::v1::ObjectReference>| {
        r.is_some_and(|r| {
            r.kind.as_deref() == Some("Pod")
                && pods.contains(&(r.namespace.as_deref().unwrap_or_default(), r.name.as_deref().unwrap_or_default()))
        })
    };
    match role {
        Role::Pod => {
            let mut out = own(Kind::Pod);
            if attach_node && !nodes.is_empty() {
                for (k, p) in &store.pods {
                    if p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| nodes.contains(n)) {
                        out.insert(k.clone());
                    }
                }
            }
            Some(out)
        }
        Role::Service => Some(own(Kind::Service)),
        Role::Node => Some(dirty.of(Kind::Node).map(|(_, n)| (String::new(), n.to_owned())).collect()),
        Role::Endpoints | Role::EndpointSlice if attach_node && !nodes.is_empty() => None,
        Role::Endpoints => {
            let mut out = own(Kind::Endpoints);
            out.extend(own(Kind::Service));
            if !pods.is_empty() {
                for (k, e) in &store.endpoints {
                    let hit = e.subsets.iter().flatten().any(|ss| {
                        ss.addresses
                            .iter()
                            .chain(ss.not_ready_addresses.iter())
                            .flatten()
                            .any(|a| refers(a.target_ref.as_ref()))
                    });
                    if hit {
                        out.insert(k.clone());
                    }
                }
            }
            Some(out)
        }
        Role::EndpointSlice => {
            let mut out = own(Kind::EndpointSlice);
            let services = own(Kind::Service);
            for (k, e) in &store.slices {
                let svc = e.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/service-name"));
                let by_service = svc.is_some_and(|s| services.contains(&(k.0.clone(), s.clone())));
                let by_pod = !pods.is_empty() && e.endpoints.iter().any(|ep| refers(ep.target_ref.as_ref()));
                if by_service || by_pod {
                    out.insert(k.clone());
                }
            }
            Some(out)
        }
    }
}

/// The group of the role's object `key` (`None`: no such object, or no targets) and its source.
fn build_one(role: Role, store: &Store, attach_node: bool, key: &Key) -> (String, Option<TargetGroup>) {
    let (ns, name) = key;
    let (source, group) = match role {
        Role::Pod => (pod::source(ns, name), store.pods.get(key).map(|p| pod::build(p, store, attach_node))),
        Role::Service => (format!("svc/{ns}/{name}"), store.services.get(key).map(service::build)),
        Role::Endpoints => (
            format!("endpoints/{ns}/{name}"),
            store.endpoints.get(key).map(|e| endpoints::build(e, store, attach_node)),
        ),
        Role::EndpointSlice => (
            format!("endpointslice/{ns}/{name}"),
            store.slices.get(key).map(|e| endpointslice::build(e, store, attach_node)),
        ),
        Role::Node => (format!("node/{name}"), store.nodes.get(name).and_then(node::build)),
    };
    (source, group.filter(|g| !g.targets.is_empty()))
}

/// Brings `sent` up to date with the store after the changes in `dirty`;
/// returns the groups that changed (empty ones for vanished sources).
pub fn update_groups(
    role: Role,
    store: &Store,
    attach_node: bool,
    dirty: &Dirty,
    sent: &mut BTreeMap<String, TargetGroup>,
) -> Vec<TargetGroup> {
    let Some(keys) = affected(role, store, attach_node, dirty) else {
        let groups = build_groups(role, store, attach_node);
        let changed = diff(sent, &groups);
        *sent = groups;
        return changed;
    };
    let mut changed = Vec::new();
    for key in &keys {
        match build_one(role, store, attach_node, key) {
            (source, Some(g)) => {
                if sent.get(&source) != Some(&g) {
                    sent.insert(source, g.clone());
                    changed.push(g);
                }
            }
            (source, None) => {
                if sent.remove(&source).is_some() {
                    changed.push(TargetGroup { source, ..TargetGroup::default() });
                }
            }
        }
    }
    changed
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
            let mut dirty = Dirty::default();
            let role = self.config.role;
            loop {
                let first = tokio::select! {
                    ev = streams.next() => ev,
                    _ = shutdown.changed() => return,
                };
                let Some(first) = first else { return };
                let mut next = Some(first);
                // Apply the event and every one already waiting, then rebuild
                // once the groups they touch (everything after a list).
                while let Some((id, ev)) = next {
                    self.handle(&mut watches[id], &mut store, ev, &mut dirty);
                    next = streams.next().now_or_never().flatten();
                }
                if dirty.is_empty() || !watches.iter().all(|w| w.synced) {
                    continue;
                }
                let changed = update_groups(role, &store, self.config.attach_node, &dirty, &mut sent);
                dirty = Dirty::default();
                if !changed.is_empty() && !out.send(changed).await {
                    return;
                }
            }
        })
    }
}

impl KubernetesDiscoverer {
    /// Applies one watcher event, recording what changed in `dirty`.
    fn handle(&self, w: &mut Watch, store: &mut Store, ev: Result<WatchEvent, String>, dirty: &mut Dirty) {
        match ev {
            Err(e) => {
                self.failures.inc();
                tracing::warn!(error = %e, kind = w.kind.role().as_str(), namespace = ?w.namespace, "kubernetes SD watch failed; retrying");
            }
            Ok(WatchEvent::Init) => w.buffer = Some(Vec::new()),
            Ok(WatchEvent::InitApply(o)) => w.buffer.get_or_insert_with(Vec::new).push(o),
            Ok(WatchEvent::InitDone) => {
                store.replace(w.kind, w.namespace.as_deref(), w.buffer.take().unwrap_or_default());
                w.synced = true;
                dirty.full = true;
            }
            Ok(WatchEvent::Apply(o)) => {
                dirty.mark(&o);
                store.apply(o);
            }
            Ok(WatchEvent::Delete(o)) => {
                dirty.mark(&o);
                store.remove(&o);
            }
        }
    }
}

#[cfg(test)]
mod tests;
