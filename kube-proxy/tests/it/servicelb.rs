//! ServiceLB end to end: a kube-proxy started with `--enable-service-lb` wins the Lease,
//! gives a LoadBalancer Service the nodes' InternalIPs as ingress (only labelled nodes
//! once one is labelled), and serves that address on the Service's port.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::common::{blocking, wait_until, Cluster, NODE, TIMEOUT};

async fn create_node(c: &Cluster, name: &str, ip: &str) {
    let api: Api<Node> = Api::all(c.client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]}
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &node).await.unwrap();
    // Status is not written on create: set the addresses through the status subresource.
    if created
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .is_none()
    {
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"addresses": [{"type": "InternalIP", "address": ip}]}}),
            ),
        )
        .await
        .unwrap();
    }
}

async fn ingress(c: &Cluster, name: &str) -> Vec<String> {
    let api: Api<Service> = Api::namespaced(c.client.clone(), "default");
    let svc = api.get(name).await.unwrap();
    svc.status
        .and_then(|s| s.load_balancer)
        .and_then(|lb| lb.ingress)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| i.ip)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancer_services_get_node_addresses_and_are_served() {
    let mut c = Cluster::start().await;
    blocking(|| {
        c.net.backend("be-a", 10, 8080);
        c.net.backend("be-b", 11, 8080);
    });
    let node_ip = c.node_ip.to_string();
    create_node(&c, NODE, &node_ip).await;
    c.start_proxy(&["--enable-service-lb"]);
    c.create_service_with("lb", json!({"type": "LoadBalancer"}))
        .await;
    c.set_endpoints("lb", &[10, 11]).await;
    wait_until(TIMEOUT, "the node's address as ingress", || async {
        (ingress(&c, "lb").await == [node_ip.clone()]).then_some(())
    })
    .await;
    // kube-proxy serves the ingress address on the Service port, from off the node.
    let url = format!("http://{node_ip}:80/");
    c.wait_reachable(&c.outside, &url).await;
    let seen = blocking(|| c.count_backends(&c.outside, &url, 30));
    let names: BTreeSet<&str> = seen.keys().map(String::as_str).collect();
    assert_eq!(names, BTreeSet::from(["be-a", "be-b"]), "{seen:?}");

    // A second node adds its address; once one node is labelled, only it is used.
    create_node(&c, "node-b", "192.0.2.50").await;
    wait_until(TIMEOUT, "both nodes as ingress", || async {
        (ingress(&c, "lb").await == [node_ip.clone(), "192.0.2.50".to_string()]).then_some(())
    })
    .await;
    let nodes: Api<Node> = Api::all(c.client.clone());
    nodes
        .patch(
            NODE,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"svccontroller.k3s.cattle.io/enablelb": "true"}}}),
            ),
        )
        .await
        .unwrap();
    wait_until(TIMEOUT, "only the labelled node as ingress", || async {
        (ingress(&c, "lb").await == [node_ip.clone()]).then_some(())
    })
    .await;
    assert!(
        c.proxy_log().contains("leading ServiceLB"),
        "{}",
        c.proxy_log()
    );
}
