//! Pods: created Pending, graceful deletion once bound to a node.

use crate::registry::Strategy;
use api_types::resources::ResourceInfo;
use serde_json::{json, Value};

pub struct PodStrategy;

/// Upstream's QoS class from the containers' requests and limits.
fn qos_class(pod: &Value) -> &'static str {
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .filter_map(|f| pod.pointer(&format!("/spec/{f}")).and_then(Value::as_array))
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in containers {
        let requests = c.pointer("/resources/requests").and_then(Value::as_object);
        let limits = c.pointer("/resources/limits").and_then(Value::as_object);
        let has = |m: Option<&serde_json::Map<String, Value>>| {
            m.is_some_and(|m| m.contains_key("cpu") || m.contains_key("memory"))
        };
        if has(requests) || has(limits) {
            any = true;
        }
        for res in ["cpu", "memory"] {
            let limit = limits.and_then(|l| l.get(res));
            let request = requests.and_then(|r| r.get(res)).or(limit);
            if limit.is_none() || request != limit {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

impl Strategy for PodStrategy {
    fn prepare_for_create(&self, _info: &ResourceInfo, obj: &mut Value) {
        let qos = qos_class(obj);
        obj["status"] = json!({ "phase": "Pending", "qosClass": qos });
    }

    fn graceful_delete_period(&self, pod: &Value, requested: Option<i64>) -> Option<i64> {
        // Unbound pods and pods that finished are deleted at once, as upstream.
        let bound = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        let phase = pod
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !bound || matches!(phase, "Succeeded" | "Failed") {
            return None;
        }
        let grace = requested
            .or_else(|| {
                pod.pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
            })
            .unwrap_or(30);
        Some(grace.max(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos() {
        let be = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(qos_class(&be), "BestEffort");
        let g = json!({"spec": {"containers": [{"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        assert_eq!(qos_class(&g), "Guaranteed");
        let b = json!({"spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}]}});
        assert_eq!(qos_class(&b), "Burstable");
    }
}
