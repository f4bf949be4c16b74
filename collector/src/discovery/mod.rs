//! Service discovery: where targets come from.
//!
//! Every mechanism (static lists, files, later Kubernetes) is a
//! [`Discoverer`]: a task that sends whole [`TargetGroup`]s, keyed by their
//! `source`, whenever they change. A group sent with no targets removes the
//! group of that source. The scrape manager merges the groups of each job and
//! follows the changes live.

pub mod file;
pub mod kubernetes;

use strata_model::BoxFuture;
use strata_model::Labels;
use tokio::sync::{mpsc, watch};

/// Prometheus' `targetgroup.Group`: targets sharing labels, from one source.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TargetGroup {
    /// Identifies the group within its discoverer (e.g. `file.yml:0`).
    pub source: String,
    /// One label set per target, each with at least `__address__`.
    pub targets: Vec<Labels>,
    /// Labels of every target of the group (a target's own labels win).
    pub labels: Labels,
}

/// One batch of group changes from one discoverer of one job.
#[derive(Debug)]
pub struct Update {
    /// Index of the job in the manager's job list.
    pub job: usize,
    /// Index of the discoverer within the job.
    pub provider: usize,
    /// The changed groups.
    pub groups: Vec<TargetGroup>,
}

/// Where a discoverer sends its groups.
#[derive(Debug, Clone)]
pub struct GroupSender {
    tx: mpsc::Sender<Update>,
    job: usize,
    provider: usize,
}

impl GroupSender {
    /// A sender tagging updates with `job` and `provider`.
    pub fn new(tx: mpsc::Sender<Update>, job: usize, provider: usize) -> Self {
        Self { tx, job, provider }
    }

    /// Sends changed groups; false once the manager is gone.
    pub async fn send(&self, groups: Vec<TargetGroup>) -> bool {
        self.tx.send(Update { job: self.job, provider: self.provider, groups }).await.is_ok()
    }
}

/// A source of target groups, run as one task until `shutdown` turns true.
pub trait Discoverer: Send {
    /// Sends the current groups, then every change, until shutdown.
    fn run(self: Box<Self>, out: GroupSender, shutdown: watch::Receiver<bool>) -> BoxFuture<'static, ()>;
}

/// `static_configs`: groups known up front, sent once.
#[derive(Debug, Clone)]
pub struct StaticDiscoverer {
    groups: Vec<TargetGroup>,
}

impl StaticDiscoverer {
    /// Serves `groups` as they are.
    pub fn new(groups: Vec<TargetGroup>) -> Self {
        Self { groups }
    }
}

impl Discoverer for StaticDiscoverer {
    fn run(self: Box<Self>, out: GroupSender, _shutdown: watch::Receiver<bool>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            out.send(self.groups).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn static_discoverer_sends_its_groups_once() {
        let (tx, mut rx) = mpsc::channel(4);
        let (_stop, shutdown) = watch::channel(false);
        let g = TargetGroup {
            source: "0".into(),
            targets: vec![Labels::from_pairs([("__address__", "a:1")]).expect("labels")],
            labels: Labels::empty(),
        };
        Box::new(StaticDiscoverer::new(vec![g.clone()])).run(GroupSender::new(tx, 2, 1), shutdown).await;
        let u = rx.recv().await.expect("one update");
        assert_eq!((u.job, u.provider, u.groups), (2, 1, vec![g]));
        assert!(rx.recv().await.is_none(), "nothing more: the sender is gone");
    }
}
