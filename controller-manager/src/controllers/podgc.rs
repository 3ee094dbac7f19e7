//! podgc: keeps at most `--terminated-pod-gc-threshold` terminated (Succeeded/Failed) pods,
//! deleting the oldest; force-deletes pods bound to nodes that no longer exist and pods
//! that are terminating but were never scheduled (upstream's PodGC, every 20 s).

use std::collections::HashSet;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::ResourceExt;
use serde_json::json;
use tracing::{info, warn};

use super::controller_utils::only_uid;
use super::Context;
use crate::cache::Pod;

pub const NAME: &str = "podgc";
/// Upstream's `gcCheckPeriod`.
const CHECK_PERIOD: Duration = Duration::from_secs(20);

pub fn start(ctx: &Context) -> BoxFuture<'static, ()> {
    let pods = ctx.informers.store::<Pod>();
    let nodes = ctx.informers.store::<Node>();
    let ctx = ctx.clone();
    let synced = [
        ctx.informers.synced_signal::<Pod>(),
        ctx.informers.synced_signal::<Node>(),
    ];
    async move {
        for kind in &synced {
            kind.wait().await;
        }
        let mut tick = tokio::time::interval(CHECK_PERIOD);
        loop {
            tick.tick().await;
            let _ = ctx
                .metrics
                .observe(NAME, collect(&ctx, &pods, &nodes))
                .await;
        }
    }
    .boxed()
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

/// The terminated pods to delete so at most `threshold` remain: the oldest first.
pub fn excess_terminated(pods: &[std::sync::Arc<Pod>], threshold: i64) -> Vec<std::sync::Arc<Pod>> {
    if threshold <= 0 {
        return Vec::new();
    }
    let mut terminated: Vec<_> = pods
        .iter()
        .filter(|p| {
            matches!(phase(p), Some("Succeeded") | Some("Failed"))
                && p.metadata.deletion_timestamp.is_none()
        })
        .cloned()
        .collect();
    let excess = terminated.len() as i64 - threshold;
    if excess <= 0 {
        return Vec::new();
    }
    terminated.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
    terminated.truncate(excess as usize);
    terminated
}

async fn collect(ctx: &Context, pods: &Store<Pod>, nodes: &Store<Node>) -> Result<(), kube::Error> {
    let all = pods.state();
    for pod in excess_terminated(&all, ctx.options.terminated_pod_gc_threshold) {
        delete(ctx, &pod, false, "PodGC: terminated pod threshold exceeded").await;
    }
    let known: HashSet<String> = nodes.state().iter().map(|n| n.name_any()).collect();
    let node_api: Api<Node> = Api::all(ctx.client.clone());
    let mut confirmed_missing: HashSet<String> = HashSet::new();
    for pod in &all {
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            // Terminating but never scheduled: nothing will ever finish it.
            if pod.metadata.deletion_timestamp.is_some() {
                delete(
                    ctx,
                    pod,
                    true,
                    "PodGC: deleting an unscheduled terminating pod",
                )
                .await;
            }
            continue;
        };
        if known.contains(node.as_str()) {
            continue;
        }
        // Confirm with the apiserver before deleting on a (possibly lagging) cache's word.
        if !confirmed_missing.contains(node.as_str()) {
            if !matches!(node_api.get_opt(&node).await, Ok(None)) {
                continue;
            }
            confirmed_missing.insert(node.to_string());
        }
        delete(ctx, pod, true, "PodGC: node no longer exists").await;
    }
    Ok(())
}

async fn delete(ctx: &Context, pod: &Pod, force: bool, why: &str) {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    if force {
        let condition = json!({"status": {"conditions": [{
            "type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC",
            "message": why, "lastTransitionTime": Timestamp::now().to_string(),
        }]}});
        let _ = api
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(condition))
            .await;
    }
    let mut params = only_uid(pod.uid());
    if force {
        params.grace_period_seconds = Some(0);
    }
    match api.delete(&name, &params).await {
        Ok(_) => info!(pod = %format!("{ns}/{name}"), reason = why, "pod garbage-collected"),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(e) => warn!(pod = %format!("{ns}/{name}"), error = %e, "pod garbage collection failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn pod(name: &str, phase: &str, created: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(
                json!({"metadata": {"name": name, "creationTimestamp": created},
                "status": {"phase": phase}}),
            )
            .unwrap(),
        )
    }

    #[test]
    fn the_oldest_terminated_pods_above_the_threshold_go() {
        let pods = vec![
            pod("new-done", "Succeeded", "2026-01-03T00:00:00Z"),
            pod("running", "Running", "2026-01-01T00:00:00Z"),
            pod("old-failed", "Failed", "2026-01-01T00:00:00Z"),
            pod("mid-done", "Succeeded", "2026-01-02T00:00:00Z"),
        ];
        let names: Vec<String> = excess_terminated(&pods, 1)
            .iter()
            .map(|p| p.name_any())
            .collect();
        assert_eq!(names, ["old-failed", "mid-done"]);
        assert!(excess_terminated(&pods, 3).is_empty());
        assert!(excess_terminated(&pods, 0).is_empty(), "0 turns it off");
    }
}
