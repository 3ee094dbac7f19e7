//! The endpoint, endpointslice and endpointslicemirroring controllers: a Service's
//! EndpointSlices and Endpoints follow its pods' readiness (the tests play the kubelet,
//! setting pod IPs and Ready through the status subresource), and a selectorless
//! Service's user-written Endpoints are mirrored into EndpointSlices.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::{wait_until, Cluster, TIMEOUT};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::{json, Value};

const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
const MIRROR_MANAGED_BY: &str = "endpointslicemirroring-controller.k8s.io";

async fn create<K>(api: &Api<K>, v: Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.create(&PostParams::default(), &serde_json::from_value(v).unwrap())
        .await
        .unwrap()
}

async fn node(client: &Client, name: &str, zone: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    create(
        &nodes,
        json!({"metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}}}),
    )
    .await;
}

/// A pod on `node` whose container serves `port` under the name `http`.
async fn pod(client: &Client, name: &str, labels: Value, port: i32, extra_spec: Value) -> Pod {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut spec = json!({"nodeName": "pi-1", "containers": [{"name": "c", "image": "busybox",
        "ports": [{"name": "http", "containerPort": port}]}]});
    if let (Some(s), Value::Object(extra)) = (spec.as_object_mut(), extra_spec) {
        s.extend(extra);
    }
    create(
        &pods,
        json!({"metadata": {"name": name, "labels": labels}, "spec": spec}),
    )
    .await
}

/// What the kubelet reports: running, with an IP, ready or not.
async fn set_status(client: &Client, name: &str, ip: &str, ready: bool) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let now = Timestamp::now().to_string();
    let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
            "lastTransitionTime": now}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
}

async fn slices_of(client: &Client, service: &str, manager: &str) -> Vec<EndpointSlice> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let lp = ListParams::default().labels(&format!(
        "kubernetes.io/service-name={service},endpointslice.kubernetes.io/managed-by={manager}"
    ));
    let mut items = api.list(&lp).await.map(|l| l.items).unwrap_or_default();
    items.sort_by_key(|s| s.metadata.name.clone());
    items
}

/// Waits until the Service's slices satisfy `check`, and returns them.
async fn wait_slices(
    client: &Client,
    service: &str,
    manager: &str,
    what: &str,
    check: impl Fn(&[EndpointSlice]) -> bool,
) -> Vec<EndpointSlice> {
    wait_until(TIMEOUT, what, || {
        let client = client.clone();
        let check = &check;
        async move {
            let slices = slices_of(&client, service, manager).await;
            check(&slices).then_some(slices)
        }
    })
    .await
}

fn endpoints(slices: &[EndpointSlice]) -> Vec<&Endpoint> {
    slices.iter().flat_map(|s| s.endpoints.iter()).collect()
}

fn endpoint_of<'a>(slices: &'a [EndpointSlice], pod: &str) -> Option<&'a Endpoint> {
    endpoints(slices)
        .into_iter()
        .find(|e| e.target_ref.as_ref().and_then(|t| t.name.as_deref()) == Some(pod))
}

/// (ready, serving, terminating) of the pod's endpoint.
fn conditions(slices: &[EndpointSlice], pod: &str) -> Option<(bool, bool, bool)> {
    let c = endpoint_of(slices, pod)?.conditions.clone()?;
    Some((c.ready?, c.serving?, c.terminating?))
}

async fn wait_endpoints(
    client: &Client,
    name: &str,
    what: &str,
    check: impl Fn(&Endpoints) -> bool,
) -> Endpoints {
    let api: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    wait_until(TIMEOUT, what, || {
        let api = api.clone();
        let check = &check;
        async move { api.get_opt(name).await.ok().flatten().filter(|e| check(e)) }
    })
    .await
}

/// (ready IPs, not-ready IPs) over all subsets.
fn addresses(ep: &Endpoints) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut ready = BTreeSet::new();
    let mut not_ready = BTreeSet::new();
    for s in ep.subsets.iter().flatten() {
        ready.extend(s.addresses.iter().flatten().map(|a| a.ip.clone()));
        not_ready.extend(s.not_ready_addresses.iter().flatten().map(|a| a.ip.clone()));
    }
    (ready, not_ready)
}

fn set(ips: &[&str]) -> BTreeSet<String> {
    ips.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn slices_and_endpoints_follow_readiness() {
    let c = Cluster::start(&["endpointslice", "endpoint"]).await;
    let client = c.client.clone();
    node(&client, "pi-1", "kitchen").await;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc = create(
        &services,
        json!({"metadata": {"name": "web", "labels": {"team": "a"}},
            "spec": {"selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}),
    )
    .await;
    // No pods yet: one empty placeholder slice.
    let slices = wait_slices(&client, "web", MANAGED_BY, "a placeholder slice", |s| {
        s.len() == 1 && s[0].endpoints.is_empty()
    })
    .await;
    let meta = &slices[0].metadata;
    assert_eq!(meta.generate_name.as_deref(), Some("web-"));
    let owner = &meta.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("Service", "web", Some(true))
    );
    assert_eq!(Some(&owner.uid), svc.metadata.uid.as_ref());
    let labels = meta.labels.as_ref().unwrap();
    assert_eq!(labels.get("team").map(String::as_str), Some("a"));
    assert!(!labels.contains_key("service.kubernetes.io/headless"));

    // A pod that is up but not ready.
    pod(&client, "web-0", json!({"app": "web"}), 8080, json!({})).await;
    set_status(&client, "web-0", "10.42.0.5", false).await;
    let slices = wait_slices(&client, "web", MANAGED_BY, "web-0 not ready", |s| {
        conditions(s, "web-0") == Some((false, false, false))
    })
    .await;
    assert_eq!(slices.len(), 1, "the placeholder is reused: {slices:?}");
    let ep = endpoint_of(&slices, "web-0").unwrap();
    assert_eq!(ep.addresses, ["10.42.0.5"]);
    assert_eq!(ep.node_name.as_deref(), Some("pi-1"));
    assert_eq!(ep.zone.as_deref(), Some("kitchen"));
    assert_eq!(slices[0].address_type, "IPv4");
    // The named target port resolves to the pod's container port.
    let port = &slices[0].ports.as_ref().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.port, port.protocol.as_deref()),
        (Some("http"), Some(8080), Some("TCP"))
    );
    let ep = wait_endpoints(&client, "web", "web-0 in notReadyAddresses", |e| {
        addresses(e) == (set(&[]), set(&["10.42.0.5"]))
    })
    .await;
    let annotations = ep.metadata.annotations.clone().unwrap_or_default();
    assert!(
        annotations.contains_key("endpoints.kubernetes.io/last-change-trigger-time"),
        "{annotations:?}"
    );
    assert_eq!(
        ep.metadata
            .labels
            .as_ref()
            .unwrap()
            .get("team")
            .map(String::as_str),
        Some("a")
    );
    let subset = &ep.subsets.as_ref().unwrap()[0];
    let port = &subset.ports.as_ref().unwrap()[0];
    assert_eq!((port.name.as_deref(), port.port), (Some("http"), 8080));

    // Ready.
    set_status(&client, "web-0", "10.42.0.5", true).await;
    wait_slices(&client, "web", MANAGED_BY, "web-0 ready", |s| {
        conditions(s, "web-0") == Some((true, true, false))
    })
    .await;
    wait_endpoints(&client, "web", "web-0 in addresses", |e| {
        addresses(e) == (set(&["10.42.0.5"]), set(&[]))
    })
    .await;

    // Deleted gracefully (no kubelet finishes it): terminating, still serving, not
    // ready; the legacy Endpoints drop it.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.delete("web-0", &DeleteParams::default())
        .await
        .unwrap();
    wait_slices(&client, "web", MANAGED_BY, "web-0 terminating", |s| {
        conditions(s, "web-0") == Some((false, true, true))
    })
    .await;
    wait_endpoints(&client, "web", "web-0 gone from Endpoints", |e| {
        addresses(e) == (set(&[]), set(&[]))
    })
    .await;

    // Gone: its endpoint goes, and the slice stays as the placeholder.
    pods.delete("web-0", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    wait_slices(&client, "web", MANAGED_BY, "web-0 removed", |s| {
        s.len() == 1 && s[0].endpoints.is_empty()
    })
    .await;
}

#[tokio::test]
async fn pods_with_different_ports_get_their_own_slices_and_unneeded_slices_go() {
    let c = Cluster::start(&["endpointslice"]).await;
    let client = c.client.clone();
    node(&client, "pi-1", "kitchen").await;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    create(
        &services,
        json!({"metadata": {"name": "api"},
            "spec": {"selector": {"app": "api"},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}),
    )
    .await;
    pod(&client, "api-a", json!({"app": "api"}), 8080, json!({})).await;
    set_status(&client, "api-a", "10.42.0.10", true).await;
    pod(&client, "api-b", json!({"app": "api"}), 9090, json!({})).await;
    set_status(&client, "api-b", "10.42.0.11", true).await;
    let port_of = |s: &EndpointSlice| s.ports.as_ref().and_then(|p| p.first()?.port);
    let slices = wait_slices(&client, "api", MANAGED_BY, "one slice per port", |s| {
        s.len() == 2 && endpoints(s).len() == 2
    })
    .await;
    for s in &slices {
        let ep = &s.endpoints[0];
        let pod = ep.target_ref.as_ref().unwrap().name.as_deref().unwrap();
        let want = if pod == "api-a" { 8080 } else { 9090 };
        assert_eq!(port_of(s), Some(want), "{s:?}");
    }
    // api-b's label changes: it leaves the Service, and its slice is deleted while the
    // Service stays.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.patch(
        "api-b",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "other"}}})),
    )
    .await
    .unwrap();
    let left = wait_slices(&client, "api", MANAGED_BY, "api-b's slice deleted", |s| {
        s.len() == 1 && endpoints(s).len() == 1
    })
    .await;
    assert_eq!(port_of(&left[0]), Some(8080));
    // A Service whose selector is removed keeps no slices of this controller.
    services
        .patch(
            "api",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"selector": null}})),
        )
        .await
        .unwrap();
    wait_slices(
        &client,
        "api",
        MANAGED_BY,
        "no slices without a selector",
        |s| s.is_empty(),
    )
    .await;
}

#[tokio::test]
async fn headless_services_publish_hostnames() {
    let c = Cluster::start(&["endpointslice", "endpoint"]).await;
    let client = c.client.clone();
    node(&client, "pi-1", "kitchen").await;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    create(
        &services,
        json!({"metadata": {"name": "db"},
            "spec": {"clusterIP": "None", "selector": {"app": "db"},
                "ports": [{"name": "pg", "port": 5432}]}}),
    )
    .await;
    pod(
        &client,
        "db-0",
        json!({"app": "db"}),
        5432,
        json!({"hostname": "db-0", "subdomain": "db"}),
    )
    .await;
    set_status(&client, "db-0", "10.42.0.20", true).await;
    let slices = wait_slices(&client, "db", MANAGED_BY, "db-0 ready", |s| {
        conditions(s, "db-0") == Some((true, true, false))
    })
    .await;
    let ep = endpoint_of(&slices, "db-0").unwrap();
    assert_eq!(ep.hostname.as_deref(), Some("db-0"));
    let labels = slices[0].metadata.labels.clone().unwrap();
    assert_eq!(
        labels
            .get("service.kubernetes.io/headless")
            .map(String::as_str),
        Some("")
    );
    let ep = wait_endpoints(&client, "db", "db-0 in Endpoints", |e| {
        addresses(e).0 == set(&["10.42.0.20"])
    })
    .await;
    let labels = ep.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels
            .get("service.kubernetes.io/headless")
            .map(String::as_str),
        Some("")
    );
    let address = &ep.subsets.as_ref().unwrap()[0].addresses.as_ref().unwrap()[0];
    assert_eq!(address.hostname.as_deref(), Some("db-0"));
    assert_eq!(
        address.target_ref.as_ref().unwrap().name.as_deref(),
        Some("db-0")
    );
}

#[tokio::test]
async fn more_than_a_hundred_endpoints_split_over_slices() {
    let c = Cluster::start(&["endpointslice", "endpoint"]).await;
    let client = c.client.clone();
    node(&client, "pi-1", "kitchen").await;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    create(
        &services,
        json!({"metadata": {"name": "big"},
            "spec": {"selector": {"app": "big"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
    )
    .await;
    const N: usize = 150;
    let ip = |i: usize| format!("10.42.{}.{}", i / 200, i % 200 + 1);
    for i in 0..N {
        let name = format!("big-{i}");
        pod(&client, &name, json!({"app": "big"}), 8080, json!({})).await;
        set_status(&client, &name, &ip(i), true).await;
    }
    let slices = wait_slices(&client, "big", MANAGED_BY, "150 ready endpoints", |s| {
        endpoints(s).len() == N
            && endpoints(s)
                .iter()
                .all(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
    })
    .await;
    assert!(slices.len() >= 2, "{} slices", slices.len());
    assert!(slices.iter().all(|s| s.endpoints.len() <= 100));
    let names: BTreeSet<_> = slices.iter().map(|s| s.metadata.name.clone()).collect();
    wait_endpoints(&client, "big", "150 addresses in Endpoints", |e| {
        addresses(e).0.len() == N
    })
    .await;

    // One pod goes: its endpoint goes, and no slice is created for it.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.delete("big-7", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    let after = wait_slices(&client, "big", MANAGED_BY, "149 endpoints", |s| {
        endpoints(s).len() == N - 1
    })
    .await;
    assert!(endpoint_of(&after, "big-7").is_none());
    let after_names: BTreeSet<_> = after.iter().map(|s| s.metadata.name.clone()).collect();
    assert_eq!(after_names, names, "the same slices are reused");
    wait_endpoints(&client, "big", "149 addresses in Endpoints", |e| {
        addresses(e).0.len() == N - 1 && !addresses(e).0.contains(&ip(7))
    })
    .await;
}

#[tokio::test]
async fn selectorless_services_get_their_endpoints_mirrored() {
    let c = Cluster::start(&["endpointslicemirroring", "endpointslice", "endpoint"]).await;
    let client = c.client.clone();
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    create(
        &services,
        json!({"metadata": {"name": "external"},
            "spec": {"ports": [{"name": "pg", "port": 5432}]}}),
    )
    .await;
    let endpoints_api: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let user = create(
        &endpoints_api,
        json!({"metadata": {"name": "external", "labels": {"owner": "me"}},
            "subsets": [{"addresses": [{"ip": "192.168.1.10"}, {"ip": "192.168.1.11"}],
                "notReadyAddresses": [{"ip": "192.168.1.12"}],
                "ports": [{"name": "pg", "port": 5432}]}]}),
    )
    .await;
    let slices = wait_slices(
        &client,
        "external",
        MIRROR_MANAGED_BY,
        "mirrored slice",
        |s| endpoints(s).len() == 3,
    )
    .await;
    let ready: BTreeMap<String, bool> = endpoints(&slices)
        .iter()
        .map(|e| {
            (
                e.addresses[0].clone(),
                e.conditions.as_ref().and_then(|c| c.ready).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ready,
        BTreeMap::from([
            ("192.168.1.10".to_string(), true),
            ("192.168.1.11".to_string(), true),
            ("192.168.1.12".to_string(), false),
        ])
    );
    let slice = &slices[0];
    assert_eq!(slice.address_type, "IPv4");
    let port = &slice.ports.as_ref().unwrap()[0];
    assert_eq!((port.name.as_deref(), port.port), (Some("pg"), Some(5432)));
    let labels = slice.metadata.labels.clone().unwrap();
    assert_eq!(labels.get("owner").map(String::as_str), Some("me"));
    let owner = &slice.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller, Some(&owner.uid)),
        ("Endpoints", Some(true), user.metadata.uid.as_ref())
    );
    // The endpointslice controller leaves a selectorless Service alone, and the
    // endpoint controller leaves the user's Endpoints alone.
    assert!(slices_of(&client, "external", MANAGED_BY).await.is_empty());

    // The user changes the Endpoints: the mirror follows.
    endpoints_api
        .patch(
            "external",
            &PatchParams::default(),
            &Patch::Merge(json!({"subsets": [{"addresses": [{"ip": "192.168.1.10"}],
                "ports": [{"name": "pg", "port": 5432}]}]})),
        )
        .await
        .unwrap();
    wait_slices(
        &client,
        "external",
        MIRROR_MANAGED_BY,
        "one mirrored endpoint",
        |s| endpoints(s).len() == 1 && s[0].endpoints[0].addresses == ["192.168.1.10"],
    )
    .await;
    // And deletes them: the mirrored slices go.
    endpoints_api
        .delete("external", &DeleteParams::default())
        .await
        .unwrap();
    wait_slices(
        &client,
        "external",
        MIRROR_MANAGED_BY,
        "mirror removed",
        |s| s.is_empty(),
    )
    .await;
    // The apiserver's own `kubernetes` Endpoints opt out of mirroring.
    assert!(slices_of(&client, "kubernetes", MIRROR_MANAGED_BY)
        .await
        .is_empty());
}

#[tokio::test]
async fn deleting_a_service_deletes_its_endpoints() {
    let c = Cluster::start(&["endpointslice", "endpoint"]).await;
    let client = c.client.clone();
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    create(
        &services,
        json!({"metadata": {"name": "short"},
            "spec": {"selector": {"app": "short"}, "ports": [{"port": 80}]}}),
    )
    .await;
    wait_endpoints(&client, "short", "Endpoints created", |_| true).await;
    services
        .delete("short", &DeleteParams::default())
        .await
        .unwrap();
    let api: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    wait_until(TIMEOUT, "Endpoints deleted with the Service", || {
        let api = api.clone();
        async move { matches!(api.get_opt("short").await, Ok(None)).then_some(()) }
    })
    .await;
}
