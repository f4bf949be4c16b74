//! `role: pod`: one target per declared container port, or one per
//! container without ports (address: the pod IP), init containers included
//! (Prometheus' `discovery/kubernetes/pod.go`).

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use strata_model::{Labels, LabelsBuilder};

use super::{META_PREFIX, NAMESPACE_LABEL, Store, add_node_meta, add_object_meta, join_host_port};
use crate::discovery::TargetGroup;

/// `pod/<namespace>/<name>`
pub(crate) fn source(namespace: &str, name: &str) -> String {
    format!("pod/{namespace}/{name}")
}

fn l(name: &str) -> String {
    format!("{META_PREFIX}{name}")
}

/// `true`, `false` or `unknown`: the pod's `Ready` condition.
fn ready(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map_or_else(|| "unknown".to_owned(), |c| c.status.to_lowercase())
}

/// The labels every target of a pod has (Prometheus' `podLabels`).
pub(crate) fn pod_labels(pod: &Pod) -> Labels {
    let mut b = LabelsBuilder::new();
    let status = pod.status.as_ref();
    b.set(l("pod_ip"), status.and_then(|s| s.pod_ip.clone()).unwrap_or_default());
    b.set(l("pod_ready"), ready(pod));
    b.set(l("pod_phase"), status.and_then(|s| s.phase.clone()).unwrap_or_default());
    b.set(l("pod_node_name"), pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default());
    b.set(l("pod_host_ip"), status.and_then(|s| s.host_ip.clone()).unwrap_or_default());
    b.set(l("pod_uid"), pod.metadata.uid.clone().unwrap_or_default());
    add_object_meta(&mut b, &pod.metadata, "pod");
    if let Some(owner) = pod.metadata.owner_references.iter().flatten().find(|o| o.controller == Some(true)) {
        b.set(l("pod_controller_kind"), owner.kind.clone());
        b.set(l("pod_controller_name"), owner.name.clone());
    }
    b.build()
}

fn container_id(statuses: Option<&Vec<ContainerStatus>>, name: &str) -> String {
    statuses.into_iter().flatten().find(|s| s.name == name).and_then(|s| s.container_id.clone()).unwrap_or_default()
}

/// The pod's group (no targets while it has no IP).
pub(crate) fn build(pod: &Pod, store: &Store, attach_node: bool) -> TargetGroup {
    let (ns, name) = super::key_of(&pod.metadata);
    let mut tg = TargetGroup { source: source(&ns, &name), ..TargetGroup::default() };
    let status = pod.status.as_ref();
    let ip = status.and_then(|s| s.pod_ip.clone()).unwrap_or_default();
    if ip.is_empty() {
        return tg;
    }
    let mut group = pod_labels(pod).builder();
    group.set(NAMESPACE_LABEL, ns);
    let spec = pod.spec.as_ref();
    if attach_node {
        add_node_meta(&mut group, store, spec.and_then(|s| s.node_name.as_deref()));
    }
    tg.labels = group.build();
    let containers = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
    let inits = spec.and_then(|s| s.init_containers.as_deref()).unwrap_or_default();
    for (i, c) in containers.iter().chain(inits).enumerate() {
        let is_init = i >= containers.len();
        let statuses = if is_init {
            status.and_then(|s| s.init_container_statuses.as_ref())
        } else {
            status.and_then(|s| s.container_statuses.as_ref())
        };
        let id = container_id(statuses, &c.name);
        let mut base = LabelsBuilder::new();
        base.set(l("pod_container_name"), c.name.clone());
        base.set(l("pod_container_id"), id);
        base.set(l("pod_container_image"), c.image.clone().unwrap_or_default());
        base.set(l("pod_container_init"), is_init.to_string());
        let ports = c.ports.as_deref().unwrap_or_default();
        if ports.is_empty() {
            base.set("__address__", ip.clone());
            tg.targets.push(base.build());
            continue;
        }
        for p in ports {
            let mut t = base.clone();
            t.set("__address__", join_host_port(&ip, p.container_port));
            t.set(l("pod_container_port_number"), p.container_port.to_string());
            t.set(l("pod_container_port_name"), p.name.clone().unwrap_or_default());
            t.set(l("pod_container_port_protocol"), p.protocol.clone().unwrap_or_default());
            tg.targets.push(t.build());
        }
    }
    tg
}
