//! ClusterRole aggregation (upstream's `clusterrole-aggregation` controller, run here
//! inside the apiserver): a ClusterRole with an `aggregationRule` gets as `rules` the
//! union of the rules of every other ClusterRole its `clusterRoleSelectors` match, in
//! name order, without duplicates. It reconciles whenever a ClusterRole changes.

use crate::object;
use crate::request::{Query, ResourceRequest};
use crate::rest::{self, Change};
use crate::Apiserver;
use api_types::selector::LabelSelector;
use component_base::shutdown::Shutdown;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use serde_json::Value;
use std::sync::Arc;

/// The rules an aggregated ClusterRole should have, or `None` for a role without an
/// aggregation rule. `roles` are all ClusterRoles.
pub fn aggregated_rules(role: &Value, roles: &[Value]) -> Option<Vec<Value>> {
    let selectors = role
        .pointer("/aggregationRule/clusterRoleSelectors")
        .and_then(Value::as_array)?;
    let selectors: Vec<LabelSelector> = selectors
        .iter()
        .filter_map(|s| serde_json::from_value::<metav1::LabelSelector>(s.clone()).ok())
        .filter_map(|s| LabelSelector::from_meta(&s).ok())
        .collect();
    let name = object::name(role).unwrap_or("");
    let mut others: Vec<&Value> = roles
        .iter()
        .filter(|r| object::name(r).unwrap_or("") != name)
        .filter(|r| selectors.iter().any(|s| s.matches_object(r)))
        .collect();
    others.sort_by_key(|r| object::name(r).unwrap_or("").to_string());
    let mut rules: Vec<Value> = Vec::new();
    for r in others {
        for rule in r
            .get("rules")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !rules.contains(rule) {
                rules.push(rule.clone());
            }
        }
    }
    Some(rules)
}

async fn reconcile(api: &Apiserver) {
    let Some(info) = api_types::resources::find("rbac.authorization.k8s.io", "v1", "clusterroles")
    else {
        return;
    };
    let (cached, _) = api.cache(info).list(&object::resource_prefix(info));
    let roles: Vec<Value> = cached.iter().map(|c| c.value()).collect();
    for role in &roles {
        let Some(rules) = aggregated_rules(role, &roles) else {
            continue;
        };
        let current = role
            .get("rules")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if current == rules {
            continue;
        }
        let name = object::name(role).unwrap_or("").to_string();
        let mut updated = role.clone();
        updated["rules"] = Value::Array(rules);
        let r = ResourceRequest {
            info,
            namespace: None,
            name: Some(name.clone()),
            subresource: None,
        };
        let change = Change::Replace {
            obj: updated,
            duplicates: vec![],
        };
        match rest::update(api, &r, &Query::default(), change).await {
            Ok(_) => tracing::debug!(clusterrole = %name, "aggregated rules"),
            // A conflict means a newer version exists, and its change event runs this again.
            Err(e) => tracing::debug!(clusterrole = %name, error = %e, "aggregating rules"),
        }
    }
}

/// Keeps aggregated ClusterRoles current until shutdown.
pub async fn run(api: Arc<Apiserver>, mut shutdown: Shutdown) {
    let Some(info) = api_types::resources::find("rbac.authorization.k8s.io", "v1", "clusterroles")
    else {
        return;
    };
    let cache = api.cache(info).clone();
    let mut changes = cache.subscribe_changes();
    loop {
        if cache.wait_ready().await.is_ok() {
            reconcile(&api).await;
        }
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = shutdown.signaled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rules_are_the_union_of_matching_roles() {
        let view = json!({"metadata": {"name": "view"}, "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"agg": "view"}}]}, "rules": []});
        let roles = vec![
            view.clone(),
            json!({"metadata": {"name": "b", "labels": {"agg": "view"}}, "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]}),
            json!({"metadata": {"name": "a", "labels": {"agg": "view"}}, "rules": [{"verbs": ["list"], "apiGroups": [""], "resources": ["pods"]}, {"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]}),
            json!({"metadata": {"name": "c", "labels": {"agg": "edit"}}, "rules": [{"verbs": ["delete"], "apiGroups": [""], "resources": ["pods"]}]}),
        ];
        let rules = aggregated_rules(&view, &roles).unwrap();
        assert_eq!(
            rules,
            vec![
                json!({"verbs": ["list"], "apiGroups": [""], "resources": ["pods"]}),
                json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}),
            ]
        );
        assert!(aggregated_rules(&roles[1], &roles).is_none());
    }
}
