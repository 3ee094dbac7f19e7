//! A Deployment's status: counts summed over its ReplicaSets, the Available condition,
//! and the Progressing condition with its deadline (upstream's sync.go `calculateStatus`,
//! progress.go and the condition helpers of deployment_util.go).

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const REPLICA_FAILURE: &str = "ReplicaFailure";

pub const MINIMUM_REPLICAS_AVAILABLE: &str = "MinimumReplicasAvailable";
pub const MINIMUM_REPLICAS_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
pub const RS_UPDATED: &str = "ReplicaSetUpdated";
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const PAUSED: &str = "DeploymentPaused";
pub const RESUMED: &str = "DeploymentResumed";
pub const FAILED_RS_CREATE: &str = "ReplicaSetCreateError";

/// `progressDeadlineSeconds` unset or MaxInt32 means no deadline.
pub fn progress_deadline(d: &Deployment) -> Option<i32> {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .filter(|&s| s != i32::MAX)
}

pub fn condition<'a>(status: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
}

/// Upstream's `NewDeploymentCondition`, timestamped `now` (whole seconds, as stored).
pub fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> DeploymentCondition {
    let t = Time(Timestamp::from_second(now.as_second()).unwrap_or(now));
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(t.clone()),
        last_transition_time: Some(t),
    }
}

/// Upstream's `SetDeploymentCondition`: nothing changes if status and reason are the
/// same; the transition time is kept if only the reason changes. The condition moves
/// to the end of the list.
pub fn set_condition(status: &mut DeploymentStatus, mut c: DeploymentCondition) {
    if let Some(cur) = condition(status, &c.type_) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        if cur.status == c.status {
            c.last_transition_time = cur.last_transition_time.clone();
        }
    }
    remove_condition(status, &c.type_.clone());
    status.conditions.get_or_insert_with(Vec::new).push(c);
}

pub fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(cs) = &mut status.conditions {
        cs.retain(|c| c.type_ != type_);
        if cs.is_empty() {
            status.conditions = None;
        }
    }
}

fn desired(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn status_of(rs: &ReplicaSet) -> (i32, i32, i32) {
    rs.status.as_ref().map_or((0, 0, 0), |s| {
        (
            s.replicas,
            s.ready_replicas.unwrap_or(0),
            s.available_replicas.unwrap_or(0),
        )
    })
}

/// Zero counts are left out, as upstream's `omitempty` leaves them off the wire.
fn nonzero(n: i32) -> Option<i32> {
    (n != 0).then_some(n)
}

pub fn count(n: Option<i32>) -> i32 {
    n.unwrap_or(0)
}

/// Upstream's `calculateStatus`: the counts over every ReplicaSet and the Available
/// condition (`max_unavailable` is the resolved fencepost, 0 for Recreate).
pub fn calculate_status(
    d: &Deployment,
    all: &[&ReplicaSet],
    new: Option<&ReplicaSet>,
    max_unavailable: i32,
    now: Timestamp,
) -> DeploymentStatus {
    let available: i32 = all.iter().map(|rs| status_of(rs).2).sum();
    let total: i32 = all.iter().map(|rs| spec_replicas(rs)).sum();
    let unavailable = (total - available).max(0);
    let old = d.status.clone().unwrap_or_default();
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: nonzero(all.iter().map(|rs| status_of(rs).0).sum()),
        updated_replicas: nonzero(new.map_or(0, |rs| status_of(rs).0)),
        ready_replicas: nonzero(all.iter().map(|rs| status_of(rs).1).sum()),
        available_replicas: nonzero(available),
        unavailable_replicas: nonzero(unavailable),
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
        terminating_replicas: None,
    };
    let c = if available >= desired(d) - max_unavailable {
        new_condition(
            AVAILABLE,
            "True",
            MINIMUM_REPLICAS_AVAILABLE,
            "Deployment has minimum availability.".into(),
            now,
        )
    } else {
        new_condition(
            AVAILABLE,
            "False",
            MINIMUM_REPLICAS_UNAVAILABLE,
            "Deployment does not have minimum availability.".into(),
            now,
        )
    };
    set_condition(&mut status, c);
    status
}

/// Upstream's `DeploymentComplete`.
pub fn complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let want = desired(d);
    count(s.updated_replicas) == want
        && count(s.replicas) == want
        && count(s.available_replicas) == want
        && s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// Upstream's `DeploymentProgressing`: more updated, ready or available pods, or fewer
/// old ones, than the last status said.
fn progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let old_old = count(old.replicas) - count(old.updated_replicas);
    let new_old = count(new.replicas) - count(new.updated_replicas);
    count(new.updated_replicas) > count(old.updated_replicas)
        || new_old < old_old
        || count(new.ready_replicas) > count(old.ready_replicas)
        || count(new.available_replicas) > count(old.available_replicas)
}

/// Upstream's `DeploymentTimedOut`.
fn timed_out(d: &Deployment, new: &DeploymentStatus, now: Timestamp) -> bool {
    let Some(deadline) = progress_deadline(d) else {
        return false;
    };
    let Some(c) = condition(new, PROGRESSING) else {
        return false;
    };
    match c.reason.as_deref() {
        Some(NEW_RS_AVAILABLE) => false,
        Some(TIMED_OUT) => true,
        _ => c
            .last_update_time
            .as_ref()
            .is_some_and(|t| t.0.as_second() + i64::from(deadline) < now.as_second()),
    }
}

/// Upstream's `syncRolloutStatus` without the write: the status with the Progressing
/// condition estimated and ReplicaSet failures carried over, and when to look again for
/// a deadline (upstream's `requeueStuckDeployment`).
pub fn rollout_status(
    d: &Deployment,
    all: &[&ReplicaSet],
    new: Option<&ReplicaSet>,
    max_unavailable: i32,
    now: Timestamp,
) -> (DeploymentStatus, Option<Duration>) {
    let mut status = calculate_status(d, all, new, max_unavailable, now);
    let deadline = progress_deadline(d);
    if deadline.is_none() {
        remove_condition(&mut status, PROGRESSING);
    }
    let old = d.status.clone().unwrap_or_default();
    let current = condition(&old, PROGRESSING).cloned();
    let is_complete = count(status.replicas) == count(status.updated_replicas)
        && current.as_ref().and_then(|c| c.reason.as_deref()) == Some(NEW_RS_AVAILABLE);
    if deadline.is_some() && !is_complete {
        let rs_name = new.and_then(|rs| rs.metadata.name.clone());
        let d_name = d.metadata.name.clone().unwrap_or_default();
        if complete(d, &status) {
            let msg = match &rs_name {
                Some(n) => format!("ReplicaSet {n:?} has successfully progressed."),
                None => format!("Deployment {d_name:?} has successfully progressed."),
            };
            set_condition(
                &mut status,
                new_condition(PROGRESSING, "True", NEW_RS_AVAILABLE, msg, now),
            );
        } else if progressing(d, &status) {
            let msg = match &rs_name {
                Some(n) => format!("ReplicaSet {n:?} is progressing."),
                None => format!("Deployment {d_name:?} is progressing."),
            };
            let mut c = new_condition(PROGRESSING, "True", RS_UPDATED, msg, now);
            // Progress moves lastUpdateTime even when the reason stays the same.
            if let Some(cur) = &current {
                if cur.status == "True" {
                    c.last_transition_time = cur.last_transition_time.clone();
                }
                remove_condition(&mut status, PROGRESSING);
            }
            set_condition(&mut status, c);
        } else if timed_out(d, &status, now) {
            let msg = match &rs_name {
                Some(n) => format!("ReplicaSet {n:?} has timed out progressing."),
                None => format!("Deployment {d_name:?} has timed out progressing."),
            };
            set_condition(
                &mut status,
                new_condition(PROGRESSING, "False", TIMED_OUT, msg, now),
            );
        }
    }
    match replica_failure(all, new) {
        Some(c) => set_condition(&mut status, c),
        None => remove_condition(&mut status, REPLICA_FAILURE),
    }
    let again = requeue_stuck(d, &status, now);
    (status, again)
}

/// The first ReplicaFailure condition of the new ReplicaSet, else of any other.
fn replica_failure(all: &[&ReplicaSet], new: Option<&ReplicaSet>) -> Option<DeploymentCondition> {
    let failure = |rs: &ReplicaSet| {
        rs.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == REPLICA_FAILURE))
            .map(|c| DeploymentCondition {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_update_time: c.last_transition_time.clone(),
                last_transition_time: c.last_transition_time.clone(),
            })
    };
    new.and_then(failure)
        .or_else(|| all.iter().find_map(|rs| failure(rs)))
}

/// Upstream's `requeueStuckDeployment`: a rollout that is neither complete nor timed out
/// is looked at again when its deadline passes (plus a second for clock skew).
fn requeue_stuck(d: &Deployment, new: &DeploymentStatus, now: Timestamp) -> Option<Duration> {
    let deadline = progress_deadline(d)?;
    let old = d.status.clone().unwrap_or_default();
    let current = condition(&old, PROGRESSING)?;
    if complete(d, new) || current.reason.as_deref() == Some(TIMED_OUT) {
        return None;
    }
    let updated = current.last_update_time.as_ref()?.0;
    let after_ms = (updated.as_millisecond() + i64::from(deadline) * 1000) - now.as_millisecond();
    if after_ms < 1000 {
        return Some(Duration::from_millis(100));
    }
    Some(Duration::from_millis(after_ms as u64) + Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(replicas: i32, deadline: i32, status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "generation": 2},
            "spec": {"replicas": replicas, "progressDeadlineSeconds": deadline,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}}},
            "status": status,
        }))
        .unwrap()
    }

    fn rs(name: &str, spec: i32, replicas: i32, available: i32) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"replicas": spec, "selector": {}},
            "status": {"replicas": replicas, "readyReplicas": available,
                "availableReplicas": available},
        }))
        .unwrap()
    }

    fn reason(s: &DeploymentStatus, type_: &str) -> String {
        condition(s, type_).unwrap().reason.clone().unwrap()
    }

    #[test]
    fn status_counts_and_conditions_follow_the_rollout() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let old = rs("web-old", 2, 2, 2);
        let new = rs("web-new", 2, 2, 0);
        let d = deployment(
            3,
            600,
            json!({"observedGeneration": 1, "replicas": 3,
            "updatedReplicas": 1, "availableReplicas": 2,
            "conditions": [{"type": "Progressing", "status": "True",
                "reason": "NewReplicaSetCreated", "message": "m",
                "lastUpdateTime": "1970-01-12T13:46:00Z",
                "lastTransitionTime": "1970-01-12T13:46:00Z"}]}),
        );
        let (s, again) = rollout_status(&d, &[&old, &new], Some(&new), 0, now);
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!((s.replicas, s.updated_replicas), (Some(4), Some(2)));
        assert_eq!(
            (s.available_replicas, s.unavailable_replicas),
            (Some(2), Some(2))
        );
        assert_eq!(reason(&s, AVAILABLE), MINIMUM_REPLICAS_UNAVAILABLE);
        // More updated pods than before: progressing, transition time kept.
        let p = condition(&s, PROGRESSING).unwrap();
        assert_eq!(p.reason.as_deref(), Some(RS_UPDATED));
        assert_eq!(
            p.message.as_deref(),
            Some("ReplicaSet \"web-new\" is progressing.")
        );
        assert_eq!(p.last_update_time.as_ref().unwrap().0, now);
        assert_ne!(p.last_transition_time.as_ref().unwrap().0, now);
        assert!(again.is_some());

        // Complete: NewReplicaSetAvailable, nothing to look at later.
        let done = rs("web-new", 3, 3, 3);
        let d2 = deployment(3, 600, serde_json::to_value(&s).unwrap());
        let (s2, again) = rollout_status(&d2, &[&done], Some(&done), 0, now);
        assert_eq!(reason(&s2, PROGRESSING), NEW_RS_AVAILABLE);
        assert_eq!(reason(&s2, AVAILABLE), MINIMUM_REPLICAS_AVAILABLE);
        assert!(again.is_none());
    }

    #[test]
    fn no_progress_past_the_deadline_times_out() {
        let stuck = rs("web-new", 1, 1, 0);
        let d = deployment(
            1,
            10,
            json!({"observedGeneration": 2, "replicas": 1,
            "updatedReplicas": 1, "unavailableReplicas": 1,
            "conditions": [{"type": "Progressing", "status": "True",
                "reason": "NewReplicaSetCreated", "message": "m",
                "lastUpdateTime": "2024-01-01T00:00:00Z",
                "lastTransitionTime": "2024-01-01T00:00:00Z"}]}),
        );
        let start: Timestamp = "2024-01-01T00:00:00Z".parse().unwrap();
        // Within the deadline: unchanged, look again when it passes.
        let (s, again) = rollout_status(&d, &[&stuck], Some(&stuck), 0, start);
        assert_eq!(reason(&s, PROGRESSING), NEW_RS_CREATED);
        assert_eq!(again, Some(Duration::from_secs(11)));
        // Past it: ProgressDeadlineExceeded.
        let later = Timestamp::from_second(start.as_second() + 11).unwrap();
        let (s, _) = rollout_status(&d, &[&stuck], Some(&stuck), 0, later);
        let c = condition(&s, PROGRESSING).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref()),
            ("False", Some(TIMED_OUT))
        );
        assert_eq!(
            c.message.as_deref(),
            Some("ReplicaSet \"web-new\" has timed out progressing.")
        );
    }
}
