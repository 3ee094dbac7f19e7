//! Pods: NAME, READY, STATUS, RESTARTS, AGE, and wide IP, NODE, NOMINATED NODE,
//! READINESS GATES.

use jiff::Timestamp;
use serde_json::{json, Value};

use super::descriptions as d;
use super::fields::{
    bool_at, condition_is_true, int_at, is_deleting, list_at, name, opt_bool_at, str_at, time_at,
};
use super::{duration, Column};

pub(super) const COLUMNS: &[Column] = &[
    Column::name(),
    Column::new(
        "Ready",
        "string",
        "The aggregate readiness state of this pod for accepting traffic.",
    ),
    Column::new(
        "Status",
        "string",
        "The aggregate status of the containers in this pod.",
    ),
    Column::new(
        "Restarts",
        "string",
        "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
    ),
    Column::age(),
    Column::wide("IP", "string", d::POD_STATUS_POD_IP),
    Column::wide("Node", "string", d::POD_SPEC_NODE_NAME),
    Column::wide("Nominated Node", "string", d::POD_STATUS_NOMINATED_NODE_NAME),
    Column::wide("Readiness Gates", "string", d::POD_SPEC_READINESS_GATES),
];

/// The pod status reason the node lifecycle controller sets when a node stops reporting.
const NODE_UNREACHABLE_POD_REASON: &str = "NodeLost";

/// Sidecar containers are init containers that keep running (`restartPolicy: Always`).
fn is_restartable_init_container(container: Option<&Value>) -> bool {
    container.is_some_and(|c| str_at(c, &["restartPolicy"]) == "Always")
}

/// Keeps the latest `lastState.terminated.finishedAt` of a container status.
fn note_last_restart(latest: &mut Option<Timestamp>, status: &Value) {
    if let Some(finished) = time_at(status, &["lastState", "terminated", "finishedAt"]) {
        if latest.is_none_or(|l| l < finished) {
            *latest = Some(finished);
        }
    }
}

pub(super) fn cells(pod: &Value, now: Timestamp) -> Vec<Value> {
    let init_containers = list_at(pod, &["spec", "initContainers"]);
    let mut total_containers = list_at(pod, &["spec", "containers"]).len();
    let mut ready_containers = 0usize;
    let mut restarts = 0i64;
    let mut restartable_init_restarts = 0i64;
    let mut last_restart: Option<Timestamp> = None;
    let mut last_restartable_init_restart: Option<Timestamp> = None;

    let phase = str_at(pod, &["status", "phase"]);
    let status_reason = str_at(pod, &["status", "reason"]);
    let mut reason = if status_reason.is_empty() {
        phase.to_string()
    } else {
        status_reason.to_string()
    };
    let conditions = list_at(pod, &["status", "conditions"]);
    if conditions.iter().any(|c| {
        str_at(c, &["type"]) == "PodScheduled" && str_at(c, &["reason"]) == "SchedulingGated"
    }) {
        reason = "SchedulingGated".to_string();
    }

    let init_container = |name: &str| {
        init_containers
            .iter()
            .find(|c| str_at(c, &["name"]) == name)
    };
    total_containers += init_containers
        .iter()
        .filter(|c| is_restartable_init_container(Some(c)))
        .count();

    let mut initializing = false;
    for (i, status) in list_at(pod, &["status", "initContainerStatuses"])
        .iter()
        .enumerate()
    {
        let restartable = is_restartable_init_container(init_container(str_at(status, &["name"])));
        restarts += int_at(status, &["restartCount"]);
        note_last_restart(&mut last_restart, status);
        if restartable {
            restartable_init_restarts += int_at(status, &["restartCount"]);
            note_last_restart(&mut last_restartable_init_restart, status);
        }
        let terminated = status.pointer("/state/terminated").filter(|t| !t.is_null());
        let waiting_reason = str_at(status, &["state", "waiting", "reason"]);
        match terminated {
            Some(t) if int_at(t, &["exitCode"]) == 0 => continue,
            _ if restartable && opt_bool_at(status, &["started"]) == Some(true) => {
                if bool_at(status, &["ready"]) {
                    ready_containers += 1;
                }
                continue;
            }
            Some(t) => {
                let terminated_reason = str_at(t, &["reason"]);
                reason = if !terminated_reason.is_empty() {
                    format!("Init:{terminated_reason}")
                } else if int_at(t, &["signal"]) != 0 {
                    format!("Init:Signal:{}", int_at(t, &["signal"]))
                } else {
                    format!("Init:ExitCode:{}", int_at(t, &["exitCode"]))
                };
            }
            None if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" => {
                reason = format!("Init:{waiting_reason}");
            }
            None => reason = format!("Init:{i}/{}", init_containers.len()),
        }
        initializing = true;
        break;
    }

    if !initializing || condition_is_true(pod, &["status", "conditions"], "Initialized") {
        restarts = restartable_init_restarts;
        last_restart = last_restartable_init_restart;
        let mut has_running = false;
        for status in list_at(pod, &["status", "containerStatuses"]).iter().rev() {
            restarts += int_at(status, &["restartCount"]);
            note_last_restart(&mut last_restart, status);
            let waiting_reason = str_at(status, &["state", "waiting", "reason"]);
            let terminated = status.pointer("/state/terminated").filter(|t| !t.is_null());
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if let Some(t) = terminated {
                let terminated_reason = str_at(t, &["reason"]);
                reason = if !terminated_reason.is_empty() {
                    terminated_reason.to_string()
                } else if int_at(t, &["signal"]) != 0 {
                    format!("Signal:{}", int_at(t, &["signal"]))
                } else {
                    format!("ExitCode:{}", int_at(t, &["exitCode"]))
                };
            } else if bool_at(status, &["ready"])
                && status
                    .pointer("/state/running")
                    .is_some_and(|r| !r.is_null())
            {
                has_running = true;
                ready_containers += 1;
            }
        }
        // A pod with a container still running is not "Completed" yet.
        if reason == "Completed" && has_running {
            reason = if condition_is_true(pod, &["status", "conditions"], "Ready") {
                "Running".to_string()
            } else {
                "NotReady".to_string()
            };
        }
    }

    if is_deleting(pod) && status_reason == NODE_UNREACHABLE_POD_REASON {
        reason = "Unknown".to_string();
    } else if is_deleting(pod) && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_string();
    }

    let restarts = match last_restart {
        Some(at) if restarts != 0 => {
            format!("{restarts} ({} ago)", duration::age_of(Some(at), now))
        }
        _ => restarts.to_string(),
    };

    vec![
        Value::from(name(pod)),
        Value::from(format!("{ready_containers}/{total_containers}")),
        Value::from(reason),
        Value::from(restarts),
        Value::from(super::fields::age(pod, now)),
        Value::from(or_none(pod_ip(pod))),
        Value::from(or_none(str_at(pod, &["spec", "nodeName"]))),
        Value::from(or_none(str_at(pod, &["status", "nominatedNodeName"]))),
        Value::from(readiness_gates(pod)),
    ]
}

/// The pod's primary IP. `podIP` wins over `podIPs[0]`, as in upstream's v1 conversion.
fn pod_ip(pod: &Value) -> &str {
    let ip = str_at(pod, &["status", "podIP"]);
    if !ip.is_empty() {
        return ip;
    }
    list_at(pod, &["status", "podIPs"])
        .first()
        .map_or("", |ip| str_at(ip, &["ip"]))
}

/// "<none>" for an empty value.
fn or_none(s: &str) -> &str {
    if s.is_empty() {
        "<none>"
    } else {
        s
    }
}

/// "true/total" readiness gates, or "<none>".
fn readiness_gates(pod: &Value) -> String {
    let gates = list_at(pod, &["spec", "readinessGates"]);
    if gates.is_empty() {
        return "<none>".to_string();
    }
    let passing = gates
        .iter()
        .filter(|g| {
            condition_is_true(
                pod,
                &["status", "conditions"],
                str_at(g, &["conditionType"]),
            )
        })
        .count();
    format!("{passing}/{}", gates.len())
}

/// Upstream marks rows of finished pods "Completed".
pub(super) fn row_conditions(pod: &Value) -> Vec<Value> {
    let (reason, message) = match str_at(pod, &["status", "phase"]) {
        "Succeeded" => ("Succeeded", "The pod has completed successfully."),
        "Failed" => ("Failed", "The pod failed."),
        _ => return Vec::new(),
    };
    vec![json!({"type": "Completed", "status": "True", "reason": reason, "message": message})]
}

#[cfg(test)]
mod tests {
    use super::super::tests::{info, now};
    use super::super::{column_definitions, row_cells};
    use super::*;

    fn row(pod: Value) -> Vec<Value> {
        row_cells(info("", "pods"), &pod, now())
    }

    fn running_nginx() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "nginx-7c5ddbdf54-abcde", "namespace": "default",
                         "creationTimestamp": "2024-05-01T11:55:00Z"},
            "spec": {"nodeName": "pi-1", "containers": [{"name": "nginx", "image": "nginx:1.25"}]},
            "status": {
                "phase": "Running", "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}],
                "conditions": [
                    {"type": "Initialized", "status": "True"},
                    {"type": "Ready", "status": "True"},
                    {"type": "PodScheduled", "status": "True"},
                ],
                "containerStatuses": [{
                    "name": "nginx", "ready": true, "started": true, "restartCount": 0,
                    "state": {"running": {"startedAt": "2024-05-01T11:55:10Z"}},
                }],
            },
        })
    }

    #[test]
    fn columns_are_upstreams() {
        let columns = column_definitions(info("", "pods"));
        let names: Vec<_> = columns.iter().map(|c| c["name"].clone()).collect();
        assert_eq!(
            names,
            [
                "Name",
                "Ready",
                "Status",
                "Restarts",
                "Age",
                "IP",
                "Node",
                "Nominated Node",
                "Readiness Gates"
            ]
        );
        let priorities: Vec<_> = columns.iter().map(|c| c["priority"].clone()).collect();
        assert_eq!(priorities, [0, 0, 0, 0, 0, 1, 1, 1, 1]);
        assert_eq!(columns[3]["type"], "string");
    }

    #[test]
    fn running_pod() {
        assert_eq!(
            row(running_nginx()),
            [
                "nginx-7c5ddbdf54-abcde",
                "1/1",
                "Running",
                "0",
                "5m",
                "10.244.1.5",
                "pi-1",
                "<none>",
                "<none>"
            ]
        );
    }

    #[test]
    fn pending_pod_has_placeholders() {
        let pod = json!({
            "metadata": {"name": "web", "creationTimestamp": "2024-05-01T11:59:30Z"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Pending"},
        });
        assert_eq!(
            row(pod),
            ["web", "0/2", "Pending", "0", "30s", "<none>", "<none>", "<none>", "<none>"]
        );
    }

    #[test]
    fn crash_looping_container_with_restarts() {
        let mut pod = running_nginx();
        pod["status"]["containerStatuses"][0] = json!({
            "name": "nginx", "ready": false, "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                                         "finishedAt": "2024-05-01T11:55:00Z"}},
        });
        let cells = row(pod);
        assert_eq!(cells[1], "0/1");
        assert_eq!(cells[2], "CrashLoopBackOff");
        assert_eq!(cells[3], "3 (5m ago)");
    }

    #[test]
    fn restarts_without_a_known_time_print_the_count() {
        let mut pod = running_nginx();
        pod["status"]["containerStatuses"][0]["restartCount"] = json!(2);
        assert_eq!(row(pod)[3], "2");
    }

    #[test]
    fn init_containers_in_progress() {
        let pod = json!({
            "metadata": {"name": "app", "creationTimestamp": "2024-05-01T11:59:00Z"},
            "spec": {
                "initContainers": [{"name": "migrate"}, {"name": "seed"}],
                "containers": [{"name": "app"}],
            },
            "status": {
                "phase": "Pending",
                "conditions": [{"type": "Initialized", "status": "False"}],
                "initContainerStatuses": [
                    {"name": "migrate", "restartCount": 0,
                     "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                    {"name": "seed", "restartCount": 0, "state": {"running": {}}},
                ],
                "containerStatuses": [{"name": "app", "restartCount": 0,
                    "state": {"waiting": {"reason": "PodInitializing"}}}],
            },
        });
        let cells = row(pod);
        assert_eq!(cells[1], "0/1");
        assert_eq!(cells[2], "Init:1/2");
    }

    #[test]
    fn failing_init_container() {
        let pod = json!({
            "metadata": {"name": "app"},
            "spec": {"initContainers": [{"name": "migrate"}], "containers": [{"name": "app"}]},
            "status": {
                "phase": "Pending",
                "initContainerStatuses": [{"name": "migrate", "restartCount": 4,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}}}],
            },
        });
        let cells = row(pod);
        assert_eq!(cells[2], "Init:CrashLoopBackOff");
        assert_eq!(cells[3], "4");
        assert_eq!(cells[4], "<unknown>");

        let pod = json!({
            "metadata": {"name": "app"},
            "spec": {"initContainers": [{"name": "migrate"}], "containers": [{"name": "app"}]},
            "status": {"phase": "Pending", "initContainerStatuses": [{"name": "migrate",
                "state": {"terminated": {"exitCode": 2}}}]},
        });
        assert_eq!(row(pod)[2], "Init:ExitCode:2");
    }

    #[test]
    fn sidecar_init_containers_count_as_containers() {
        let pod = json!({
            "metadata": {"name": "app"},
            "spec": {
                "initContainers": [{"name": "proxy", "restartPolicy": "Always"}],
                "containers": [{"name": "app"}],
            },
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Initialized", "status": "True"},
                               {"type": "Ready", "status": "True"}],
                "initContainerStatuses": [{"name": "proxy", "ready": true, "started": true,
                    "restartCount": 1, "state": {"running": {}}}],
                "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0,
                    "state": {"running": {}}}],
            },
        });
        let cells = row(pod);
        assert_eq!(cells[1], "2/2");
        assert_eq!(cells[2], "Running");
        assert_eq!(cells[3], "1");
    }

    #[test]
    fn completed_and_failed_pods() {
        let pod = json!({
            "metadata": {"name": "job-x"},
            "spec": {"containers": [{"name": "main"}]},
            "status": {"phase": "Succeeded", "containerStatuses": [{"name": "main",
                "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]},
        });
        assert_eq!(row(pod)[1..3], ["0/1", "Completed"]);

        let pod = json!({
            "metadata": {"name": "killed"},
            "spec": {"containers": [{"name": "main"}]},
            "status": {"phase": "Failed", "containerStatuses": [{"name": "main",
                "state": {"terminated": {"exitCode": 137, "signal": 9}}}]},
        });
        assert_eq!(row(pod)[2], "Signal:9");
    }

    #[test]
    fn completed_container_beside_a_running_one() {
        let pod = json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [
                    {"name": "a", "ready": false,
                     "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                    {"name": "b", "ready": true, "state": {"running": {}}},
                ]},
        });
        assert_eq!(row(pod)[1..3], ["1/2", "NotReady"]);
    }

    #[test]
    fn deleting_pods() {
        let mut pod = running_nginx();
        pod["metadata"]["deletionTimestamp"] = json!("2024-05-01T11:59:50Z");
        assert_eq!(row(pod.clone())[2], "Terminating");
        pod["status"]["reason"] = json!("NodeLost");
        assert_eq!(row(pod)[2], "Unknown");

        let done = json!({
            "metadata": {"name": "p", "deletionTimestamp": "2024-05-01T11:59:50Z"},
            "status": {"phase": "Succeeded"},
        });
        assert_eq!(row(done)[2], "Succeeded");
    }

    #[test]
    fn scheduling_gated_and_evicted() {
        let gated = json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]},
        });
        assert_eq!(row(gated)[2], "SchedulingGated");
        let evicted = json!({
            "metadata": {"name": "p"},
            "status": {"phase": "Failed", "reason": "Evicted"},
        });
        assert_eq!(row(evicted)[2], "Evicted");
    }

    #[test]
    fn readiness_gates_and_nominated_node() {
        let mut pod = running_nginx();
        pod["spec"]["readinessGates"] =
            json!([{"conditionType": "example.com/lb"}, {"conditionType": "example.com/dns"}]);
        pod["status"]["conditions"]
            .as_array_mut()
            .expect("conditions")
            .push(json!({"type": "example.com/lb", "status": "True"}));
        pod["status"]["nominatedNodeName"] = json!("pi-2");
        pod["status"]["podIP"] = json!("");
        pod["status"]["podIPs"] = json!([{"ip": "fd00::5"}, {"ip": "10.244.1.5"}]);
        let cells = row(pod);
        assert_eq!(cells[5..], ["fd00::5", "pi-1", "pi-2", "1/2"]);
    }
}
