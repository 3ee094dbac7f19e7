//! Services through the kube-proxy binary in a node namespace: ClusterIP and NodePort
//! load balancing over backends in other namespaces, endpoint changes, rejection of
//! Services without endpoints, the health and metrics servers, `--cleanup`, flag errors.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::common::{blocking, wait_until, Cluster, TIMEOUT};

const BACKENDS: [(&str, u8); 3] = [("be-a", 10), ("be-b", 11), ("be-c", 12)];

/// busybox httpd's `REMOTE_ADDR` (`[::ffff:10.0.0.1]`) as a plain IPv4 address.
fn source_ip(remote_addr: &str) -> String {
    remote_addr
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_start_matches("::ffff:")
        .to_string()
}

fn names(seen: &std::collections::BTreeMap<String, usize>) -> BTreeSet<&str> {
    seen.keys().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusterip_reaches_every_endpoint_and_follows_changes() {
    let mut c = Cluster::start().await;
    blocking(|| {
        for (name, host) in BACKENDS {
            c.net.backend(name, host, 8080);
        }
    });
    c.start_proxy(&[]);
    let svc = c.create_service("web", "ClusterIP").await;
    c.set_endpoints("web", &[10, 11, 12]).await;
    let url = format!("http://{}:80/", svc.cluster_ip);
    c.wait_reachable(&c.node, &url).await;

    // From the node itself (locally generated traffic) and from another machine that
    // routes the service range through the node.
    for ns in [&c.node, &c.outside] {
        let seen = blocking(|| c.count_backends(ns, &url, 40));
        assert_eq!(
            names(&seen),
            BTreeSet::from(["be-a", "be-b", "be-c"]),
            "from {ns}: {seen:?}"
        );
    }

    // Two endpoints go away: only be-b answers from then on.
    c.set_endpoints("web", &[11]).await;
    let changed = Instant::now();
    wait_until(TIMEOUT, "only be-b answering", || async {
        blocking(|| {
            let seen = c.count_backends(&c.node, &url, 10);
            (names(&seen) == BTreeSet::from(["be-b"])).then_some(())
        })
    })
    .await;
    eprintln!("endpoint change took effect after {:?}", changed.elapsed());
    // After the first full sync, the change was applied as a delta for one Service port.
    // (The log line follows the transaction: wait for it.)
    let log = wait_until(TIMEOUT, "the delta sync logged", || async {
        let log = c.proxy_log();
        log.lines()
            .any(|l| l.contains("synced proxy rules family=V4 full=false changed=1 "))
            .then_some(log)
    })
    .await;
    assert_eq!(log.matches("family=V4 full=true").count(), 1, "{log}");
    // The deleted endpoint is gone from the table's endpoint maps.
    let table = c.table().unwrap();
    assert!(!table.contains(&c.net.ip(10).to_string()), "{table}");
    assert!(
        table.contains(&format!("{} . 8080", c.net.ip(11))),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodeport_reaches_endpoints_on_nodeport_addresses_only() {
    nodeport_on_nodeport_addresses("nftables").await;
}

/// The same NodePort behaviour from the userspace proxier: kube-proxy listens on the
/// node port of the `--nodeport-addresses` address and copies connections to the
/// endpoints (ClusterIPs need the packet filter: not checked there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn userspace_mode_serves_nodeports() {
    nodeport_on_nodeport_addresses("userspace").await;
}

async fn nodeport_on_nodeport_addresses(mode: &str) {
    let mut c = Cluster::start().await;
    blocking(|| {
        for (name, host) in &BACKENDS[..2] {
            c.net.backend(name, *host, 8080);
        }
    });
    // A second address on the node, outside --nodeport-addresses.
    let other = c.net.ip(4);
    let other_cidr = format!("{other}/24");
    let out = c
        .net
        .exec(&c.node, &["ip", "addr", "add", &other_cidr, "dev", "eth0"]);
    assert!(out.status.success(), "{out:?}");
    let only = format!("--nodeport-addresses={}/32", c.node_ip);
    let mode_flag = format!("--proxy-mode={mode}");
    c.start_proxy(&[&only, &mode_flag]);
    let svc = c.create_service("np", "NodePort").await;
    let node_port = svc.node_port.expect("a node port was allocated");
    c.set_endpoints("np", &[10, 11]).await;
    let url = format!("http://{}:{node_port}/", c.node_ip);
    c.wait_reachable(&c.outside, &url).await;
    for ns in [&c.outside, &c.node] {
        let seen = blocking(|| c.count_backends(ns, &url, 30));
        assert_eq!(
            names(&seen),
            BTreeSet::from(["be-a", "be-b"]),
            "NodePort from {ns}: {seen:?}"
        );
    }
    if mode == "nftables" {
        // The ClusterIP of the same Service works too.
        let cluster_url = format!("http://{}:80/", svc.cluster_ip);
        assert!(c.net.get(&c.outside, &cluster_url).is_ok());
    } else {
        assert!(c.table().is_none(), "userspace mode programs no table");
        // Endpoint changes reach the listener: only be-b is left.
        c.set_endpoints("np", &[11]).await;
        wait_until(TIMEOUT, "only be-b answers", || async {
            let seen = blocking(|| c.count_backends(&c.outside, &url, 10));
            (names(&seen) == BTreeSet::from(["be-b"])).then_some(())
        })
        .await;
    }
    // The node's other address does not take NodePort traffic: nothing listens there.
    let err = blocking(|| {
        c.net
            .get(&c.outside, &format!("http://{other}:{node_port}/"))
    })
    .expect_err("not a NodePort address");
    assert!(err.contains("(7)"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_without_endpoints_are_rejected_fast() {
    let mut c = Cluster::start().await;
    blocking(|| c.net.backend("be-a", 10, 8080));
    // A Service another proxy implements is none of ours.
    let services: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::namespaced(c.client.clone(), "default");
    let other: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "other", "labels": {"service.kubernetes.io/service-proxy-name": "someone-else"}},
        "spec": {"ports": [{"port": 80}]}
    }))
    .unwrap();
    let other = services.create(&Default::default(), &other).await.unwrap();
    let other_ip = other.spec.unwrap().cluster_ip.unwrap();
    c.start_proxy(&[]);
    let svc = c.create_service("empty", "NodePort").await;
    let node_port = svc.node_port.unwrap();
    let cluster_ip = svc.cluster_ip.to_string();
    wait_until(TIMEOUT, "the service in the no-endpoint map", || async {
        blocking(|| c.table().filter(|t| t.contains(&cluster_ip)).map(|_| ()))
    })
    .await;
    let table = c.table().unwrap();
    assert!(!table.contains(&format!("{other_ip} . tcp")), "{table}");
    let cluster_url = format!("http://{cluster_ip}:80/");
    let node_url = format!("http://{}:{node_port}/", c.node_ip);
    for (ns, url) in [
        (&c.node, &cluster_url),
        (&c.outside, &cluster_url),
        (&c.outside, &node_url),
        (&c.node, &node_url),
    ] {
        let started = Instant::now();
        let err = blocking(|| c.net.get(ns, url)).expect_err("no endpoints: must fail");
        let took = started.elapsed();
        assert!(
            err.contains("(7)") && took < Duration::from_secs(2),
            "{url} from {ns}: expected a fast refusal, got {err:?} after {took:?}"
        );
    }
    // An endpoint appears: the same URLs answer.
    c.set_endpoints("empty", &[10]).await;
    c.wait_reachable(&c.outside, &node_url).await;
    assert_eq!(
        blocking(|| c.net.get(&c.node, &cluster_url)).unwrap(),
        "be-a"
    );
    // And it goes away again: refused again, not hanging.
    c.delete_endpoints("empty").await;
    wait_until(
        TIMEOUT,
        "refusal after the endpoints were deleted",
        || async {
            blocking(|| {
                c.net
                    .get(&c.node, &cluster_url)
                    .err()
                    .filter(|e| e.contains("(7)"))
            })
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_healthz_and_metrics_and_cleans_up_only_its_table() {
    let mut c = Cluster::start().await;
    // Another component's table in the node namespace must survive --cleanup.
    let out = c
        .net
        .exec(&c.node, &["nft", "add", "table", "ip", "pikube-kubelet"]);
    assert!(out.status.success(), "{out:?}");
    c.start_proxy(&[]);
    // The apiserver's own `kubernetes` Service gets programmed.
    wait_until(TIMEOUT, "the kubernetes service programmed", || async {
        blocking(|| {
            c.table()
                .filter(|t| t.contains("10.96.0.1 . tcp . 443"))
                .map(|_| ())
        })
    })
    .await;
    let healthz = format!("http://{}:10256/healthz", c.node_ip);
    // The table of each family is applied before the sync counts as done.
    let (json, body) = wait_until(TIMEOUT, "healthz with lastUpdated", || async {
        let body = blocking(|| c.net.get(&c.outside, &healthz)).ok()?;
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        json["lastUpdated"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
            .then_some((json, body))
    })
    .await;
    assert_eq!(json["nodeEligible"], true, "{body}");
    assert!(json["currentTime"].as_str().is_some(), "{body}");
    let metrics = wait_until(TIMEOUT, "metrics with a sync", || async {
        blocking(|| c.net.get(&c.node, "http://127.0.0.1:10249/metrics").ok())
            .filter(|m| m.contains("kubeproxy_sync_proxy_rules_duration_seconds_count"))
    })
    .await;
    for name in [
        "kubeproxy_sync_proxy_rules_duration_seconds",
        "kubeproxy_network_programming_duration_seconds",
        "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {name}")),
            "{name}:\n{metrics}"
        );
    }
    let last = metrics
        .lines()
        .find_map(|l| l.strip_prefix("kubeproxy_sync_proxy_rules_last_timestamp_seconds "))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap();
    assert!(last > 1.7e9, "{last}");
    // Metrics are on loopback only, by default.
    assert!(blocking(|| c
        .net
        .get(&c.outside, &format!("http://{}:10249/metrics", c.node_ip)))
    .is_err());

    assert!(c.table6().is_some(), "no ip6 table");
    c.net.kill("kube-proxy");
    let out = blocking(|| {
        c.net
            .exec(&c.node, &[env!("CARGO_BIN_EXE_kube-proxy"), "--cleanup"])
    });
    assert!(out.status.success(), "{out:?}");
    assert!(c.table().is_none(), "the table survived --cleanup");
    assert!(c.table6().is_none(), "the ip6 table survived --cleanup");
    let out = c
        .net
        .exec(&c.node, &["nft", "list", "table", "ip", "pikube-kubelet"]);
    assert!(out.status.success(), "--cleanup removed another table");
    // A second cleanup (nothing left) succeeds too.
    let out = c
        .net
        .exec(&c.node, &[env!("CARGO_BIN_EXE_kube-proxy"), "--cleanup"]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn bad_flags_exit_64() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kube-proxy"))
            .args(args)
            .output()
            .unwrap()
    };
    for args in [
        &["--proxy-mode=ipvs"][..],
        &["--no-such-flag"],
        &["--cluster-cidr=10.0.0.0/40"],
        &["--config=/does/not/exist"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {out:?}");
        assert!(!out.stderr.is_empty(), "{args:?}: no message");
    }
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--nodeport-addresses"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ip_affinity_sticks_to_one_endpoint() {
    let mut c = Cluster::start().await;
    blocking(|| {
        for (name, host) in BACKENDS {
            c.net.backend(name, host, 8080);
        }
    });
    c.start_proxy(&[]);
    let svc = c
        .create_service_with(
            "sticky",
            serde_json::json!({"sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}}}),
        )
        .await;
    c.set_endpoints("sticky", &[10, 11, 12]).await;
    let url = format!("http://{}:80/", svc.cluster_ip);
    c.wait_reachable(&c.node, &url).await;
    for ns in [&c.node, &c.outside] {
        let seen = blocking(|| c.count_backends(ns, &url, 20));
        assert_eq!(seen.len(), 1, "from {ns}: {seen:?}");
    }
    let table = c.table().unwrap();
    assert!(table.contains("timeout 10m"), "{table}");
    // A new timeout re-creates the affinity sets in place.
    c.patch_service(
        "sticky",
        serde_json::json!({"spec": {"sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 1200}}}}),
    )
    .await;
    wait_until(TIMEOUT, "the new affinity timeout", || async {
        blocking(|| c.table().filter(|t| t.contains("timeout 20m")).map(|_| ()))
    })
    .await;
    let log = c.proxy_log();
    assert!(!log.contains("failed"), "{log}");
    let seen = blocking(|| c.count_backends(&c.node, &url, 10));
    assert_eq!(seen.len(), 1, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_traffic_policy_local_keeps_the_client_ip() {
    let mut c = Cluster::start().await;
    let node = c.node.clone();
    let (_, pod_ip) = blocking(|| c.net.pod(&node, "pod-a", 1, 8080));
    blocking(|| c.net.backend("be-b", 11, 8080));
    c.start_proxy(&[]);
    let svc = c
        .create_service_with(
            "local",
            serde_json::json!({"type": "NodePort", "externalTrafficPolicy": "Local"}),
        )
        .await;
    c.set_endpoints_on(
        "local",
        &[(pod_ip, crate::common::NODE), (c.net.ip(11), "node-b")],
    )
    .await;
    let node_port = svc.node_port.unwrap();
    let url = format!("http://{}:{node_port}/", c.node_ip);
    let ip_url = format!("{url}cgi-bin/ip");
    c.wait_reachable(&c.outside, &url).await;
    // Outside clients reach only this node's endpoint, with their own address.
    let seen = blocking(|| c.count_backends(&c.outside, &url, 20));
    assert_eq!(names(&seen), BTreeSet::from(["pod-a"]), "{seen:?}");
    let client_ip = c.net.ip(crate::common::CLIENT_HOST).to_string();
    assert_eq!(
        source_ip(&blocking(|| c.net.get(&c.outside, &ip_url)).unwrap()),
        client_ip
    );
    // The ClusterIP (internal policy Cluster) still reaches both.
    let cluster_url = format!("http://{}:80/", svc.cluster_ip);
    let seen = blocking(|| c.count_backends(&c.node, &cluster_url, 30));
    assert_eq!(names(&seen), BTreeSet::from(["be-b", "pod-a"]), "{seen:?}");

    // Without a local endpoint, outside clients are dropped (not sent to another node,
    // which would lose their address) while the node itself still reaches be-b.
    c.set_endpoints_on("local", &[(c.net.ip(11), "node-b")])
        .await;
    let pod_dnat = format!("{pod_ip} . 8080");
    wait_until(
        TIMEOUT,
        "the local endpoint gone from the table",
        || async { blocking(|| c.table().filter(|t| !t.contains(&pod_dnat)).map(|_| ())) },
    )
    .await;
    let seen = blocking(|| c.count_backends(&c.node, &url, 5));
    assert_eq!(names(&seen), BTreeSet::from(["be-b"]), "{seen:?}");
    let err = blocking(|| c.net.get(&c.outside, &url)).expect_err("dropped");
    assert!(err.contains("(28)"), "expected a timeout (drop), got {err}");
    c.set_endpoints_on(
        "local",
        &[(pod_ip, crate::common::NODE), (c.net.ip(11), "node-b")],
    )
    .await;

    // Policy Cluster: both endpoints, and the source is masqueraded to the node.
    c.patch_service(
        "local",
        serde_json::json!({"spec": {"externalTrafficPolicy": "Cluster"}}),
    )
    .await;
    wait_until(TIMEOUT, "both endpoints through the NodePort", || async {
        blocking(|| {
            let seen = c.count_backends(&c.outside, &url, 20);
            (seen.len() == 2).then_some(())
        })
    })
    .await;
    let sources: BTreeSet<String> = blocking(|| {
        (0..10)
            .map(|_| source_ip(&c.net.get(&c.outside, &ip_url).unwrap()))
            .collect()
    });
    assert!(
        !sources.contains(&client_ip),
        "not masqueraded: {sources:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_reaches_itself_through_its_service() {
    let mut c = Cluster::start().await;
    let node = c.node.clone();
    let (pod_ns, pod_ip) = blocking(|| c.net.pod(&node, "pod-a", 1, 8080));
    c.start_proxy(&[]);
    let svc = c.create_service("hairpin", "ClusterIP").await;
    c.set_endpoints_on("hairpin", &[(pod_ip, crate::common::NODE)])
        .await;
    let url = format!("http://{}:80/", svc.cluster_ip);
    c.wait_reachable(&pod_ns, &url).await;
    assert_eq!(blocking(|| c.net.get(&pod_ns, &url)).unwrap(), "pod-a");
    // Hairpin traffic is masqueraded: the pod sees the node's side of its link, not
    // itself (it would answer itself directly and the connection would never open).
    let source = blocking(|| c.net.get(&pod_ns, &format!("{url}cgi-bin/ip"))).unwrap();
    assert_eq!(
        source_ip(&source),
        format!("{}", {
            let o = pod_ip.octets();
            std::net::Ipv4Addr::new(o[0], o[1], o[2], o[3] - 1)
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_goes_stale_when_syncs_fail_and_follows_the_node() {
    let mut c = Cluster::start().await;
    // The real nft behind a switch: while `fail` exists every transaction fails.
    let bin = c.net.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let fail = c.net.dir.path().join("fail");
    let real = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("nft installed");
    let wrapper = bin.join("nft");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ -e {} ] && [ \"$1\" = -f ]; then echo injected failure >&2; exit 1; fi\nexec {real} \"$@\"\n",
            fail.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    c.start_proxy_with_env(
        &["--sync-period=1s", "--min-sync-period=200ms"],
        &[("PATH", path)],
    );
    let healthz = format!("http://{}:10256/healthz", c.node_ip);
    let livez = format!("http://{}:10256/livez", c.node_ip);
    // The first sync programmed the table, and the rules are fresh.
    wait_until(TIMEOUT, "the first sync", || async {
        blocking(|| c.table().map(|_| ()))
    })
    .await;
    wait_until(TIMEOUT, "healthz 200", || async {
        blocking(|| (c.net.status(&c.outside, &healthz) == Some(200)).then_some(()))
    })
    .await;

    // Syncs start failing and a change is waiting: stale after 2 × --sync-period.
    std::fs::write(&fail, "").unwrap();
    let svc = c.create_service("late", "ClusterIP").await;
    let failing = Instant::now();
    wait_until(TIMEOUT, "healthz 503", || async {
        blocking(|| (c.net.status(&c.outside, &healthz) == Some(503)).then_some(()))
    })
    .await;
    assert!(
        failing.elapsed() >= Duration::from_secs(1),
        "{:?}",
        failing.elapsed()
    );
    assert_eq!(blocking(|| c.net.status(&c.outside, &livez)), Some(503));
    let metrics = blocking(|| c.net.get(&c.node, "http://127.0.0.1:10249/metrics")).unwrap();
    assert!(
        !metrics.contains("kubeproxy_sync_proxy_rules_nftables_sync_failures_total 0"),
        "{metrics}"
    );

    // nft works again: the next sync rebuilds the table and health comes back.
    std::fs::remove_file(&fail).unwrap();
    wait_until(TIMEOUT, "healthz 200 again", || async {
        blocking(|| (c.net.status(&c.outside, &healthz) == Some(200)).then_some(()))
    })
    .await;
    let ip = svc.cluster_ip.to_string();
    assert!(
        c.table().unwrap().contains(&ip),
        "the change made while failing is programmed"
    );

    // This node's Node object goes away: /healthz fails (load balancers stop sending
    // traffic here), /livez does not.
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(c.client.clone());
    let node: k8s_openapi::api::core::v1::Node =
        serde_json::from_value(serde_json::json!({"metadata": {"name": crate::common::NODE}}))
            .unwrap();
    nodes.create(&Default::default(), &node).await.unwrap();
    nodes
        .delete(crate::common::NODE, &Default::default())
        .await
        .unwrap();
    wait_until(TIMEOUT, "healthz 503 for a deleted node", || async {
        blocking(|| (c.net.status(&c.outside, &healthz) == Some(503)).then_some(()))
    })
    .await;
    assert_eq!(blocking(|| c.net.status(&c.outside, &livez)), Some(200));
    let body = blocking(|| c.net.get(&c.outside, &healthz)).unwrap();
    assert!(body.contains("\"nodeEligible\":false"), "{body}");
}
