//! RBAC privilege-escalation prevention (upstream `pkg/registry/rbac` policy-based
//! storage): a user may create or update a Role or ClusterRole only with rules they already
//! hold (or with the `escalate` verb on it), and may bind a role only when they hold all of
//! its rules (or have the `bind` verb on it). Requests of the apiserver itself (bootstrap,
//! the aggregation step) carry no user and are not checked.

use super::rbac::{rule_allows, Index};
use super::{Attributes, Decision};
use crate::authn::UserInfo;
use crate::status::{ApiError, ApiResult};
use crate::Apiserver;
use api_types::resources::ResourceInfo;
use k8s_openapi::api::rbac::v1::{PolicyRule, RoleRef};
use serde_json::Value;

tokio::task_local! {
    /// The user of the API request being served (upstream keeps it in the request context).
    pub static REQUEST_USER: UserInfo;
}

const GROUP: &str = "rbac.authorization.k8s.io";

/// One verb on one resource (or URL) of a rule: upstream's `BreakdownRule`.
fn breakdown(rule: &PolicyRule) -> Vec<Attributes> {
    let mut out = Vec::new();
    let names: Vec<String> = match rule.resource_names.as_deref() {
        Some(n) if !n.is_empty() => n.to_vec(),
        _ => vec![String::new()],
    };
    for verb in &rule.verbs {
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                let (resource, subresource) = match resource.split_once('/') {
                    Some((r, s)) => (r.to_string(), s.to_string()),
                    None => (resource.clone(), String::new()),
                };
                for name in &names {
                    out.push(Attributes {
                        verb: verb.clone(),
                        resource_request: true,
                        api_group: group.clone(),
                        resource: resource.clone(),
                        subresource: subresource.clone(),
                        name: name.clone(),
                        ..Default::default()
                    });
                }
            }
        }
        for url in rule.non_resource_urls.iter().flatten() {
            out.push(Attributes {
                verb: verb.clone(),
                path: url.clone(),
                ..Default::default()
            });
        }
    }
    out
}

/// Upstream's `Covers`: every piece of the servant rules is allowed by an owner rule. A
/// `*` in a servant rule is only covered by a `*` (or a matching prefix URL) of the owner.
/// Returns the pieces that are not covered.
pub fn uncovered(owner: &[PolicyRule], servant: &[PolicyRule]) -> Vec<Attributes> {
    servant
        .iter()
        .flat_map(breakdown)
        .filter(|piece| !owner.iter().any(|o| rule_allows(piece, o)))
        .collect()
}

fn describe(piece: &Attributes) -> String {
    if piece.resource_request {
        let resource = if piece.subresource.is_empty() {
            piece.resource.clone()
        } else {
            format!("{}/{}", piece.resource, piece.subresource)
        };
        let names = if piece.name.is_empty() {
            String::new()
        } else {
            format!(", ResourceNames:[{:?}]", piece.name)
        };
        format!(
            "{{APIGroups:[{:?}], Resources:[{:?}]{names}, Verbs:[{:?}]}}",
            piece.api_group, resource, piece.verb
        )
    } else {
        format!(
            "{{NonResourceURLs:[{:?}], Verbs:[{:?}]}}",
            piece.path, piece.verb
        )
    }
}

fn rules_of(obj: &Value) -> Vec<PolicyRule> {
    obj.get("rules")
        .and_then(|r| serde_json::from_value(r.clone()).ok())
        .unwrap_or_default()
}

/// Whether the user may `verb` the named RBAC object outright (`escalate`, `bind`).
fn may(api: &Apiserver, user: &UserInfo, verb: &str, resource: &str, ns: &str, name: &str) -> bool {
    let mut a = Attributes::for_user(user);
    a.verb = verb.into();
    a.resource_request = true;
    a.api_group = GROUP.into();
    a.resource = resource.into();
    a.namespace = ns.into();
    a.name = name.into();
    api.authz.authorize(&a).0 == Decision::Allow
}

/// Upstream's `IsOnlyMutatingGCFields`: an update that changes only owner references and
/// finalizers (the garbage collector's) grants nothing.
fn only_gc_fields_changed(new: &Value, old: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            for f in [
                "ownerReferences",
                "finalizers",
                "resourceVersion",
                "managedFields",
            ] {
                meta.remove(f);
            }
        }
        v
    };
    strip(new) == strip(old)
}

/// Checks a create (`old` is `None`) or update of an RBAC object by the request's user.
pub fn check(
    api: &Apiserver,
    info: &ResourceInfo,
    namespace: Option<&str>,
    name: &str,
    obj: &Value,
    old: Option<&Value>,
) -> ApiResult<()> {
    if info.group != GROUP || api.authz.allows_everything() {
        return Ok(());
    }
    if old.is_some_and(|old| only_gc_fields_changed(obj, old)) {
        return Ok(());
    }
    let Ok(user) = REQUEST_USER.try_with(Clone::clone) else {
        return Ok(());
    };
    if user.groups.iter().any(|g| g == super::PRIVILEGED_GROUP) {
        return Ok(());
    }
    let ns = namespace.unwrap_or("");
    let index = match api.authz.rbac() {
        Some(r) => r.index(),
        None => std::sync::Arc::new(Index::default()),
    };
    let granted: Vec<PolicyRule> = match info.plural {
        "roles" | "clusterroles" => {
            if may(api, &user, "escalate", info.plural, ns, name) {
                return Ok(());
            }
            rules_of(obj)
        }
        "rolebindings" | "clusterrolebindings" => {
            let Some(role_ref) = obj
                .get("roleRef")
                .and_then(|r| serde_json::from_value::<RoleRef>(r.clone()).ok())
            else {
                return Ok(());
            };
            let resource = if role_ref.kind == "Role" {
                "roles"
            } else {
                "clusterroles"
            };
            if may(api, &user, "bind", resource, ns, &role_ref.name) {
                return Ok(());
            }
            match index.role_rules_of(&role_ref, ns) {
                Some(rules) => rules,
                // Upstream refuses a binding to a role it cannot find unless `bind` allows it.
                None => {
                    return Err(ApiError::forbidden(
                        info,
                        name,
                        format!(
                            "user {:?} (groups={:?}) is attempting to grant RBAC permissions not currently held: {} {:?} not found",
                            user.name, user.groups, role_ref.kind.to_lowercase(), role_ref.name
                        ),
                    ))
                }
            }
        }
        _ => return Ok(()),
    };
    let (held, _) = index.rules_for(&user.name, &user.groups, ns);
    let missing = uncovered(&held, &granted);
    if missing.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = missing.iter().map(describe).collect();
    Err(ApiError::forbidden(
        info,
        name,
        format!(
            "user {:?} (groups={:?}) is attempting to grant RBAC permissions not currently held:\n{}",
            user.name,
            user.groups,
            list.join("\n")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(v: Value) -> Vec<PolicyRule> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn garbage_collector_changes_grant_nothing() {
        let old = json!({"metadata": {"name": "b", "resourceVersion": "1"}, "roleRef": {"kind": "ClusterRole", "name": "admin"}});
        let mut new = old.clone();
        new["metadata"]["ownerReferences"] =
            json!([{"kind": "X", "name": "x", "uid": "u", "apiVersion": "v1"}]);
        new["metadata"]["finalizers"] = json!(["foregroundDeletion"]);
        assert!(only_gc_fields_changed(&new, &old));
        new["metadata"]["labels"] = json!({"a": "b"});
        assert!(!only_gc_fields_changed(&new, &old));
    }

    #[test]
    fn coverage_as_upstream() {
        let owner = rules(json!([
            {"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "pods/log"]},
            {"verbs": ["*"], "apiGroups": ["apps"], "resources": ["*"]},
            {"verbs": ["get"], "nonResourceURLs": ["/metrics/*"]},
        ]));
        assert!(uncovered(
            &owner,
            &rules(json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]))
        )
        .is_empty());
        assert!(uncovered(&owner, &rules(json!([{"verbs": ["delete"], "apiGroups": ["apps"], "resources": ["deployments/scale"], "resourceNames": ["d"]}]))).is_empty());
        assert!(uncovered(
            &owner,
            &rules(json!([{"verbs": ["get"], "nonResourceURLs": ["/metrics/slis"]}]))
        )
        .is_empty());
        let missing = uncovered(
            &owner,
            &rules(
                json!([{"verbs": ["get", "delete"], "apiGroups": [""], "resources": ["pods", "secrets"]}]),
            ),
        );
        let shown: Vec<String> = missing.iter().map(describe).collect();
        assert_eq!(
            shown,
            [
                "{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\"]}",
                "{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"delete\"]}",
                "{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"delete\"]}",
            ]
        );
        // A wildcard is covered only by a wildcard.
        assert_eq!(
            uncovered(
                &owner,
                &rules(json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["*"]}]))
            )
            .len(),
            1
        );
        assert_eq!(
            uncovered(
                &owner,
                &rules(json!([{"verbs": ["*"], "apiGroups": [""], "resources": ["pods"]}]))
            )
            .len(),
            1
        );
    }
}
