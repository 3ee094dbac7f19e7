//! Namespaces: Active at creation; a delete marks them Terminating until the namespace
//! controller has emptied them and removed the `kubernetes` finalizer.

use crate::registry::Strategy;
use api_types::resources::ResourceInfo;
use serde_json::{json, Value};

pub struct NamespaceStrategy;

impl Strategy for NamespaceStrategy {
    fn prepare_for_create(&self, _info: &ResourceInfo, obj: &mut Value) {
        obj["status"] = json!({ "phase": "Active" });
        if obj.pointer("/spec/finalizers").is_none() {
            obj["spec"] = json!({ "finalizers": ["kubernetes"] });
        }
    }

    fn prepare_for_update(&self, _info: &ResourceInfo, new: &mut Value, old: &Value) {
        // Status and spec.finalizers change only through /status and /finalize.
        new["status"] = old.get("status").cloned().unwrap_or_else(|| json!({}));
        match old.get("spec") {
            Some(s) => new["spec"] = s.clone(),
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("spec");
                }
            }
        }
    }
}

/// Whether a namespace object accepts new content.
pub fn is_terminating(ns: &Value) -> bool {
    crate::object::deletion_timestamp(ns).is_some()
        || ns.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating")
}
