//! Upstream's `DefaultTolerationSeconds` (plugin/pkg/admission/defaulttolerationseconds): a
//! new Pod that does not tolerate the `not-ready` or `unreachable` NoExecute taints gets a
//! bounded toleration of each, so its node's failure evicts it after a grace
//! (`--default-not-ready-toleration-seconds`, `--default-unreachable-toleration-seconds`)
//! rather than at once.

use crate::AdmissionConfig;
use serde_json::{json, Value};

const NOT_READY: &str = "node.kubernetes.io/not-ready";
const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

/// Whether one of the tolerations covers `key`'s NoExecute taint: the same key or any key
/// (an empty key with `Exists`), with the NoExecute effect or any effect.
fn tolerates(tolerations: &[Value], key: &str) -> bool {
    tolerations.iter().any(|t| {
        let k = t.get("key").and_then(Value::as_str).unwrap_or("");
        let e = t.get("effect").and_then(Value::as_str).unwrap_or("");
        (k == key || k.is_empty()) && (e == "NoExecute" || e.is_empty())
    })
}

pub fn admit_pod_create(config: &AdmissionConfig, pod: &mut Value) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let existing: Vec<Value> = spec
        .get("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut added = Vec::new();
    for (key, seconds) in [
        (NOT_READY, config.default_not_ready_toleration_seconds),
        (UNREACHABLE, config.default_unreachable_toleration_seconds),
    ] {
        if !tolerates(&existing, key) {
            added.push(json!({
                "key": key,
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": seconds,
            }));
        }
    }
    if added.is_empty() {
        return;
    }
    let mut all = existing;
    all.extend(added);
    spec.insert("tolerations".into(), Value::Array(all));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(tolerations: Value) -> Value {
        let mut pod = json!({ "spec": { "containers": [], "tolerations": tolerations } });
        admit_pod_create(&AdmissionConfig::default(), &mut pod);
        pod["spec"]["tolerations"].clone()
    }

    #[test]
    fn both_tolerations_are_added_with_the_default_seconds() {
        let mut pod = json!({ "spec": { "containers": [] } });
        admit_pod_create(&AdmissionConfig::default(), &mut pod);
        assert_eq!(
            pod["spec"]["tolerations"],
            json!([
                { "key": NOT_READY, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300 },
                { "key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300 },
            ])
        );
    }

    #[test]
    fn a_pod_that_tolerates_a_taint_keeps_its_own_toleration() {
        let own = json!({ "key": NOT_READY, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5 });
        let t = admitted(json!([own]));
        assert_eq!(t.as_array().unwrap().len(), 2);
        assert_eq!(t[0], own);
        assert_eq!(t[1]["key"], UNREACHABLE);

        // A toleration of every taint (empty key, Exists, any effect) covers both.
        let everything = json!([{ "operator": "Exists" }]);
        assert_eq!(admitted(everything.clone()), everything);

        // A NoSchedule toleration of the key does not cover the NoExecute taint.
        let no_schedule =
            json!({ "key": UNREACHABLE, "operator": "Exists", "effect": "NoSchedule" });
        assert_eq!(admitted(json!([no_schedule])).as_array().unwrap().len(), 3);
    }
}
