//! Golden tests: the objects and expected groups of Prometheus'
//! `discovery/kubernetes/*_test.go` (labels with empty values are left out:
//! Prometheus drops them when it builds targets, and so does
//! `LabelsBuilder`).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::*;

fn labels_of(l: &strata_model::Labels) -> BTreeMap<String, String> {
    l.iter().map(|l| (l.name.clone(), l.value.clone())).collect()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn obj<T: serde::de::DeserializeOwned>(v: Value) -> T {
    match serde_json::from_value(v) {
        Ok(o) => o,
        Err(e) => panic!("test object: {e}"),
    }
}

fn assert_group(g: &TargetGroup, source: &str, labels: &[(&str, &str)], targets: &[&[(&str, &str)]]) {
    assert_eq!(g.source, source);
    assert_eq!(labels_of(&g.labels), map(labels), "group labels of {source}");
    let got: Vec<BTreeMap<String, String>> = g.targets.iter().map(labels_of).collect();
    let want: Vec<BTreeMap<String, String>> = targets.iter().map(|t| map(t)).collect();
    assert_eq!(got, want, "targets of {source}");
}

fn make_endpoints() -> Endpoints {
    obj(json!({
        "metadata": {"name": "testendpoints", "namespace": "default"},
        "subsets": [
            {"addresses": [{"ip": "1.2.3.4", "hostname": "testendpoint1", "nodeName": "foobar"}],
             "ports": [{"name": "testport", "port": 9000, "protocol": "TCP"}]},
            {"addresses": [{"ip": "2.3.4.5"}], "notReadyAddresses": [{"ip": "2.3.4.5"}],
             "ports": [{"name": "testport", "port": 9001, "protocol": "TCP"}]},
        ],
    }))
}

#[test]
fn endpoints_discovery_before_run() {
    let store = Store::default();
    let g = endpoints::build(&make_endpoints(), &store, false);
    assert_group(
        &g,
        "endpoints/default/testendpoints",
        &[("__meta_kubernetes_namespace", "default"), ("__meta_kubernetes_endpoints_name", "testendpoints")],
        &[
            &[
                ("__address__", "1.2.3.4:9000"),
                ("__meta_kubernetes_endpoint_hostname", "testendpoint1"),
                ("__meta_kubernetes_endpoint_node_name", "foobar"),
                ("__meta_kubernetes_endpoint_port_name", "testport"),
                ("__meta_kubernetes_endpoint_port_protocol", "TCP"),
                ("__meta_kubernetes_endpoint_ready", "true"),
            ],
            &[
                ("__address__", "2.3.4.5:9001"),
                ("__meta_kubernetes_endpoint_port_name", "testport"),
                ("__meta_kubernetes_endpoint_port_protocol", "TCP"),
                ("__meta_kubernetes_endpoint_ready", "true"),
            ],
            &[
                ("__address__", "2.3.4.5:9001"),
                ("__meta_kubernetes_endpoint_port_name", "testport"),
                ("__meta_kubernetes_endpoint_port_protocol", "TCP"),
                ("__meta_kubernetes_endpoint_ready", "false"),
            ],
        ],
    );
}

#[test]
fn endpoints_discovery_add_with_pod() {
    let mut store = Store::default();
    store.apply(Object::Pod(Box::new(obj(json!({
        "metadata": {"name": "testpod", "namespace": "default", "uid": "deadbeef"},
        "spec": {"nodeName": "testnode", "containers": [
            {"name": "c1", "ports": [{"name": "mainport", "containerPort": 9000, "protocol": "TCP"}]},
            {"name": "c2", "ports": [{"name": "sideport", "containerPort": 9001, "protocol": "TCP"}]},
        ]},
        "status": {"hostIP": "2.3.4.5", "podIP": "1.2.3.4"},
    })))));
    let eps: Endpoints = obj(json!({
        "metadata": {"name": "testendpoints", "namespace": "default"},
        "subsets": [{"addresses": [{"ip": "4.3.2.1", "targetRef": {"kind": "Pod", "name": "testpod", "namespace": "default"}}],
                     "ports": [{"name": "testport", "port": 9000, "protocol": "TCP"}]}],
    }));
    let pod = [
        ("__meta_kubernetes_pod_name", "testpod"),
        ("__meta_kubernetes_pod_ip", "1.2.3.4"),
        ("__meta_kubernetes_pod_ready", "unknown"),
        ("__meta_kubernetes_pod_node_name", "testnode"),
        ("__meta_kubernetes_pod_host_ip", "2.3.4.5"),
        ("__meta_kubernetes_pod_uid", "deadbeef"),
    ];
    let mut first = vec![
        ("__address__", "4.3.2.1:9000"),
        ("__meta_kubernetes_endpoint_port_name", "testport"),
        ("__meta_kubernetes_endpoint_port_protocol", "TCP"),
        ("__meta_kubernetes_endpoint_ready", "true"),
        ("__meta_kubernetes_endpoint_address_target_kind", "Pod"),
        ("__meta_kubernetes_endpoint_address_target_name", "testpod"),
        ("__meta_kubernetes_pod_container_name", "c1"),
        ("__meta_kubernetes_pod_container_port_name", "mainport"),
        ("__meta_kubernetes_pod_container_port_number", "9000"),
        ("__meta_kubernetes_pod_container_port_protocol", "TCP"),
    ];
    first.extend(pod);
    let mut second = vec![
        ("__address__", "1.2.3.4:9001"),
        ("__meta_kubernetes_pod_container_name", "c2"),
        ("__meta_kubernetes_pod_container_port_name", "sideport"),
        ("__meta_kubernetes_pod_container_port_number", "9001"),
        ("__meta_kubernetes_pod_container_port_protocol", "TCP"),
    ];
    second.extend(pod);
    let g = endpoints::build(&eps, &store, false);
    assert_group(
        &g,
        "endpoints/default/testendpoints",
        &[("__meta_kubernetes_endpoints_name", "testendpoints"), ("__meta_kubernetes_namespace", "default")],
        &[&first, &second],
    );
}

#[test]
fn endpoints_discovery_with_service_and_its_update() {
    let mut store = Store::default();
    let svc = |labels: Value| -> Service {
        obj(json!({"metadata": {"name": "testendpoints", "namespace": "default", "labels": labels}}))
    };
    store.apply(Object::Service(Box::new(svc(json!({"app/name": "test"})))));
    let g = endpoints::build(&make_endpoints(), &store, false);
    assert_eq!(
        labels_of(&g.labels),
        map(&[
            ("__meta_kubernetes_namespace", "default"),
            ("__meta_kubernetes_endpoints_name", "testendpoints"),
            ("__meta_kubernetes_service_label_app_name", "test"),
            ("__meta_kubernetes_service_labelpresent_app_name", "true"),
            ("__meta_kubernetes_service_name", "testendpoints"),
        ])
    );
    store.apply(Object::Service(Box::new(svc(json!({"app/name": "svc", "component": "testing"})))));
    let g = endpoints::build(&make_endpoints(), &store, false);
    assert_eq!(
        labels_of(&g.labels),
        map(&[
            ("__meta_kubernetes_namespace", "default"),
            ("__meta_kubernetes_endpoints_name", "testendpoints"),
            ("__meta_kubernetes_service_label_app_name", "svc"),
            ("__meta_kubernetes_service_labelpresent_app_name", "true"),
            ("__meta_kubernetes_service_name", "testendpoints"),
            ("__meta_kubernetes_service_label_component", "testing"),
            ("__meta_kubernetes_service_labelpresent_component", "true"),
        ])
    );
    assert_eq!(g.targets.len(), 3);
}

#[test]
fn endpoints_with_empty_subsets_have_no_targets() {
    let eps: Endpoints = obj(json!({"metadata": {"name": "testendpoints", "namespace": "default"}, "subsets": []}));
    let store = Store::default();
    assert!(endpoints::build(&eps, &store, false).targets.is_empty());
    store_has_no_group(&store);
}

fn store_has_no_group(store: &Store) {
    assert!(build_groups(Role::Endpoints, store, false).is_empty());
}

fn make_multi_port_pod() -> Pod {
    obj(json!({
        "metadata": {
            "name": "testpod", "namespace": "default", "uid": "abc123",
            "labels": {"test/label": "testvalue"},
            "annotations": {"test/annotation": "testannotationvalue"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "testcontrollerkind", "name": "testcontrollername",
                                 "uid": "x", "controller": true}],
        },
        "spec": {"nodeName": "testnode", "containers": [
            {"name": "testcontainer0", "image": "testcontainer0:latest", "ports": [
                {"name": "testport0", "protocol": "TCP", "containerPort": 9000},
                {"name": "testport1", "protocol": "UDP", "containerPort": 9001},
            ]},
            {"name": "testcontainer1", "image": "testcontainer1:latest"},
        ]},
        "status": {
            "podIP": "1.2.3.4", "hostIP": "2.3.4.5", "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [
                {"name": "testcontainer0", "containerID": "docker://a1b2c3d4e5f6", "image": "", "imageID": "",
                 "ready": true, "restartCount": 0},
                {"name": "testcontainer1", "containerID": "containerd://6b5a4c3d2e1f", "image": "", "imageID": "",
                 "ready": true, "restartCount": 0},
            ],
        },
    }))
}

#[test]
fn pod_discovery_before_run() {
    let g = pod::build(&make_multi_port_pod(), &Store::default(), false);
    assert_group(
        &g,
        "pod/default/testpod",
        &[
            ("__meta_kubernetes_pod_name", "testpod"),
            ("__meta_kubernetes_namespace", "default"),
            ("__meta_kubernetes_pod_label_test_label", "testvalue"),
            ("__meta_kubernetes_pod_labelpresent_test_label", "true"),
            ("__meta_kubernetes_pod_annotation_test_annotation", "testannotationvalue"),
            ("__meta_kubernetes_pod_annotationpresent_test_annotation", "true"),
            ("__meta_kubernetes_pod_node_name", "testnode"),
            ("__meta_kubernetes_pod_ip", "1.2.3.4"),
            ("__meta_kubernetes_pod_host_ip", "2.3.4.5"),
            ("__meta_kubernetes_pod_ready", "true"),
            ("__meta_kubernetes_pod_phase", "Running"),
            ("__meta_kubernetes_pod_uid", "abc123"),
            ("__meta_kubernetes_pod_controller_kind", "testcontrollerkind"),
            ("__meta_kubernetes_pod_controller_name", "testcontrollername"),
        ],
        &[
            &[
                ("__address__", "1.2.3.4:9000"),
                ("__meta_kubernetes_pod_container_name", "testcontainer0"),
                ("__meta_kubernetes_pod_container_image", "testcontainer0:latest"),
                ("__meta_kubernetes_pod_container_port_name", "testport0"),
                ("__meta_kubernetes_pod_container_port_number", "9000"),
                ("__meta_kubernetes_pod_container_port_protocol", "TCP"),
                ("__meta_kubernetes_pod_container_init", "false"),
                ("__meta_kubernetes_pod_container_id", "docker://a1b2c3d4e5f6"),
            ],
            &[
                ("__address__", "1.2.3.4:9001"),
                ("__meta_kubernetes_pod_container_name", "testcontainer0"),
                ("__meta_kubernetes_pod_container_image", "testcontainer0:latest"),
                ("__meta_kubernetes_pod_container_port_name", "testport1"),
                ("__meta_kubernetes_pod_container_port_number", "9001"),
                ("__meta_kubernetes_pod_container_port_protocol", "UDP"),
                ("__meta_kubernetes_pod_container_init", "false"),
                ("__meta_kubernetes_pod_container_id", "docker://a1b2c3d4e5f6"),
            ],
            &[
                ("__address__", "1.2.3.4"),
                ("__meta_kubernetes_pod_container_name", "testcontainer1"),
                ("__meta_kubernetes_pod_container_image", "testcontainer1:latest"),
                ("__meta_kubernetes_pod_container_init", "false"),
                ("__meta_kubernetes_pod_container_id", "containerd://6b5a4c3d2e1f"),
            ],
        ],
    );
}

#[test]
fn pod_init_containers_and_node_metadata() {
    let p: Pod = obj(json!({
        "metadata": {"name": "testpod", "namespace": "default", "uid": "abc123"},
        "spec": {"nodeName": "testnode",
                 "containers": [{"name": "testcontainer", "image": "testcontainer:latest",
                                 "ports": [{"name": "testport", "protocol": "TCP", "containerPort": 9000}]}],
                 "initContainers": [{"name": "initcontainer", "image": "initcontainer:latest"}]},
        "status": {"podIP": "1.2.3.4", "hostIP": "2.3.4.5", "phase": "Pending",
                   "conditions": [{"type": "Ready", "status": "False"}],
                   "initContainerStatuses": [{"name": "initcontainer", "containerID": "containerd://init", "image": "",
                                              "imageID": "", "ready": false, "restartCount": 0}]},
    }));
    let mut store = Store::default();
    store.apply(Object::Node(Box::new(obj(json!({
        "metadata": {"name": "testnode", "labels": {"l1": "v1"}, "annotations": {"a1": "v1"}},
    })))));
    let g = pod::build(&p, &store, true);
    assert_eq!(g.targets.len(), 2);
    assert_eq!(
        labels_of(&g.targets[1]),
        map(&[
            ("__address__", "1.2.3.4"),
            ("__meta_kubernetes_pod_container_name", "initcontainer"),
            ("__meta_kubernetes_pod_container_image", "initcontainer:latest"),
            ("__meta_kubernetes_pod_container_init", "true"),
            ("__meta_kubernetes_pod_container_id", "containerd://init"),
        ])
    );
    assert_eq!(g.labels.get("__meta_kubernetes_pod_ready"), Some("false"));
    assert_eq!(g.labels.get("__meta_kubernetes_node_name"), Some("testnode"));
    assert_eq!(g.labels.get("__meta_kubernetes_node_label_l1"), Some("v1"));
    assert_eq!(g.labels.get("__meta_kubernetes_node_annotationpresent_a1"), Some("true"));
    // Without attach_metadata, no node labels.
    assert_eq!(pod::build(&p, &store, false).labels.get("__meta_kubernetes_node_name"), None);
}

#[test]
fn service_discovery_cluster_ip_external_name_and_load_balancer() {
    let s: Service = obj(json!({
        "metadata": {"name": "testservice", "namespace": "default",
                     "labels": {"test-label": "testvalue"}, "annotations": {"test-annotation": "testannotationvalue"}},
        "spec": {"ports": [{"name": "testport", "protocol": "TCP", "port": 30900}],
                 "type": "ClusterIP", "clusterIP": "10.0.0.1"},
    }));
    assert_group(
        &service::build(&s),
        "svc/default/testservice",
        &[
            ("__meta_kubernetes_service_name", "testservice"),
            ("__meta_kubernetes_namespace", "default"),
            ("__meta_kubernetes_service_label_test_label", "testvalue"),
            ("__meta_kubernetes_service_labelpresent_test_label", "true"),
            ("__meta_kubernetes_service_annotation_test_annotation", "testannotationvalue"),
            ("__meta_kubernetes_service_annotationpresent_test_annotation", "true"),
        ],
        &[&[
            ("__meta_kubernetes_service_port_protocol", "TCP"),
            ("__address__", "testservice.default.svc:30900"),
            ("__meta_kubernetes_service_type", "ClusterIP"),
            ("__meta_kubernetes_service_cluster_ip", "10.0.0.1"),
            ("__meta_kubernetes_service_port_name", "testport"),
            ("__meta_kubernetes_service_port_number", "30900"),
        ]],
    );
    let e: Service = obj(json!({
        "metadata": {"name": "testservice-external", "namespace": "default"},
        "spec": {"ports": [{"name": "testport", "protocol": "TCP", "port": 31900}],
                 "type": "ExternalName", "externalName": "FooExternalName"},
    }));
    assert_eq!(
        labels_of(&service::build(&e).targets[0]),
        map(&[
            ("__meta_kubernetes_service_port_protocol", "TCP"),
            ("__address__", "testservice-external.default.svc:31900"),
            ("__meta_kubernetes_service_type", "ExternalName"),
            ("__meta_kubernetes_service_port_name", "testport"),
            ("__meta_kubernetes_service_port_number", "31900"),
            ("__meta_kubernetes_service_external_name", "FooExternalName"),
        ])
    );
    let lb: Service = obj(json!({
        "metadata": {"name": "testservice-lb", "namespace": "default"},
        "spec": {"ports": [{"name": "testport", "protocol": "TCP", "port": 31900}],
                 "type": "LoadBalancer", "clusterIP": "10.0.0.1", "loadBalancerIP": "127.0.0.1"},
    }));
    let t = labels_of(&service::build(&lb).targets[0]);
    assert_eq!(t.get("__meta_kubernetes_service_loadbalancer_ip").map(String::as_str), Some("127.0.0.1"));
    assert_eq!(t.get("__meta_kubernetes_service_cluster_ip").map(String::as_str), Some("10.0.0.1"));
}

#[test]
fn node_discovery_before_start() {
    let n: Node = obj(json!({
        "metadata": {"name": "test", "labels": {"test-label": "testvalue"},
                     "annotations": {"test-annotation": "testannotationvalue"}},
        "status": {"addresses": [{"type": "InternalIP", "address": "1.2.3.4"}],
                   "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}},
    }));
    let g = node::build(&n).expect("a node with an address");
    assert_group(
        &g,
        "node/test",
        &[
            ("__meta_kubernetes_node_name", "test"),
            ("__meta_kubernetes_node_label_test_label", "testvalue"),
            ("__meta_kubernetes_node_labelpresent_test_label", "true"),
            ("__meta_kubernetes_node_annotation_test_annotation", "testannotationvalue"),
            ("__meta_kubernetes_node_annotationpresent_test_annotation", "true"),
        ],
        &[&[
            ("__address__", "1.2.3.4:10250"),
            ("instance", "test"),
            ("__meta_kubernetes_node_address_InternalIP", "1.2.3.4"),
        ]],
    );
    let no_address: Node = obj(json!({"metadata": {"name": "x"}}));
    assert!(node::build(&no_address).is_none());
    // The address priority: InternalIP before ExternalIP before Hostname; IPv6 in brackets.
    let v6: Node = obj(json!({
        "metadata": {"name": "v6"},
        "status": {"addresses": [{"type": "Hostname", "address": "h"}, {"type": "ExternalIP", "address": "2001:db8::1"}],
                   "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}},
    }));
    let g = node::build(&v6).expect("address");
    assert_eq!(g.targets[0].get("__address__"), Some("[2001:db8::1]:10250"));
}

#[test]
fn endpointslice_discovery_before_run() {
    let s: EndpointSlice = obj(json!({
        "metadata": {"name": "testendpoints", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "testendpoints"},
                     "annotations": {"test.annotation": "test"}},
        "addressType": "IPv4",
        "ports": [{"name": "testport", "port": 9000, "protocol": "TCP", "appProtocol": "http"}],
        "endpoints": [
            {"addresses": ["1.2.3.4"], "conditions": {"ready": true, "serving": true, "terminating": false},
             "hostname": "testendpoint1", "targetRef": {}, "nodeName": "foobar",
             "deprecatedTopology": {"topology": "value"}, "zone": "us-east-1a"},
            {"addresses": ["2.3.4.5"], "conditions": {"ready": true, "serving": true, "terminating": false},
             "zone": "us-east-1b"},
            {"addresses": ["3.4.5.6"], "conditions": {"ready": false, "serving": true, "terminating": true},
             "zone": "us-east-1c"},
            {"addresses": ["4.5.6.7"], "conditions": {"ready": true, "serving": true, "terminating": false},
             "targetRef": {"kind": "Node", "name": "barbaz"}, "zone": "us-east-1a"},
        ],
    }));
    let port = [
        ("__meta_kubernetes_endpointslice_port", "9000"),
        ("__meta_kubernetes_endpointslice_port_app_protocol", "http"),
        ("__meta_kubernetes_endpointslice_port_name", "testport"),
        ("__meta_kubernetes_endpointslice_port_protocol", "TCP"),
    ];
    let cond = |ready: &'static str, term: &'static str| {
        [
            ("__meta_kubernetes_endpointslice_endpoint_conditions_ready", ready),
            ("__meta_kubernetes_endpointslice_endpoint_conditions_serving", "true"),
            ("__meta_kubernetes_endpointslice_endpoint_conditions_terminating", term),
        ]
    };
    let mut t1 = vec![
        ("__address__", "1.2.3.4:9000"),
        ("__meta_kubernetes_endpointslice_endpoint_hostname", "testendpoint1"),
        ("__meta_kubernetes_endpointslice_endpoint_node_name", "foobar"),
        ("__meta_kubernetes_endpointslice_endpoint_topology_present_topology", "true"),
        ("__meta_kubernetes_endpointslice_endpoint_topology_topology", "value"),
        ("__meta_kubernetes_endpointslice_endpoint_zone", "us-east-1a"),
    ];
    t1.extend(cond("true", "false"));
    t1.extend(port);
    let mut t2 = vec![("__address__", "2.3.4.5:9000"), ("__meta_kubernetes_endpointslice_endpoint_zone", "us-east-1b")];
    t2.extend(cond("true", "false"));
    t2.extend(port);
    let mut t3 = vec![("__address__", "3.4.5.6:9000"), ("__meta_kubernetes_endpointslice_endpoint_zone", "us-east-1c")];
    t3.extend(cond("false", "true"));
    t3.extend(port);
    let mut t4 = vec![
        ("__address__", "4.5.6.7:9000"),
        ("__meta_kubernetes_endpointslice_address_target_kind", "Node"),
        ("__meta_kubernetes_endpointslice_address_target_name", "barbaz"),
        ("__meta_kubernetes_endpointslice_endpoint_zone", "us-east-1a"),
    ];
    t4.extend(cond("true", "false"));
    t4.extend(port);
    let g = endpointslice::build(&s, &Store::default(), false);
    assert_group(
        &g,
        "endpointslice/default/testendpoints",
        &[
            ("__meta_kubernetes_endpointslice_address_type", "IPv4"),
            ("__meta_kubernetes_namespace", "default"),
            ("__meta_kubernetes_endpointslice_name", "testendpoints"),
            ("__meta_kubernetes_endpointslice_label_kubernetes_io_service_name", "testendpoints"),
            ("__meta_kubernetes_endpointslice_labelpresent_kubernetes_io_service_name", "true"),
            ("__meta_kubernetes_endpointslice_annotation_test_annotation", "test"),
            ("__meta_kubernetes_endpointslice_annotationpresent_test_annotation", "true"),
        ],
        &[&t1, &t2, &t3, &t4],
    );
}

#[test]
fn groups_diff_to_changed_and_removed() {
    let g = |s: &str, a: &str| TargetGroup {
        source: s.into(),
        targets: vec![strata_model::Labels::from_pairs([("__address__", a)]).expect("labels")],
        labels: strata_model::Labels::empty(),
    };
    let before: BTreeMap<String, TargetGroup> = [("a".to_owned(), g("a", "1")), ("b".to_owned(), g("b", "1"))].into();
    let after: BTreeMap<String, TargetGroup> = [("a".to_owned(), g("a", "2")), ("c".to_owned(), g("c", "1"))].into();
    let d = diff(&before, &after);
    let got: Vec<(&str, usize)> = d.iter().map(|g| (g.source.as_str(), g.targets.len())).collect();
    assert_eq!(got, [("a", 1), ("c", 1), ("b", 0)]);
    assert!(diff(&after, &after).is_empty());
}

#[test]
fn label_names_are_sanitized_as_prometheus_does() {
    assert_eq!(sanitize_label_name("app.kubernetes.io/name"), "app_kubernetes_io_name");
    assert_eq!(sanitize_label_name("a-b_c9"), "a_b_c9");
    assert_eq!(join_host_port("::1", 80), "[::1]:80");
}

/// A small deterministic generator for the equivalence test.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn random_object(r: &mut Rng) -> Object {
    let pod_ref = |r: &mut Rng| json!({"kind": "Pod", "namespace": "a", "name": format!("p{}", r.next(4))});
    match r.next(5) {
        0 => {
            let ip = if r.next(4) == 0 { Value::Null } else { json!(format!("10.0.0.{}", r.next(3))) };
            let ports = if r.next(2) == 0 {
                json!([{"containerPort": 80}])
            } else {
                json!([{"containerPort": 80}, {"containerPort": 81}])
            };
            Object::Pod(Box::new(obj(json!({
                "metadata": {"name": format!("p{}", r.next(4)), "namespace": "a", "labels": {"v": format!("{}", r.next(3))}},
                "spec": {"nodeName": format!("n{}", r.next(2)), "containers": [{"name": "c", "ports": ports}]},
                "status": {"podIP": ip},
            }))))
        }
        1 => Object::Service(Box::new(obj(json!({
            "metadata": {"name": format!("s{}", r.next(2)), "namespace": "a", "labels": {"v": format!("{}", r.next(3))}},
            "spec": {"ports": [{"port": 80}]},
        })))),
        2 => Object::Endpoints(Box::new(obj(json!({
            "metadata": {"name": format!("s{}", r.next(2)), "namespace": "a"},
            "subsets": [{"addresses": [{"ip": "10.1.0.1", "nodeName": format!("n{}", r.next(2)), "targetRef": pod_ref(r)}],
                         "notReadyAddresses": [{"ip": "10.1.0.2", "targetRef": pod_ref(r)}],
                         "ports": [{"port": 80}]}],
        })))),
        3 => Object::EndpointSlice(Box::new(obj(json!({
            "metadata": {"name": format!("x{}", r.next(3)), "namespace": "a",
                         "labels": {"kubernetes.io/service-name": format!("s{}", r.next(2))}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.2.0.1"], "nodeName": format!("n{}", r.next(2)), "targetRef": pod_ref(r)}],
            "ports": [{"port": 80}],
        })))),
        _ => Object::Node(Box::new(obj(json!({
            "metadata": {"name": format!("n{}", r.next(2)), "labels": {"v": format!("{}", r.next(3))}},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.1"}],
                       "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}},
        })))),
    }
}

#[test]
fn incremental_updates_equal_a_full_rebuild() {
    for role in [Role::Pod, Role::Service, Role::Endpoints, Role::EndpointSlice, Role::Node] {
        for attach in [false, true] {
            let mut r = Rng(0x9e37_79b9_7f4a_7c15 ^ ((role as u64 + 1) * 31 + u64::from(attach)));
            let mut store = Store::default();
            let mut sent = BTreeMap::new();
            let mut full = Dirty { full: true, ..Dirty::default() };
            update_groups(role, &store, attach, &full, &mut sent);
            let mut steps_with_changes = 0;
            for step in 0..600 {
                let o = random_object(&mut r);
                let mut dirty = Dirty::default();
                dirty.mark(&o);
                if r.next(4) == 0 {
                    store.remove(&o);
                } else {
                    store.apply(o);
                }
                let changed = update_groups(role, &store, attach, &dirty, &mut sent);
                let want = build_groups(role, &store, attach);
                assert_eq!(sent, want, "{role:?} attach={attach} step {step}");
                assert!(changed.iter().all(|g| g.targets.is_empty() || want.get(&g.source) == Some(g)));
                steps_with_changes += usize::from(!changed.is_empty());
            }
            assert!(steps_with_changes > 30, "{role:?}: only {steps_with_changes} steps changed groups");
            full.full = true;
            let mut again = BTreeMap::new();
            update_groups(role, &store, attach, &full, &mut again);
            assert_eq!(again, sent);
        }
    }
}
