//! Kubernetes Events counted by one collector at a time: two watchers
//! campaign for the Lease on the fake API server, only the holder counts,
//! and when it stops the other takes over without counting anything twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use strata_collector::config::{ScrapeAuth, TlsConfig};
use strata_collector::discovery::kubernetes::config::ApiAccess;
use strata_collector::events::{EventMetrics, EventsWatcher};
use strata_common::{SystemClock, Telemetry};
use strata_fake_apiserver::FakeApiServer;
use tokio::sync::watch;

fn event(name: &str, count: i32, reason: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": "apps"},
        "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "apps"},
        "reason": reason, "type": "Warning", "message": "m", "count": count,
        "source": {"component": "kubelet", "host": "n1"},
    })
}

fn count(m: &EventMetrics, reason: &str) -> u64 {
    let labels = vec![
        ("namespace".to_owned(), "apps".to_owned()),
        ("kind".to_owned(), "Pod".to_owned()),
        ("reason".to_owned(), reason.to_owned()),
        ("type".to_owned(), "Warning".to_owned()),
    ];
    m.events.get_or_create(&labels).get()
}

struct Watcher {
    metrics: EventMetrics,
    telemetry: Telemetry,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(identity: &str, server: &FakeApiServer) -> Watcher {
    let client = strata_collector::discovery::kubernetes::client::build(&ApiAccess::Server {
        url: server.url(),
        auth: ScrapeAuth::None,
        tls: TlsConfig::default(),
    })
    .await
    .expect("client");
    let telemetry = Telemetry::empty();
    let metrics = EventMetrics::new(&telemetry);
    let mut w = EventsWatcher::new(client, "strata", identity, Arc::new(SystemClock), metrics.clone());
    w.renew_every = Duration::from_millis(100);
    w.lease_duration = Duration::from_secs(2);
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(w.run(rx));
    Watcher { metrics, telemetry, stop, task }
}

async fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_watcher_counts_and_the_other_takes_over() {
    let server = FakeApiServer::start().await.expect("fake API server");
    server.apply(event("e1", 3, "BackOff")).expect("event");
    let a = start("a", &server).await;
    let b = start("b", &server).await;
    until("one leader", || a.metrics.leader.get() + b.metrics.leader.get() == 1).await;
    let (leader, other) = if a.metrics.leader.get() == 1 { (a, b) } else { (b, a) };
    // The leader's watch opens once its initial list (the baseline) is taken.
    until("the leader watching", || server.watch_count() >= 1).await;
    server.apply(event("e1", 5, "BackOff")).expect("event again");
    server.apply(event("e2", 1, "Killing")).expect("new event");
    until("the leader counted the new occurrences", || {
        count(&leader.metrics, "BackOff") == 2 && count(&leader.metrics, "Killing") == 1
    })
    .await;
    assert!(
        leader.telemetry.encode().contains(
            "strata_kubernetes_events_total{namespace=\"apps\",kind=\"Pod\",reason=\"BackOff\",type=\"Warning\"} 2"
        ),
        "{}",
        leader.telemetry.encode()
    );
    assert_eq!(count(&other.metrics, "BackOff") + count(&other.metrics, "Killing"), 0, "only the leader counts");

    let _ = leader.stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), leader.task).await;
    until("the other took over", || other.metrics.leader.get() == 1).await;
    until("the new leader watching", || server.watch_count() >= 2).await;
    server.apply(event("e1", 6, "BackOff")).expect("event once more");
    server.apply(event("e3", 1, "Unhealthy")).expect("another event");
    until("the new leader counted only what is new", || {
        count(&other.metrics, "BackOff") == 1 && count(&other.metrics, "Unhealthy") == 1
    })
    .await;
    assert_eq!(count(&other.metrics, "Killing"), 0, "e2 was counted by the first leader");
    let _ = other.stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), other.task).await;
}
