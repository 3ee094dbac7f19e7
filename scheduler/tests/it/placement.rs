//! Each filter and score plugin observed through where real pods land, against a real
//! apiserver and etcd with Node objects created by the test.

use crate::common::{configuration, Cluster};
use serde_json::json;

#[tokio::test]
async fn filters_keep_pods_off_nodes_that_do_not_fit() {
    let c = Cluster::start().await;
    c.create_node("small", "1", "1Gi", json!({})).await;
    c.create_node(
        "big",
        "8",
        "16Gi",
        json!({"metadata": {"labels": {"disk": "ssd"}}}),
    )
    .await;
    c.create_node(
        "cordoned",
        "16",
        "32Gi",
        json!({"spec": {"unschedulable": true}}),
    )
    .await;
    c.create_node(
        "tainted",
        "16",
        "32Gi",
        json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}),
    )
    .await;

    // NodeResourcesFit: 2 cpu fits only big (cordoned and tainted are excluded too).
    c.create_pod("needs-2-cpu", "2", "1Gi", json!({})).await;
    assert_eq!(c.bound_node("needs-2-cpu").await, "big");

    // NodeAffinity: nodeSelector and required node affinity.
    c.create_pod(
        "wants-ssd",
        "",
        "",
        json!({"spec": {"nodeSelector": {"disk": "ssd"}}}),
    )
    .await;
    assert_eq!(c.bound_node("wants-ssd").await, "big");
    c.create_pod(
        "wants-small",
        "",
        "",
        json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["small"]}]}]
        }}}}}),
    )
    .await;
    assert_eq!(c.bound_node("wants-small").await, "small");

    // TaintToleration: only a tolerating pod may use the tainted node.
    c.create_pod(
        "gpu-job",
        "",
        "",
        json!({"spec": {
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}],
            "nodeSelector": {"kubernetes.io/hostname": "tainted"}
        }}),
    )
    .await;
    assert_eq!(c.bound_node("gpu-job").await, "tainted");

    // NodeUnschedulable: a pod tolerating the unschedulable taint may use a cordoned node.
    c.create_pod(
        "tolerates-cordon",
        "",
        "",
        json!({"spec": {
            "tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}],
            "nodeSelector": {"kubernetes.io/hostname": "cordoned"}
        }}),
    )
    .await;
    assert_eq!(c.bound_node("tolerates-cordon").await, "cordoned");

    // ... and one that does not stays pending, with upstream's summary.
    c.create_pod(
        "no-way",
        "",
        "",
        json!({"spec": {"nodeSelector": {"kubernetes.io/hostname": "cordoned"}}}),
    )
    .await;
    let msg = c.unschedulable_message("no-way").await;
    assert_eq!(
        msg,
        "0/4 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, \
         1 node(s) were unschedulable, 2 node(s) didn't match Pod's node affinity/selector. \
         preemption: 0/4 nodes are available: 4 Preemption is not helpful for scheduling."
    );
    assert_eq!(c.node_of("no-way").await, None);
}

#[tokio::test]
async fn host_ports_and_exclusive_disks_spread_pods() {
    let c = Cluster::start().await;
    c.create_node("a", "4", "8Gi", json!({})).await;
    c.create_node("b", "4", "8Gi", json!({})).await;
    let with_port = json!({"spec": {"containers": [{"name": "web", "image": "busybox:1.36",
        "ports": [{"containerPort": 80, "hostPort": 8080}]}]}});
    c.create_pod("web-1", "", "", with_port.clone()).await;
    let first = c.bound_node("web-1").await;
    c.create_pod("web-2", "", "", with_port.clone()).await;
    let second = c.bound_node("web-2").await;
    assert_ne!(first, second, "NodePorts: one hostPort 8080 per node");
    c.create_pod("web-3", "", "", with_port).await;
    let msg = c.unschedulable_message("web-3").await;
    assert!(msg.starts_with("0/2 nodes are available: 2 node(s) didn't have free ports for the requested pod ports."), "{msg}");

    let disk =
        json!({"spec": {"volumes": [{"name": "d", "gcePersistentDisk": {"pdName": "data"}}]}});
    c.create_pod("disk-1", "", "", disk.clone()).await;
    let first = c.bound_node("disk-1").await;
    c.create_pod("disk-2", "", "", disk).await;
    let second = c.bound_node("disk-2").await;
    assert_ne!(
        first, second,
        "VolumeRestrictions: a read-write GCE PD mounts on one node"
    );
}

#[tokio::test]
async fn topology_spread_and_inter_pod_affinity_place_pods_relative_to_others() {
    let c = Cluster::start().await;
    for (name, zone) in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b")] {
        c.create_node(
            name,
            "8",
            "16Gi",
            json!({"metadata": {"labels": {"topology.kubernetes.io/zone": zone}}}),
        )
        .await;
    }
    // PodTopologySpread (DoNotSchedule, maxSkew 1 over zones): 4 pods → 2 per zone.
    let spread = json!({
        "metadata": {"labels": {"app": "spread"}},
        "spec": {"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "spread"}}}]}
    });
    let mut zones = Vec::new();
    for i in 0..4 {
        let name = format!("spread-{i}");
        c.create_pod(&name, "", "", spread.clone()).await;
        let node = c.bound_node(&name).await;
        zones.push(if node.starts_with('a') { "a" } else { "b" });
    }
    assert_eq!(
        zones.iter().filter(|z| **z == "a").count(),
        2,
        "zones: {zones:?}"
    );

    // InterPodAffinity, required anti-affinity on hostname: three "solo" pods, three nodes.
    let solo = json!({
        "metadata": {"labels": {"app": "solo"}},
        "spec": {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "solo"}}, "topologyKey": "kubernetes.io/hostname"}]}}}
    });
    let mut nodes = std::collections::BTreeSet::new();
    for i in 0..4 {
        let name = format!("solo-{i}");
        c.create_pod(&name, "", "", solo.clone()).await;
        nodes.insert(c.bound_node(&name).await);
    }
    assert_eq!(nodes.len(), 4, "one solo pod per node: {nodes:?}");
    c.create_pod("solo-4", "", "", solo).await;
    let msg = c.unschedulable_message("solo-4").await;
    assert!(
        msg.starts_with("0/4 nodes are available: 4 node(s) didn't match pod anti-affinity rules."),
        "{msg}"
    );

    // Required affinity: a pod that must share a zone with the db lands in its zone.
    c.create_pod("db", "", "", json!({"metadata": {"labels": {"app": "db"}}, "spec": {"nodeSelector": {"kubernetes.io/hostname": "b2"}}})).await;
    assert_eq!(c.bound_node("db").await, "b2");
    let near_db = json!({"spec": {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "topology.kubernetes.io/zone"}]}}}});
    for i in 0..3 {
        let name = format!("near-db-{i}");
        c.create_pod(&name, "", "", near_db.clone()).await;
        assert!(
            c.bound_node(&name).await.starts_with('b'),
            "{name} in zone b"
        );
    }
}

/// Profiles with a single score plugin each, so each plugin's preference decides alone.
fn single_score_profiles() -> crate::common::Configuration {
    let plugins = [
        "NodeResourcesFit",
        "NodeResourcesBalancedAllocation",
        "TaintToleration",
        "NodeAffinity",
        "PodTopologySpread",
        "InterPodAffinity",
        "ImageLocality",
    ];
    let mut yaml = String::from("profiles:\n");
    for p in plugins {
        yaml.push_str(&format!(
            "- schedulerName: only-{}\n  plugins:\n    score:\n      disabled: [{{name: \"*\"}}]\n      enabled: [{{name: {p}}}]\n",
            p.to_lowercase()
        ));
    }
    configuration(&yaml)
}

fn with_scheduler(profile: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut v = json!({"spec": {"schedulerName": format!("only-{}", profile.to_lowercase())}});
    crate::common::merge(&mut v, extra);
    v
}

#[tokio::test]
async fn each_score_plugin_prefers_the_node_upstream_would() {
    let c = Cluster::start_with(single_score_profiles()).await;
    c.create_node(
        "busy",
        "4",
        "8Gi",
        json!({"metadata": {"labels": {"zone": "x"}}}),
    )
    .await;
    c.create_node(
        "idle",
        "4",
        "8Gi",
        json!({
            "metadata": {"labels": {"zone": "y", "disk": "ssd"}},
            "spec": {"taints": [{"key": "slow", "effect": "PreferNoSchedule"}]},
            "status": {"images": [{"names": ["docker.io/library/big-app:1"], "sizeBytes": 900_000_000u64}]}
        }),
    )
    .await;
    // Load "busy" with cpu only.
    c.create_pod("load", "3", "", json!({"spec": {"nodeName": "busy"}}))
        .await;

    // LeastAllocated: the emptier node.
    c.create_pod(
        "fit",
        "500m",
        "512Mi",
        with_scheduler("NodeResourcesFit", json!({})),
    )
    .await;
    assert_eq!(c.bound_node("fit").await, "idle");

    // BalancedAllocation: a memory-heavy pod balances the cpu-heavy node.
    c.create_pod(
        "balanced",
        "",
        "6Gi",
        with_scheduler("NodeResourcesBalancedAllocation", json!({})),
    )
    .await;
    assert_eq!(c.bound_node("balanced").await, "busy");

    // TaintToleration: avoid the untolerated PreferNoSchedule taint.
    c.create_pod(
        "avoid-taint",
        "",
        "",
        with_scheduler("TaintToleration", json!({})),
    )
    .await;
    assert_eq!(c.bound_node("avoid-taint").await, "busy");

    // NodeAffinity preferred term.
    c.create_pod(
        "likes-ssd",
        "",
        "",
        with_scheduler(
            "NodeAffinity",
            json!({"spec": {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 50, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}}]}}}}),
        ),
    )
    .await;
    assert_eq!(c.bound_node("likes-ssd").await, "idle");

    // ImageLocality: the node that has the 900 MB image.
    c.create_pod(
        "big-image",
        "",
        "",
        with_scheduler("ImageLocality", json!({"spec": {"containers": [{"name": "app", "image": "docker.io/library/big-app:1"}]}})),
    )
    .await;
    assert_eq!(c.bound_node("big-image").await, "idle");

    // PodTopologySpread (ScheduleAnyway): the zone with fewer matching pods.
    c.create_pod(
        "web-0",
        "",
        "",
        json!({"metadata": {"labels": {"app": "web"}}, "spec": {"nodeName": "busy"}}),
    )
    .await;
    c.create_pod(
        "web-1",
        "",
        "",
        with_scheduler(
            "PodTopologySpread",
            json!({"metadata": {"labels": {"app": "web"}}, "spec": {"topologySpreadConstraints": [{"maxSkew": 1,
                "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": {"app": "web"}}}]}}),
        ),
    )
    .await;
    assert_eq!(c.bound_node("web-1").await, "idle");

    // InterPodAffinity preferred: next to the cache pod.
    c.create_pod(
        "cache",
        "",
        "",
        json!({"metadata": {"labels": {"app": "cache"}}, "spec": {"nodeName": "busy"}}),
    )
    .await;
    c.create_pod(
        "near-cache",
        "",
        "",
        with_scheduler(
            "InterPodAffinity",
            json!({"spec": {"affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100,
                "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "kubernetes.io/hostname"}}]}}}}),
        ),
    )
    .await;
    assert_eq!(c.bound_node("near-cache").await, "busy");
}
