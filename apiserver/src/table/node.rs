//! Nodes: NAME, STATUS, ROLES, AGE, VERSION, and wide INTERNAL-IP, EXTERNAL-IP, OS-IMAGE,
//! KERNEL-VERSION, CONTAINER-RUNTIME.

use std::collections::BTreeSet;

use jiff::Timestamp;
use serde_json::Value;

use super::descriptions as d;
use super::fields::{age, bool_at, list_at, map_at, name, str_at};
use super::Column;

pub(super) const COLUMNS: &[Column] = &[
    Column::name(),
    Column::new("Status", "string", "The status of the node"),
    Column::new("Roles", "string", "The roles of the node"),
    Column::age(),
    Column::new("Version", "string", d::NODE_SYSTEM_INFO_KUBELET_VERSION),
    Column::wide("Internal-IP", "string", d::NODE_STATUS_ADDRESSES),
    Column::wide("External-IP", "string", d::NODE_STATUS_ADDRESSES),
    Column::wide("OS-Image", "string", d::NODE_SYSTEM_INFO_OS_IMAGE),
    Column::wide(
        "Kernel-Version",
        "string",
        d::NODE_SYSTEM_INFO_KERNEL_VERSION,
    ),
    Column::wide(
        "Container-Runtime",
        "string",
        d::NODE_SYSTEM_INFO_CONTAINER_RUNTIME_VERSION,
    ),
];

/// Label prefix whose suffix names a role: `node-role.kubernetes.io/control-plane`.
const NODE_ROLE_PREFIX: &str = "node-role.kubernetes.io/";
/// Older label whose value names a role.
const NODE_ROLE_LABEL: &str = "kubernetes.io/role";

pub(super) fn cells(node: &Value, now: Timestamp) -> Vec<Value> {
    let info = |field: &str| {
        let value = str_at(node, &["status", "nodeInfo", field]);
        if value.is_empty() {
            "<unknown>"
        } else {
            value
        }
    };
    vec![
        Value::from(name(node)),
        Value::from(status(node)),
        Value::from(roles(node)),
        Value::from(age(node, now)),
        Value::from(str_at(node, &["status", "nodeInfo", "kubeletVersion"])),
        Value::from(address(node, "InternalIP")),
        Value::from(address(node, "ExternalIP")),
        Value::from(info("osImage")),
        Value::from(info("kernelVersion")),
        Value::from(info("containerRuntimeVersion")),
    ]
}

/// "Ready", "NotReady" or "Unknown", then ",SchedulingDisabled" for a cordoned node.
fn status(node: &Value) -> String {
    // The last Ready condition wins, as upstream indexes conditions by type.
    let ready = list_at(node, &["status", "conditions"])
        .iter()
        .rfind(|c| str_at(c, &["type"]) == "Ready");
    let mut status = match ready {
        Some(c) if str_at(c, &["status"]) == "True" => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if bool_at(node, &["spec", "unschedulable"]) {
        status.push_str(",SchedulingDisabled");
    }
    status
}

/// Sorted roles from `node-role.kubernetes.io/<role>` and `kubernetes.io/role=<role>`
/// labels, or "<none>".
fn roles(node: &Value) -> String {
    let mut roles = BTreeSet::new();
    for (key, value) in map_at(node, &["metadata", "labels"]).into_iter().flatten() {
        if let Some(role) = key.strip_prefix(NODE_ROLE_PREFIX) {
            if !role.is_empty() {
                roles.insert(role);
            }
        } else if key == NODE_ROLE_LABEL {
            if let Some(role) = value.as_str().filter(|r| !r.is_empty()) {
                roles.insert(role);
            }
        }
    }
    if roles.is_empty() {
        return "<none>".to_string();
    }
    roles.into_iter().collect::<Vec<_>>().join(",")
}

/// The first address of a type, or "<none>".
fn address<'a>(node: &'a Value, ty: &str) -> &'a str {
    list_at(node, &["status", "addresses"])
        .iter()
        .find(|a| str_at(a, &["type"]) == ty)
        .map_or("<none>", |a| str_at(a, &["address"]))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{info, now};
    use super::super::{column_definitions, row_cells};
    use serde_json::{json, Value};

    fn pi(labels: Value) -> Value {
        json!({
            "metadata": {"name": "pi-1", "labels": labels,
                         "creationTimestamp": "2024-04-10T12:00:00Z"},
            "spec": {"podCIDR": "10.244.1.0/24"},
            "status": {
                "conditions": [
                    {"type": "MemoryPressure", "status": "False"},
                    {"type": "Ready", "status": "True"},
                ],
                "addresses": [
                    {"type": "Hostname", "address": "pi-1"},
                    {"type": "InternalIP", "address": "192.168.1.21"},
                ],
                "nodeInfo": {
                    "kubeletVersion": "v1.33.0", "osImage": "Debian GNU/Linux 12 (bookworm)",
                    "kernelVersion": "6.6.31+rpt-rpi-v8", "containerRuntimeVersion": "containerd://1.7.13",
                },
            },
        })
    }

    #[test]
    fn columns_are_upstreams() {
        let columns = column_definitions(info("", "nodes"));
        let names: Vec<_> = columns.iter().map(|c| c["name"].clone()).collect();
        assert_eq!(
            names,
            [
                "Name",
                "Status",
                "Roles",
                "Age",
                "Version",
                "Internal-IP",
                "External-IP",
                "OS-Image",
                "Kernel-Version",
                "Container-Runtime"
            ]
        );
        assert_eq!(columns[4]["priority"], 0);
        assert_eq!(columns[5]["priority"], 1);
    }

    #[test]
    fn ready_control_plane_node() {
        let node = pi(json!({"node-role.kubernetes.io/control-plane": "",
                             "kubernetes.io/hostname": "pi-1"}));
        assert_eq!(
            row_cells(info("", "nodes"), &node, now()),
            [
                "pi-1",
                "Ready",
                "control-plane",
                "21d",
                "v1.33.0",
                "192.168.1.21",
                "<none>",
                "Debian GNU/Linux 12 (bookworm)",
                "6.6.31+rpt-rpi-v8",
                "containerd://1.7.13"
            ]
        );
    }

    #[test]
    fn cordoned_not_ready_worker_with_several_roles() {
        let mut node = pi(json!({"node-role.kubernetes.io/worker": "",
                                 "node-role.kubernetes.io/": "",
                                 "kubernetes.io/role": "edge"}));
        node["spec"]["unschedulable"] = json!(true);
        node["status"]["conditions"][1]["status"] = json!("Unknown");
        node["status"]["addresses"]
            .as_array_mut()
            .expect("addresses")
            .push(json!({"type": "ExternalIP", "address": "203.0.113.7"}));
        let cells = row_cells(info("", "nodes"), &node, now());
        assert_eq!(cells[1..3], ["NotReady,SchedulingDisabled", "edge,worker"]);
        assert_eq!(cells[6], "203.0.113.7");
    }

    #[test]
    fn new_node_without_status() {
        let node = json!({"metadata": {"name": "pi-9"}});
        assert_eq!(
            row_cells(info("", "nodes"), &node, now()),
            [
                "pi-9",
                "Unknown",
                "<none>",
                "<unknown>",
                "",
                "<none>",
                "<none>",
                "<unknown>",
                "<unknown>",
                "<unknown>"
            ]
        );
    }
}
