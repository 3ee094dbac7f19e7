//! nodelifecycle: watches each node's heartbeat (its Lease in `kube-node-lease` and its
//! Ready condition). A node silent for `--node-monitor-grace-period` gets every condition
//! set to Unknown ("Kubelet stopped posting node status."); nodes that are not Ready get
//! upstream's taints — `node.kubernetes.io/unreachable` (Ready=Unknown) or
//! `node.kubernetes.io/not-ready` (Ready=False), NoSchedule and NoExecute — which are
//! removed when the node is Ready again. Pods on a node gone Unknown are marked not Ready.
//! Evicting pods from NoExecute taints is the taint-eviction controller's part.

use std::collections::HashMap;
use std::time::Instant;

use futures::future::BoxFuture;
use futures::FutureExt;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;
use serde_json::json;
use tracing::{info, warn};

use super::Context;
use crate::cache::Pod;

pub const NAME: &str = "nodelifecycle";
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
const LEASE_NAMESPACE: &str = "kube-node-lease";
/// The conditions a silent node's kubelet can no longer vouch for.
const MONITORED: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// What we last saw of a node's heartbeat, and when (on our clock) it last changed.
struct Health {
    lease_renew: Option<String>,
    ready_heartbeat: Option<String>,
    probed: Instant,
}

pub fn start(ctx: &Context) -> BoxFuture<'static, ()> {
    let nodes = ctx.informers.store::<Node>();
    let leases = ctx.informers.store::<Lease>();
    let pods = ctx.informers.store::<Pod>();
    let synced = [
        ctx.informers.synced_signal::<Node>(),
        ctx.informers.synced_signal::<Lease>(),
    ];
    let ctx = ctx.clone();
    async move {
        for kind in &synced {
            kind.wait().await;
        }
        let mut health: HashMap<String, Health> = HashMap::new();
        let mut tick = tokio::time::interval(ctx.options.node_monitor_period);
        loop {
            tick.tick().await;
            let _ = ctx
                .metrics
                .observe(NAME, monitor(&ctx, &nodes, &leases, &pods, &mut health))
                .await;
        }
    }
    .boxed()
}

async fn monitor(
    ctx: &Context,
    nodes: &Store<Node>,
    leases: &Store<Lease>,
    pods: &Store<Pod>,
    health: &mut HashMap<String, Health>,
) -> Result<(), kube::Error> {
    let now = Instant::now();
    let all = nodes.state();
    health.retain(|name, _| all.iter().any(|n| n.name_any() == *name));
    for node in all {
        let name = node.name_any();
        let lease_renew = leases
            .get(&ObjectRef::new(&name).within(LEASE_NAMESPACE))
            .and_then(|l| {
                l.spec
                    .as_ref()?
                    .renew_time
                    .as_ref()
                    .map(|t| t.0.to_string())
            });
        let ready_heartbeat = condition(&node, "Ready")
            .and_then(|c| c.last_heartbeat_time.as_ref().map(|t| t.0.to_string()));
        let entry = health.entry(name.clone()).or_insert_with(|| Health {
            lease_renew: lease_renew.clone(),
            ready_heartbeat: ready_heartbeat.clone(),
            probed: now,
        });
        if entry.lease_renew != lease_renew || entry.ready_heartbeat != ready_heartbeat {
            entry.lease_renew = lease_renew;
            entry.ready_heartbeat = ready_heartbeat;
            entry.probed = now;
        }
        let silent = now.duration_since(entry.probed) > ctx.options.node_monitor_grace_period;
        let ready = condition(&node, "Ready").map(|c| c.status.clone());
        if silent && ready.as_deref() != Some("Unknown") {
            if let Err(e) = mark_unknown(ctx, &node).await {
                warn!(node = %name, error = %e, "marking the node's status Unknown failed");
            } else {
                info!(node = %name, "node stopped posting status; conditions set to Unknown");
                mark_pods_not_ready(ctx, pods, &name).await;
            }
            // The taints follow on the next pass, from the updated condition.
            continue;
        }
        if let Err(e) = reconcile_taints(ctx, &node, ready.as_deref()).await {
            warn!(node = %name, error = %e, "updating the node's taints failed");
        }
    }
    Ok(())
}

fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// Every monitored condition becomes Unknown, as upstream's `tryUpdateNodeHealth`.
async fn mark_unknown(ctx: &Context, node: &Node) -> Result<(), kube::Error> {
    let now = Time(Timestamp::now());
    let existing = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut conditions: Vec<NodeCondition> = Vec::new();
    for type_ in MONITORED {
        let old = existing.iter().find(|c| c.type_ == type_);
        let (reason, message) = match old {
            Some(_) => ("NodeStatusUnknown", "Kubelet stopped posting node status."),
            None => (
                "NodeStatusNeverUpdated",
                "Kubelet never posted node status.",
            ),
        };
        conditions.push(NodeCondition {
            type_: type_.to_string(),
            status: "Unknown".into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_heartbeat_time: old
                .and_then(|c| c.last_heartbeat_time.clone())
                .or(Some(now.clone())),
            last_transition_time: Some(now.clone()),
        });
    }
    for other in existing
        .iter()
        .filter(|c| !MONITORED.contains(&c.type_.as_str()))
    {
        conditions.push(other.clone());
    }
    let api: Api<Node> = Api::all(ctx.client.clone());
    let patch = json!({"status": {"conditions": conditions}});
    api.patch_status(
        &node.name_any(),
        &PatchParams::default(),
        &Patch::Merge(patch),
    )
    .await?;
    Ok(())
}

/// Pods on a node gone silent are no longer Ready (upstream `MarkPodsNotReady`).
async fn mark_pods_not_ready(ctx: &Context, pods: &Store<Pod>, node: &str) {
    for pod in pods.state() {
        if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(node) {
            continue;
        }
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == "True");
        if !ready {
            continue;
        }
        let api: Api<Pod> =
            Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
        let patch = json!({"status": {"conditions": [{
            "type": "Ready", "status": "False", "reason": "NodeNotReady",
            "lastTransitionTime": Timestamp::now().to_string(),
        }]}});
        if let Err(e) = api
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Strategic(patch),
            )
            .await
        {
            warn!(pod = %pod.name_any(), error = %e, "marking the pod not ready failed");
        }
    }
}

/// The not-ready/unreachable taints the Ready condition calls for.
pub fn desired_taints(ready: Option<&str>) -> Vec<(&'static str, &'static str)> {
    let key = match ready {
        Some("True") => return Vec::new(),
        Some("False") => TAINT_NOT_READY,
        // Unknown, or no Ready condition yet.
        _ => TAINT_UNREACHABLE,
    };
    vec![(key, "NoSchedule"), (key, "NoExecute")]
}

async fn reconcile_taints(
    ctx: &Context,
    node: &Node,
    ready: Option<&str>,
) -> Result<(), kube::Error> {
    let current = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let ours = |t: &Taint| t.key == TAINT_UNREACHABLE || t.key == TAINT_NOT_READY;
    // A node that has never reported is left to the kubelet's registration taints.
    if ready.is_none() {
        return Ok(());
    }
    let want = desired_taints(ready);
    let have: Vec<(&str, &str)> = current
        .iter()
        .filter(|t| ours(t))
        .map(|t| (t.key.as_str(), t.effect.as_str()))
        .collect();
    let same = want.len() == have.len() && want.iter().all(|w| have.contains(w));
    if same {
        return Ok(());
    }
    let now = Time(Timestamp::now());
    let mut taints: Vec<Taint> = current.into_iter().filter(|t| !ours(t)).collect();
    for (key, effect) in want {
        taints.push(Taint {
            key: key.into(),
            effect: effect.into(),
            time_added: (effect == "NoExecute").then(|| now.clone()),
            value: None,
        });
    }
    let api: Api<Node> = Api::all(ctx.client.clone());
    // resourceVersion makes this a compare-and-swap with the kubelet's own taint edits.
    let patch = json!({"metadata": {"resourceVersion": node.resource_version()}, "spec": {"taints": taints}});
    api.patch(
        &node.name_any(),
        &PatchParams::default(),
        &Patch::Merge(patch),
    )
    .await?;
    info!(node = %node.name_any(), ready = ?ready, "node taints updated");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taints_follow_the_ready_condition() {
        assert!(desired_taints(Some("True")).is_empty());
        assert_eq!(
            desired_taints(Some("False")),
            [
                (TAINT_NOT_READY, "NoSchedule"),
                (TAINT_NOT_READY, "NoExecute")
            ]
        );
        assert_eq!(
            desired_taints(Some("Unknown")),
            [
                (TAINT_UNREACHABLE, "NoSchedule"),
                (TAINT_UNREACHABLE, "NoExecute")
            ]
        );
    }
}
