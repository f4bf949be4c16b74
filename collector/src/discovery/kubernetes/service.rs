//! `role: service`: one target per service port, address
//! `<name>.<namespace>.svc:<port>` (Prometheus' `discovery/kubernetes/service.go`).

use k8s_openapi::api::core::v1::Service;
use strata_model::{Labels, LabelsBuilder};

use super::{META_PREFIX, NAMESPACE_LABEL, add_object_meta, join_host_port};
use crate::discovery::TargetGroup;

fn l(name: &str) -> String {
    format!("{META_PREFIX}{name}")
}

/// The namespace and object metadata labels of a service (Prometheus' `serviceLabels`).
pub(crate) fn service_labels(svc: &Service) -> Labels {
    let mut b = LabelsBuilder::new();
    b.set(NAMESPACE_LABEL, svc.metadata.namespace.clone().unwrap_or_default());
    add_object_meta(&mut b, &svc.metadata, "service");
    b.build()
}

/// The service's group.
pub(crate) fn build(svc: &Service) -> TargetGroup {
    let (ns, name) = super::key_of(&svc.metadata);
    let mut tg =
        TargetGroup { source: format!("svc/{ns}/{name}"), labels: service_labels(svc), ..TargetGroup::default() };
    let Some(spec) = &svc.spec else { return tg };
    let kind = spec.type_.clone().unwrap_or_default();
    for p in spec.ports.iter().flatten() {
        let mut t = LabelsBuilder::new();
        t.set("__address__", join_host_port(&format!("{name}.{ns}.svc"), p.port));
        t.set(l("service_port_name"), p.name.clone().unwrap_or_default());
        t.set(l("service_port_number"), p.port.to_string());
        t.set(l("service_port_protocol"), p.protocol.clone().unwrap_or_default());
        t.set(l("service_type"), kind.clone());
        if kind == "ExternalName" {
            t.set(l("service_external_name"), spec.external_name.clone().unwrap_or_default());
        } else {
            t.set(l("service_cluster_ip"), spec.cluster_ip.clone().unwrap_or_default());
        }
        if kind == "LoadBalancer" {
            t.set(l("service_loadbalancer_ip"), spec.load_balancer_ip.clone().unwrap_or_default());
        }
        tg.targets.push(t.build());
    }
    tg
}
