//! `kubernetes_sd_configs` against the fake API server (`strata-fake-apiserver`),
//! through kube-rs's real client and watchers: objects appear, change and
//! disappear and the target groups follow; a forced `410 Gone` makes the
//! watcher relist without losing anything.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use strata_collector::config::{ScrapeAuth, Secret, TlsConfig};
use strata_collector::discovery::kubernetes::config::ApiAccess;
use strata_collector::discovery::kubernetes::{KubernetesDiscoverer, KubernetesSdConfig, Role};
use strata_collector::discovery::{Discoverer, GroupSender, TargetGroup, Update};
use strata_fake_apiserver::FakeApiServer;
use tokio::sync::{mpsc, watch};

const WAIT: Duration = Duration::from_secs(15);

/// The groups a discoverer has sent so far, by source.
struct Groups {
    rx: mpsc::Receiver<Update>,
    current: BTreeMap<String, TargetGroup>,
    _stop: watch::Sender<bool>,
}

impl Groups {
    fn start(d: KubernetesDiscoverer) -> Self {
        let (tx, rx) = mpsc::channel(64);
        let (stop, shutdown) = watch::channel(false);
        tokio::spawn(Box::new(d).run(GroupSender::new(tx, 0, 0), shutdown));
        Self { rx, current: BTreeMap::new(), _stop: stop }
    }

    /// Applies updates until `pred` holds (bounded by [`WAIT`]).
    async fn until(&mut self, what: &str, pred: impl Fn(&BTreeMap<String, TargetGroup>) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !pred(&self.current) {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(u)) => {
                    for g in u.groups {
                        if g.targets.is_empty() {
                            self.current.remove(&g.source);
                        } else {
                            self.current.insert(g.source.clone(), g);
                        }
                    }
                }
                _ => panic!("timed out waiting for {what}; groups now: {:#?}", self.current),
            }
        }
    }
}

fn config(role: Role, url: &str) -> KubernetesSdConfig {
    KubernetesSdConfig {
        role,
        access: ApiAccess::Server { url: url.to_owned(), auth: ScrapeAuth::None, tls: TlsConfig::default() },
        own_namespace: false,
        namespaces: Vec::new(),
        selectors: Vec::new(),
        attach_node: false,
    }
}

#[allow(clippy::needless_pass_by_value)]
fn pod(name: &str, ip: &str, labels: Value, port: i32) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {"nodeName": "n1", "containers": [
            {"name": "app", "image": "app:1", "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}]}
        ]},
        "status": {"podIP": ip, "hostIP": "10.0.0.1", "phase": "Running",
                   "conditions": [{"type": "Ready", "status": "True"}]},
    })
}

fn label<'a>(g: &'a TargetGroup, name: &str) -> Option<&'a str> {
    g.labels.get(name)
}

fn addresses(g: &TargetGroup) -> Vec<String> {
    let mut a: Vec<String> = g.targets.iter().filter_map(|t| t.get("__address__").map(str::to_owned)).collect();
    a.sort();
    a
}

#[tokio::test]
async fn pods_appear_change_and_disappear_and_a_410_relists() {
    let server = FakeApiServer::start().await.expect("fake API server");
    server.set_bookmark_interval(Duration::from_millis(200));
    server.apply(pod("a", "10.1.0.1", json!({"app": "web"}), 8080)).expect("pod a");
    server.apply(pod("b", "10.1.0.2", json!({"app": "web"}), 8080)).expect("pod b");
    let mut groups = Groups::start(KubernetesDiscoverer::new(config(Role::Pod, &server.url())));
    groups.until("pods a and b", |g| g.contains_key("pod/default/a") && g.contains_key("pod/default/b")).await;
    let a = &groups.current["pod/default/a"];
    assert_eq!(addresses(a), ["10.1.0.1:8080"]);
    assert_eq!(label(a, "__meta_kubernetes_pod_label_app"), Some("web"));
    assert_eq!(label(a, "__meta_kubernetes_namespace"), Some("default"));
    assert_eq!(label(a, "__meta_kubernetes_pod_ready"), Some("true"));
    assert_eq!(a.targets[0].get("__meta_kubernetes_pod_container_port_name"), Some("http"));

    // A change of labels and of the IP.
    server.apply(pod("a", "10.1.0.9", json!({"app": "api"}), 8080)).expect("pod a changed");
    groups
        .until("pod a relabeled", |g| {
            g.get("pod/default/a").is_some_and(|a| label(a, "__meta_kubernetes_pod_label_app") == Some("api"))
        })
        .await;
    assert_eq!(addresses(&groups.current["pod/default/a"]), ["10.1.0.9:8080"]);

    // A deletion.
    assert!(server.delete("v1", "Pod", "default", "b"));
    groups.until("pod b gone", |g| !g.contains_key("pod/default/b")).await;

    // Changes while the watch is down, then the history is compacted: the
    // resumed watch gets 410 Gone and the watcher relists.
    let lists = server.list_count();
    server.pause_watches();
    server.apply(pod("c", "10.1.0.3", json!({"app": "web"}), 9090)).expect("pod c");
    assert!(server.delete("v1", "Pod", "default", "a"));
    server.compact();
    server.resume_watches();
    groups.until("pod c only, after the relist", |g| g.len() == 1 && g.contains_key("pod/default/c")).await;
    assert!(server.gone_count() >= 1, "the watch was refused with 410 Gone");
    assert!(server.list_count() > lists, "the watcher listed again");

    // And it keeps watching afterwards.
    server.apply(pod("d", "10.1.0.4", json!({}), 9090)).expect("pod d");
    groups.until("pod d", |g| g.contains_key("pod/default/d")).await;
}

#[tokio::test]
async fn a_pod_without_an_ip_has_no_targets_until_it_gets_one() {
    let server = FakeApiServer::new();
    let client = kube::Client::new(server.router(), "default");
    let mut p = pod("p", "", json!({}), 80);
    p["status"]["podIP"] = Value::Null;
    server.apply(p).expect("pending pod");
    server.apply(pod("q", "10.2.0.1", json!({}), 80)).expect("pod q");
    let mut groups = Groups::start(KubernetesDiscoverer::with_client(config(Role::Pod, "http://unused"), client));
    groups.until("pod q", |g| g.contains_key("pod/default/q")).await;
    assert!(!groups.current.contains_key("pod/default/p"));
    server.apply(pod("p", "10.2.0.2", json!({}), 80)).expect("pod p running");
    groups.until("pod p", |g| g.contains_key("pod/default/p")).await;
}

#[allow(clippy::needless_pass_by_value)]
fn service(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10",
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
    })
}

#[tokio::test]
async fn endpoints_join_services_and_pods() {
    let server = FakeApiServer::start().await.expect("fake API server");
    server.apply(service("web", json!({"team": "a"}))).expect("service");
    server.apply(pod("web-1", "10.3.0.1", json!({"app": "web"}), 8080)).expect("pod");
    server
        .apply(json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "web", "namespace": "default"},
            "subsets": [{
                "addresses": [{"ip": "10.3.0.1", "nodeName": "n1",
                               "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "default"}}],
                "notReadyAddresses": [{"ip": "10.3.0.7"}],
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            }],
        }))
        .expect("endpoints");
    let mut groups = Groups::start(KubernetesDiscoverer::new(config(Role::Endpoints, &server.url())));
    groups.until("endpoints web", |g| g.contains_key("endpoints/default/web")).await;
    let g = &groups.current["endpoints/default/web"];
    assert_eq!(addresses(g), ["10.3.0.1:8080", "10.3.0.7:8080"]);
    assert_eq!(label(g, "__meta_kubernetes_service_label_team"), Some("a"));
    assert_eq!(label(g, "__meta_kubernetes_endpoints_name"), Some("web"));
    let ready = g.targets.iter().find(|t| t.get("__address__") == Some("10.3.0.1:8080")).expect("pod target");
    assert_eq!(ready.get("__meta_kubernetes_pod_name"), Some("web-1"));
    assert_eq!(ready.get("__meta_kubernetes_pod_label_app"), Some("web"));
    assert_eq!(ready.get("__meta_kubernetes_pod_container_name"), Some("app"));
    assert_eq!(ready.get("__meta_kubernetes_endpoint_ready"), Some("true"));
    assert_eq!(ready.get("__meta_kubernetes_endpoint_node_name"), Some("n1"));
    let not_ready = g.targets.iter().find(|t| t.get("__address__") == Some("10.3.0.7:8080")).expect("not ready");
    assert_eq!(not_ready.get("__meta_kubernetes_endpoint_ready"), Some("false"));

    // A service change re-labels the endpoints' group.
    server.apply(service("web", json!({"team": "b"}))).expect("service changed");
    groups
        .until("service label b", |g| {
            g.get("endpoints/default/web")
                .is_some_and(|g| label(g, "__meta_kubernetes_service_label_team") == Some("b"))
        })
        .await;
    // A pod change reaches the endpoint targets.
    server.apply(pod("web-1", "10.3.0.1", json!({"app": "web2"}), 8080)).expect("pod changed");
    groups
        .until("pod label web2", |g| {
            g.get("endpoints/default/web")
                .is_some_and(|g| g.targets.iter().any(|t| t.get("__meta_kubernetes_pod_label_app") == Some("web2")))
        })
        .await;
    assert!(server.delete("v1", "Endpoints", "default", "web"));
    groups.until("endpoints gone", |g| g.is_empty()).await;
}

#[tokio::test]
async fn endpointslices_services_nodes_selectors_namespaces_and_credentials() {
    let server = FakeApiServer::start().await.expect("fake API server");
    server.require_authorization(Some("Bearer s3cret"));
    server.apply(service("web", json!({}))).expect("service");
    let slice = |ready: bool| {
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-abc", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.4.0.1"], "conditions": {"ready": ready}, "zone": "z1",
                           "nodeName": "n1"}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        })
    };
    server.apply(slice(true)).expect("slice");
    let mut cfg = config(Role::EndpointSlice, &server.url());
    cfg.access = ApiAccess::Server {
        url: server.url(),
        auth: ScrapeAuth::Header { kind: "Bearer".into(), credentials: Some(Secret::Inline("s3cret".into())) },
        tls: TlsConfig::default(),
    };
    let mut groups = Groups::start(KubernetesDiscoverer::new(cfg));
    groups.until("slice", |g| g.contains_key("endpointslice/default/web-abc")).await;
    let g = &groups.current["endpointslice/default/web-abc"];
    assert_eq!(addresses(g), ["10.4.0.1:8080"]);
    assert_eq!(label(g, "__meta_kubernetes_endpointslice_address_type"), Some("IPv4"));
    assert_eq!(label(g, "__meta_kubernetes_service_name"), Some("web"));
    let t = &g.targets[0];
    assert_eq!(t.get("__meta_kubernetes_endpointslice_endpoint_conditions_ready"), Some("true"));
    assert_eq!(t.get("__meta_kubernetes_endpointslice_endpoint_zone"), Some("z1"));
    assert_eq!(t.get("__meta_kubernetes_endpointslice_port"), Some("8080"));
    server.apply(slice(false)).expect("slice not ready");
    groups
        .until("slice not ready", |g| {
            g.get("endpointslice/default/web-abc").is_some_and(|g| {
                g.targets[0].get("__meta_kubernetes_endpointslice_endpoint_conditions_ready") == Some("false")
            })
        })
        .await;

    // Wrong credentials: nothing is discovered, the process goes on.
    let mut bad = config(Role::Service, &server.url());
    bad.access = ApiAccess::Server {
        url: server.url(),
        auth: ScrapeAuth::Header { kind: "Bearer".into(), credentials: Some(Secret::Inline("wrong".into())) },
        tls: TlsConfig::default(),
    };
    let failures = prometheus_client::metrics::counter::Counter::<u64>::default();
    let mut bad_groups = Groups::start(KubernetesDiscoverer::new(bad).with_failures(failures.clone()));
    let deadline = Instant::now() + WAIT;
    while failures.get() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(failures.get() > 0, "a 401 is counted as a failure");
    assert!(bad_groups.rx.try_recv().is_err(), "nothing discovered with bad credentials");

    server.require_authorization(None);
    // Services in one namespace, selected by label.
    server
        .apply(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "other", "namespace": "kube-system", "labels": {"expose": "yes"}},
        "spec": {"type": "ExternalName", "externalName": "example.com", "ports": [{"port": 53, "protocol": "UDP"}]}}))
        .expect("other service");
    server
        .apply(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "hidden", "namespace": "kube-system"},
        "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.3", "ports": [{"port": 53}]}}))
        .expect("hidden service");
    let mut cfg = config(Role::Service, &server.url());
    cfg.namespaces = vec!["kube-system".into()];
    cfg.selectors = vec![strata_collector::discovery::kubernetes::config::Selector {
        role: Role::Service,
        label: "expose=yes".into(),
        field: String::new(),
    }];
    let mut svc = Groups::start(KubernetesDiscoverer::new(cfg));
    svc.until("service other", |g| g.contains_key("svc/kube-system/other")).await;
    assert_eq!(svc.current.len(), 1, "{:?}", svc.current.keys());
    let t = &svc.current["svc/kube-system/other"].targets[0];
    assert_eq!(t.get("__address__"), Some("other.kube-system.svc:53"));
    assert_eq!(t.get("__meta_kubernetes_service_external_name"), Some("example.com"));
    assert_eq!(t.get("__meta_kubernetes_service_port_protocol"), Some("UDP"));
    // The label stops matching: the watch sends DELETED, the group goes.
    server
        .apply(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "other", "namespace": "kube-system", "labels": {"expose": "no"}},
        "spec": {"type": "ExternalName", "externalName": "example.com", "ports": [{"port": 53, "protocol": "UDP"}]}}))
        .expect("other service unlabeled");
    svc.until("service other unselected", |g| g.is_empty()).await;

    // Nodes.
    server.apply(json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}},
        "status": {"addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "192.168.1.1"}],
                   "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}}))
        .expect("node");
    let mut nodes = Groups::start(KubernetesDiscoverer::new(config(Role::Node, &server.url())));
    nodes.until("node n1", |g| g.contains_key("node/n1")).await;
    let n = &nodes.current["node/n1"];
    assert_eq!(n.targets[0].get("__address__"), Some("192.168.1.1:10250"));
    assert_eq!(n.targets[0].get("instance"), Some("n1"));
    assert_eq!(n.targets[0].get("__meta_kubernetes_node_address_Hostname"), Some("n1"));
    assert_eq!(label(n, "__meta_kubernetes_node_label_kubernetes_io_hostname"), Some("n1"));
    assert!(server.delete("v1", "Node", "", "n1"));
    nodes.until("node gone", |g| g.is_empty()).await;
}

#[tokio::test]
async fn a_410_as_http_status_also_relists() {
    let server = FakeApiServer::start().await.expect("fake API server");
    server.set_gone_as_http_status(true);
    server.apply(service("one", json!({}))).expect("service one");
    let mut groups = Groups::start(KubernetesDiscoverer::new(config(Role::Service, &server.url())));
    groups.until("service one", |g| g.contains_key("svc/default/one")).await;
    let lists = server.list_count();
    server.pause_watches();
    assert!(server.delete("v1", "Service", "default", "one"));
    server.apply(service("two", json!({}))).expect("service two");
    server.compact();
    server.resume_watches();
    groups.until("service two only", |g| g.len() == 1 && g.contains_key("svc/default/two")).await;
    assert!(server.gone_count() >= 1 && server.list_count() > lists);
}

/// A TLS-terminating proxy on 127.0.0.1 in front of the fake API server,
/// with a certificate for 127.0.0.1 signed by a fresh CA; returns the URL
/// and the CA's PEM file.
async fn tls_proxy(server: &FakeApiServer, dir: &std::path::Path) -> (String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use std::sync::Arc;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
    let key = KeyPair::generate().expect("key");
    let cert =
        CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params").signed_by(&key, &ca).expect("cert");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("write CA");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key der"),
        )
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let upstream = server.url().trim_start_matches("http://").to_owned();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    (format!("https://{addr}"), ca_file.display().to_string())
}

#[tokio::test]
async fn an_https_api_server_is_verified_with_the_configured_ca() {
    let server = FakeApiServer::start().await.expect("fake API server");
    server.apply(pod("tls", "10.9.0.1", json!({}), 80)).expect("pod");
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, ca_file) = tls_proxy(&server, dir.path()).await;
    let mut cfg = config(Role::Pod, &url);
    cfg.access = ApiAccess::Server {
        url: url.clone(),
        auth: ScrapeAuth::None,
        tls: TlsConfig { ca_file, ..TlsConfig::default() },
    };
    let mut groups = Groups::start(KubernetesDiscoverer::new(cfg));
    groups.until("the pod, over TLS", |g| g.contains_key("pod/default/tls")).await;

    // Without the CA (system roots only), the server is not trusted.
    let failures = prometheus_client::metrics::counter::Counter::<u64>::default();
    let mut untrusted =
        Groups::start(KubernetesDiscoverer::new(config(Role::Pod, &url)).with_failures(failures.clone()));
    let deadline = Instant::now() + WAIT;
    while failures.get() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(failures.get() > 0, "an unknown CA is a failure");
    assert!(untrusted.rx.try_recv().is_err());
    // insecure_skip_verify accepts it.
    let mut cfg = config(Role::Pod, &url);
    cfg.access = ApiAccess::Server {
        url,
        auth: ScrapeAuth::None,
        tls: TlsConfig { insecure_skip_verify: true, ..TlsConfig::default() },
    };
    let mut insecure = Groups::start(KubernetesDiscoverer::new(cfg));
    insecure.until("the pod, unverified", |g| g.contains_key("pod/default/tls")).await;
}
