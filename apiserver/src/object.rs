//! Accessors for objects held as JSON values, and the storage keys they live under.

use api_types::resources::ResourceInfo;
use serde_json::{Map, Value};

/// `metadata` of an object, created when absent.
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = Value::Object(Map::new());
    }
    match obj.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

pub fn name(obj: &Value) -> Option<&str> {
    meta_str(obj, "name").filter(|s| !s.is_empty())
}

pub fn namespace(obj: &Value) -> Option<&str> {
    meta_str(obj, "namespace").filter(|s| !s.is_empty())
}

pub fn resource_version(obj: &Value) -> Option<&str> {
    meta_str(obj, "resourceVersion").filter(|s| !s.is_empty())
}

pub fn set_resource_version(obj: &mut Value, rv: i64) {
    meta_mut(obj).insert("resourceVersion".into(), Value::String(rv.to_string()));
}

pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.get("metadata")
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

pub fn deletion_timestamp(obj: &Value) -> Option<&str> {
    meta_str(obj, "deletionTimestamp")
}

pub fn labels(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata")?.get("labels")?.as_object()
}

/// RFC 3339 time with second precision, as metav1.Time serialises.
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(
            jiff::TimestampRound::new()
                .smallest(jiff::Unit::Second)
                .mode(jiff::RoundMode::Trunc),
        )
        .map(|t| t.to_string())
        .unwrap_or_else(|_| jiff::Timestamp::now().to_string())
}

pub fn rfc3339_after(seconds: i64) -> String {
    let t = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(seconds);
    t.round(
        jiff::TimestampRound::new()
            .smallest(jiff::Unit::Second)
            .mode(jiff::RoundMode::Trunc),
    )
    .map(|t| t.to_string())
    .unwrap_or_else(|_| t.to_string())
}

/// The storage prefix of a resource: `pods/` for the core group, `apps/deployments/` otherwise.
pub fn resource_prefix(info: &'static ResourceInfo) -> String {
    let info = crate::registry::events::storage_of(info);
    if info.group.is_empty() {
        format!("{}/", info.plural)
    } else {
        format!("{}/{}/", info.group, info.plural)
    }
}

/// The prefix for listing: one namespace, or all.
pub fn list_prefix(info: &'static ResourceInfo, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if info.namespaced => format!("{}{}/", resource_prefix(info), ns),
        _ => resource_prefix(info),
    }
}

/// The storage key of one object.
pub fn key(info: &'static ResourceInfo, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) if info.namespaced => format!("{}{}/{}", resource_prefix(info), ns, name),
        _ => format!("{}{}", resource_prefix(info), name),
    }
}

/// Does the object have a spec-like part whose changes bump `metadata.generation`?
pub fn has_spec(obj: &Value) -> bool {
    obj.as_object().is_some_and(|o| {
        o.keys()
            .any(|k| !matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status"))
    })
}

/// Everything but metadata and status: what counts as the spec for generation.
pub fn spec_part(obj: &Value) -> Map<String, Value> {
    obj.as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| {
                    !matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status")
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}
