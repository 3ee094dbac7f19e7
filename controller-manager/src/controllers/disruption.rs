//! disruption: keeps each PodDisruptionBudget's status — expectedPods, currentHealthy,
//! desiredHealthy, disruptionsAllowed and the DisruptionAllowed condition — which the
//! apiserver's eviction subresource honours (upstream's DisruptionController).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use api_types::selector::LabelSelector;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::ReplicationController;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;
use serde_json::json;

use super::Context;
use crate::cache::Pod;

pub const NAME: &str = "disruption";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("updating the status of PodDisruptionBudget {pdb}: {source}")]
    Status {
        pdb: String,
        #[source]
        source: kube::Error,
    },
}

struct State {
    ctx: Context,
    pods: Store<Pod>,
    replicasets: Store<ReplicaSet>,
    deployments: Store<Deployment>,
    statefulsets: Store<StatefulSet>,
    rcs: Store<ReplicationController>,
}

pub fn start(ctx: &Context) -> BoxFuture<'static, ()> {
    let pdbs = ctx.informers.subscribe::<PodDisruptionBudget>();
    let pdb_store = ctx.informers.store::<PodDisruptionBudget>();
    let pods = ctx.informers.subscribe::<Pod>();
    let state = Arc::new(State {
        ctx: ctx.clone(),
        pods: ctx.informers.store::<Pod>(),
        replicasets: ctx.informers.store::<ReplicaSet>(),
        deployments: ctx.informers.store::<Deployment>(),
        statefulsets: ctx.informers.store::<StatefulSet>(),
        rcs: ctx.informers.store::<ReplicationController>(),
    });
    let by_pod = pdb_store.clone();
    Controller::for_shared_stream(pdbs, pdb_store)
        // A pod changed: the budgets in its namespace that select it.
        .watches_shared_stream(pods, move |pod: Arc<Pod>| {
            let ns = pod.namespace().unwrap_or_default();
            let labels = pod.labels().clone();
            by_pod
                .state()
                .into_iter()
                .filter(|pdb| pdb.namespace().as_deref() == Some(ns.as_str()))
                .filter(|pdb| selector(pdb).is_some_and(|s| s.matches(&labels)))
                .map(|pdb| ObjectRef::from_obj(&*pdb))
                .collect::<Vec<_>>()
        })
        .run(reconcile, error_policy, state)
        .for_each(|_| async {})
        .boxed()
}

fn selector(pdb: &PodDisruptionBudget) -> Option<LabelSelector> {
    // A budget without a selector selects nothing (policy/v1).
    let sel = pdb.spec.as_ref()?.selector.as_ref()?;
    LabelSelector::from_meta(sel).ok()
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Scaled value of an int-or-percent against a total, rounding up as upstream.
pub fn scaled(value: &IntOrString, total: i32) -> Option<i32> {
    match value {
        IntOrString::Int(i) => Some(*i),
        IntOrString::String(s) => {
            let pct: i64 = s.strip_suffix('%')?.parse().ok()?;
            Some(((pct * i64::from(total) + 99) / 100) as i32)
        }
    }
}

/// The replicas of the controller that owns the pod (a Deployment for its ReplicaSets), as
/// upstream's `getExpectedScale`; None for unmanaged pods.
fn controller_scale(state: &State, pod: &Pod) -> Option<(String, i32)> {
    let ns = pod.namespace().unwrap_or_default();
    let owner = pod
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))?;
    match owner.kind.as_str() {
        "ReplicaSet" => {
            let rs = state
                .replicasets
                .get(&ObjectRef::new(&owner.name).within(&ns))?;
            if let Some(d) = rs
                .owner_references()
                .iter()
                .find(|o| o.controller == Some(true) && o.kind == "Deployment")
            {
                let dep = state
                    .deployments
                    .get(&ObjectRef::new(&d.name).within(&ns))?;
                return Some((d.uid.clone(), dep.spec.as_ref()?.replicas.unwrap_or(1)));
            }
            Some((owner.uid.clone(), rs.spec.as_ref()?.replicas.unwrap_or(1)))
        }
        "StatefulSet" => {
            let ss = state
                .statefulsets
                .get(&ObjectRef::new(&owner.name).within(&ns))?;
            Some((owner.uid.clone(), ss.spec.as_ref()?.replicas.unwrap_or(1)))
        }
        "ReplicationController" => {
            let rc = state.rcs.get(&ObjectRef::new(&owner.name).within(&ns))?;
            Some((owner.uid.clone(), rc.spec.as_ref()?.replicas.unwrap_or(1)))
        }
        _ => None,
    }
}

async fn reconcile(pdb: Arc<PodDisruptionBudget>, state: Arc<State>) -> Result<Action, Error> {
    let metrics = state.ctx.metrics.clone();
    metrics.observe(NAME, sync(pdb, state)).await
}

async fn sync(pdb: Arc<PodDisruptionBudget>, state: Arc<State>) -> Result<Action, Error> {
    let ns = pdb.namespace().unwrap_or_default();
    let Some(spec) = pdb.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    let sel = selector(&pdb);
    let pods: Vec<Arc<Pod>> = state
        .pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded") | Some("Failed")
            )
        })
        .filter(|p| sel.as_ref().is_some_and(|s| s.matches(p.labels())))
        .collect();
    let current_healthy = pods.iter().filter(|p| is_ready(p)).count() as i32;
    // expectedPods: the pods' controllers' scale for percentages and maxUnavailable, else
    // the number of pods (upstream).
    let needs_scale = spec.max_unavailable.is_some()
        || matches!(spec.min_available, Some(IntOrString::String(_)));
    let expected = if needs_scale {
        let mut seen = HashSet::new();
        let mut total = 0;
        for pod in &pods {
            if let Some((uid, replicas)) = controller_scale(&state, pod) {
                if seen.insert(uid) {
                    total += replicas;
                }
            }
        }
        total
    } else {
        pods.len() as i32
    };
    let desired_healthy = if let Some(max_unavailable) = &spec.max_unavailable {
        (expected - scaled(max_unavailable, expected).unwrap_or(0)).max(0)
    } else if let Some(min_available) = &spec.min_available {
        scaled(min_available, expected).unwrap_or(0)
    } else {
        0
    };
    let allowed = (current_healthy - desired_healthy).max(0);
    let (reason, message) = if allowed > 0 {
        ("SufficientPods", "")
    } else {
        ("InsufficientPods", "")
    };
    let old = pdb.status.as_ref();
    let unchanged = old.is_some_and(|s| {
        s.current_healthy == current_healthy
            && s.desired_healthy == desired_healthy
            && s.expected_pods == expected
            && s.disruptions_allowed == allowed
            && s.observed_generation == pdb.metadata.generation
    });
    if unchanged {
        return Ok(Action::await_change());
    }
    let was_allowed = old
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "DisruptionAllowed"))
        .map(|c| (c.status.clone(), c.last_transition_time.clone()));
    let status_str = if allowed > 0 { "True" } else { "False" };
    let transition = match was_allowed {
        Some((s, t)) if s == status_str => t.0.to_string(),
        _ => Timestamp::now().to_string(),
    };
    let status = json!({"status": {
        "observedGeneration": pdb.metadata.generation,
        "currentHealthy": current_healthy,
        "desiredHealthy": desired_healthy,
        "expectedPods": expected,
        "disruptionsAllowed": allowed,
        "disruptedPods": old.and_then(|s| s.disrupted_pods.clone()).unwrap_or_default(),
        "conditions": [{"type": "DisruptionAllowed", "status": status_str, "reason": reason,
            "message": message, "lastTransitionTime": transition,
            "observedGeneration": pdb.metadata.generation}],
    }});
    let api: Api<PodDisruptionBudget> = Api::namespaced(state.ctx.client.clone(), &ns);
    match api
        .patch_status(
            &pdb.name_any(),
            &PatchParams::default(),
            &Patch::Merge(status),
        )
        .await
    {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Action::await_change()),
        Err(source) => Err(Error::Status {
            pdb: format!("{ns}/{}", pdb.name_any()),
            source,
        }),
    }
}

fn error_policy(_pdb: Arc<PodDisruptionBudget>, _error: &Error, _state: Arc<State>) -> Action {
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_up() {
        assert_eq!(scaled(&IntOrString::String("50%".into()), 3), Some(2));
        assert_eq!(scaled(&IntOrString::String("10%".into()), 10), Some(1));
        assert_eq!(scaled(&IntOrString::Int(2), 10), Some(2));
        assert_eq!(scaled(&IntOrString::String("x".into()), 10), None);
    }
}
