//! Node-local sharding (`strata collector --node-name`, the DaemonSet mode):
//! a collector scrapes only the targets on its node, and targets with no
//! node are spread over the live collectors by rendezvous (highest random
//! weight) hashing, so each is scraped by exactly one collector and only
//! the targets of a collector that comes or goes move.
//!
//! A target's node is the first of `__meta_kubernetes_pod_node_name`,
//! `__meta_kubernetes_endpoint_node_name`,
//! `__meta_kubernetes_endpointslice_endpoint_node_name` and
//! `__meta_kubernetes_node_name` among its discovered labels.
//!
//! The live collectors are found through Kubernetes Leases
//! ([`LeaseMembership`]): each collector holds the Lease
//! `strata-collector-<node>` (label `app.kubernetes.io/component:
//! strata-collector`), renews it, and reads the others; a Lease not renewed
//! within its duration is a collector gone. Its own Lease is deleted on
//! shutdown so the others take over at once.

use std::hash::Hasher;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use strata_common::Clock;
use strata_model::Labels;
use tokio::sync::watch;

use crate::discovery::kubernetes::config::{KubernetesSdConfig, Role, Selector};

/// Discovered labels naming the node of a target, in the order they are read.
pub const NODE_LABELS: [&str; 4] = [
    "__meta_kubernetes_pod_node_name",
    "__meta_kubernetes_endpoint_node_name",
    "__meta_kubernetes_endpointslice_endpoint_node_name",
    "__meta_kubernetes_node_name",
];

/// The label every collector Lease carries.
pub const LEASE_LABEL: (&str, &str) = ("app.kubernetes.io/component", "strata-collector");

/// The node a target runs on, if discovery says.
pub fn target_node(discovered: &Labels) -> Option<&str> {
    NODE_LABELS.iter().find_map(|l| discovered.get(l)).filter(|n| !n.is_empty())
}

/// The member owning `key` by rendezvous hashing (none when there are no members).
pub fn rendezvous_owner<'a>(members: &'a [String], key: &Labels) -> Option<&'a str> {
    members
        .iter()
        .map(|m| {
            let mut h = twox_hash::XxHash64::with_seed(0);
            h.write(m.as_bytes());
            h.write(&[0xff]);
            for l in key {
                h.write(l.name.as_bytes());
                h.write(&[0xfe]);
                h.write(l.value.as_bytes());
                h.write(&[0xff]);
            }
            (h.finish(), m.as_str())
        })
        .max()
        .map(|(_, m)| m)
}

/// With role `pod`, watches only the pods scheduled on `node`
/// (`spec.nodeName=<node>` added to the pod field selector): a collector
/// then never lists the pods of the whole cluster. Other roles need
/// cluster-wide objects (services, endpoints) and are filtered per target.
pub fn restrict_pods_to_node(config: &mut KubernetesSdConfig, node: &str) {
    if config.role != Role::Pod {
        return;
    }
    let term = format!("spec.nodeName={node}");
    match config.selectors.iter_mut().find(|s| s.role == Role::Pod) {
        Some(s) if s.field.is_empty() => s.field = term,
        Some(s) => s.field = format!("{},{term}", s.field),
        None => config.selectors.push(Selector { role: Role::Pod, label: String::new(), field: term }),
    }
}

/// Which targets this collector scrapes.
#[derive(Debug, Clone)]
pub struct Sharding {
    node: String,
    members: watch::Receiver<Vec<String>>,
}

impl Sharding {
    /// This collector runs on `node`; `members` follows the live collectors' node names.
    pub fn new(node: impl Into<String>, members: watch::Receiver<Vec<String>>) -> Self {
        Self { node: node.into(), members }
    }

    /// The node this collector runs on.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Resolves when the live collectors change.
    pub async fn changed(&mut self) -> bool {
        self.members.changed().await.is_ok()
    }

    /// Whether this collector scrapes the target with these discovered
    /// labels and identity (its labels after relabeling).
    pub fn owns(&self, discovered: &Labels, identity: &Labels) -> bool {
        if let Some(n) = target_node(discovered) {
            return n == self.node;
        }
        let members = self.members.borrow();
        if members.is_empty() || !members.contains(&self.node) {
            // Until the membership is known, this collector counts itself live.
            let mut with_self = members.clone();
            with_self.push(self.node.clone());
            with_self.sort();
            return rendezvous_owner(&with_self, identity) == Some(self.node.as_str());
        }
        rendezvous_owner(&members, identity) == Some(self.node.as_str())
    }
}

/// Keeps this collector's Lease and reports the live collectors.
pub struct LeaseMembership {
    client: kube::Client,
    namespace: String,
    node: String,
    clock: Arc<dyn Clock>,
    /// A Lease not renewed for this long is a collector gone.
    pub lease_duration: Duration,
    /// How often the Lease is renewed and the others read.
    pub renew_every: Duration,
}

impl LeaseMembership {
    /// Membership of `node` through Leases in `namespace`.
    pub fn new(
        client: kube::Client,
        namespace: impl Into<String>,
        node: impl Into<String>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            client,
            namespace: namespace.into(),
            node: node.into(),
            clock,
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }

    fn lease_name(&self) -> String {
        format!("strata-collector-{}", self.node)
    }

    fn now(&self) -> Option<MicroTime> {
        k8s_openapi::jiff::Timestamp::from_millisecond(self.clock.now_ms()).ok().map(MicroTime)
    }

    /// Creates or renews this collector's Lease.
    async fn renew(&self, api: &Api<Lease>) -> Result<(), kube::Error> {
        let name = self.lease_name();
        let spec = LeaseSpec {
            holder_identity: Some(self.node.clone()),
            lease_duration_seconds: Some(i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX)),
            renew_time: self.now(),
            ..LeaseSpec::default()
        };
        match api.get_opt(&name).await? {
            Some(mut lease) => {
                lease.spec = Some(spec);
                api.replace(&name, &PostParams::default(), &lease).await?;
            }
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name),
                        namespace: Some(self.namespace.clone()),
                        labels: Some([(LEASE_LABEL.0.to_owned(), LEASE_LABEL.1.to_owned())].into()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec),
                };
                api.create(&PostParams::default(), &lease).await?;
            }
        }
        Ok(())
    }

    /// The node names of the Leases renewed within their duration, sorted.
    async fn live(&self, api: &Api<Lease>) -> Result<Vec<String>, kube::Error> {
        let now = self.clock.now_ms();
        let leases = api.list(&ListParams::default().labels(&format!("{}={}", LEASE_LABEL.0, LEASE_LABEL.1))).await?;
        let mut out: Vec<String> = leases
            .items
            .iter()
            .filter_map(|l| {
                let spec = l.spec.as_ref()?;
                let renewed = spec.renew_time.as_ref()?.0.as_millisecond();
                let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15)) * 1000;
                (renewed + duration > now).then(|| spec.holder_identity.clone()).flatten()
            })
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Renews and reads until shutdown, publishing the live collectors on
    /// `out` (this one always included), then deletes its Lease.
    pub async fn run(self, out: watch::Sender<Vec<String>>, mut shutdown: watch::Receiver<bool>) {
        let api = Api::<Lease>::namespaced(self.client.clone(), &self.namespace);
        loop {
            if let Err(e) = self.renew(&api).await {
                tracing::warn!(error = %e, "sharding: renewing the collector lease failed");
            }
            match self.live(&api).await {
                Ok(mut live) => {
                    if !live.contains(&self.node) {
                        live.push(self.node.clone());
                        live.sort();
                    }
                    out.send_if_modified(|m| {
                        let changed = *m != live;
                        if changed {
                            tracing::info!(collectors = ?live, "sharding: live collectors changed");
                            *m = live;
                        }
                        changed
                    });
                }
                Err(e) => tracing::warn!(error = %e, "sharding: listing collector leases failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.renew_every) => {}
                _ = shutdown.changed() => break,
            }
        }
        if let Err(e) = api.delete(&self.lease_name(), &DeleteParams::default()).await {
            tracing::warn!(error = %e, "sharding: deleting the collector lease failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied()).expect("labels")
    }

    #[test]
    fn pod_discovery_is_restricted_to_the_node() {
        let mut c = KubernetesSdConfig {
            role: Role::Pod,
            access: crate::discovery::kubernetes::config::ApiAccess::InCluster,
            own_namespace: false,
            namespaces: Vec::new(),
            selectors: Vec::new(),
            attach_node: false,
        };
        restrict_pods_to_node(&mut c, "n1");
        assert_eq!(c.selectors[0].field, "spec.nodeName=n1");
        c.selectors[0].field = "status.phase=Running".into();
        restrict_pods_to_node(&mut c, "n1");
        assert_eq!(c.selectors[0].field, "status.phase=Running,spec.nodeName=n1");
        c.role = Role::Endpoints;
        c.selectors.clear();
        restrict_pods_to_node(&mut c, "n1");
        assert!(c.selectors.is_empty(), "endpoints need every pod");
    }

    #[test]
    fn targets_on_a_node_belong_to_its_collector() {
        let (_tx, rx) = watch::channel(vec!["n1".to_owned(), "n2".to_owned()]);
        let s = Sharding::new("n1", rx);
        let id = labels(&[("instance", "x")]);
        assert!(s.owns(&labels(&[("__meta_kubernetes_pod_node_name", "n1")]), &id));
        assert!(!s.owns(&labels(&[("__meta_kubernetes_pod_node_name", "n2")]), &id));
        assert!(s.owns(&labels(&[("__meta_kubernetes_endpointslice_endpoint_node_name", "n1")]), &id));
        assert!(!s.owns(&labels(&[("__meta_kubernetes_node_name", "n3")]), &id));
    }

    #[test]
    fn targets_without_a_node_are_split_and_move_little() {
        let members: Vec<String> = (0..4).map(|i| format!("n{i}")).collect();
        let keys: Vec<Labels> = (0..400).map(|i| labels(&[("instance", &format!("t{i}"))])).collect();
        let owners: Vec<&str> = keys.iter().map(|k| rendezvous_owner(&members, k).expect("owner")).collect();
        for m in &members {
            let n = owners.iter().filter(|o| **o == m.as_str()).count();
            assert!((50..=150).contains(&n), "{m} owns {n} of 400");
        }
        // n3 leaves: only its targets move.
        let fewer = &members[..3];
        for (k, before) in keys.iter().zip(&owners) {
            let after = rendezvous_owner(fewer, k).expect("owner");
            if *before != "n3" {
                assert_eq!(after, *before);
            }
        }
        // Each target has exactly one owner among collectors that agree on the members.
        let (_tx, rx) = watch::channel(members.clone());
        let views: Vec<Sharding> = members.iter().map(|m| Sharding::new(m.clone(), rx.clone())).collect();
        for k in &keys {
            assert_eq!(views.iter().filter(|s| s.owns(&Labels::empty(), k)).count(), 1);
        }
    }
}
