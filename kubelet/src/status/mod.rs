//! Pod status as upstream computes it (`kubelet_pods.go` `generateAPIPodStatus` and
//! `pkg/kubelet/status`): phase, conditions, container statuses from the runtime's view,
//! pod IPs, host IP, start time and QoS class; written to `pods/status` as a JSON merge
//! patch of only what changed, and not at all when nothing did.

use std::collections::HashMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;

use crate::cm;
use crate::cri::api;
use crate::kuberuntime::{ContainerInfo, PodRuntimeState};
use crate::prober::{PodProbes, Verdict};

/// Why a container is waiting, when the kubelet knows better than the runtime
/// (CrashLoopBackOff, ErrImageNeverPull, CreateContainerError, ...).
pub type WaitingReasons = HashMap<String, (String, String)>;

fn time_of_nanos(nanos: i64) -> Option<Time> {
    if nanos <= 0 {
        return None;
    }
    jiff::Timestamp::from_nanosecond(i128::from(nanos))
        .ok()
        .map(Time)
}

/// `containerd://<id>`.
pub fn container_id(info: &ContainerInfo) -> String {
    format!("containerd://{}", info.status.id)
}

fn terminated(info: &ContainerInfo) -> ContainerStateTerminated {
    let s = &info.status;
    ContainerStateTerminated {
        exit_code: s.exit_code,
        reason: (!s.reason.is_empty()).then(|| s.reason.clone()),
        message: (!s.message.is_empty()).then(|| s.message.clone()),
        started_at: time_of_nanos(s.started_at),
        finished_at: time_of_nanos(s.finished_at),
        container_id: Some(container_id(info)),
        signal: None,
    }
}

fn state_of(info: &ContainerInfo) -> ContainerState {
    match info.status.state() {
        api::ContainerState::ContainerRunning => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: time_of_nanos(info.status.started_at),
            }),
            ..Default::default()
        },
        api::ContainerState::ContainerExited => ContainerState {
            terminated: Some(terminated(info)),
            ..Default::default()
        },
        api::ContainerState::ContainerCreated => waiting("ContainerCreating", ""),
        api::ContainerState::ContainerUnknown => waiting("ContainerStatusUnknown", ""),
    }
}

fn waiting(reason: &str, message: &str) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_owned()),
            message: (!message.is_empty()).then(|| message.to_owned()),
        }),
        ..Default::default()
    }
}

/// One container's status: its newest instance's state, the previous instance as
/// lastState (or the newest when it exited and waits to restart), restart count from the
/// attempt, and the reason the kubelet holds it back, if any.
fn container_status(
    name: &str,
    image: &str,
    instances: &[&ContainerInfo],
    reasons: &WaitingReasons,
    default_waiting: &str,
    verdict: &dyn Fn(&str) -> Verdict,
) -> ContainerStatus {
    let latest = instances.first();
    let held = reasons.get(name);
    let mut status = ContainerStatus {
        name: name.to_owned(),
        image: image.to_owned(),
        ..Default::default()
    };
    match latest {
        None => {
            status.state = Some(match held {
                Some((r, m)) => waiting(r, m),
                None => waiting(default_waiting, ""),
            });
        }
        Some(latest) => {
            status.container_id = Some(container_id(latest));
            status.image_id = latest.status.image_ref.clone();
            status.restart_count = i32::try_from(latest.attempt).unwrap_or(i32::MAX);
            let exited = latest.status.state() == api::ContainerState::ContainerExited;
            if exited && held.is_some() {
                let (r, m) = held.cloned().unwrap_or_default();
                status.state = Some(waiting(&r, &m));
                status.last_state = Some(ContainerState {
                    terminated: Some(terminated(latest)),
                    ..Default::default()
                });
            } else {
                status.state = Some(state_of(latest));
                if let Some(previous) = instances.get(1) {
                    status.last_state = Some(ContainerState {
                        terminated: Some(terminated(previous)),
                        ..Default::default()
                    });
                }
            }
            let running = latest.status.state() == api::ContainerState::ContainerRunning;
            let v = verdict(&latest.status.id);
            status.ready = running && v.ready;
            status.started = Some(running && v.started);
        }
    }
    status
        .last_state
        .get_or_insert_with(ContainerState::default);
    status
}

fn condition(
    type_: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
    previous: Option<&PodStatus>,
    now: &Time,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let before = previous
        .and_then(|p| p.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_));
    let transition = match before {
        Some(b) if b.status == status => b.last_transition_time.clone(),
        _ => Some(now.clone()),
    };
    PodCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.map(str::to_owned),
        message,
        last_transition_time: transition,
        last_probe_time: None,
        observed_generation: None,
    }
}

fn exited_ok(s: &ContainerStatus) -> bool {
    s.state
        .as_ref()
        .and_then(|st| st.terminated.as_ref())
        .is_some_and(|t| t.exit_code == 0)
}

fn exited_failed(s: &ContainerStatus) -> bool {
    s.state
        .as_ref()
        .and_then(|st| st.terminated.as_ref())
        .is_some_and(|t| t.exit_code != 0)
}

/// The pod phase from its container statuses (upstream `getPhase`).
pub fn phase(
    restart_policy: &str,
    init: &[ContainerStatus],
    regular: &[ContainerStatus],
) -> &'static str {
    for s in init {
        if exited_ok(s) {
            continue;
        }
        let restarting_after_failure = s
            .last_state
            .as_ref()
            .and_then(|l| l.terminated.as_ref())
            .is_some_and(|t| t.exit_code != 0)
            && s.state.as_ref().is_some_and(|st| st.waiting.is_some());
        let failed = exited_failed(s) || restarting_after_failure;
        if failed && restart_policy == "Never" {
            return "Failed";
        }
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for s in regular {
        let state = s.state.as_ref();
        if state.is_some_and(|st| st.running.is_some()) {
            running += 1;
        } else if let Some(t) = state.and_then(|st| st.terminated.as_ref()) {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if s
            .last_state
            .as_ref()
            .is_some_and(|l| l.terminated.is_some())
        {
            // Waiting to restart: it has run.
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        match restart_policy {
            "Always" => "Running",
            _ if stopped == succeeded => "Succeeded",
            "OnFailure" => "Running",
            _ => "Failed",
        }
    } else {
        "Pending"
    }
}

/// The pod's status from the runtime's state, keeping transition times and start time
/// from `pod.status`.
pub fn generate(
    pod: &Pod,
    previous: Option<&PodStatus>,
    state: &PodRuntimeState,
    reasons: &WaitingReasons,
    probes: &PodProbes,
    host_ip: IpAddr,
    now: Time,
) -> PodStatus {
    let spec = pod.spec.clone().unwrap_or_default();
    let restart_policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let instances = |name: &str| state.instances(name);
    let mut init_statuses: Vec<ContainerStatus> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| {
            container_status(
                &c.name,
                c.image.as_deref().unwrap_or_default(),
                &instances(&c.name),
                reasons,
                "PodInitializing",
                &|_| Verdict {
                    started: true,
                    ready: true,
                    restart: false,
                },
            )
        })
        .collect();
    let initialized = init_statuses.iter().all(exited_ok);
    let mut statuses: Vec<ContainerStatus> = spec
        .containers
        .iter()
        .map(|c| {
            container_status(
                &c.name,
                c.image.as_deref().unwrap_or_default(),
                &instances(&c.name),
                reasons,
                if initialized {
                    "ContainerCreating"
                } else {
                    "PodInitializing"
                },
                &|id| probes.verdict(id, c),
            )
        })
        .collect();
    // A terminal phase is never left (upstream's status manager refuses the transition):
    // a pod the kubelet evicted or rejected stays Failed whatever its containers show.
    let terminal = |st: Option<&PodStatus>| {
        st.and_then(|s| s.phase.as_deref())
            .filter(|p| matches!(*p, "Failed" | "Succeeded"))
            .map(str::to_owned)
    };
    let kept_terminal = terminal(pod.status.as_ref()).or_else(|| terminal(previous));
    let computed = phase(restart_policy, &init_statuses, &statuses);
    let phase = kept_terminal.as_deref().unwrap_or(computed);
    if kept_terminal.is_some() {
        let before = pod.status.as_ref().or(previous);
        let old = |name: &str, init: bool| -> Option<ContainerState> {
            let list = if init {
                before.and_then(|s| s.init_container_statuses.as_ref())
            } else {
                before.and_then(|s| s.container_statuses.as_ref())
            };
            list?.iter().find(|c| c.name == name)?.state.clone()
        };
        settle_terminal(&mut init_statuses, |n| old(n, true));
        settle_terminal(&mut statuses, |n| old(n, false));
    }
    let completed = matches!(phase, "Succeeded" | "Failed");
    let unready: Vec<&str> = statuses
        .iter()
        .filter(|s| !s.ready)
        .map(|s| s.name.as_str())
        .collect();
    let incomplete: Vec<&str> = init_statuses
        .iter()
        .filter(|s| !exited_ok(s))
        .map(|s| s.name.as_str())
        .collect();
    let (ready_reason, ready_message) = if completed {
        (Some("PodCompleted"), None)
    } else if unready.is_empty() {
        (None, None)
    } else {
        (
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    let ready = unready.is_empty() && !completed;
    let sandbox_ready = state
        .sandbox_status
        .as_ref()
        .is_some_and(|s| s.state() == api::PodSandboxState::SandboxReady);
    let scheduled = previous
        .and_then(|p| p.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
        .cloned()
        .unwrap_or_else(|| condition("PodScheduled", true, None, None, None, &now));
    let mut conditions = vec![
        condition(
            "PodReadyToStartContainers",
            sandbox_ready,
            None,
            None,
            previous,
            &now,
        ),
        condition(
            "Initialized",
            initialized || completed && incomplete.is_empty(),
            if initialized {
                None
            } else {
                Some("ContainersNotInitialized")
            },
            (!initialized).then(|| {
                format!(
                    "containers with incomplete status: [{}]",
                    incomplete.join(" ")
                )
            }),
            previous,
            &now,
        ),
        condition(
            "Ready",
            ready,
            ready_reason,
            ready_message.clone(),
            previous,
            &now,
        ),
        condition(
            "ContainersReady",
            ready,
            ready_reason,
            ready_message,
            previous,
            &now,
        ),
        scheduled,
    ];
    // Conditions others own (DisruptionTarget, readiness gates) are kept.
    for c in previous
        .and_then(|p| p.conditions.as_ref())
        .into_iter()
        .chain(pod.status.as_ref().and_then(|p| p.conditions.as_ref()))
        .flatten()
    {
        if !conditions.iter().any(|k| k.type_ == c.type_) {
            conditions.push(c.clone());
        }
    }
    let pod_ips: Vec<String> = state
        .sandbox_status
        .as_ref()
        .filter(|_| !crate::kuberuntime::sandbox::host_network(pod))
        .and_then(|s| s.network.as_ref())
        .map(|n| {
            std::iter::once(n.ip.clone())
                .chain(n.additional_ips.iter().map(|a| a.ip.clone()))
                .filter(|ip| !ip.is_empty())
                .collect()
        })
        .unwrap_or_else(|| {
            if crate::kuberuntime::sandbox::host_network(pod) && sandbox_ready {
                vec![host_ip.to_string()]
            } else {
                previous
                    .and_then(|p| p.pod_ip.clone())
                    .into_iter()
                    .collect()
            }
        });
    PodStatus {
        phase: Some(phase.to_owned()),
        conditions: Some(conditions),
        host_ip: Some(host_ip.to_string()),
        host_ips: Some(vec![HostIP {
            ip: host_ip.to_string(),
        }]),
        pod_ip: pod_ips.first().cloned(),
        pod_ips: (!pod_ips.is_empty())
            .then(|| pod_ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect()),
        start_time: previous.and_then(|p| p.start_time.clone()).or(Some(now)),
        qos_class: Some(cm::qos_class(pod).as_str().to_owned()),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        container_statuses: Some(statuses),
        ..previous.cloned().unwrap_or_default()
    }
}

/// `status` as the kubelet reports a pod it ended (evicted or rejected): phase Failed
/// with `reason` and `message`, and — for evictions — the DisruptionTarget condition
/// (reason TerminationByKubelet), keeping its transition time from `previous`.
pub fn ended(
    mut status: PodStatus,
    reason: &str,
    message: &str,
    disruption: bool,
    previous: Option<&PodStatus>,
) -> PodStatus {
    status.phase = Some("Failed".into());
    status.reason = Some(reason.to_owned());
    status.message = Some(message.to_owned());
    if disruption {
        let now = Time(jiff::Timestamp::now());
        let c = condition(
            "DisruptionTarget",
            true,
            Some("TerminationByKubelet"),
            Some(message.to_owned()),
            previous,
            &now,
        );
        let conditions = status.conditions.get_or_insert_with(Vec::new);
        conditions.retain(|x| x.type_ != "DisruptionTarget");
        conditions.push(c);
    }
    status
}

/// The pod conditions the kubelet owns (upstream's `PodConditionsByKubelet`).
const KUBELET_CONDITIONS: [&str; 5] = [
    "PodScheduled",
    "PodReadyToStartContainers",
    "Initialized",
    "ContainersReady",
    "Ready",
];

/// The status the kubelet last `written`, laid again over the API's status as upstream's
/// status manager does when another writer changed it (the node lifecycle controller
/// marks a cut-off node's pods not ready): the kubelet's own conditions and fields from
/// `written`, the conditions others own as the API has them now.
pub fn reconciled(api: &PodStatus, written: &PodStatus) -> PodStatus {
    let owned = |c: &PodCondition| KUBELET_CONDITIONS.contains(&c.type_.as_str());
    let conditions: Vec<PodCondition> = written
        .conditions
        .iter()
        .flatten()
        .filter(|c| owned(c))
        .chain(api.conditions.iter().flatten().filter(|c| !owned(c)))
        .cloned()
        .collect();
    PodStatus {
        conditions: (!conditions.is_empty()).then_some(conditions),
        ..written.clone()
    }
}

/// A JSON merge patch (RFC 7386) turning `old` into `new`; None when they are equal.
/// Lists are replaced whole, so the patch always carries complete lists.
pub fn merge_diff(old: &Value, new: &Value) -> Option<Value> {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut patch = serde_json::Map::new();
            for key in o.keys() {
                if !n.contains_key(key) {
                    patch.insert(key.clone(), Value::Null);
                }
            }
            for (key, value) in n {
                match o.get(key) {
                    Some(before) => {
                        if let Some(d) = merge_diff(before, value) {
                            patch.insert(key.clone(), d);
                        }
                    }
                    None => {
                        patch.insert(key.clone(), value.clone());
                    }
                }
            }
            (!patch.is_empty()).then_some(Value::Object(patch))
        }
        _ if old == new => None,
        _ => Some(new.clone()),
    }
}

/// A terminal pod's containers are terminated, whatever is left of them (upstream's
/// `convertToAPIContainerStatuses` for a terminal pod): a container that is not, say
/// after the node restarted and its containers are gone, keeps the terminated state it
/// was last reported with, or becomes `ContainerStatusUnknown` with exit code 137.
fn settle_terminal(
    statuses: &mut [ContainerStatus],
    previous: impl Fn(&str) -> Option<ContainerState>,
) {
    for st in statuses.iter_mut() {
        if st.state.as_ref().is_some_and(|s| s.terminated.is_some()) {
            continue;
        }
        st.ready = false;
        st.started = Some(false);
        st.state = Some(
            previous(&st.name)
                .filter(|s| s.terminated.is_some())
                .unwrap_or_else(|| ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: 137,
                        reason: Some("ContainerStatusUnknown".into()),
                        message: Some(
                            "The container could not be located when the pod was terminated".into(),
                        ),
                        ..ContainerStateTerminated::default()
                    }),
                    ..ContainerState::default()
                }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(name: &str) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            state: Some(ContainerState {
                running: Some(ContainerStateRunning::default()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn exited(name: &str, code: i32) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: code,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn waiting_status(name: &str, ran: bool) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            state: Some(waiting("CrashLoopBackOff", "")),
            last_state: ran.then(|| ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: 1,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn phases_as_upstream() {
        assert_eq!(phase("Always", &[], &[running("a")]), "Running");
        assert_eq!(
            phase("Always", &[], &[waiting_status("a", false)]),
            "Pending"
        );
        assert_eq!(
            phase("Always", &[], &[waiting_status("a", true)]),
            "Running"
        );
        assert_eq!(phase("Always", &[], &[exited("a", 1)]), "Running");
        assert_eq!(phase("Never", &[], &[exited("a", 0)]), "Succeeded");
        assert_eq!(
            phase("Never", &[], &[exited("a", 0), exited("b", 2)]),
            "Failed"
        );
        assert_eq!(phase("OnFailure", &[], &[exited("a", 2)]), "Running");
        assert_eq!(
            phase("Always", &[running("i")], &[waiting_status("a", false)]),
            "Pending"
        );
        assert_eq!(
            phase("Never", &[exited("i", 1)], &[waiting_status("a", false)]),
            "Failed"
        );
        assert_eq!(
            phase("Always", &[exited("i", 0)], &[running("a")]),
            "Running"
        );
    }

    #[test]
    fn merge_diff_nulls_what_went_away() {
        let old = serde_json::json!({"phase": "Pending", "containerStatuses": [{"state": {"waiting": {}}}], "x": {"a": 1, "b": 2}});
        let new = serde_json::json!({"phase": "Running", "containerStatuses": [{"state": {"running": {}}}], "x": {"a": 1}});
        let patch = merge_diff(&old, &new).unwrap();
        assert_eq!(
            patch,
            serde_json::json!({"phase": "Running", "containerStatuses": [{"state": {"running": {}}}], "x": {"b": null}})
        );
        let mut applied = old.clone();
        json_patch::merge(&mut applied, &patch);
        assert_eq!(applied, new);
        assert!(merge_diff(&new, &new).is_none());
    }

    #[test]
    fn ended_pods_stay_failed_and_keep_conditions_others_set() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": "u"},
            "spec": {"containers": [{"name": "a", "image": "i"}]},
            "status": {"phase": "Running", "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "example.com/gate", "status": "True"}
            ]}
        }))
        .unwrap();
        let now = Time(jiff::Timestamp::from_second(1000).unwrap());
        let generated = generate(
            &pod,
            pod.status.as_ref(),
            &PodRuntimeState::default(),
            &WaitingReasons::new(),
            &PodProbes::default(),
            "10.0.0.1".parse().unwrap(),
            now.clone(),
        );
        let types = |s: &PodStatus| -> Vec<String> {
            s.conditions
                .iter()
                .flatten()
                .map(|c| c.type_.clone())
                .collect()
        };
        assert!(types(&generated).contains(&"example.com/gate".to_owned()));
        let evicted = ended(
            generated,
            "Evicted",
            "The node was low on resource: memory. ",
            true,
            pod.status.as_ref(),
        );
        assert_eq!(evicted.phase.as_deref(), Some("Failed"));
        assert_eq!(evicted.reason.as_deref(), Some("Evicted"));
        let target = evicted
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "DisruptionTarget")
            .unwrap();
        assert_eq!(target.reason.as_deref(), Some("TerminationByKubelet"));
        // Written and read back, the pod stays Failed whatever its containers show.
        let mut stored = pod.clone();
        stored.status = Some(evicted.clone());
        let again = generate(
            &stored,
            stored.status.as_ref(),
            &PodRuntimeState::default(),
            &WaitingReasons::new(),
            &PodProbes::default(),
            "10.0.0.1".parse().unwrap(),
            now,
        );
        assert_eq!(again.phase.as_deref(), Some("Failed"));
        assert_eq!(again.reason.as_deref(), Some("Evicted"));
        assert!(types(&again).contains(&"DisruptionTarget".to_owned()));
        // Its containers are gone (none in the runtime state): terminated, not waiting.
        for c in again.container_statuses.iter().flatten() {
            let t = c.state.as_ref().and_then(|s| s.terminated.as_ref());
            assert_eq!(
                t.and_then(|t| t.reason.as_deref()),
                Some("ContainerStatusUnknown"),
                "{c:?}"
            );
            assert_eq!(t.map(|t| t.exit_code), Some(137));
            assert!(!c.ready);
        }
        assert!(again.container_statuses.iter().flatten().next().is_some());
    }

    #[test]
    fn reconciled_takes_the_kubelets_conditions_and_keeps_others() {
        let status = |v: serde_json::Value| -> PodStatus { serde_json::from_value(v).unwrap() };
        let written = status(
            serde_json::json!({"phase": "Running", "podIP": "10.42.0.5", "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "True"},
                {"type": "ContainersReady", "status": "True"},
                {"type": "example.com/gate", "status": "False"}
            ]}),
        );
        let api = status(
            serde_json::json!({"phase": "Running", "podIP": "10.42.0.5", "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "False", "reason": "NodeNotReady"},
                {"type": "ContainersReady", "status": "True"},
                {"type": "example.com/gate", "status": "True"},
                {"type": "DisruptionTarget", "status": "True"}
            ]}),
        );
        let again = reconciled(&api, &written);
        let of = |t: &str| {
            again
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == t)
                .map(|c| (c.status.clone(), c.reason.clone()))
        };
        assert_eq!(of("Ready"), Some(("True".into(), None)));
        assert_eq!(of("example.com/gate"), Some(("True".into(), None)));
        assert_eq!(of("DisruptionTarget"), Some(("True".into(), None)));
        assert_eq!(again.pod_ip.as_deref(), Some("10.42.0.5"));
        // Nothing to write again once the API has it.
        assert_eq!(reconciled(&again, &written), again);
    }
}
