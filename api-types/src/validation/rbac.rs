//! Validation of rbac.authorization.k8s.io/v1 (upstream `pkg/apis/rbac/validation`): rules
//! need verbs and either resources (with API groups) or non-resource URLs, bindings need a
//! roleRef to a Role or ClusterRole that never changes, and subjects are Users, Groups or
//! ServiceAccounts.

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};

use super::field::{self, FieldError, Path};
use super::meta::label_selector;
use super::names::{is_valid_path_segment_name, name_is_dns_subdomain};

/// The API group of RBAC, which roleRefs and User/Group subjects name.
pub const GROUP_NAME: &str = "rbac.authorization.k8s.io";

/// Upstream's `ValidatePolicyRule`.
fn policy_rule(rule: &PolicyRule, namespaced: bool, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let non_empty = |v: &Option<Vec<String>>| v.as_ref().is_some_and(|v| !v.is_empty());
    if rule.verbs.is_empty() {
        errs.push(field::required(
            &path.child("verbs"),
            "verbs must contain at least one value",
        ));
    }
    if non_empty(&rule.non_resource_urls) {
        let urls = serde_json::to_value(&rule.non_resource_urls).unwrap_or_default();
        if namespaced {
            errs.push(field::invalid(
                &path.child("nonResourceURLs"),
                urls.clone(),
                "namespaced rules cannot apply to non-resource URLs",
            ));
        }
        if non_empty(&rule.api_groups)
            || non_empty(&rule.resources)
            || non_empty(&rule.resource_names)
        {
            errs.push(field::invalid(
                &path.child("nonResourceURLs"),
                urls,
                "rules cannot apply to both regular resources and non-resource URLs",
            ));
        }
        return errs;
    }
    if !non_empty(&rule.api_groups) {
        errs.push(field::required(
            &path.child("apiGroups"),
            "resource rules must supply at least one api group",
        ));
    }
    if !non_empty(&rule.resources) {
        errs.push(field::required(
            &path.child("resources"),
            "resource rules must supply at least one resource",
        ));
    }
    errs
}

fn rules(rules: Option<&Vec<PolicyRule>>, namespaced: bool) -> Vec<FieldError> {
    let path = Path::new("rules");
    rules
        .into_iter()
        .flatten()
        .enumerate()
        .flat_map(|(i, r)| policy_rule(r, namespaced, &path.index(i)))
        .collect()
}

pub(crate) fn role(role: &Role) -> Vec<FieldError> {
    rules(role.rules.as_ref(), true)
}

pub(crate) fn cluster_role(role: &ClusterRole) -> Vec<FieldError> {
    let mut errs = rules(role.rules.as_ref(), false);
    if let Some(aggregation) = &role.aggregation_rule {
        let path = Path::new("aggregationRule").child("clusterRoleSelectors");
        let selectors = aggregation
            .cluster_role_selectors
            .as_deref()
            .unwrap_or_default();
        if selectors.is_empty() {
            errs.push(field::required(
                &path,
                "at least one clusterRoleSelector required if aggregationRule is non-nil",
            ));
        }
        for (i, s) in selectors.iter().enumerate() {
            errs.extend(label_selector(s, &path.index(i)));
        }
    }
    errs
}

/// Upstream's `ValidateRoleBindingSubject`.
fn subject(s: &Subject, namespaced: bool, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if s.name.is_empty() {
        errs.push(field::required(&path.child("name"), ""));
    }
    let api_group = s.api_group.as_deref().unwrap_or_default();
    match s.kind.as_str() {
        "ServiceAccount" => {
            if !s.name.is_empty() {
                for msg in name_is_dns_subdomain(&s.name, false) {
                    errs.push(field::invalid(&path.child("name"), s.name.clone(), &msg));
                }
            }
            if !api_group.is_empty() {
                errs.push(field::not_supported(
                    &path.child("apiGroup"),
                    api_group,
                    &[""],
                ));
            }
            if !namespaced && s.namespace.as_deref().unwrap_or_default().is_empty() {
                errs.push(field::required(&path.child("namespace"), ""));
            }
        }
        "User" | "Group" => {
            if api_group != GROUP_NAME {
                errs.push(field::not_supported(
                    &path.child("apiGroup"),
                    api_group,
                    &[GROUP_NAME],
                ));
            }
        }
        other => errs.push(field::not_supported(
            &path.child("kind"),
            other,
            &["ServiceAccount", "User", "Group"],
        )),
    }
    errs
}

fn role_ref(r: &RoleRef, kinds: &[&str]) -> Vec<FieldError> {
    let path = Path::new("roleRef");
    let mut errs = Vec::new();
    if r.api_group != GROUP_NAME {
        errs.push(field::not_supported(
            &path.child("apiGroup"),
            r.api_group.clone(),
            &[GROUP_NAME],
        ));
    }
    if !kinds.contains(&r.kind.as_str()) {
        errs.push(field::not_supported(
            &path.child("kind"),
            r.kind.clone(),
            kinds,
        ));
    }
    if r.name.is_empty() {
        errs.push(field::required(&path.child("name"), ""));
    } else {
        for msg in is_valid_path_segment_name(&r.name, false) {
            errs.push(field::invalid(&path.child("name"), r.name.clone(), &msg));
        }
    }
    errs
}

fn subjects(list: Option<&Vec<Subject>>, namespaced: bool) -> Vec<FieldError> {
    let path = Path::new("subjects");
    list.into_iter()
        .flatten()
        .enumerate()
        .flat_map(|(i, s)| subject(s, namespaced, &path.index(i)))
        .collect()
}

pub(crate) fn role_binding(b: &RoleBinding) -> Vec<FieldError> {
    let mut errs = role_ref(&b.role_ref, &["Role", "ClusterRole"]);
    errs.extend(subjects(b.subjects.as_ref(), true));
    errs
}

pub(crate) fn cluster_role_binding(b: &ClusterRoleBinding) -> Vec<FieldError> {
    let mut errs = role_ref(&b.role_ref, &["ClusterRole"]);
    errs.extend(subjects(b.subjects.as_ref(), false));
    errs
}

/// `roleRef` cannot change: a binding means one role for its whole life.
fn role_ref_update(new: &RoleRef, old: &RoleRef) -> Vec<FieldError> {
    if new == old {
        return Vec::new();
    }
    let display = format!(
        "rbac.RoleRef{{APIGroup:{}, Kind:{}, Name:{}}}",
        field::go_quote(&new.api_group),
        field::go_quote(&new.kind),
        field::go_quote(&new.name)
    );
    vec![field::invalid_displayed(
        &Path::new("roleRef"),
        serde_json::to_value(new).unwrap_or_default(),
        &display,
        "cannot change roleRef",
    )]
}

pub(crate) fn role_binding_update(new: &RoleBinding, old: &RoleBinding) -> Vec<FieldError> {
    role_ref_update(&new.role_ref, &old.role_ref)
}

pub(crate) fn cluster_role_binding_update(
    new: &ClusterRoleBinding,
    old: &ClusterRoleBinding,
) -> Vec<FieldError> {
    role_ref_update(&new.role_ref, &old.role_ref)
}

#[cfg(test)]
mod tests {
    use crate::resources::find;
    use crate::validation::{validate_create, validate_update};
    use serde_json::{json, Value};

    fn fields(info: &str, obj: &Value) -> Vec<String> {
        let info = find("rbac.authorization.k8s.io", "v1", info).unwrap();
        let mut obj = obj.clone();
        crate::defaults::apply_defaults(info, &mut obj).unwrap();
        validate_create(info, &obj)
            .into_iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect()
    }

    #[test]
    fn rules_need_verbs_and_a_target() {
        let role =
            |rules: Value| json!({"metadata": {"name": "r", "namespace": "ns"}, "rules": rules});
        assert!(fields(
            "roles",
            &role(json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]))
        )
        .is_empty());
        assert_eq!(
            fields(
                "roles",
                &role(json!([{"apiGroups": [""], "resources": ["pods"]}]))
            ),
            ["rules[0].verbs: Required value: verbs must contain at least one value"]
        );
        assert_eq!(
            fields("roles", &role(json!([{"verbs": ["get"], "resources": ["pods"]}]))),
            ["rules[0].apiGroups: Required value: resource rules must supply at least one api group"]
        );
        assert_eq!(
            fields("roles", &role(json!([{"verbs": ["get"], "nonResourceURLs": ["/metrics"]}]))),
            ["rules[0].nonResourceURLs: Invalid value: []string{\"/metrics\"}: namespaced rules cannot apply to non-resource URLs"]
        );
        let cluster = json!({"metadata": {"name": "c"}, "rules": [{"verbs": ["get"], "nonResourceURLs": ["/metrics"], "resources": ["pods"]}]});
        assert_eq!(
            fields("clusterroles", &cluster),
            ["rules[0].nonResourceURLs: Invalid value: []string{\"/metrics\"}: rules cannot apply to both regular resources and non-resource URLs"]
        );
        let agg = json!({"metadata": {"name": "c"}, "aggregationRule": {}});
        assert_eq!(
            fields("clusterroles", &agg),
            ["aggregationRule.clusterRoleSelectors: Required value: at least one clusterRoleSelector required if aggregationRule is non-nil"]
        );
    }

    #[test]
    fn bindings_need_a_role_ref_and_known_subjects() {
        let rb = json!({"metadata": {"name": "b", "namespace": "ns"}, "roleRef": {"kind": "Role", "name": "r"},
            "subjects": [{"kind": "User", "name": "alice"}, {"kind": "ServiceAccount", "name": "sa"}, {"kind": "Robot", "name": "x"}, {"kind": "Group"}]});
        assert_eq!(
            fields("rolebindings", &rb),
            [
                "subjects[2].kind: Unsupported value: \"Robot\": supported values: \"ServiceAccount\", \"User\", \"Group\"",
                "subjects[3].name: Required value",
            ]
        );
        let crb = json!({"metadata": {"name": "b"}, "roleRef": {"kind": "Role", "name": "r"}, "subjects": [{"kind": "ServiceAccount", "name": "sa"}]});
        assert_eq!(
            fields("clusterrolebindings", &crb),
            [
                "roleRef.kind: Unsupported value: \"Role\": supported values: \"ClusterRole\"",
                "subjects[0].namespace: Required value",
            ]
        );
        assert_eq!(
            fields("rolebindings", &json!({"metadata": {"name": "b", "namespace": "ns"}})),
            [
                "roleRef.kind: Unsupported value: \"\": supported values: \"Role\", \"ClusterRole\"",
                "roleRef.name: Required value",
            ]
        );
        let info = find("rbac.authorization.k8s.io", "v1", "rolebindings").unwrap();
        let old = json!({"metadata": {"name": "b", "namespace": "ns"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}});
        let mut new = old.clone();
        new["roleRef"]["name"] = json!("other");
        let errs = validate_update(info, &new, &old);
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0].message,
            "Invalid value: rbac.RoleRef{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"Role\", Name:\"other\"}: cannot change roleRef"
        );
    }
}
