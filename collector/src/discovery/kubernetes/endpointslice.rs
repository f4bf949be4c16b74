//! `role: endpointslice`: one target per endpoint address and port of a
//! `discovery.k8s.io/v1` EndpointSlice, with its service's (from the
//! `kubernetes.io/service-name` label) and pod's labels, plus uncovered pod
//! container ports (Prometheus' `discovery/kubernetes/endpointslice.go`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use strata_model::LabelsBuilder;

use super::endpoints::{resolve_pod, uncovered_pod_ports};
use super::pod::pod_labels;
use super::service::service_labels;
use super::{
    META_PREFIX, NAMESPACE_LABEL, Store, add_node_meta, add_object_meta, join_host_port, merge, sanitize_label_name,
};
use crate::discovery::TargetGroup;

fn l(name: &str) -> String {
    format!("{META_PREFIX}{name}")
}

/// The EndpointSlice's group.
pub(crate) fn build(eps: &EndpointSlice, store: &Store, attach_node: bool) -> TargetGroup {
    let (ns, name) = super::key_of(&eps.metadata);
    let mut group = LabelsBuilder::new();
    group.set(NAMESPACE_LABEL, ns.clone());
    group.set(l("endpointslice_address_type"), eps.address_type.clone());
    add_object_meta(&mut group, &eps.metadata, "endpointslice");
    if let Some(svc_name) = eps.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/service-name"))
        && let Some(svc) = store.services.get(&(ns.clone(), svc_name.clone()))
    {
        merge(&mut group, &service_labels(svc));
    }
    let mut tg =
        TargetGroup { source: format!("endpointslice/{ns}/{name}"), labels: group.build(), targets: Vec::new() };
    let mut seen: BTreeMap<(String, String), (&Pod, Vec<i32>)> = BTreeMap::new();
    let mut add = |addr: &str, ep: &Endpoint, port: &EndpointPort, tg: &mut TargetGroup| {
        let mut t = LabelsBuilder::new();
        t.set("__address__", port.port.map_or_else(|| addr.to_owned(), |p| join_host_port(addr, p)));
        if let Some(n) = &port.name {
            t.set(l("endpointslice_port_name"), n.clone());
        }
        if let Some(p) = &port.protocol {
            t.set(l("endpointslice_port_protocol"), p.clone());
        }
        if let Some(p) = port.port {
            t.set(l("endpointslice_port"), p.to_string());
        }
        if let Some(a) = &port.app_protocol {
            t.set(l("endpointslice_port_app_protocol"), a.clone());
        }
        let cond = ep.conditions.as_ref();
        if let Some(r) = cond.and_then(|c| c.ready) {
            t.set(l("endpointslice_endpoint_conditions_ready"), r.to_string());
        }
        if let Some(s) = cond.and_then(|c| c.serving) {
            t.set(l("endpointslice_endpoint_conditions_serving"), s.to_string());
        }
        if let Some(s) = cond.and_then(|c| c.terminating) {
            t.set(l("endpointslice_endpoint_conditions_terminating"), s.to_string());
        }
        if let Some(h) = &ep.hostname {
            t.set(l("endpointslice_endpoint_hostname"), h.clone());
        }
        if let Some(r) = &ep.target_ref {
            t.set(l("endpointslice_address_target_kind"), r.kind.clone().unwrap_or_default());
            t.set(l("endpointslice_address_target_name"), r.name.clone().unwrap_or_default());
        }
        if let Some(n) = &ep.node_name {
            t.set(l("endpointslice_endpoint_node_name"), n.clone());
        }
        if let Some(z) = &ep.zone {
            t.set(l("endpointslice_endpoint_zone"), z.clone());
        }
        for (k, v) in ep.deprecated_topology.iter().flatten() {
            let ln = sanitize_label_name(k);
            t.set(l(&format!("endpointslice_endpoint_topology_{ln}")), v.clone());
            t.set(l(&format!("endpointslice_endpoint_topology_present_{ln}")), "true");
        }
        if attach_node {
            match ep.target_ref.as_ref().filter(|r| r.kind.as_deref() == Some("Node")) {
                Some(r) => add_node_meta(&mut t, store, r.name.as_deref()),
                None => add_node_meta(&mut t, store, ep.node_name.as_deref()),
            }
        }
        let Some(pod) = resolve_pod(store, ep.target_ref.as_ref()) else {
            tg.targets.push(t.build());
            return;
        };
        let entry = seen.entry(super::key_of(&pod.metadata)).or_insert((pod, Vec::new()));
        merge(&mut t, &pod_labels(pod));
        if let Some(p) = port.port {
            'containers: for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
                for cp in c.ports.iter().flatten() {
                    if cp.container_port == p {
                        t.set(l("pod_container_name"), c.name.clone());
                        t.set(l("pod_container_image"), c.image.clone().unwrap_or_default());
                        t.set(l("pod_container_port_name"), cp.name.clone().unwrap_or_default());
                        t.set(l("pod_container_port_number"), p.to_string());
                        t.set(l("pod_container_port_protocol"), cp.protocol.clone().unwrap_or_default());
                        break 'containers;
                    }
                }
            }
            entry.1.push(p);
        }
        tg.targets.push(t.build());
    };
    for ep in &eps.endpoints {
        for port in eps.ports.iter().flatten() {
            for addr in &ep.addresses {
                add(addr, ep, port, &mut tg);
            }
        }
    }
    uncovered_pod_ports(&seen, &mut tg);
    tg
}
