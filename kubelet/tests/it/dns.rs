//! Pod DNS end to end: a kubelet with `--cluster-dns` (the pod bridge's address) and
//! `--cluster-domain`, a busybox pod with the default dnsPolicy (ClusterFirst), and
//! kube-proxy's node-local DNS server (its zone fed by real watches of the test
//! apiserver) answering on that address. The pod reads the resolv.conf the kubelet
//! wrote and resolves Services with busybox `nslookup` and, where the search list
//! matters, with busybox `ping` (the C library's resolver): short, namespace-qualified
//! and full names, headless Services, SRV, PTR, ExternalName, and a name outside the
//! cluster through the forwarder to a test resolver on loopback.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams};
use kube_proxy::dns::forward::Forwarder;
use kube_proxy::dns::metrics::DnsMetrics;
use kube_proxy::dns::records::Zone;
use kube_proxy::dns::server::{self, Handler};
use kube_proxy::dns::testing::{TestResolver, OUTSIDE_IP, OUTSIDE_NAME};
use kube_proxy::dns::watch;
use parking_lot::RwLock;

use crate::common::{phase, pod_condition, wait_until, TestNode, TIMEOUT};

/// The pod bridge's own address (the CNI bridge plugin's gateway: the first address
/// of the pod CIDR).
fn gateway(cidr: ipnet::Ipv4Net) -> std::net::Ipv4Addr {
    let n = u32::from(cidr.network());
    std::net::Ipv4Addr::from(n + 1)
}

fn container_id(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .container_id
        .clone()
        .unwrap()
        .trim_start_matches("containerd://")
        .to_owned()
}

/// `sh -c script` in container `id`: (exit code, stdout and stderr).
async fn exec(node: &TestNode, id: &str, script: &str) -> (i32, String) {
    use kubelet::cri::RuntimeService;
    let out = node
        .containerd
        .runtime()
        .exec_sync(
            id,
            vec!["sh".into(), "-c".into(), script.into()],
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    (
        out.exit_code,
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_resolves_services_through_node_local_dns() {
    let mut node = TestNode::start_with(|s| {
        let Some(ipnet::IpNet::V4(cidr)) = s.pod_cidr else {
            return;
        };
        s.cluster_dns = vec![IpAddr::V4(gateway(cidr))];
        s.cluster_domain = "cluster.local".into();
        // This test is about DNS: a build machine's full disk must not reject its pod
        // (imagefs.available<15% by default).
        s.eviction_hard = kubelet::eviction::thresholds::EvictionHard {
            nodefs: kubelet::eviction::thresholds::Threshold::Percent(1),
            nodefs_inodes: None,
            imagefs: None,
            ..Default::default()
        };
    })
    .await;
    node.start_kubelet().await;
    let dns_ip = gateway(node.pod_cidr);

    let services: Api<Service> = Api::namespaced(node.client.clone(), "default");
    let web: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {"ports": [{"name": "http", "port": 80}]},
    }))
    .unwrap();
    let web = services.create(&PostParams::default(), &web).await.unwrap();
    let web_ip = web.spec.unwrap().cluster_ip.unwrap();
    // A headless Service with two ready endpoints and one that is not (no
    // controller-manager here: the test writes the slice), and an ExternalName.
    for svc in [
        serde_json::json!({"metadata": {"name": "db"},
            "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}}),
        serde_json::json!({"metadata": {"name": "ext"},
            "spec": {"type": "ExternalName", "externalName": OUTSIDE_NAME}}),
    ] {
        let svc: Service = serde_json::from_value(svc).unwrap();
        services.create(&PostParams::default(), &svc).await.unwrap();
    }
    let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "db-1", "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv4",
        "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.201.0.1"], "conditions": {"ready": true}},
            {"addresses": ["10.201.0.2"], "conditions": {"ready": true}},
            {"addresses": ["10.201.0.3"], "conditions": {"ready": false}},
        ],
    }))
    .unwrap();
    Api::<EndpointSlice>::namespaced(node.client.clone(), "default")
        .create(&PostParams::default(), &slice)
        .await
        .unwrap();

    node.create_pod(
        "dns-client",
        serde_json::json!({"containers": [{
            "name": "main", "image": "busybox:1.35", "command": ["sleep", "3600"]
        }]}),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(node.client.clone(), "default");
    let deadline = Instant::now() + TIMEOUT;
    let pod = loop {
        let pod = pods.get("dns-client").await.unwrap();
        if phase(&pod) == "Running" && pod_condition(&pod, "Ready") {
            break pod;
        }
        assert!(
            Instant::now() < deadline,
            "pod not Running and Ready: {:?}",
            pod.status
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let id = container_id(&pod);

    // The DNS server on the bridge address (it exists once the first pod is wired).
    let zone = Arc::new(RwLock::new(Zone::new("cluster.local").unwrap()));
    let (changed, _changes) = tokio::sync::watch::channel(());
    let watches = [
        tokio::spawn(watch::index(
            Api::<Service>::all(node.client.clone()),
            zone.clone(),
            changed.clone(),
        )),
        tokio::spawn(watch::index(
            Api::<EndpointSlice>::all(node.client.clone()),
            zone.clone(),
            changed,
        )),
    ];
    wait_until(TIMEOUT, "dns index synced", || async {
        zone.read().synced().then_some(())
    })
    .await;
    // Names outside the cluster go to a test resolver on loopback, never further.
    let resolver = TestResolver::start("127.0.0.1:0".parse().unwrap()).await;
    let metrics = DnsMetrics::new(&prometheus::Registry::new()).unwrap();
    let handler = Arc::new(Handler::new(
        zone.clone(),
        Arc::new(Forwarder::new(vec![resolver.addr], metrics.clone())),
        metrics,
    ));
    let socket = tokio::net::UdpSocket::bind(SocketAddr::new(IpAddr::V4(dns_ip), 53))
        .await
        .expect("binding the bridge address");
    let (stop, shutdown) = component_base::shutdown::channel();
    let serving = tokio::spawn(server::serve_udp(socket, handler, shutdown));

    // The kubelet's resolv.conf for a ClusterFirst pod.
    let (code, resolv) = exec(&node, &id, "cat /etc/resolv.conf").await;
    assert_eq!(code, 0, "{resolv}");
    assert!(resolv.contains(&format!("nameserver {dns_ip}")), "{resolv}");
    assert!(
        resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{resolv}"
    );
    assert!(resolv.contains("ndots:5"), "{resolv}");

    // A Service by FQDN and its SRV record, from inside the pod.
    let (code, out) = exec(&node, &id, "nslookup -type=a web.default.svc.cluster.local").await;
    assert!(
        code == 0 && out.contains(&format!("Address: {web_ip}")),
        "{out}"
    );
    let (code, out) = exec(
        &node,
        &id,
        "nslookup -type=srv _http._tcp.web.default.svc.cluster.local",
    )
    .await;
    assert!(
        code == 0 && out.contains("80 web.default.svc.cluster.local"),
        "{out}"
    );

    // The search list (the C library's resolver, as most programs use): a short name
    // and a namespace-qualified one. busybox ping prints the address it resolved
    // before it tries (a ClusterIP does not answer ICMP).
    for name in ["web", "web.default"] {
        let (_, out) = exec(&node, &id, &format!("ping -c 1 -W 1 {name}")).await;
        assert!(out.contains(&format!("({web_ip})")), "{name}: {out}");
    }

    // Headless: every ready endpoint, not the unready one.
    let (code, out) = exec(&node, &id, "nslookup -type=a db.default.svc.cluster.local").await;
    assert!(
        code == 0
            && out.contains("Address: 10.201.0.1")
            && out.contains("Address: 10.201.0.2")
            && !out.contains("10.201.0.3"),
        "{out}"
    );

    // PTR of the ClusterIP.
    let (code, out) = exec(&node, &id, &format!("nslookup {web_ip}")).await;
    assert!(
        code == 0 && out.contains("name = web.default.svc.cluster.local"),
        "{out}"
    );

    // ExternalName: a CNAME to a name outside the cluster, which the forwarder resolves.
    let (code, out) = exec(
        &node,
        &id,
        "nslookup -type=cname ext.default.svc.cluster.local",
    )
    .await;
    assert!(
        code == 0 && out.contains(&format!("canonical name = {OUTSIDE_NAME}")),
        "{out}"
    );
    let asked = resolver.queries();
    let (code, out) = exec(&node, &id, &format!("nslookup -type=a {OUTSIDE_NAME}")).await;
    assert!(
        code == 0 && out.contains(&format!("Address: {OUTSIDE_IP}")),
        "{out}"
    );
    assert!(
        resolver.queries() > asked,
        "the test resolver was not asked"
    );
    // Nothing under the cluster zone left the node.
    let leaked = resolver.asked_under("cluster.local");
    assert!(leaked.is_empty(), "cluster names forwarded: {leaked:?}");

    // Deleted: NXDOMAIN within a second.
    services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    let deleted = Instant::now();
    loop {
        let (code, out) = exec(&node, &id, "nslookup -type=a web.default.svc.cluster.local").await;
        if code != 0 && out.contains("NXDOMAIN") {
            break;
        }
        assert!(
            deleted.elapsed() < Duration::from_secs(1),
            "still resolving a second after the delete: {out}"
        );
    }

    stop.shutdown();
    let _ = serving.await;
    for w in watches {
        w.abort();
    }
}
