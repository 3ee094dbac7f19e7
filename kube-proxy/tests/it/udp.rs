//! UDP Services through the kube-proxy binary: stale conntrack entries are flushed when
//! an endpoint is replaced (nftables mode), and the userspace proxier forwards NodePort
//! datagrams and their replies. Backends are `socat` UDP servers answering their name.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::common::{blocking, wait_until, Cluster, TIMEOUT};

const BACKEND_PORT: u16 = 9053;
/// The client's fixed source port: every datagram belongs to the same conntrack entry.
const CLIENT_PORT: u16 = 40053;

/// A UDP backend in a new namespace at `.host`: answers every datagram with `name`.
fn udp_backend(c: &mut Cluster, name: &str, host: u8) {
    let ns = c.net.add_namespace(name, host);
    let listen = format!("UDP4-RECVFROM:{BACKEND_PORT},fork");
    // Reads the datagram first: an answer written before socat hands the datagram over
    // would race with the pipe closing.
    let answer = format!("SYSTEM:read q; echo {name}");
    c.net.spawn(name, &ns, &["socat", &listen, &answer]);
    let target = format!("{}:{BACKEND_PORT}", c.net.ip(host));
    let deadline = Instant::now() + Duration::from_secs(10);
    // The root namespace reaches the test network over the bridge.
    while query_from(c, None, &target, None).as_deref() != Some(name) {
        assert!(
            Instant::now() < deadline,
            "UDP backend {name} never answered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One datagram to `target` (`ip:port`) from namespace `ns` (None: the root namespace),
/// from `source_port` if given: the first line of the answer, if any came.
fn query_from(
    c: &Cluster,
    ns: Option<&str>,
    target: &str,
    source_port: Option<u16>,
) -> Option<String> {
    let mut address = format!("UDP4:{target}");
    if let Some(p) = source_port {
        address.push_str(&format!(",sourceport={p},reuseaddr"));
    }
    let args = ["socat", "-t", "1", "-T", "2", "-", &address];
    let mut cmd = match ns {
        Some(ns) => c.net.command(ns, &args),
        None => {
            let mut cmd = std::process::Command::new(args[0]);
            cmd.args(&args[1..]);
            cmd
        }
    };
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("socat");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(b"q\n");
    }
    let out = child.wait_with_output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().next().map(str::to_string)
}

/// Makes `hosts` (on node-b) the endpoints of UDP Service `name` (port `dns`).
async fn set_udp_endpoints(c: &Cluster, name: &str, hosts: &[u8]) {
    let api: Api<EndpointSlice> = Api::namespaced(c.client.clone(), "default");
    let endpoints: Vec<_> = hosts
        .iter()
        .map(|h| json!({"addresses": [c.net.ip(*h).to_string()], "conditions": {"ready": true}, "nodeName": "node-b"}))
        .collect();
    let slice_name = format!("{name}-1");
    let mut slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": slice_name, "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "dns", "port": BACKEND_PORT, "protocol": "UDP"}],
        "endpoints": endpoints,
    });
    match api.get_opt(&slice_name).await.unwrap() {
        Some(existing) => {
            slice["metadata"]["resourceVersion"] = json!(existing.metadata.resource_version);
            let slice: EndpointSlice = serde_json::from_value(slice).unwrap();
            api.replace(&slice_name, &PostParams::default(), &slice)
                .await
                .unwrap();
        }
        None => {
            let slice: EndpointSlice = serde_json::from_value(slice).unwrap();
            api.create(&PostParams::default(), &slice).await.unwrap();
        }
    }
}

fn udp_spec(svc_type: &str) -> serde_json::Value {
    json!({
        "type": svc_type,
        "ports": [{"name": "dns", "port": 53, "targetPort": BACKEND_PORT, "protocol": "UDP"}],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_flow_moves_to_the_new_endpoint_after_its_endpoint_is_replaced() {
    let mut c = Cluster::start().await;
    blocking(|| {
        udp_backend(&mut c, "be-a", 10);
        udp_backend(&mut c, "be-b", 11);
    });
    c.start_proxy(&[]);
    let svc = c.create_service_with("dns", udp_spec("ClusterIP")).await;
    set_udp_endpoints(&c, "dns", &[10]).await;
    let target = format!("{}:53", svc.cluster_ip);
    let outside = c.outside.clone();
    let ask = || blocking(|| query_from(&c, Some(&outside), &target, Some(CLIENT_PORT)));
    wait_until(TIMEOUT, "be-a answering through the ClusterIP", || async {
        (ask().as_deref() == Some("be-a")).then_some(())
    })
    .await;
    // The flow's conntrack entry on the node records the DNAT to be-a.
    let entries = String::from_utf8_lossy(
        &c.net
            .exec(&c.node, &["conntrack", "-L", "-p", "udp"])
            .stdout,
    )
    .into_owned();
    let be_a = c.net.ip(10).to_string();
    assert!(
        entries
            .lines()
            .any(|l| l.contains(&format!("sport={CLIENT_PORT}"))
                && l.contains(&format!("src={be_a} "))),
        "{entries}"
    );

    // be-a stops being an endpoint but keeps running: without the flush the client's
    // datagrams would keep following the entry to it.
    set_udp_endpoints(&c, "dns", &[11]).await;
    let changed = Instant::now();
    let answers = wait_until(TIMEOUT, "be-b answering the same flow", || async {
        let answer = ask();
        (answer.as_deref() == Some("be-b")).then_some(answer)
    })
    .await;
    eprintln!(
        "the flow moved to {answers:?} after {:?}",
        changed.elapsed()
    );
    // And it stays there.
    for _ in 0..5 {
        assert_eq!(ask().as_deref(), Some("be-b"));
    }
    let log = c.proxy_log();
    assert!(log.contains("deleted stale UDP conntrack entries"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn userspace_mode_forwards_udp_node_ports() {
    let mut c = Cluster::start().await;
    blocking(|| {
        udp_backend(&mut c, "be-a", 10);
        udp_backend(&mut c, "be-b", 11);
    });
    c.start_proxy(&["--proxy-mode=userspace"]);
    let svc = c.create_service_with("dns", udp_spec("NodePort")).await;
    let node_port = svc.node_port.expect("a node port");
    set_udp_endpoints(&c, "dns", &[10, 11]).await;
    let target = format!("{}:{node_port}", c.node_ip);
    let outside = c.outside.clone();
    // Each query comes from a new source port: a new flow, load-balanced afresh. The
    // client's socket is connected to the node port: only replies from there are read.
    let seen = wait_until(TIMEOUT, "both UDP endpoints answering", || async {
        let seen: BTreeSet<String> = blocking(|| {
            (0..20)
                .filter_map(|_| query_from(&c, Some(&outside), &target, None))
                .collect()
        });
        (seen.len() == 2).then_some(seen)
    })
    .await;
    assert_eq!(
        seen,
        BTreeSet::from(["be-a".to_string(), "be-b".to_string()])
    );
    assert!(c.table().is_none(), "userspace mode programs no table");
}
