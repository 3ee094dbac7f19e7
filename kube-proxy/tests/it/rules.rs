//! The proxier's transactions against the real `nft` in a scratch network namespace:
//! every kind of Service applies, and a table brought up to date by delta
//! transactions holds the same objects as one built from scratch.

use std::collections::BTreeMap;
use std::net::IpAddr;

use kube_proxy::endpoints::{Conditions, Endpoint};
use kube_proxy::nftables::{NftCommand, Proxier, RuleBuilder};
use kube_proxy::service::{IpFamily, Protocol, ServicePort, ServicePortName};

use crate::net::Net;

/// An `nft` that runs in namespace `ns`.
fn nft_in(net: &Net, ns: &str, tag: &str) -> NftCommand {
    let path = net.dir.path().join(format!("nft-{tag}"));
    std::fs::write(
        &path,
        format!("#!/bin/sh\nexec nsenter --net=/run/netns/{ns} nft \"$@\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    NftCommand { binary: path }
}

fn spn(name: &str, port: &str, protocol: Protocol) -> ServicePortName {
    ServicePortName::new("ns", name, port, protocol)
}

fn port(ip: u8, number: u16) -> ServicePort {
    ServicePort {
        cluster_ip: Some(IpAddr::from([10, 96, 0, ip])),
        port: number,
        node_port: None,
        external_ips: vec![],
        load_balancer_ips: vec![],
        affinity_timeout_seconds: None,
        external_policy_local: false,
        internal_policy_local: false,
        health_check_node_port: None,
    }
}

fn ep(last: u8, port: u16, ready: bool, local: bool) -> Endpoint {
    Endpoint::new(
        IpAddr::from([10, 244, 1, last]),
        port,
        Conditions {
            ready,
            serving: true,
            terminating: !ready,
            is_local: local,
            on_other_node: false,
        },
    )
}

type State = (
    BTreeMap<ServicePortName, ServicePort>,
    BTreeMap<ServicePortName, Vec<Endpoint>>,
);

/// One of every kind: ClusterIP, UDP and SCTP, NodePort, external and load balancer
/// IPs, affinity, both Local policies, terminating endpoints, no endpoints, a
/// destination claimed twice.
fn variety() -> State {
    let mut s = BTreeMap::new();
    let mut e = BTreeMap::new();
    s.insert(spn("web", "http", Protocol::Tcp), port(1, 80));
    e.insert(
        spn("web", "http", Protocol::Tcp),
        vec![ep(1, 8080, true, false), ep(2, 8080, true, true)],
    );
    s.insert(spn("dns", "dns", Protocol::Udp), port(10, 53));
    e.insert(
        spn("dns", "dns", Protocol::Udp),
        vec![ep(3, 53, true, false)],
    );
    s.insert(spn("sctp", "", Protocol::Sctp), port(11, 9999));
    e.insert(
        spn("sctp", "", Protocol::Sctp),
        vec![ep(4, 9999, true, false)],
    );
    let mut np = port(12, 80);
    np.node_port = Some(30080);
    np.external_ips = vec![IpAddr::from([192, 0, 2, 7])];
    np.load_balancer_ips = vec![IpAddr::from([192, 0, 2, 100])];
    np.affinity_timeout_seconds = Some(600);
    s.insert(spn("lb", "", Protocol::Tcp), np.clone());
    e.insert(
        spn("lb", "", Protocol::Tcp),
        vec![ep(5, 80, true, false), ep(6, 80, true, true)],
    );
    let mut local = port(13, 80);
    local.node_port = Some(30081);
    local.external_policy_local = true;
    local.internal_policy_local = true;
    s.insert(spn("local", "", Protocol::Tcp), local);
    e.insert(
        spn("local", "", Protocol::Tcp),
        vec![ep(7, 80, true, false), ep(8, 80, false, true)],
    );
    let mut empty = port(14, 80);
    empty.node_port = Some(30082);
    s.insert(spn("empty", "", Protocol::Tcp), empty);
    let mut twin = port(15, 80);
    twin.external_ips = vec![IpAddr::from([192, 0, 2, 7])];
    s.insert(spn("twin", "", Protocol::Tcp), twin);
    e.insert(spn("twin", "", Protocol::Tcp), vec![ep(9, 80, true, false)]);
    (s, e)
}

/// Changes to every kind of object: endpoints added and removed, a Service deleted,
/// one added, a policy and an affinity timeout changed, a destination freed.
fn changed() -> State {
    let (mut s, mut e) = variety();
    e.get_mut(&spn("web", "http", Protocol::Tcp))
        .unwrap()
        .remove(0);
    e.insert(
        spn("empty", "", Protocol::Tcp),
        vec![ep(20, 80, true, false)],
    );
    e.remove(&spn("dns", "dns", Protocol::Udp));
    s.remove(&spn("sctp", "", Protocol::Sctp));
    s.insert(spn("new", "p", Protocol::Tcp), port(16, 8443));
    e.insert(
        spn("new", "p", Protocol::Tcp),
        vec![ep(21, 8443, true, false)],
    );
    let lb = s.get_mut(&spn("lb", "", Protocol::Tcp)).unwrap();
    lb.affinity_timeout_seconds = Some(60);
    lb.external_ips.clear();
    let local = s.get_mut(&spn("local", "", Protocol::Tcp)).unwrap();
    local.external_policy_local = false;
    (s, e)
}

/// The listing as a sorted multiset of tokens: the same objects give the same tokens
/// whatever order they were created in.
fn tokens(listing: &str) -> Vec<String> {
    let mut t: Vec<String> = listing
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect();
    t.sort();
    t
}

/// The listing with the endpoint maps resolved: each `dnat … to numgen random mod N
/// offset B map @M` rule is replaced by the endpoints in slots B..B+N of M, and the
/// maps' elements are left out, so tables that hold the same endpoints in other slots
/// compare equal.
fn resolve_slots(listing: &str) -> String {
    let mut slots: std::collections::HashMap<(String, u32), String> = Default::default();
    let mut out = Vec::new();
    let mut map: Option<(String, String)> = None;
    for line in listing.lines() {
        let trimmed = line.trim();
        if let Some((name, text)) = map.as_mut() {
            if line == "\t}" {
                let body = text.split_once("elements = {").map_or("", |(_, b)| b);
                for item in body
                    .trim_end_matches(|c: char| c == '}' || c.is_whitespace())
                    .split(',')
                {
                    if let Some((k, v)) = item.split_once(" : ") {
                        slots.insert(
                            (name.clone(), k.trim().parse().unwrap()),
                            v.trim().to_string(),
                        );
                    }
                }
                out.push(format!("map {name} (resolved)"));
                map = None;
            } else {
                text.push_str(trimmed);
                text.push(' ');
            }
            continue;
        }
        if let Some(name) = trimmed.strip_prefix("map endpoints-") {
            map = Some((
                format!("endpoints-{}", name.trim_end_matches(" {")),
                String::new(),
            ));
            continue;
        }
        out.push(line.to_string());
    }
    out.into_iter()
        .map(|line| {
            if !line.contains(" map @endpoints-") {
                return line;
            }
            let Some((head, rest)) = line.split_once("numgen random mod ") else {
                return line;
            };
            let words: Vec<&str> = rest.split_whitespace().collect();
            let n: u32 = words[0].parse().unwrap();
            let (base, map) = if words[1] == "offset" {
                (words[2].parse::<u32>().unwrap(), words[4])
            } else {
                (0, words[2])
            };
            let map = map.trim_start_matches('@');
            let mut eps: Vec<String> = (base..base + n)
                .map(|k| {
                    slots
                        .get(&(map.to_string(), k))
                        .cloned()
                        .unwrap_or_else(|| format!("missing-slot-{k}"))
                })
                .collect();
            eps.sort();
            format!("{head}endpoints {}", eps.join(" "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn list(net: &Net, ns: &str) -> String {
    let out = net.exec(ns, &["nft", "list", "table", "ip", "kube-proxy"]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_reach_the_same_table_as_a_full_sync() {
    let mut net = Net::new();
    let a = net.add_namespace("rules-a", 2);
    let b = net.add_namespace("rules-b", 3);
    let builder = RuleBuilder::new(
        IpFamily::V4,
        &["10.244.0.0/16".parse().unwrap()],
        &["10.0.0.0/8".parse().unwrap()],
    );
    let mut incremental = Proxier::new(nft_in(&net, &a, "a"), builder.clone());
    let (s, e) = variety();
    let first = incremental.sync(&s, &e).await.expect("full sync applies");
    assert!(first.full);
    let (s2, e2) = changed();
    let delta = incremental.sync(&s2, &e2).await.expect("delta applies");
    assert!(!delta.full && delta.changed_service_ports >= 6, "{delta:?}");
    assert!(delta.transaction_bytes < first.transaction_bytes);

    let mut scratch = Proxier::new(nft_in(&net, &b, "b"), builder);
    scratch.sync(&s2, &e2).await.expect("full sync applies");
    let (via_deltas, from_scratch) = (
        resolve_slots(&list(&net, &a)),
        resolve_slots(&list(&net, &b)),
    );
    assert!(!via_deltas.contains("missing-slot"), "{via_deltas}");
    assert_eq!(
        tokens(&via_deltas),
        tokens(&from_scratch),
        "after deltas:\n{via_deltas}\nfrom scratch:\n{from_scratch}"
    );
    assert!(via_deltas.contains("timeout 1m"), "{via_deltas}");
    assert!(!via_deltas.contains("l4proto sctp"), "{via_deltas}");

    // And back: the original state, again by delta.
    incremental.sync(&s, &e).await.expect("delta back applies");
    scratch = Proxier::new(
        nft_in(&net, &b, "b"),
        RuleBuilder::new(
            IpFamily::V4,
            &["10.244.0.0/16".parse().unwrap()],
            &["10.0.0.0/8".parse().unwrap()],
        ),
    );
    scratch.sync(&s, &e).await.expect("full sync applies");
    assert_eq!(
        tokens(&resolve_slots(&list(&net, &a))),
        tokens(&resolve_slots(&list(&net, &b)))
    );
}

/// The `ip6` table carries traffic: ClusterIP and NodePort over IPv6 to backends in
/// other namespaces, and a Service without endpoints is refused. (The test apiserver
/// allocates IPv4 ClusterIPs only, so this drives the IPv6 proxier directly.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_services_carry_traffic() {
    let mut net = Net::new();
    let node = net.add_namespace("node6", 2);
    let client = net.add_namespace("client6", 3);
    let backends = tokio::task::block_in_place(|| {
        [
            (net.backend("be6-a", 10, 8080), 10),
            (net.backend("be6-b", 11, 8080), 11),
        ]
    });
    for (ns, host) in [(node.clone(), 2), (client.clone(), 3)]
        .into_iter()
        .chain(backends)
    {
        net.add_ipv6(&ns, host);
    }
    let via = net.ip6(2).to_string();
    let out = net.exec(
        &client,
        &["ip", "-6", "route", "add", "fd00:96::/112", "via", &via],
    );
    assert!(out.status.success(), "{out:?}");

    let cluster_ip: IpAddr = "fd00:96::10".parse().unwrap();
    let empty_ip: IpAddr = "fd00:96::11".parse().unwrap();
    let mut web = port(0, 80);
    web.cluster_ip = Some(cluster_ip);
    web.node_port = Some(30080);
    let mut empty = port(0, 80);
    empty.cluster_ip = Some(empty_ip);
    let services = BTreeMap::from([
        (spn("web6", "", Protocol::Tcp), web),
        (spn("empty6", "", Protocol::Tcp), empty),
    ]);
    let endpoint = |host: u8| {
        Endpoint::new(
            IpAddr::V6(net.ip6(host)),
            8080,
            Conditions {
                ready: true,
                serving: true,
                ..Conditions::default()
            },
        )
    };
    let endpoints = BTreeMap::from([(
        spn("web6", "", Protocol::Tcp),
        vec![endpoint(10), endpoint(11)],
    )]);
    let mut proxier = Proxier::new(
        nft_in(&net, &node, "6"),
        RuleBuilder::new(IpFamily::V6, &["fd00:244::/48".parse().unwrap()], &[]),
    );
    proxier
        .sync(&services, &endpoints)
        .await
        .expect("ip6 table applies");

    let cluster_url = format!("http://[{cluster_ip}]:80/");
    let node_url = format!("http://[{}]:30080/", net.ip6(2));
    tokio::task::block_in_place(|| {
        for (ns, url) in [
            (&node, &cluster_url),
            (&client, &cluster_url),
            (&client, &node_url),
            (&node, &node_url),
        ] {
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..30 {
                seen.insert(
                    net.get(ns, url)
                        .unwrap_or_else(|e| panic!("{url} from {ns}: {e}")),
                );
            }
            assert_eq!(seen.len(), 2, "{url} from {ns}: {seen:?}");
        }
        let started = std::time::Instant::now();
        let err = net
            .get(&client, &format!("http://[{empty_ip}]:80/"))
            .expect_err("no endpoints");
        assert!(
            err.contains("(7)") && started.elapsed() < std::time::Duration::from_secs(2),
            "{err}"
        );
    });
}
