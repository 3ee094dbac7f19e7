//! Builders for plugin unit tests.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{json, Value};

use crate::framework::{NodeData, NodeInfo, PodInfo};

/// A pending pod in namespace `default` with this spec (containers default to one).
pub fn pod(mut spec: Value) -> PodInfo {
    if spec.get("containers").is_none() {
        spec["containers"] = json!([{"name": "c"}]);
    }
    named_pod("p", json!({}), spec)
}

pub fn named_pod(name: &str, labels: Value, spec: Value) -> PodInfo {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": labels},
        "spec": spec,
    }))
    .expect("test pod");
    PodInfo::from_pod(&pod)
}

/// A node from JSON, with one existing pod per entry of `requests` (its requests).
pub fn node(node: Value, requests: &[Value]) -> NodeInfo {
    let node: Node = serde_json::from_value(node).expect("test node");
    let data = NodeData::from_node(&node);
    let mut info = NodeInfo::new(data.name.clone());
    info.node = Some(Arc::new(data));
    for (i, r) in requests.iter().enumerate() {
        let mut p = named_pod(
            &format!("existing-{i}"),
            json!({}),
            json!({"containers": [{"name": "c", "resources": {"requests": r}}]}),
        );
        p.node_name = Some(info.name.clone());
        info.add_pod(Arc::new(p));
    }
    info
}
