//! taint-eviction-controller: a pod on a node with a NoExecute taint it does not tolerate
//! is deleted at once; one that tolerates it for `tolerationSeconds` is deleted when that
//! time has passed since the taint was added (upstream's taint manager).

use std::sync::Arc;
use std::time::Duration;

use api_types::taints::tolerates;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Taint};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::info;

use super::controller_utils::only_uid;
use super::Context;
use crate::cache::Pod;

pub const NAME: &str = "taint-eviction-controller";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("evicting pod {pod}: {source}")]
    Delete {
        pod: String,
        #[source]
        source: kube::Error,
    },
}

struct State {
    ctx: Context,
    nodes: Store<Node>,
}

pub fn start(ctx: &Context) -> BoxFuture<'static, ()> {
    let pods = ctx.informers.subscribe::<Pod>();
    let pod_store = ctx.informers.store::<Pod>();
    let nodes = ctx.informers.subscribe::<Node>();
    let state = Arc::new(State {
        ctx: ctx.clone(),
        nodes: ctx.informers.store::<Node>(),
    });
    let by_node = pod_store.clone();
    Controller::for_shared_stream(pods, pod_store)
        // A node's taints changed: look at the pods on it.
        .watches_shared_stream(nodes, move |node: Arc<Node>| {
            let name = node.name_any();
            by_node
                .state()
                .into_iter()
                .filter(|p| {
                    p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name.as_str())
                })
                .map(|p| ObjectRef::from_obj(&*p))
                .collect::<Vec<_>>()
        })
        .run(reconcile, error_policy, state)
        .for_each(|_| async {})
        .boxed()
}

/// When the pod must go: None = never (all NoExecute taints tolerated forever), else
/// seconds from now (0 or less = now). Upstream: the smallest tolerationSeconds of the
/// tolerations matching each taint, counted from the taint's timeAdded.
pub fn eviction_delay(pod: &Pod, taints: &[Taint], now: Timestamp) -> Option<i64> {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    let mut delay: Option<i64> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        let matching: Vec<_> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Some(0);
        }
        // Any toleration without tolerationSeconds tolerates it forever.
        if matching.iter().any(|t| t.toleration_seconds.is_none()) {
            continue;
        }
        let seconds = matching
            .iter()
            .filter_map(|t| t.toleration_seconds)
            .min()
            .unwrap_or(0)
            .max(0);
        let added = taint.time_added.as_ref().map(|t| t.0).unwrap_or(now);
        let remaining = seconds - now.duration_since(added).as_secs();
        delay = Some(delay.map_or(remaining, |d| d.min(remaining)));
    }
    delay
}

async fn reconcile(pod: Arc<Pod>, state: Arc<State>) -> Result<Action, Error> {
    let metrics = state.ctx.metrics.clone();
    metrics.observe(NAME, evict_if_due(pod, state)).await
}

async fn evict_if_due(pod: Arc<Pod>, state: Arc<State>) -> Result<Action, Error> {
    if pod.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded") | Some("Failed")) {
        return Ok(Action::await_change());
    }
    let Some(node_name) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
        return Ok(Action::await_change());
    };
    let Some(node) = state.nodes.get(&ObjectRef::new(&node_name)) else {
        return Ok(Action::await_change());
    };
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    match eviction_delay(&pod, &taints, Timestamp::now()) {
        None => Ok(Action::await_change()),
        Some(secs) if secs > 0 => Ok(Action::requeue(Duration::from_secs(secs as u64))),
        Some(_) => {
            evict(&state, &pod).await?;
            Ok(Action::await_change())
        }
    }
}

async fn evict(state: &State, pod: &Pod) -> Result<(), Error> {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(state.ctx.client.clone(), &ns);
    let condition = json!({"status": {"conditions": [{
        "type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
        "message": "Taint manager: deleting due to NoExecute taint",
        "lastTransitionTime": Timestamp::now().to_string(),
    }]}});
    let _ = api
        .patch_status(&name, &PatchParams::default(), &Patch::Strategic(condition))
        .await;
    let recorder = state.ctx.recorder(NAME);
    let _ = recorder
        .publish(
            &Event {
                type_: EventType::Normal,
                reason: "TaintManagerEviction".into(),
                note: Some(format!("Marking for deletion Pod {ns}/{name}")),
                action: "Deleting".into(),
                secondary: None,
            },
            &pod.object_ref(&()),
        )
        .await;
    let params = only_uid(pod.uid());
    match api.delete(&name, &params).await {
        Ok(_) => {
            info!(pod = %format!("{ns}/{name}"), "evicted for a NoExecute taint");
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(source) => Err(Error::Delete {
            pod: format!("{ns}/{name}"),
            source,
        }),
    }
}

fn error_policy(_pod: Arc<Pod>, _error: &Error, _state: Arc<State>) -> Action {
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod(tolerations: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [], "tolerations": tolerations}}))
            .unwrap()
    }

    #[test]
    fn delay_is_the_shortest_toleration_from_when_the_taint_was_added() {
        let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let added: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let taint = Taint {
            key: "node.kubernetes.io/unreachable".into(),
            effect: "NoExecute".into(),
            time_added: Some(Time(added)),
            value: None,
        };
        let taints = [taint];
        assert_eq!(eviction_delay(&pod(json!([])), &taints, now), Some(0));
        let forever = pod(
            json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}]),
        );
        assert_eq!(eviction_delay(&forever, &taints, now), None);
        let five_min = pod(
            json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
            "effect": "NoExecute", "tolerationSeconds": 300}]),
        );
        assert_eq!(eviction_delay(&five_min, &taints, now), Some(240));
        let no_schedule = Taint {
            effect: "NoSchedule".into(),
            ..taints[0].clone()
        };
        assert_eq!(eviction_delay(&pod(json!([])), &[no_schedule], now), None);
    }
}
