//! Kubernetes Events: one collector at a time (the holder of the Lease
//! `strata-kubernetes-events`) watches core/v1 Events cluster-wide and counts
//! each occurrence in `strata_kubernetes_events_total{namespace,kind,reason,type}`
//! (`kind` is the involved object's kind).
//!
//! An Event object stands for `count` occurrences (`series.count` for
//! events.k8s.io-style ones); an update that raises the count adds the
//! difference. Events already there when a collector takes the Lease over
//! are its baseline and not counted again, so a change of holder counts
//! nothing twice. Leader election is the usual Lease protocol: take a
//! Lease that is absent or not renewed within its duration (optimistic
//! concurrency on `resourceVersion` decides races), renew it while holding
//! it, stop watching when it is lost, delete it on shutdown.
//!
//! Shipping the events themselves as records next to samples is not done yet.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::watcher;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use strata_common::{Clock, Telemetry};
use tokio::sync::watch;

/// The Lease whose holder watches the events.
pub const LEASE_NAME: &str = "strata-kubernetes-events";

/// The labels of `strata_kubernetes_events_total`.
type EventLabels = Vec<(String, String)>;

/// The metrics of the events watcher.
#[derive(Clone)]
pub struct EventMetrics {
    /// Occurrences by namespace, kind, reason and type.
    pub events: Family<EventLabels, Counter>,
    /// 1 while this collector holds the Lease.
    pub leader: Gauge,
}

impl EventMetrics {
    /// Registers the metrics in `t`.
    pub fn new(t: &Telemetry) -> Self {
        let m = Self { events: Family::default(), leader: Gauge::default() };
        t.register(
            "strata_kubernetes_events",
            "Kubernetes Event occurrences, by namespace, involved object kind, reason and type",
            m.events.clone(),
        );
        t.register(
            "strata_kubernetes_events_leader",
            "1 while this collector holds the Kubernetes Events Lease",
            m.leader.clone(),
        );
        m
    }
}

/// How many occurrences an Event object stands for.
fn occurrences(e: &Event) -> u64 {
    let n = e.series.as_ref().and_then(|s| s.count).or(e.count).unwrap_or(1);
    u64::try_from(n).unwrap_or(0).max(1)
}

fn labels_of(e: &Event) -> EventLabels {
    vec![
        ("namespace".into(), e.metadata.namespace.clone().unwrap_or_default()),
        ("kind".into(), e.involved_object.kind.clone().unwrap_or_default()),
        ("reason".into(), e.reason.clone().unwrap_or_default()),
        ("type".into(), e.type_.clone().unwrap_or_default()),
    ]
}

fn key_of(e: &Event) -> String {
    e.metadata.uid.clone().unwrap_or_else(|| {
        format!("{}/{}", e.metadata.namespace.as_deref().unwrap_or(""), e.metadata.name.as_deref().unwrap_or(""))
    })
}

/// Counts occurrences: the last count seen per Event.
#[derive(Debug, Default)]
pub struct EventCounter {
    seen: HashMap<String, u64>,
}

impl EventCounter {
    /// Takes `events` as already counted (the state when taking over).
    pub fn baseline<'a>(&mut self, events: impl IntoIterator<Item = &'a Event>) {
        self.seen = events.into_iter().map(|e| (key_of(e), occurrences(e))).collect();
    }

    /// The new occurrences `e` brings, with its labels.
    pub fn observe(&mut self, e: &Event) -> (EventLabels, u64) {
        let n = occurrences(e);
        let before = self.seen.insert(key_of(e), n).unwrap_or(0);
        (labels_of(e), n.saturating_sub(before))
    }

    /// Forgets a deleted Event.
    pub fn forget(&mut self, e: &Event) {
        self.seen.remove(&key_of(e));
    }
}

/// Watches Events while holding the Lease.
pub struct EventsWatcher {
    client: kube::Client,
    namespace: String,
    identity: String,
    clock: Arc<dyn Clock>,
    metrics: EventMetrics,
    /// A Lease not renewed for this long may be taken over.
    pub lease_duration: Duration,
    /// How often the Lease is renewed (or tried).
    pub renew_every: Duration,
}

impl EventsWatcher {
    /// A watcher named `identity`, its Lease in `namespace`.
    pub fn new(
        client: kube::Client,
        namespace: impl Into<String>,
        identity: impl Into<String>,
        clock: Arc<dyn Clock>,
        metrics: EventMetrics,
    ) -> Self {
        Self {
            client,
            namespace: namespace.into(),
            identity: identity.into(),
            clock,
            metrics,
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }

    fn now(&self) -> Option<MicroTime> {
        k8s_openapi::jiff::Timestamp::from_millisecond(self.clock.now_ms()).ok().map(MicroTime)
    }

    /// Takes or renews the Lease; true while this collector holds it.
    async fn try_hold(&self, api: &Api<Lease>) -> Result<bool, kube::Error> {
        let spec = |acquired: bool, old: Option<&LeaseSpec>| LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX)),
            renew_time: self.now(),
            acquire_time: if acquired { self.now() } else { old.and_then(|o| o.acquire_time.clone()) },
            lease_transitions: old.map(|o| o.lease_transitions.unwrap_or(0) + i32::from(acquired)),
            ..LeaseSpec::default()
        };
        match api.get_opt(LEASE_NAME).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(LEASE_NAME.into()),
                        namespace: Some(self.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec(true, None)),
                };
                match api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Some(mut lease) => {
                let old = lease.spec.clone().unwrap_or_default();
                let holder = old.holder_identity.clone().unwrap_or_default();
                let expired = old.renew_time.as_ref().is_none_or(|t| {
                    let duration = i64::from(old.lease_duration_seconds.unwrap_or(15)) * 1000;
                    t.0.as_millisecond() + duration <= self.clock.now_ms()
                });
                let mine = holder == self.identity;
                if !mine && !holder.is_empty() && !expired {
                    return Ok(false);
                }
                lease.spec = Some(spec(!mine, Some(&old)));
                // The resourceVersion read above makes a concurrent taker fail with 409.
                match api.replace(LEASE_NAME, &PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Runs until shutdown: campaigns for the Lease and counts Events while holding it.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let leases = Api::<Lease>::namespaced(self.client.clone(), &self.namespace);
        let mut holding = false;
        loop {
            let held = match self.try_hold(&leases).await {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(error = %e, "kubernetes events: lease request failed");
                    false
                }
            };
            if held && !holding {
                tracing::info!(identity = %self.identity, "kubernetes events: took the lease; watching events");
            }
            holding = held;
            self.metrics.leader.set(i64::from(holding));
            if !holding {
                tokio::select! {
                    _ = tokio::time::sleep(self.renew_every) => continue,
                    _ = shutdown.changed() => return,
                }
            }
            // Leader: watch events until the lease is lost or shutdown.
            let mut counter = EventCounter::default();
            let mut initial: Vec<Event> = Vec::new();
            let mut baseline_done = false;
            let mut events = crate::discovery::kubernetes::watch_relisting(
                Api::<Event>::all(self.client.clone()),
                watcher::Config::default(),
            );
            let mut renew = tokio::time::interval(self.renew_every);
            renew.tick().await;
            loop {
                tokio::select! {
                    ev = events.next() => match ev {
                        Some(Ok(watcher::Event::Init)) => initial.clear(),
                        Some(Ok(watcher::Event::InitApply(e))) => initial.push(e),
                        Some(Ok(watcher::Event::InitDone)) => {
                            if baseline_done {
                                // A relist: count what changed meanwhile.
                                for e in &initial {
                                    self.count(&mut counter, e);
                                }
                            } else {
                                counter.baseline(&initial);
                                baseline_done = true;
                            }
                            initial.clear();
                        }
                        Some(Ok(watcher::Event::Apply(e))) => self.count(&mut counter, &e),
                        Some(Ok(watcher::Event::Delete(e))) => counter.forget(&e),
                        Some(Err(e)) => tracing::warn!(error = %e, "kubernetes events: watch failed; retrying"),
                        None => break,
                    },
                    _ = renew.tick() => {
                        match self.try_hold(&leases).await {
                            Ok(true) => {}
                            Ok(false) => {
                                tracing::warn!("kubernetes events: lost the lease");
                                holding = false;
                                break;
                            }
                            Err(e) => tracing::warn!(error = %e, "kubernetes events: renewing the lease failed"),
                        }
                    }
                    _ = shutdown.changed() => {
                        self.metrics.leader.set(0);
                        if let Err(e) = leases.delete(LEASE_NAME, &DeleteParams::default()).await {
                            tracing::warn!(error = %e, "kubernetes events: releasing the lease failed");
                        }
                        return;
                    }
                }
            }
            self.metrics.leader.set(i64::from(holding));
        }
    }

    fn count(&self, counter: &mut EventCounter, e: &Event) {
        let (labels, n) = counter.observe(e);
        if n > 0 {
            self.metrics.events.get_or_create(&labels).inc_by(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(uid: &str, count: i32, reason: &str) -> Event {
        match serde_json::from_value(serde_json::json!({
            "metadata": {"name": uid, "namespace": "ns", "uid": uid},
            "involvedObject": {"kind": "Pod", "name": "p"},
            "reason": reason, "type": "Warning", "count": count,
        })) {
            Ok(e) => e,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn counts_occurrences_once() {
        let mut c = EventCounter::default();
        c.baseline(&[event("a", 3, "BackOff")]);
        assert_eq!(c.observe(&event("a", 5, "BackOff")).1, 2, "only the new occurrences");
        assert_eq!(c.observe(&event("a", 5, "BackOff")).1, 0);
        let (labels, n) = c.observe(&event("b", 1, "Killing"));
        assert_eq!(n, 1);
        assert_eq!(
            labels,
            [("namespace", "ns"), ("kind", "Pod"), ("reason", "Killing"), ("type", "Warning")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .to_vec()
        );
        c.forget(&event("b", 1, "Killing"));
        assert_eq!(c.observe(&event("b", 1, "Killing")).1, 1);
    }
}
