//! Health-check node ports through the kube-proxy binary: a LoadBalancer Service with
//! `externalTrafficPolicy: Local` answers on its `healthCheckNodePort` with 200 while
//! the node has a local ready endpoint, 503 once it has none, and the port closes when
//! the Service is deleted — in both proxy modes.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams};

use crate::common::{blocking, wait_until, Cluster, NODE, TIMEOUT};

/// Chosen by the test: the apiserver does not allocate health-check node ports.
const NODE_PORT: u16 = 30100;
const HEALTH_PORT: u16 = 30101;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_node_port_follows_local_endpoints_nftables() {
    health_check_node_port("nftables").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_node_port_follows_local_endpoints_userspace() {
    health_check_node_port("userspace").await;
}

/// `curl -si` from `ns`: the status line and headers, and the body.
fn get_with_headers(c: &Cluster, ns: &str, url: &str) -> Option<(String, String)> {
    let out = c.net.exec(ns, &["curl", "-si", "-m", "5", url]);
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n")?;
    Some((head.to_string(), body.to_string()))
}

async fn health_check_node_port(mode: &str) {
    let mut c = Cluster::start().await;
    let mode_flag = format!("--proxy-mode={mode}");
    c.start_proxy(&[&mode_flag]);
    c.create_service_with(
        "lb",
        serde_json::json!({
            "type": "LoadBalancer",
            "externalTrafficPolicy": "Local",
            "healthCheckNodePort": HEALTH_PORT,
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": NODE_PORT}],
        }),
    )
    .await;
    let services: Api<Service> = Api::namespaced(c.client.clone(), "default");
    let stored = services.get("lb").await.unwrap();
    assert_eq!(
        stored.spec.unwrap().health_check_node_port,
        Some(i32::from(HEALTH_PORT))
    );
    let url = format!("http://{}:{HEALTH_PORT}/", c.node_ip);

    // One endpoint on this node (its address need not answer: only the count matters)
    // and one elsewhere.
    let local = Ipv4Addr::new(10, 244, 99, 2);
    c.set_endpoints_on("lb", &[(local, NODE), (c.net.ip(11), "node-b")])
        .await;
    let (head, body) = wait_until(TIMEOUT, "health check 200", || async {
        blocking(|| get_with_headers(&c, &c.outside, &url))
            .filter(|(head, _)| head.starts_with("HTTP/1.1 200"))
    })
    .await;
    let head = head.to_ascii_lowercase();
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "service": {"namespace": "default", "name": "lb"},
            "localEndpoints": 1,
            "serviceProxyHealthy": true,
        })
    );

    // The local endpoint goes: 503, the remote one does not count.
    c.set_endpoints_on("lb", &[(c.net.ip(11), "node-b")]).await;
    let (_, body) = wait_until(TIMEOUT, "health check 503", || async {
        blocking(|| get_with_headers(&c, &c.outside, &url))
            .filter(|(head, _)| head.starts_with("HTTP/1.1 503"))
    })
    .await;
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["localEndpoints"], 0, "{body}");

    // The Service goes: nothing listens on the port any more.
    services
        .delete("lb", &DeleteParams::default())
        .await
        .unwrap();
    wait_until(TIMEOUT, "the health check port closed", || async {
        blocking(|| c.net.get(&c.outside, &url).err()).filter(|e| e.contains("(7)"))
    })
    .await;
}
