//! Reading fields of a stored object. Every accessor answers the zero value upstream's typed
//! structs would hold for a missing field, so printers read like upstream's.

use serde_json::{Map, Value};

use super::duration;

/// The value at `path`, if every step exists.
pub(super) fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, key| v.get(key))
}

/// The string at `path`, or "" when missing or not a string.
pub(super) fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    opt_str_at(v, path).unwrap_or("")
}

/// The string at `path`, distinguishing a missing (nil) field from an empty one.
pub(super) fn opt_str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    get(v, path).and_then(Value::as_str)
}

/// The string at `path`, or `default` when missing or empty. For fields upstream's v1
/// defaulting always sets, so an object stored without them prints as upstream's would.
pub(super) fn str_or<'a>(v: &'a Value, path: &[&str], default: &'a str) -> &'a str {
    match str_at(v, path) {
        "" => default,
        s => s,
    }
}

/// The integer at `path`, if present.
pub(super) fn opt_int_at(v: &Value, path: &[&str]) -> Option<i64> {
    get(v, path).and_then(Value::as_i64)
}

/// The integer at `path`, or 0.
pub(super) fn int_at(v: &Value, path: &[&str]) -> i64 {
    opt_int_at(v, path).unwrap_or(0)
}

/// The boolean at `path`, if present.
pub(super) fn opt_bool_at(v: &Value, path: &[&str]) -> Option<bool> {
    get(v, path).and_then(Value::as_bool)
}

/// The boolean at `path`, or false.
pub(super) fn bool_at(v: &Value, path: &[&str]) -> bool {
    opt_bool_at(v, path).unwrap_or(false)
}

/// The array at `path`, or an empty slice.
pub(super) fn list_at<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    get(v, path)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The object (a Go map or struct) at `path`, if present.
pub(super) fn map_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Map<String, Value>> {
    get(v, path).and_then(Value::as_object)
}

/// Number of entries of the map at `path` (0 when missing).
pub(super) fn map_len(v: &Value, path: &[&str]) -> usize {
    map_at(v, path).map_or(0, Map::len)
}

/// Whether a field is set to something other than null.
pub(super) fn is_set(v: &Value, path: &[&str]) -> bool {
    get(v, path).is_some_and(|v| !v.is_null())
}

/// `metadata.name`.
pub(super) fn name(obj: &Value) -> &str {
    str_at(obj, &["metadata", "name"])
}

/// The AGE cell: time since `metadata.creationTimestamp`.
pub(super) fn age(obj: &Value, now: jiff::Timestamp) -> String {
    time_since(obj, &["metadata", "creationTimestamp"], now)
}

/// Time elapsed since the timestamp at `path`, "<unknown>" when unset.
pub(super) fn time_since(v: &Value, path: &[&str], now: jiff::Timestamp) -> String {
    duration::human_age(opt_str_at(v, path), now)
}

/// The timestamp at `path`, if set and valid.
pub(super) fn time_at(v: &Value, path: &[&str]) -> Option<jiff::Timestamp> {
    opt_str_at(v, path).and_then(duration::parse_time)
}

/// Whether `metadata.deletionTimestamp` is set (the object is being deleted).
pub(super) fn is_deleting(obj: &Value) -> bool {
    is_set(obj, &["metadata", "deletionTimestamp"])
}

/// The annotation `key`, if present.
pub(super) fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    map_at(obj, &["metadata", "annotations"])
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

/// The first condition of `type` in the list at `path`.
pub(super) fn condition<'a>(v: &'a Value, path: &[&str], ty: &str) -> Option<&'a Value> {
    list_at(v, path).iter().find(|c| str_at(c, &["type"]) == ty)
}

/// Whether the first condition of `type` in the list at `path` has status "True".
pub(super) fn condition_is_true(v: &Value, path: &[&str], ty: &str) -> bool {
    condition(v, path, ty).is_some_and(|c| str_at(c, &["status"]) == "True")
}

/// An IntOrString as Go's `IntOrString.String()` prints it.
pub(super) fn int_or_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => "0".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn missing_fields_read_as_zero_values() {
        let obj = json!({"spec": {"replicas": 3, "paused": true, "names": ["a"]}});
        assert_eq!(int_at(&obj, &["spec", "replicas"]), 3);
        assert_eq!(int_at(&obj, &["spec", "missing"]), 0);
        assert_eq!(str_at(&obj, &["spec", "replicas"]), "");
        assert!(bool_at(&obj, &["spec", "paused"]));
        assert_eq!(list_at(&obj, &["spec", "names"]).len(), 1);
        assert!(list_at(&obj, &["status", "conditions"]).is_empty());
        assert_eq!(map_len(&obj, &["spec"]), 3);
        assert!(!is_set(&json!({"a": null}), &["a"]));
    }

    #[test]
    fn first_condition_of_a_type_wins() {
        let obj = json!({"status": {"conditions": [
            {"type": "Ready", "status": "False"},
            {"type": "Ready", "status": "True"},
        ]}});
        assert!(!condition_is_true(&obj, &["status", "conditions"], "Ready"));
        assert!(!condition_is_true(&obj, &["status", "conditions"], "Other"));
    }

    #[test]
    fn int_or_string_prints_either_form() {
        assert_eq!(int_or_string(&json!(2)), "2");
        assert_eq!(int_or_string(&json!("25%")), "25%");
    }
}
