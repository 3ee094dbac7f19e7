//! NodePort across nodes: two node namespaces on the test bridge, a kube-proxy in each,
//! the only backend a pod behind node B (node A routes B's pod range via B's address,
//! as host-gw routing gives). A client off the cluster reaches the Service on node A's
//! IP and on node B's IP; through node A the traffic is masqueraded to node A, so the
//! pod's reply goes back through node A, which undoes the NAT.

use std::collections::BTreeSet;

use crate::common::{blocking, wait_until, Cluster, CLIENT_HOST, TIMEOUT};

const NODE_B: &str = "node-b";
const NODE_B_HOST: u8 = 5;

/// busybox httpd's `REMOTE_ADDR` (`[::ffff:10.0.0.1]`) as a plain IPv4 address.
fn source_ip(remote_addr: &str) -> String {
    remote_addr
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_start_matches("::ffff:")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodeport_works_on_every_node_ip_when_the_backend_is_on_another_node() {
    let mut c = Cluster::start().await;
    let node_b = blocking(|| c.net.add_namespace("node-b", NODE_B_HOST));
    let node_b_ip = c.net.ip(NODE_B_HOST);
    let (_, pod_ip) = blocking(|| c.net.pod(&node_b, "pod-b", 1, 8080));
    // Node A's route to node B's pods (the pod's /30), as the kubelet's host-gw routes.
    let pod_range = format!("{}/30", {
        let o = pod_ip.octets();
        std::net::Ipv4Addr::new(o[0], o[1], o[2], o[3] & !3)
    });
    let via = node_b_ip.to_string();
    let out = c
        .net
        .exec(&c.node, &["ip", "route", "add", &pod_range, "via", &via]);
    assert!(out.status.success(), "{out:?}");

    c.start_proxy(&[]);
    let kubeconfig = c.api.kubeconfig_path().to_str().unwrap().to_string();
    let node_b_log = c.net.spawn(
        "kube-proxy-b",
        &node_b,
        &[
            env!("CARGO_BIN_EXE_kube-proxy"),
            "--kubeconfig",
            &kubeconfig,
            "--hostname-override",
            NODE_B,
            "--cluster-cidr=10.244.0.0/16",
        ],
    );
    let svc = c.create_service("np", "NodePort").await;
    let node_port = svc.node_port.expect("a node port");
    c.set_endpoints_on("np", &[(pod_ip, NODE_B)]).await;

    let via_a = format!("http://{}:{node_port}/", c.node_ip);
    let via_b = format!("http://{node_b_ip}:{node_port}/");
    for url in [&via_a, &via_b] {
        c.wait_reachable(&c.outside, url).await;
        let seen = blocking(|| c.count_backends(&c.outside, url, 10));
        assert_eq!(
            seen.keys().map(String::as_str).collect::<BTreeSet<_>>(),
            BTreeSet::from(["pod-b"]),
            "{url}: {seen:?}"
        );
    }
    // Through node A the pod sees node A (masqueraded): its reply returns through the
    // node that holds the NAT state. Without it the pod would answer the client
    // directly, from its own address, and the client would drop the reply.
    let source = blocking(|| c.net.get(&c.outside, &format!("{via_a}cgi-bin/ip"))).unwrap();
    assert_eq!(source_ip(&source), c.node_ip.to_string());
    assert_ne!(source_ip(&source), c.net.ip(CLIENT_HOST).to_string());
    // And the ClusterIP from node A's own namespace reaches the pod on node B too.
    let cluster_url = format!("http://{}:80/", svc.cluster_ip);
    assert_eq!(
        blocking(|| c.net.get(&c.node, &cluster_url)).unwrap(),
        "pod-b"
    );

    // The endpoint goes: both nodes refuse the node port again.
    c.delete_endpoints("np").await;
    for url in [&via_a, &via_b] {
        wait_until(TIMEOUT, "refused without endpoints", || async {
            blocking(|| c.net.get(&c.outside, url).err()).filter(|e| e.contains("(7)"))
        })
        .await;
    }
    let log = std::fs::read_to_string(&node_b_log).unwrap_or_default();
    assert!(log.contains("synced proxy rules"), "{log}");
}
