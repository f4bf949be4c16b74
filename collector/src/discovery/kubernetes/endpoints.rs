//! `role: endpoints`: one target per address and port of an `Endpoints`
//! object, with its service's and (for pod addresses) its pod's labels, plus
//! one target per container port of those pods that no endpoint port covers
//! (Prometheus' `discovery/kubernetes/endpoints.go`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, Endpoints, ObjectReference, Pod};
use strata_model::LabelsBuilder;

use super::pod::pod_labels;
use super::service::service_labels;
use super::{META_PREFIX, NAMESPACE_LABEL, Store, add_node_meta, add_object_meta, join_host_port, merge};
use crate::discovery::TargetGroup;

fn l(name: &str) -> String {
    format!("{META_PREFIX}{name}")
}

/// The pod an address refers to, when known.
pub(crate) fn resolve_pod<'a>(store: &'a Store, r: Option<&ObjectReference>) -> Option<&'a Pod> {
    let r = r?;
    if r.kind.as_deref() != Some("Pod") {
        return None;
    }
    store.pods.get(&(r.namespace.clone().unwrap_or_default(), r.name.clone().unwrap_or_default()))
}

/// Targets for the container ports of `pods` that no endpoint port covered.
pub(crate) fn uncovered_pod_ports(pods: &BTreeMap<(String, String), (&Pod, Vec<i32>)>, tg: &mut TargetGroup) {
    for (pod, seen) in pods.values() {
        let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default();
        if ip.is_empty() {
            continue;
        }
        let labels = pod_labels(pod);
        for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
            for cp in c.ports.iter().flatten() {
                if seen.contains(&cp.container_port) {
                    continue;
                }
                let mut t = LabelsBuilder::new();
                t.set("__address__", join_host_port(&ip, cp.container_port));
                t.set(l("pod_container_name"), c.name.clone());
                t.set(l("pod_container_image"), c.image.clone().unwrap_or_default());
                t.set(l("pod_container_port_name"), cp.name.clone().unwrap_or_default());
                t.set(l("pod_container_port_number"), cp.container_port.to_string());
                t.set(l("pod_container_port_protocol"), cp.protocol.clone().unwrap_or_default());
                merge(&mut t, &labels);
                tg.targets.push(t.build());
            }
        }
    }
}

/// The Endpoints object's group.
pub(crate) fn build(eps: &Endpoints, store: &Store, attach_node: bool) -> TargetGroup {
    let (ns, name) = super::key_of(&eps.metadata);
    let mut group = LabelsBuilder::new();
    group.set(NAMESPACE_LABEL, ns.clone());
    if let Some(svc) = store.services.get(&(ns.clone(), name.clone())) {
        merge(&mut group, &service_labels(svc));
    }
    add_object_meta(&mut group, &eps.metadata, "endpoints");
    let mut tg = TargetGroup { source: format!("endpoints/{ns}/{name}"), labels: group.build(), targets: Vec::new() };
    let mut seen: BTreeMap<(String, String), (&Pod, Vec<i32>)> = BTreeMap::new();
    let mut add = |addr: &EndpointAddress, port: &EndpointPort, ready: &str, tg: &mut TargetGroup| {
        let mut t = LabelsBuilder::new();
        t.set("__address__", join_host_port(&addr.ip, port.port));
        t.set(l("endpoint_port_name"), port.name.clone().unwrap_or_default());
        t.set(l("endpoint_port_protocol"), port.protocol.clone().unwrap_or_default());
        t.set(l("endpoint_ready"), ready);
        if let Some(r) = &addr.target_ref {
            t.set(l("endpoint_address_target_kind"), r.kind.clone().unwrap_or_default());
            t.set(l("endpoint_address_target_name"), r.name.clone().unwrap_or_default());
        }
        if let Some(n) = &addr.node_name {
            t.set(l("endpoint_node_name"), n.clone());
        }
        if let Some(h) = &addr.hostname {
            t.set(l("endpoint_hostname"), h.clone());
        }
        if attach_node {
            if addr.node_name.is_some() {
                add_node_meta(&mut t, store, addr.node_name.as_deref());
            } else if let Some(r) = addr.target_ref.as_ref().filter(|r| r.kind.as_deref() == Some("Node")) {
                add_node_meta(&mut t, store, r.name.as_deref());
            }
        }
        let Some(pod) = resolve_pod(store, addr.target_ref.as_ref()) else {
            tg.targets.push(t.build());
            return;
        };
        let entry = seen.entry(super::key_of(&pod.metadata)).or_insert((pod, Vec::new()));
        merge(&mut t, &pod_labels(pod));
        'containers: for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
            for cp in c.ports.iter().flatten() {
                if cp.container_port == port.port {
                    t.set(l("pod_container_name"), c.name.clone());
                    t.set(l("pod_container_image"), c.image.clone().unwrap_or_default());
                    t.set(l("pod_container_port_name"), cp.name.clone().unwrap_or_default());
                    t.set(l("pod_container_port_number"), port.port.to_string());
                    t.set(l("pod_container_port_protocol"), port.protocol.clone().unwrap_or_default());
                    break 'containers;
                }
            }
        }
        entry.1.push(port.port);
        tg.targets.push(t.build());
    };
    for ss in eps.subsets.iter().flatten() {
        for port in ss.ports.iter().flatten() {
            for addr in ss.addresses.iter().flatten() {
                add(addr, port, "true", &mut tg);
            }
            for addr in ss.not_ready_addresses.iter().flatten() {
                add(addr, port, "false", &mut tg);
            }
        }
    }
    uncovered_pod_ports(&seen, &mut tg);
    tg
}
