//! Taints and tolerations, shared by the scheduler (which keeps pods off tainted nodes)
//! and the controller-manager (which evicts pods from NoExecute taints).

use k8s_openapi::api::core::v1::{Taint, Toleration};

/// Upstream `Toleration.ToleratesTaint`: the effect matches (or the toleration names none),
/// and the key and value match per the operator (`Exists` with no key tolerates all).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty()) {
        if effect != taint.effect {
            return false;
        }
    }
    let key = toleration.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            key == taint.key
                && toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn toleration(v: serde_json::Value) -> Toleration {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn toleration_matching_follows_upstream() {
        let t = Taint {
            key: "k".into(),
            value: Some("v".into()),
            effect: "NoSchedule".into(),
            ..Taint::default()
        };
        assert!(tolerates(
            &toleration(json!({"key": "k", "value": "v"})),
            &t
        ));
        assert!(tolerates(
            &toleration(json!({"key": "k", "operator": "Exists"})),
            &t
        ));
        assert!(tolerates(&toleration(json!({"operator": "Exists"})), &t));
        assert!(!tolerates(
            &toleration(json!({"key": "k", "value": "w"})),
            &t
        ));
        assert!(!tolerates(
            &toleration(json!({"key": "k", "operator": "Exists", "effect": "NoExecute"})),
            &t
        ));
        assert!(!tolerates(
            &toleration(json!({"key": "other", "operator": "Exists"})),
            &t
        ));
    }
}
