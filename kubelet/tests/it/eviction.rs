//! Eviction on a real containerd under real — but safe — memory pressure: the
//! `memory.available` threshold is set 4 GiB above what the node has available, so the
//! threshold holds whatever else the machine does and nothing is starved. The kubelet
//! evicts one pod per round in upstream's order (BestEffort using memory, then Burstable
//! within its requests, then Guaranteed), each Failed with reason Evicted, a
//! DisruptionTarget condition and an Evicted event; the node shows MemoryPressure and the
//! memory-pressure taint, and rejects a new BestEffort pod. Once the threshold is lowered,
//! the condition and taint clear after the pressure transition period, not before. The
//! same for disk: `nodefs.available` 10 GiB above what is free evicts by ephemeral-storage
//! use, sets DiskPressure and its taint, and turns away every new pod.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;
use kubelet::nodestatus::{EvictionHard, Threshold};

use crate::common::{phase, wait_until, TestNode, TIMEOUT};
use crate::stats::{pod_stats, reachable_by_node_proxy, summary, MI};

const MONITORING: Duration = Duration::from_secs(2);
const TRANSITION: Duration = Duration::from_secs(8);

fn reason(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.reason.as_deref())
        .unwrap_or("")
}

fn message(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.message.as_deref())
        .unwrap_or("")
}

/// When the DisruptionTarget condition (reason TerminationByKubelet) was set.
fn disrupted_at(p: &Pod) -> jiff::Timestamp {
    let c = p
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "DisruptionTarget"))
        .unwrap_or_else(|| panic!("no DisruptionTarget on {:?}", p.metadata.name));
    assert_eq!(c.status, "True");
    assert_eq!(c.reason.as_deref(), Some("TerminationByKubelet"));
    c.last_transition_time.as_ref().unwrap().0
}

fn node_condition(node: &Node, type_: &str) -> (String, String, jiff::Timestamp) {
    let c = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_))
        .unwrap();
    (
        c.status.clone(),
        c.reason.clone().unwrap_or_default(),
        c.last_transition_time.as_ref().unwrap().0,
    )
}

fn has_taint(node: &Node, key: &str) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == key && t.effect == "NoSchedule"))
}

async fn evicted(node: &TestNode, name: &str) -> Pod {
    node.wait_pod(name, "pod evicted", |p| {
        phase(p) == "Failed" && reason(p) == "Evicted"
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_pressure_evicts_in_upstream_order_taints_rejects_and_clears() {
    let node = TestNode::start_with(|s| {
        reachable_by_node_proxy(s);
        s.housekeeping_interval = MONITORING;
        s.eviction_pressure_transition_period = TRANSITION;
    })
    .await;
    let eviction = node.kubelet.as_ref().unwrap().1.eviction.clone();
    let sleep = serde_json::json!(["sleep", "3600"]);
    node.create_pod(
        "besteffort",
        serde_json::json!({"containers": [{
            "name": "main", "image": "busybox:1.35",
            // The shell keeps its 16 MB (it would exec a last plain `sleep`).
            "command": ["sh", "-c", "x=$(yes | head -c 16000000); sleep 3600 & wait"],
        }]}),
    )
    .await;
    node.create_pod(
        "burstable",
        serde_json::json!({"containers": [{
            "name": "main", "image": "busybox:1.35", "command": sleep,
            "resources": {"requests": {"memory": "64Mi"}},
        }]}),
    )
    .await;
    node.create_pod(
        "guaranteed",
        serde_json::json!({"containers": [{
            "name": "main", "image": "busybox:1.35", "command": sleep,
            "resources": {"limits": {"cpu": "100m", "memory": "128Mi"}},
        }]}),
    )
    .await;
    for name in ["besteffort", "burstable", "guaranteed"] {
        node.wait_pod(name, "pod Running", |p| phase(p) == "Running")
            .await;
    }
    // The BestEffort pod's 16 MB show in the stats before pressure starts.
    let available = wait_until(
        TIMEOUT,
        "the BestEffort pod's memory in the summary",
        || {
            let s = summary(&node);
            let filled = pod_stats(&s, "besteffort")
                .is_some_and(|p| p["memory"]["workingSetBytes"].as_u64().unwrap_or(0) > 15 * MI);
            let available = s["node"]["memory"]["availableBytes"].as_u64();
            async move { available.filter(|_| filled) }
        },
    )
    .await;

    // Pressure that holds: 4 GiB more than is available (other builds on the machine
    // come and go by a GiB or two).
    eviction.set_thresholds(EvictionHard {
        memory: Threshold::Bytes(available + 4096 * MI),
        ..EvictionHard::default()
    });
    let first = evicted(&node, "besteffort").await;
    assert!(
        message(&first).starts_with("The node was low on resource: memory. Threshold quantity: "),
        "{}",
        message(&first)
    );
    assert!(
        message(&first).contains("Container main was using ")
            && message(&first).ends_with("request is 0, has larger consumption of memory. "),
        "{}",
        message(&first)
    );
    let nodes: Api<Node> = Api::all(node.client.clone());
    let pressured = wait_until(TIMEOUT, "MemoryPressure and its taint on the node", || {
        let nodes = nodes.clone();
        let name = node.name.clone();
        async move {
            let n = nodes.get(&name).await.ok()?;
            (node_condition(&n, "MemoryPressure").0 == "True"
                && has_taint(&n, "node.kubernetes.io/memory-pressure"))
            .then_some(n)
        }
    })
    .await;
    assert_eq!(
        node_condition(&pressured, "MemoryPressure").1,
        "KubeletHasInsufficientMemory"
    );
    assert_eq!(node_condition(&pressured, "DiskPressure").0, "False");
    node.wait_events("besteffort", &["Evicted"]).await;

    // One per round, in upstream's order.
    let second = evicted(&node, "burstable").await;
    let third = evicted(&node, "guaranteed").await;
    assert!(
        disrupted_at(&first) < disrupted_at(&second)
            && disrupted_at(&second) < disrupted_at(&third),
        "eviction order: besteffort {}, burstable {}, guaranteed {}",
        disrupted_at(&first),
        disrupted_at(&second),
        disrupted_at(&third)
    );
    assert!(
        node.metrics_text()
            .contains("kubelet_evictions{eviction_signal=\"memory.available\"} 3"),
        "{}",
        node.metrics_text()
    );
    // Evicted pods stay stopped: their containers are not restarted.
    let runtime = node.containerd.runtime();
    {
        use kubelet::cri::{api, RuntimeService};
        let running = runtime.list_containers(None).await.unwrap();
        assert!(
            running
                .iter()
                .all(|c| c.state() != api::ContainerState::ContainerRunning),
            "{running:?}"
        );
    }

    // Under memory pressure a new BestEffort pod is rejected and never runs.
    node.create_pod(
        "late",
        serde_json::json!({"containers": [{
            "name": "main", "image": "busybox:1.35", "command": ["sleep", "3600"],
        }]}),
    )
    .await;
    let late = evicted(&node, "late").await;
    assert_eq!(
        message(&late),
        "Pod was rejected: The node had condition: [MemoryPressure]. "
    );
    assert!(late
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .all(|c| c.container_id.is_none()));

    // Lowered back to the default: the condition holds for the transition period.
    eviction.set_thresholds(EvictionHard::default());
    let lowered = jiff::Timestamp::now();
    let started = Instant::now();
    let cleared = wait_until(TIMEOUT, "MemoryPressure cleared and untainted", || {
        let nodes = nodes.clone();
        let name = node.name.clone();
        async move {
            let n = nodes.get(&name).await.ok()?;
            (node_condition(&n, "MemoryPressure").0 == "False"
                && !has_taint(&n, "node.kubernetes.io/memory-pressure"))
            .then_some(n)
        }
    })
    .await;
    let (_, why, at) = node_condition(&cleared, "MemoryPressure");
    assert_eq!(why, "KubeletHasSufficientMemory");
    // Condition times have whole seconds; the last round that met the threshold may have
    // run up to one monitoring period before the threshold was lowered.
    let held = at.duration_since(lowered);
    assert!(
        started.elapsed() + Duration::from_secs(1) >= TRANSITION - MONITORING
            && held.as_secs_f64() + 1.0 >= (TRANSITION - MONITORING).as_secs_f64(),
        "cleared {held:?} after lowering the threshold; transition period {TRANSITION:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_pressure_evicts_by_ephemeral_storage_and_rejects_every_new_pod() {
    let node = TestNode::start_with(|s| {
        reachable_by_node_proxy(s);
        s.housekeeping_interval = MONITORING;
        s.eviction_pressure_transition_period = MONITORING;
    })
    .await;
    let eviction = node.kubelet.as_ref().unwrap().1.eviction.clone();
    node.create_pod(
        "writer",
        serde_json::json!({"containers": [{
            "name": "main", "image": "busybox:1.35",
            "command": ["sh", "-c", "dd if=/dev/zero of=/data bs=1M count=8 && sleep 3600"],
        }]}),
    )
    .await;
    node.create_pod(
        "within",
        serde_json::json!({"containers": [{
            "name": "main", "image": "busybox:1.35", "command": ["sleep", "3600"],
            "resources": {"requests": {"memory": "16Mi", "ephemeral-storage": "1Gi"}},
        }]}),
    )
    .await;
    for name in ["writer", "within"] {
        node.wait_pod(name, "pod Running", |p| phase(p) == "Running")
            .await;
    }
    let available = wait_until(TIMEOUT, "nodefs in the summary", || {
        let s = summary(&node);
        let both = pod_stats(&s, "writer").is_some() && pod_stats(&s, "within").is_some();
        let available = s["node"]["fs"]["availableBytes"].as_u64();
        async move { available.filter(|_| both) }
    })
    .await;
    eviction.set_thresholds(EvictionHard {
        nodefs: Threshold::Bytes(available + 10 * 1024 * MI),
        ..EvictionHard::default()
    });
    let first = evicted(&node, "writer").await;
    assert!(
        message(&first)
            .starts_with("The node was low on resource: ephemeral-storage. Threshold quantity: "),
        "{}",
        message(&first)
    );
    let nodes: Api<Node> = Api::all(node.client.clone());
    let pressured = wait_until(TIMEOUT, "DiskPressure and its taint on the node", || {
        let nodes = nodes.clone();
        let name = node.name.clone();
        async move {
            let n = nodes.get(&name).await.ok()?;
            (node_condition(&n, "DiskPressure").0 == "True"
                && has_taint(&n, "node.kubernetes.io/disk-pressure"))
            .then_some(n)
        }
    })
    .await;
    assert_eq!(
        node_condition(&pressured, "DiskPressure").1,
        "KubeletHasDiskPressure"
    );
    assert_eq!(node_condition(&pressured, "MemoryPressure").0, "False");
    let second = evicted(&node, "within").await;
    assert!(disrupted_at(&first) < disrupted_at(&second));

    // Under disk pressure even a Burstable pod is turned away.
    node.create_pod(
        "late",
        serde_json::json!({"containers": [{
            "name": "main", "image": "busybox:1.35", "command": ["sleep", "3600"],
            "resources": {"requests": {"memory": "16Mi"}},
        }]}),
    )
    .await;
    let late = evicted(&node, "late").await;
    assert_eq!(
        message(&late),
        "Pod was rejected: The node had condition: [DiskPressure]. "
    );

    eviction.set_thresholds(EvictionHard::default());
    wait_until(TIMEOUT, "DiskPressure cleared and untainted", || {
        let nodes = nodes.clone();
        let name = node.name.clone();
        async move {
            let n = nodes.get(&name).await.ok()?;
            (node_condition(&n, "DiskPressure").0 == "False"
                && !has_taint(&n, "node.kubernetes.io/disk-pressure"))
            .then_some(())
        }
    })
    .await;
}
