//! The kubelet registers its Node with upstream's labels, node info and capacity, turns it
//! Ready once the runtime and the pod network are, renews its Lease, and serves /healthz.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{wait_until, TestNode, TIMEOUT};

fn ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_registers_ready_and_renews_its_lease() {
    let node = TestNode::start_with(|s| {
        s.node_labels
            .insert("pikube.test/role".into(), "edge".into());
        s.register_with_taints
            .push(kubelet::options::parse_taint("dedicated=edge:NoSchedule").unwrap());
    })
    .await;
    let nodes: Api<Node> = Api::all(node.client.clone());
    let name = node.name.clone();
    let registered = wait_until(TIMEOUT, "node Ready", || {
        let nodes = nodes.clone();
        let name = name.clone();
        async move { nodes.get_opt(&name).await.ok().flatten().filter(ready) }
    })
    .await;
    let labels = registered.metadata.labels.clone().unwrap();
    assert_eq!(labels["kubernetes.io/hostname"], node.name);
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert_eq!(labels["kubernetes.io/arch"], kubelet::nodestatus::go_arch());
    assert_eq!(labels["pikube.test/role"], "edge");
    let taints = registered.spec.clone().unwrap().taints.unwrap();
    assert_eq!(taints.len(), 1);
    assert_eq!(
        (
            taints[0].key.as_str(),
            taints[0].value.as_deref(),
            taints[0].effect.as_str()
        ),
        ("dedicated", Some("edge"), "NoSchedule")
    );
    let status = registered.status.clone().unwrap();
    let info = status.node_info.unwrap();
    assert!(
        info.container_runtime_version.starts_with("containerd://"),
        "{info:?}"
    );
    assert_eq!(info.operating_system, "linux");
    let capacity = status.capacity.unwrap();
    for resource in ["cpu", "memory", "ephemeral-storage", "pods"] {
        assert!(capacity.contains_key(resource), "{capacity:?}");
    }
    assert_eq!(capacity["pods"].0, "110");
    let allocatable = status.allocatable.unwrap();
    assert!(allocatable.contains_key("memory"));
    let addresses = status.addresses.unwrap();
    assert!(addresses
        .iter()
        .any(|a| a.type_ == "InternalIP" && a.address == "127.0.0.1"));
    assert!(addresses
        .iter()
        .any(|a| a.type_ == "Hostname" && a.address == node.name));
    let conditions = status.conditions.unwrap();
    for t in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
        let c = conditions.iter().find(|c| c.type_ == t).unwrap();
        assert_eq!(c.status, "False", "{c:?}");
    }
    let port = status
        .daemon_endpoints
        .unwrap()
        .kubelet_endpoint
        .unwrap()
        .port;
    let serving = node.kubelet.as_ref().unwrap().1.serving_addr.unwrap();
    assert_eq!(port, i32::from(serving.port()));
    // kubectl sees it Ready too.
    let out = node
        .api
        .kubectl_ok(&["get", "node", &node.name, "--no-headers"]);
    assert!(out.contains(" Ready "), "{out}");

    // The Lease is held by the node, owned by the Node, and renewed.
    let leases: Api<Lease> = Api::namespaced(node.client.clone(), "kube-node-lease");
    let first = leases.get(&node.name).await.unwrap();
    let spec = first.spec.clone().unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some(node.name.as_str()));
    assert_eq!(spec.lease_duration_seconds, Some(4));
    let owner = &first.metadata.owner_references.clone().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Node", node.name.as_str())
    );
    assert_eq!(Some(&owner.uid), registered.metadata.uid.as_ref());
    let renewed_at = spec.renew_time.unwrap().0;
    wait_until(TIMEOUT, "lease renewed", || {
        let leases = leases.clone();
        let name = node.name.clone();
        async move {
            let lease = leases.get(&name).await.ok()?;
            let t = lease.spec?.renew_time?.0;
            (t > renewed_at).then_some(())
        }
    })
    .await;

    // /healthz on the healthz port.
    let mut conn = tokio::net::TcpStream::connect(node.healthz_addr())
        .await
        .unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("ok"), "{response}");
}

#[test]
fn the_binary_refuses_bad_flags_with_exit_code_64() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubelet"))
        .args(["--cgroup-driver=cgroupv3", "--hostname-override=n"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cgroupfs or systemd"), "{stderr}");
}
