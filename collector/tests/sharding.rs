//! Node-local sharding with two collectors (scrape managers) sharing the
//! fake Kubernetes API server: each scrapes the pods of its node and a
//! disjoint share of the node-less targets, together all of them; when one
//! collector stops (deleting its Lease), the other takes its share over.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use strata_collector::config::{ScrapeAuth, ScrapeJob, TlsConfig};
use strata_collector::discovery::kubernetes::config::ApiAccess;
use strata_collector::discovery::kubernetes::{KubernetesSdConfig, Role};
use strata_collector::scrape::{ScrapeDeps, ScrapeManager};
use strata_collector::sharding::{LeaseMembership, Sharding};
use strata_collector::status::ScrapeStatus;
use strata_common::{SystemClock, Telemetry};
use strata_fake_apiserver::FakeApiServer;
use strata_model::{Append, AppendError, AppendSummary, BoxFuture, Labels, WriteBatch};
use tokio::sync::watch;

struct Discard;

impl Append for Discard {
    fn append(&self, _batch: WriteBatch) -> BoxFuture<'_, Result<AppendSummary, AppendError>> {
        Box::pin(async { Ok(AppendSummary::default()) })
    }
}

const STATIC: usize = 12;

fn job(url: &str) -> ScrapeJob {
    let mut job = ScrapeJob::new("mixed", Duration::from_secs(60), Duration::from_secs(1));
    let addresses: Vec<String> = (0..STATIC).map(|i| format!("127.0.0.1:{}", 1 + i)).collect();
    job = job.with_static_targets(addresses.iter().map(String::as_str), Labels::empty());
    job.kubernetes_sd = vec![KubernetesSdConfig {
        role: Role::Pod,
        access: ApiAccess::Server { url: url.to_owned(), auth: ScrapeAuth::None, tls: TlsConfig::default() },
        own_namespace: false,
        namespaces: Vec::new(),
        selectors: Vec::new(),
        attach_node: false,
    }];
    job
}

/// One collector: its manager's status, its stop switch and its tasks.
struct Collector {
    status: ScrapeStatus,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn start(node: &str, server: &FakeApiServer) -> Collector {
    let client = strata_collector::discovery::kubernetes::client::build(&ApiAccess::Server {
        url: server.url(),
        auth: ScrapeAuth::None,
        tls: TlsConfig::default(),
    })
    .await
    .expect("client");
    let (stop, stop_rx) = watch::channel(false);
    let (members_tx, members_rx) = watch::channel(vec![node.to_owned()]);
    let mut membership = LeaseMembership::new(client, "strata", node, Arc::new(SystemClock));
    membership.renew_every = Duration::from_millis(100);
    membership.lease_duration = Duration::from_secs(2);
    let deps = ScrapeDeps {
        appender: Arc::new(Discard),
        clock: Arc::new(SystemClock),
        telemetry: Telemetry::new(),
        tenant: "anonymous".into(),
    };
    let mut manager = ScrapeManager::new(vec![job(&server.url())], deps).expect("manager");
    manager.set_sharding(Sharding::new(node, members_rx));
    let status = manager.status();
    let tasks = vec![tokio::spawn(membership.run(members_tx, stop_rx.clone())), tokio::spawn(manager.run(stop_rx))];
    Collector { status, stop, tasks }
}

fn instances(status: &ScrapeStatus) -> BTreeSet<String> {
    status
        .snapshot()
        .get("mixed")
        .map(|p| p.active.iter().filter_map(|t| t.target.labels.get("instance").map(str::to_owned)).collect())
        .unwrap_or_default()
}

async fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_collectors_split_the_targets_and_one_takes_over() {
    let server = FakeApiServer::start().await.expect("fake API server");
    for (name, node, ip) in [("a", "n1", "10.0.0.1"), ("b", "n2", "10.0.0.2"), ("c", "n1", "10.0.0.3")] {
        server
            .apply(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"nodeName": node, "containers": [{"name": "c", "ports": [{"containerPort": 80}]}]},
                "status": {"podIP": ip, "phase": "Running"},
            }))
            .expect("pod");
    }
    let one = start("n1", &server).await;
    let two = start("n2", &server).await;
    let statics: BTreeSet<String> = (0..STATIC).map(|i| format!("127.0.0.1:{}", 1 + i)).collect();
    let pods_n1: BTreeSet<String> = ["10.0.0.1:80", "10.0.0.3:80"].map(str::to_owned).into();
    let pods_n2: BTreeSet<String> = ["10.0.0.2:80"].map(str::to_owned).into();
    let split = || {
        let (a, b) = (instances(&one.status), instances(&two.status));
        let sa: BTreeSet<String> = a.intersection(&statics).cloned().collect();
        let sb: BTreeSet<String> = b.intersection(&statics).cloned().collect();
        a.is_superset(&pods_n1)
            && a.is_disjoint(&pods_n2)
            && b.is_superset(&pods_n2)
            && b.is_disjoint(&pods_n1)
            && sa.is_disjoint(&sb)
            && sa.union(&sb).cloned().collect::<BTreeSet<_>>() == statics
            && !sa.is_empty()
            && !sb.is_empty()
    };
    until("each collector with its node's pods and a disjoint share of the rest", split).await;
    let requests = server.requests();
    for node in ["n1", "n2"] {
        let selector = format!("fieldSelector=spec.nodeName%3D{node}");
        assert!(
            requests.iter().any(|r| r.starts_with("GET /api/v1/pods?") && r.contains(&selector)),
            "pods of {node} watched with a field selector: {requests:#?}"
        );
    }
    assert!(
        !requests.iter().any(|r| r.starts_with("GET /api/v1/pods?") && !r.contains("fieldSelector")),
        "no collector lists every pod"
    );

    // Collector two stops and deletes its Lease: one takes every node-less target.
    let _ = two.stop.send(true);
    for t in two.tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    let expected: BTreeSet<String> = statics.union(&pods_n1).cloned().collect();
    until("collector one with every node-less target", || instances(&one.status) == expected).await;
    let _ = one.stop.send(true);
}
