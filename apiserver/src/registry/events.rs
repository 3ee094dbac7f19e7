//! events.k8s.io/v1 Events are core/v1 Events in storage, as upstream: one set of objects
//! seen through two APIs. These convert between the two shapes.

use api_types::resources::{self, ResourceInfo};
use serde_json::{Map, Value};

/// Fields renamed between events.k8s.io/v1 (left) and core/v1 (right).
const RENAMED: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// Is this the events.k8s.io view of core Events?
pub fn is_events_v1(info: &ResourceInfo) -> bool {
    info.group == "events.k8s.io" && info.plural == "events"
}

/// The resource whose storage (keys and watch cache) serves `info`.
pub fn storage_of(info: &'static ResourceInfo) -> &'static ResourceInfo {
    if is_events_v1(info) {
        resources::find("", "v1", "events").unwrap_or(info)
    } else {
        info
    }
}

fn rename(
    obj: &Value,
    pairs: impl Iterator<Item = (&'static str, &'static str)>,
    api_version: &str,
) -> Value {
    let Some(o) = obj.as_object() else {
        return obj.clone();
    };
    let pairs: Vec<(&str, &str)> = pairs.collect();
    let mut out = Map::new();
    for (k, v) in o {
        let key = pairs
            .iter()
            .find(|(from, _)| from == k)
            .map(|(_, to)| to.to_string())
            .unwrap_or_else(|| k.clone());
        out.insert(key, v.clone());
    }
    out.insert("apiVersion".into(), Value::String(api_version.into()));
    out.insert("kind".into(), Value::String("Event".into()));
    Value::Object(out)
}

/// events.k8s.io/v1 → core/v1 (what is stored).
pub fn to_core(obj: &Value) -> Value {
    rename(obj, RENAMED.iter().copied(), "v1")
}

/// core/v1 (stored) → events.k8s.io/v1.
pub fn from_core(obj: &Value) -> Value {
    rename(
        obj,
        RENAMED.iter().map(|(a, b)| (*b, *a)),
        "events.k8s.io/v1",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip() {
        let v1 = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": { "name": "e", "namespace": "default" },
            "regarding": { "kind": "Pod", "name": "p" }, "note": "hello", "reason": "Started",
            "reportingController": "kubelet", "reportingInstance": "node-1", "action": "Start", "type": "Normal",
            "eventTime": "2024-01-01T00:00:00.000000Z",
        });
        let core = to_core(&v1);
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "p");
        assert_eq!(core["message"], "hello");
        assert_eq!(core["reportingComponent"], "kubelet");
        assert_eq!(from_core(&core), v1);
    }
}
