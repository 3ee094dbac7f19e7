//! nodelifecycle and taint-eviction: a node whose Lease stops being renewed goes Unknown,
//! is tainted unreachable, and its pods are evicted after their tolerationSeconds; the
//! taints go when the node is back. The test plays the kubelet (Lease renewals, status).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{wait_until, Cluster, TIMEOUT};
use controller_manager::options::ControllerOptions;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

fn ready_status(now: &str) -> serde_json::Value {
    json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
        "message": "kubelet is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now}]}})
}

#[tokio::test]
async fn a_silent_node_is_tainted_and_its_pods_evicted_after_their_tolerations() {
    let options = ControllerOptions {
        node_monitor_grace_period: Duration::from_secs(2),
        node_monitor_period: Duration::from_millis(200),
        ..ControllerOptions::default()
    };
    let c = Cluster::start_with(&["nodelifecycle", "taint-eviction-controller"], options).await;
    let nodes: Api<Node> = Api::all(c.client.clone());
    let now = Timestamp::now().to_string();
    let mut node = json!({"metadata": {"name": "pi-1"}});
    common_merge(&mut node, ready_status(&now));
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(node).unwrap(),
        )
        .await
        .unwrap();
    let leases: Api<Lease> = Api::namespaced(c.client.clone(), "kube-node-lease");
    let lease = json!({"metadata": {"name": "pi-1"}, "spec": {"holderIdentity": "pi-1", "leaseDurationSeconds": 40, "renewTime": Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()}});
    leases
        .create(
            &PostParams::default(),
            &serde_json::from_value(lease).unwrap(),
        )
        .await
        .unwrap();

    // The kubelet's heartbeat: renew the Lease every 300 ms while `alive`.
    let alive = Arc::new(AtomicBool::new(true));
    let heartbeat = {
        let leases = leases.clone();
        let alive = alive.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(300));
            loop {
                tick.tick().await;
                if alive.load(Ordering::SeqCst) {
                    let renew = Timestamp::now()
                        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
                        .to_string();
                    let patch = json!({"spec": {"renewTime": renew}});
                    let _ = leases
                        .patch("pi-1", &PatchParams::default(), &Patch::Merge(patch))
                        .await;
                }
            }
        })
    };

    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let unreachable = |seconds: Option<i64>| {
        let mut t = json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"});
        if let Some(s) = seconds {
            t["tolerationSeconds"] = json!(s);
        }
        t
    };
    for (name, tolerations) in [
        ("plain", json!([])),
        ("short", json!([unreachable(Some(2))])),
        ("forever", json!([unreachable(None)])),
    ] {
        let pod = json!({"metadata": {"name": name}, "spec": {"nodeName": "pi-1", "tolerations": tolerations,
            "containers": [{"name": "c", "image": "busybox"}]}});
        pods.create(
            &PostParams::default(),
            &serde_json::from_value(pod).unwrap(),
        )
        .await
        .unwrap();
    }

    // The kubelet goes silent.
    alive.store(false, Ordering::SeqCst);
    let tainted = wait_until(TIMEOUT, "pi-1 Unknown and tainted unreachable", || {
        let nodes = nodes.clone();
        async move {
            let node = nodes.get("pi-1").await.ok()?;
            let ready = node
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == "Ready")?
                .clone();
            let taints = node.spec.as_ref()?.taints.clone().unwrap_or_default();
            let keys: Vec<(String, String)> = taints
                .iter()
                .map(|t| (t.key.clone(), t.effect.clone()))
                .collect();
            (ready.status == "Unknown"
                && keys.contains(&("node.kubernetes.io/unreachable".into(), "NoSchedule".into()))
                && keys.contains(&("node.kubernetes.io/unreachable".into(), "NoExecute".into())))
            .then_some(ready)
        }
    })
    .await;
    assert_eq!(tainted.reason.as_deref(), Some("NodeStatusUnknown"));
    assert_eq!(
        tainted.message.as_deref(),
        Some("Kubelet stopped posting node status.")
    );

    let deleting = |name: &'static str| {
        let pods = pods.clone();
        async move {
            wait_until(TIMEOUT, &format!("{name} evicted"), || {
                let pods = pods.clone();
                async move {
                    pods.get(name)
                        .await
                        .ok()?
                        .metadata
                        .deletion_timestamp
                        .map(|_| ())
                }
            })
            .await
        }
    };
    deleting("plain").await;
    let evicted_short_at = {
        deleting("short").await;
        Timestamp::now()
    };
    let forever = pods.get("forever").await.unwrap();
    assert!(
        forever.metadata.deletion_timestamp.is_none(),
        "a pod tolerating forever stays"
    );
    let taint_added = nodes
        .get("pi-1")
        .await
        .unwrap()
        .spec
        .unwrap()
        .taints
        .unwrap()
        .into_iter()
        .find(|t| t.effect == "NoExecute")
        .unwrap()
        .time_added
        .unwrap()
        .0;
    assert!(
        evicted_short_at.duration_since(taint_added).as_secs_f64() >= 1.9,
        "short waited its 2 s"
    );

    // The kubelet is back: fresh heartbeat and Ready=True; the taints go.
    alive.store(true, Ordering::SeqCst);
    nodes
        .patch_status(
            "pi-1",
            &PatchParams::default(),
            &Patch::Merge(ready_status(&Timestamp::now().to_string())),
        )
        .await
        .unwrap();
    wait_until(TIMEOUT, "taints removed", || {
        let nodes = nodes.clone();
        async move {
            let node = nodes.get("pi-1").await.ok()?;
            node.spec?
                .taints
                .unwrap_or_default()
                .is_empty()
                .then_some(())
        }
    })
    .await;
    heartbeat.abort();
}

fn common_merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    match (base, extra) {
        (serde_json::Value::Object(b), serde_json::Value::Object(e)) => {
            for (k, v) in e {
                common_merge(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}
