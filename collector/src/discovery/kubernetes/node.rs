//! `role: node`: one target per node, the kubelet's address and port, with
//! `instance` set to the node name (Prometheus' `discovery/kubernetes/node.go`).

use k8s_openapi::api::core::v1::Node;
use strata_model::LabelsBuilder;

use super::{META_PREFIX, add_object_meta, join_host_port, sanitize_label_name};
use crate::discovery::TargetGroup;

/// The address types in the order Prometheus picks the node's address.
const PRIORITY: [&str; 6] = ["InternalIP", "InternalDNS", "ExternalIP", "ExternalDNS", "LegacyHostIP", "Hostname"];

/// The node's group; `None` when it has no usable address.
pub(crate) fn build(node: &Node) -> Option<TargetGroup> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let mut group = LabelsBuilder::new();
    group.set(
        format!("{META_PREFIX}node_provider_id"),
        node.spec.as_ref().and_then(|s| s.provider_id.clone()).unwrap_or_default(),
    );
    add_object_meta(&mut group, &node.metadata, "node");
    let status = node.status.as_ref();
    let addresses = status.and_then(|s| s.addresses.as_deref()).unwrap_or_default();
    let first = |ty: &str| addresses.iter().find(|a| a.type_ == ty).map(|a| a.address.clone());
    let Some(addr) = PRIORITY.iter().find_map(|t| first(t)) else {
        tracing::warn!(node = %name, "no node address found");
        return None;
    };
    let port = status
        .and_then(|s| s.daemon_endpoints.as_ref())
        .and_then(|d| d.kubelet_endpoint.as_ref())
        .map_or(0, |k| k.port);
    let mut t = LabelsBuilder::new();
    t.set("__address__", join_host_port(&addr, port));
    t.set("instance", name.clone());
    for a in addresses {
        let ln = sanitize_label_name(&format!("{META_PREFIX}node_address_{}", a.type_));
        if t.get(&ln).is_none() {
            t.set(ln, a.address.clone());
        }
    }
    Some(TargetGroup { source: format!("node/{name}"), targets: vec![t.build()], labels: group.build() })
}
