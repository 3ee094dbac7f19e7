//! Stats on a real containerd, read as a user reads them: `kubectl get --raw
//! /api/v1/nodes/<node>/proxy/stats/summary` and `.../proxy/metrics/resource` through the
//! apiserver's nodes/proxy (also with metrics-server's `only_cpu_and_memory`), and the
//! kubelet's own /metrics. A pod burning CPU (capped at
//! 100m) and holding 16 MB shows CPU time, a CPU rate and its working set for itself and
//! its container; once deleted it is gone from the summary and from every series.

use std::time::Duration;

use kube::api::{Api, DeleteParams};
use serde_json::Value;

use crate::common::{phase, wait_until, TestNode, TIMEOUT};

pub const MI: u64 = 1024 * 1024;

/// Serves the kubelet port on the host's own address: the apiserver's nodes/proxy
/// refuses loopback nodes, as upstream's does.
pub fn reachable_by_node_proxy(s: &mut kubelet::app::Settings) {
    let ip = kubelet::app::default_node_ip();
    s.node_ip = Some(ip);
    s.serving = Some(std::net::SocketAddr::new(ip, 0));
}

/// A node whose stats are refreshed every second.
pub async fn node_with_fast_housekeeping() -> TestNode {
    TestNode::start_with(|s| {
        reachable_by_node_proxy(s);
        s.housekeeping_interval = Duration::from_secs(1);
    })
    .await
}

/// `kubectl get --raw` of a kubelet path through the apiserver's nodes/proxy.
pub fn kubelet_raw(node: &TestNode, path: &str) -> String {
    node.api.kubectl_ok(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{}/proxy{path}", node.name),
    ])
}

pub fn summary(node: &TestNode) -> Value {
    serde_json::from_str(&kubelet_raw(node, "/stats/summary")).expect("summary is JSON")
}

pub fn pod_stats<'a>(summary: &'a Value, name: &str) -> Option<&'a Value> {
    summary["pods"]
        .as_array()?
        .iter()
        .find(|p| p["podRef"]["name"] == name && p["podRef"]["namespace"] == "default")
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// The value of the series `name{labels}` in a text exposition, if present.
fn series(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_pod_shows_cpu_and_memory_in_summary_and_metrics_until_deleted() {
    let node = node_with_fast_housekeeping().await;
    let created = node
        .create_pod(
            "busy",
            serde_json::json!({"containers": [{
                "name": "main", "image": "busybox:1.35",
                "command": ["sh", "-c",
                    "x=$(yes | head -c 16000000); while true; do :; done"],
                "resources": {"limits": {"cpu": "100m", "memory": "128Mi"}},
            }]}),
        )
        .await;
    let uid = created.metadata.uid.clone().unwrap();
    node.wait_pod("busy", "pod Running", |p| phase(p) == "Running")
        .await;

    // The CPU rate needs two samples and the shell a moment to fill its 16 MB.
    let taken = wait_until(TIMEOUT, "cpu rate and 16 MB in the summary", || {
        let s = summary(&node);
        let ok = pod_stats(&s, "busy").is_some_and(|p| {
            let c = &p["containers"][0];
            // The working set counts page cache too: wait on the RSS, which passes
            // 15 MiB only once the shell holds the whole string.
            u(&c["cpu"]["usageNanoCores"]) > 0
                && u(&c["memory"]["workingSetBytes"]) > 15 * MI
                && u(&c["memory"]["rssBytes"]) > 15 * MI
        });
        async move { ok.then_some(s) }
    })
    .await;

    let n = &taken["node"];
    assert_eq!(n["nodeName"], node.name.as_str());
    assert!(n["startTime"].is_string());
    assert!(u(&n["cpu"]["usageCoreNanoSeconds"]) > 0);
    assert!(n["cpu"]["time"].is_string());
    for field in [
        "availableBytes",
        "usageBytes",
        "workingSetBytes",
        "rssBytes",
    ] {
        assert!(u(&n["memory"][field]) > 0, "node memory {field}: {n}");
    }
    assert!(u(&n["fs"]["capacityBytes"]) > u(&n["fs"]["availableBytes"]));
    assert!(u(&n["fs"]["inodes"]) > 0);
    // containerd sums its snapshots every 10 s: the first answers may say 0.
    assert!(n["runtime"]["imageFs"]["usedBytes"].is_u64(), "{n}");
    assert!(u(&n["runtime"]["imageFs"]["capacityBytes"]) > 0, "{n}");
    let pods_cgroup = &n["systemContainers"][0];
    assert_eq!(pods_cgroup["name"], "pods");
    assert!(
        u(&pods_cgroup["memory"]["workingSetBytes"]) > 15 * MI,
        "{n}"
    );
    assert!(u(&pods_cgroup["cpu"]["usageCoreNanoSeconds"]) > 0);
    assert!(u(&n["rlimit"]["maxpid"]) > 0);
    assert!(u(&n["rlimit"]["curproc"]) > 0);

    let pod = pod_stats(&taken, "busy").unwrap();
    assert_eq!(pod["podRef"]["uid"], uid.as_str());
    assert!(pod["startTime"].is_string());
    assert!(u(&pod["cpu"]["usageCoreNanoSeconds"]) > 0);
    assert!(
        u(&pod["memory"]["workingSetBytes"])
            >= u(&pod["containers"][0]["memory"]["workingSetBytes"])
    );
    let c = &pod["containers"][0];
    assert_eq!(c["name"], "main");
    assert!(c["startTime"].is_string());
    assert!(u(&c["cpu"]["usageCoreNanoSeconds"]) > 0);
    // Capped at 100m: the rate stays well under one core.
    assert!(u(&c["cpu"]["usageNanoCores"]) < 600_000_000, "{c}");
    assert!(u(&c["memory"]["usageBytes"]) >= u(&c["memory"]["workingSetBytes"]));
    assert!(u(&c["memory"]["rssBytes"]) > 15 * MI, "{c}");
    assert!(c["rootfs"]["usedBytes"].is_u64(), "{c}");
    assert!(c["logs"]["usedBytes"].is_u64(), "{c}");
    assert!(pod["ephemeral-storage"]["usedBytes"].is_u64());

    // metrics-server's query: CPU and memory only.
    let slim: Value = serde_json::from_str(&kubelet_raw(
        &node,
        "/stats/summary?only_cpu_and_memory=true",
    ))
    .unwrap();
    assert!(slim["node"]["fs"].is_null() && slim["node"]["memory"].is_object());
    let slim_pod = pod_stats(&slim, "busy").unwrap();
    assert!(slim_pod["containers"][0]["cpu"].is_object());
    assert!(slim_pod["containers"][0]["rootfs"].is_null());
    assert!(slim_pod["ephemeral-storage"].is_null());

    // The resource metrics through the apiserver, and the two container series on the
    // kubelet's own /metrics.
    let labels = "container=\"main\",pod=\"busy\",namespace=\"default\"";
    let resource = kubelet_raw(&node, "/metrics/resource");
    assert!(series(&resource, "container_cpu_usage_seconds_total", labels).unwrap() > 0.0);
    assert!(
        series(&resource, "container_memory_working_set_bytes", labels).unwrap() > (15 * MI) as f64
    );
    assert!(series(
        &resource,
        "pod_memory_working_set_bytes",
        "pod=\"busy\",namespace=\"default\""
    )
    .is_some());
    assert!(
        resource.contains("\nnode_cpu_usage_seconds_total "),
        "{resource}"
    );
    assert!(resource.contains("\nnode_memory_working_set_bytes "));
    assert!(resource.contains("\nscrape_error 0"));
    let own = node.metrics_text();
    assert!(series(&own, "container_cpu_usage_seconds_total", labels).unwrap() > 0.0);
    assert!(series(&own, "container_memory_working_set_bytes", labels).is_some());

    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(node.client.clone(), "default")
        .delete("busy", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    wait_until(
        TIMEOUT,
        "the deleted pod gone from stats and metrics",
        || {
            let gone_summary = pod_stats(&summary(&node), "busy").is_none();
            let resource = kubelet_raw(&node, "/metrics/resource");
            let own = node.metrics_text();
            let gone =
                gone_summary && !resource.contains("pod=\"busy\"") && !own.contains("pod=\"busy\"");
            async move { gone.then_some(()) }
        },
    )
    .await;
}
