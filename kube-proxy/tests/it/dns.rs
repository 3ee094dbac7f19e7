//! Node-local cluster DNS end to end: a real apiserver, the kube-proxy binary with
//! `--enable-cluster-dns` in the node namespace, the kube-dns Service's address taken
//! from the Service itself, and a client namespace asking with busybox `nslookup` (UDP)
//! and a length-prefixed query through `socat` (TCP). Names outside the cluster go to
//! a test resolver this test runs on the bridge address (never the internet).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use crate::common::{blocking, wait_until, Cluster, TIMEOUT};
use kube_proxy::dns::testing::{TestResolver, OUTSIDE_IP, OUTSIDE_NAME};

const DNS_IP: &str = "10.96.0.10";
/// busybox `nslookup -type=<qtype> <name> <DNS_IP>` from namespace `ns`: (success,
/// output).
fn nslookup(cluster: &Cluster, ns: &str, qtype: &str, name: &str) -> (bool, String) {
    let out = cluster.net.exec(
        ns,
        &[
            "timeout",
            "5",
            "busybox",
            "nslookup",
            &format!("-type={qtype}"),
            name,
            DNS_IP,
        ],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The C library's resolver (`getent ahostsv4 <name>`) in namespace `ns`, with the
/// resolv.conf the kubelet writes for a ClusterFirst pod in namespace `default`
/// (search path, ndots:5) bind-mounted over /etc/resolv.conf in a private mount
/// namespace: (success, output).
fn getent(cluster: &Cluster, ns: &str, name: &str) -> (bool, String) {
    let conf = cluster.net.dir.path().join("pod-resolv.conf");
    std::fs::write(
        &conf,
        format!(
            "nameserver {DNS_IP}\nsearch default.svc.cluster.local svc.cluster.local cluster.local\n\
             options ndots:5 timeout:2 attempts:2\n"
        ),
    )
    .unwrap();
    let script = format!(
        "mount --bind {} /etc/resolv.conf && exec getent ahostsv4 {name}",
        conf.display()
    );
    let out = cluster
        .net
        .exec(ns, &["timeout", "10", "unshare", "-m", "sh", "-c", &script]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// One query over TCP from namespace `ns` (through socat), parsed.
fn tcp_query(cluster: &Cluster, ns: &str, name: &str, qtype: RecordType) -> Message {
    let mut request = Message::new();
    request
        .set_id(4242)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    let bytes = request.to_vec().unwrap();
    let mut framed = u16::try_from(bytes.len()).unwrap().to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    let mut child = cluster
        .net
        .command(
            ns,
            &[
                "timeout",
                "5",
                "socat",
                "-t",
                "2",
                "-",
                &format!("TCP:{DNS_IP}:53"),
            ],
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&framed).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.stdout.len() > 2, "no TCP answer: {out:?}");
    Message::from_vec(&out.stdout[2..]).unwrap()
}

async fn create(cluster: &Cluster, ns: &str, svc: serde_json::Value) {
    let api: Api<Service> = Api::namespaced(cluster.client.clone(), ns);
    let svc: Service = serde_json::from_value(svc).unwrap();
    api.create(&PostParams::default(), &svc).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_dns_answers_on_the_node() {
    let mut cluster = Cluster::start().await;
    let resolver =
        TestResolver::start(SocketAddr::new(IpAddr::V4(cluster.net.gateway()), 53)).await;
    let resolv_conf = cluster.net.dir.path().join("upstream-resolv.conf");
    std::fs::write(
        &resolv_conf,
        format!("search example\nnameserver {}\n", cluster.net.gateway()),
    )
    .unwrap();

    // The kube-dns Service as kubeadm makes it, with no endpoints: kube-proxy serves
    // its address itself and must not DNAT (or reject) it.
    create(
        &cluster,
        "kube-system",
        json!({"metadata": {"name": "kube-dns"},
               "spec": {"clusterIP": DNS_IP, "ports": [
                   {"name": "dns", "port": 53, "protocol": "UDP"},
                   {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}}),
    )
    .await;
    let web = cluster
        .create_service_with("web", json!({"type": "ClusterIP"}))
        .await;
    create(
        &cluster,
        "default",
        json!({"metadata": {"name": "db"},
               "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}}),
    )
    .await;
    create(
        &cluster,
        "default",
        json!({"metadata": {"name": "ext"},
               "spec": {"type": "ExternalName", "externalName": OUTSIDE_NAME}}),
    )
    .await;
    let slices: Api<EndpointSlice> = Api::namespaced(cluster.client.clone(), "default");
    let prefix = cluster.net.ip(0).octets();
    let ep = move |i: u8| Ipv4Addr::new(prefix[0], prefix[1], prefix[2], 100 + i).to_string();
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "db-1", "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv4",
        "ports": [{"name": "pg", "port": 15432, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": [ep(1)], "hostname": "db-0", "conditions": {"ready": true}},
            {"addresses": [ep(2)], "hostname": "db-1", "conditions": {"ready": true}},
            {"addresses": [ep(3)], "hostname": "db-2", "conditions": {"ready": false}},
        ],
    }))
    .unwrap();
    slices.create(&PostParams::default(), &slice).await.unwrap();

    let conf = resolv_conf.to_str().unwrap().to_string();
    cluster.start_proxy(&[
        "--proxy-mode=nftables",
        "--enable-cluster-dns",
        "--dns-upstream-resolv-conf",
        &conf,
    ]);
    let outside = cluster.outside.clone();
    wait_until(TIMEOUT, "cluster DNS answering", || async {
        blocking(|| nslookup(&cluster, &outside, "a", "web.default.svc.cluster.local").0)
            .then_some(())
    })
    .await;

    // A ClusterIP Service by FQDN.
    let (ok, out) = nslookup(&cluster, &outside, "a", "web.default.svc.cluster.local");
    assert!(
        ok && out.contains(&format!("Address: {}", web.cluster_ip)),
        "{out}"
    );

    // A headless Service: every ready endpoint, and each by its hostname.
    let (ok, out) = nslookup(&cluster, &outside, "a", "db.default.svc.cluster.local");
    assert!(ok, "{out}");
    assert!(out.contains(&format!("Address: {}", ep(1))), "{out}");
    assert!(out.contains(&format!("Address: {}", ep(2))), "{out}");
    assert!(
        !out.contains(&ep(3)),
        "a not-ready endpoint is published: {out}"
    );
    let (ok, out) = nslookup(&cluster, &outside, "a", "db-1.db.default.svc.cluster.local");
    assert!(ok && out.contains(&format!("Address: {}", ep(2))), "{out}");

    // SRV for a named port: the Service's port, and per endpoint for headless ones.
    let (ok, out) = nslookup(
        &cluster,
        &outside,
        "srv",
        "_http._tcp.web.default.svc.cluster.local",
    );
    assert!(
        ok && out.contains("0 100 80 web.default.svc.cluster.local"),
        "{out}"
    );
    let (ok, out) = nslookup(
        &cluster,
        &outside,
        "srv",
        "_pg._tcp.db.default.svc.cluster.local",
    );
    assert!(
        ok && out.contains("15432 db-0.db.default.svc.cluster.local"),
        "{out}"
    );
    assert!(
        out.contains("15432 db-1.db.default.svc.cluster.local"),
        "{out}"
    );

    // PTR for the Service's address and for a headless endpoint.
    let octets = web.cluster_ip.octets();
    let arpa = format!(
        "{}.{}.{}.{}.in-addr.arpa",
        octets[3], octets[2], octets[1], octets[0]
    );
    let (ok, out) = nslookup(&cluster, &outside, "ptr", &arpa);
    assert!(
        ok && out.contains("name = web.default.svc.cluster.local"),
        "{out}"
    );
    let e = cluster.net.ip(101).octets();
    let arpa = format!("{}.{}.{}.{}.in-addr.arpa", e[3], e[2], e[1], e[0]);
    let (ok, out) = nslookup(&cluster, &outside, "ptr", &arpa);
    assert!(
        ok && out.contains("name = db-0.db.default.svc.cluster.local"),
        "{out}"
    );

    // ExternalName: a CNAME, its target resolved through the upstream.
    let (ok, out) = nslookup(&cluster, &outside, "a", "ext.default.svc.cluster.local");
    assert!(
        ok && out.contains(&format!("canonical name = {OUTSIDE_NAME}")),
        "{out}"
    );
    assert!(out.contains(&format!("Address: {OUTSIDE_IP}")), "{out}");

    // As a pod resolves (search path, ndots:5): a short name, a namespace-qualified
    // one, and a name outside the cluster through the search path amplification,
    // whose cluster-domain candidates never leave the node.
    for short in ["web", "web.default"] {
        let (ok, out) = getent(&cluster, &outside, short);
        assert!(
            ok && out.contains(&web.cluster_ip.to_string()),
            "{short}: {out}"
        );
    }
    let (ok, out) = getent(&cluster, &outside, OUTSIDE_NAME);
    assert!(ok && out.contains(&OUTSIDE_IP.to_string()), "{out}");
    let leaked = resolver.asked_under("cluster.local");
    assert!(leaked.is_empty(), "cluster names forwarded: {leaked:?}");

    // Missing names of the zone: NXDOMAIN, never asked upstream (search-path
    // amplification included).
    let before = resolver.queries.load(Ordering::SeqCst);
    for missing in [
        "nope.default.svc.cluster.local",
        "outside.example.default.svc.cluster.local",
        "web.default.svc.cluster.local.default.svc.cluster.local",
    ] {
        let (ok, out) = nslookup(&cluster, &outside, "a", missing);
        assert!(!ok && out.contains("NXDOMAIN"), "{missing}: {out}");
    }
    assert_eq!(resolver.queries.load(Ordering::SeqCst), before);

    // A name outside the cluster: through the test resolver, then from the cache.
    let (ok, out) = nslookup(&cluster, &outside, "a", OUTSIDE_NAME);
    assert!(
        ok && out.contains(&format!("Address: {OUTSIDE_IP}")),
        "{out}"
    );
    let asked = resolver.queries.load(Ordering::SeqCst);
    let (ok, out) = nslookup(&cluster, &outside, "a", OUTSIDE_NAME);
    assert!(
        ok && out.contains(&format!("Address: {OUTSIDE_IP}")),
        "{out}"
    );
    assert_eq!(
        resolver.queries.load(Ordering::SeqCst),
        asked,
        "the second answer was not cached"
    );
    let (ok, out) = nslookup(&cluster, &outside, "a", "missing.example");
    assert!(!ok && out.contains("NXDOMAIN"), "{out}");

    // TCP.
    let m = blocking(|| {
        tcp_query(
            &cluster,
            &outside,
            "web.default.svc.cluster.local.",
            RecordType::A,
        )
    });
    assert_eq!(m.id(), 4242);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert_eq!(
        m.answers()[0].data().to_string(),
        web.cluster_ip.to_string()
    );

    // The proxier left the DNS address alone; the notrack table is there.
    let table = cluster.table().expect("kube-proxy table");
    assert!(table.contains(&web.cluster_ip.to_string()), "{table}");
    // (With the space: a Service may have 10.96.0.100.)
    assert!(
        !table.contains(&format!("{DNS_IP} ")),
        "the DNS Service reached the proxier: {table}"
    );
    let out = cluster
        .net
        .exec(&cluster.node, &["nft", "list", "table", "ip", "pikube-dns"]);
    let dns_table = String::from_utf8_lossy(&out.stdout);
    assert!(dns_table.contains("notrack"), "{dns_table}");

    // Metrics with CoreDNS's names.
    let metrics = cluster
        .net
        .get(&cluster.node, "http://127.0.0.1:10249/metrics")
        .unwrap();
    let has = |name: &str, labels: &[&str]| {
        metrics
            .lines()
            .any(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|x| l.contains(x)))
    };
    assert!(
        has(
            "coredns_dns_requests_total",
            &["proto=\"udp\"", "type=\"A\"", "zone=\"cluster.local.\""]
        ),
        "{metrics}"
    );
    assert!(
        has("coredns_dns_requests_total", &["type=\"SRV\""]),
        "{metrics}"
    );
    assert!(
        has(
            "coredns_dns_responses_total",
            &["rcode=\"NXDOMAIN\"", "plugin=\"kubernetes\""]
        ),
        "{metrics}"
    );
    assert!(
        has("coredns_cache_hits_total", &["type=\"success\""]),
        "{metrics}"
    );
    assert!(metrics.contains("coredns_cache_misses_total "), "{metrics}");
    assert!(
        has(
            "coredns_forward_request_duration_seconds_count",
            &["rcode=\"NOERROR\""]
        ),
        "{metrics}"
    );

    // A deleted Service stops resolving within a second.
    let api: Api<Service> = Api::namespaced(cluster.client.clone(), "default");
    api.delete("web", &DeleteParams::default()).await.unwrap();
    let deleted = Instant::now();
    loop {
        let (ok, out) =
            blocking(|| nslookup(&cluster, &outside, "a", "web.default.svc.cluster.local"));
        if !ok && out.contains("NXDOMAIN") {
            break;
        }
        assert!(
            deleted.elapsed() < Duration::from_secs(1),
            "still resolving a second after the delete: {out}"
        );
    }

    // --cleanup removes the table and the link.
    cluster.net.kill("kube-proxy");
    let out = cluster.net.exec(
        &cluster.node,
        &[
            env!("CARGO_BIN_EXE_kube-proxy"),
            "--cleanup",
            "--hostname-override",
            "node-a",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let out = cluster
        .net
        .exec(&cluster.node, &["nft", "list", "table", "ip", "pikube-dns"]);
    assert!(
        !out.status.success(),
        "the pikube-dns table survived --cleanup"
    );
    let out = cluster
        .net
        .exec(&cluster.node, &["ip", "link", "show", "pikube-dns"]);
    assert!(
        !out.status.success(),
        "the pikube-dns link survived --cleanup"
    );
}
