//! RoleBindings and ClusterRoleBindings as upstream prints them: the role and, in wide
//! output, the users, groups and ServiceAccounts bound. Roles and ClusterRoles use the
//! default convertor (name and creation time), as upstream.

use jiff::Timestamp;
use serde_json::Value;

use super::fields::{age, name};
use super::Column;

/// `RoleBinding.roleRef` (rbac/v1).
const ROLE_REF: &str = "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error. This field is immutable.";

pub(super) const ROLE_BINDING_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new("Role", "string", ROLE_REF),
    Column::age(),
    Column::wide("Users", "string", "Users in the roleBinding"),
    Column::wide("Groups", "string", "Groups in the roleBinding"),
    Column::wide(
        "ServiceAccounts",
        "string",
        "ServiceAccounts in the roleBinding",
    ),
];

pub(super) const CLUSTER_ROLE_BINDING_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new("Role", "string", ROLE_REF),
    Column::age(),
    Column::wide("Users", "string", "Users in the clusterRoleBinding"),
    Column::wide("Groups", "string", "Groups in the clusterRoleBinding"),
    Column::wide(
        "ServiceAccounts",
        "string",
        "ServiceAccounts in the clusterRoleBinding",
    ),
];

fn subjects(binding: &Value, kind: &str) -> String {
    let s = |v: &Value, f: &str| v.get(f).and_then(Value::as_str).unwrap_or("").to_string();
    binding
        .get("subjects")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|subject| s(subject, "kind") == kind)
        .map(|subject| {
            if kind == "ServiceAccount" {
                format!("{}/{}", s(subject, "namespace"), s(subject, "name"))
            } else {
                s(subject, "name")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn binding_cells(binding: &Value, now: Timestamp) -> Vec<Value> {
    let role_ref = |f: &str| {
        binding
            .pointer(&format!("/roleRef/{f}"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    vec![
        Value::from(name(binding)),
        Value::from(format!("{}/{}", role_ref("kind"), role_ref("name"))),
        Value::from(age(binding, now)),
        Value::from(subjects(binding, "User")),
        Value::from(subjects(binding, "Group")),
        Value::from(subjects(binding, "ServiceAccount")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bindings_show_role_and_subjects() {
        let b = json!({"metadata": {"name": "b", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "a"}, {"kind": "User", "name": "b"}, {"kind": "ServiceAccount", "name": "sa", "namespace": "ns"}]});
        let cells = binding_cells(&b, "2026-01-01T00:01:00Z".parse().unwrap());
        assert_eq!(cells[1], "ClusterRole/view");
        assert_eq!(cells[3], "a, b");
        assert_eq!(cells[4], "");
        assert_eq!(cells[5], "ns/sa");
    }
}
