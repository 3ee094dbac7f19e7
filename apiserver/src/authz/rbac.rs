//! The RBAC authorizer (upstream `plugin/pkg/auth/authorizer/rbac`): a request is allowed
//! when a rule of a role bound to the user allows it. ClusterRoleBindings grant their
//! ClusterRole everywhere; RoleBindings grant their Role or ClusterRole in their namespace
//! only. Subjects are Users, Groups and ServiceAccounts
//! (`system:serviceaccount:<namespace>:<name>`).
//!
//! Roles and bindings are read from the apiserver's own watch caches, never from etcd per
//! request: an index of the four kinds is rebuilt whenever one of their caches changed.

use super::{Attributes, Decision};
use crate::watch_cache::WatchCache;
use k8s_openapi::api::rbac::v1::{PolicyRule, RoleRef, Subject};
use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// The watch caches authorizers read.
#[derive(Clone, Default)]
pub struct Sources {
    pub cluster_roles: Option<Arc<WatchCache>>,
    pub cluster_role_bindings: Option<Arc<WatchCache>>,
    pub roles: Option<Arc<WatchCache>>,
    pub role_bindings: Option<Arc<WatchCache>>,
    /// Pods, for the Node authorizer's "bound to this node" checks.
    pub pods: Option<Arc<WatchCache>>,
}

impl Sources {
    /// No caches (unit tests of the chain).
    pub fn empty() -> Sources {
        Sources::default()
    }

    pub fn from_caches(caches: &HashMap<(&'static str, &'static str), Arc<WatchCache>>) -> Sources {
        let get = |g: &'static str, p: &'static str| caches.get(&(g, p)).cloned();
        const G: &str = "rbac.authorization.k8s.io";
        Sources {
            cluster_roles: get(G, "clusterroles"),
            cluster_role_bindings: get(G, "clusterrolebindings"),
            roles: get(G, "roles"),
            role_bindings: get(G, "rolebindings"),
            pods: get("", "pods"),
        }
    }

    fn rbac_caches(&self) -> [Option<&Arc<WatchCache>>; 4] {
        [
            self.cluster_roles.as_ref(),
            self.cluster_role_bindings.as_ref(),
            self.roles.as_ref(),
            self.role_bindings.as_ref(),
        ]
    }
}

fn objects(cache: Option<&Arc<WatchCache>>) -> Vec<Value> {
    cache
        .map(|c| c.list("").0.iter().map(|o| o.value()).collect())
        .unwrap_or_default()
}

// ------------------------------------------------------------------------------ rule matching

fn has(list: &[String], value: &str) -> bool {
    list.iter().any(|v| v == value)
}

fn opt(list: &Option<Vec<String>>) -> &[String] {
    list.as_deref().unwrap_or_default()
}

/// Upstream's `VerbMatches`.
pub fn verb_matches(rule: &PolicyRule, verb: &str) -> bool {
    has(&rule.verbs, "*") || has(&rule.verbs, verb)
}

/// Upstream's `APIGroupMatches`.
pub fn api_group_matches(rule: &PolicyRule, group: &str) -> bool {
    let groups = opt(&rule.api_groups);
    has(groups, "*") || has(groups, group)
}

/// Upstream's `ResourceMatches`: `*`, `resource`, `resource/subresource` or `*/subresource`.
pub fn resource_matches(rule: &PolicyRule, combined: &str, subresource: &str) -> bool {
    opt(&rule.resources).iter().any(|r| {
        r == "*"
            || r == combined
            || (!subresource.is_empty()
                && r.len() == subresource.len() + 2
                && r.starts_with("*/")
                && r.ends_with(subresource))
    })
}

/// Upstream's `ResourceNameMatches`: no names means every name.
pub fn resource_name_matches(rule: &PolicyRule, name: &str) -> bool {
    let names = opt(&rule.resource_names);
    names.is_empty() || has(names, name)
}

/// Upstream's `NonResourceURLMatches`: exact, `*`, or a prefix ending in `*`.
pub fn non_resource_url_matches(rule: &PolicyRule, path: &str) -> bool {
    opt(&rule.non_resource_urls).iter().any(|u| {
        u == "*"
            || u == path
            || u.strip_suffix('*')
                .is_some_and(|prefix| path.starts_with(prefix))
    })
}

/// Upstream's `RuleAllows`.
pub fn rule_allows(a: &Attributes, rule: &PolicyRule) -> bool {
    if a.resource_request {
        let combined = if a.subresource.is_empty() {
            a.resource.clone()
        } else {
            format!("{}/{}", a.resource, a.subresource)
        };
        verb_matches(rule, &a.verb)
            && api_group_matches(rule, &a.api_group)
            && resource_matches(rule, &combined, &a.subresource)
            && resource_name_matches(rule, &a.name)
    } else {
        verb_matches(rule, &a.verb) && non_resource_url_matches(rule, &a.path)
    }
}

// ------------------------------------------------------------------------------ the index

#[derive(Debug, Clone)]
struct Binding {
    name: String,
    /// Empty for ClusterRoleBindings.
    namespace: String,
    role_ref: RoleRef,
    subjects: Vec<Subject>,
}

/// Roles and bindings, decoded once per change.
#[derive(Debug, Default)]
pub struct Index {
    cluster_roles: HashMap<String, Vec<PolicyRule>>,
    roles: HashMap<(String, String), Vec<PolicyRule>>,
    cluster_role_bindings: Vec<Binding>,
    role_bindings: HashMap<String, Vec<Binding>>,
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(next) => cur = next,
            None => return "",
        }
    }
    cur.as_str().unwrap_or("")
}

fn rules_of(v: &Value) -> Vec<PolicyRule> {
    v.get("rules")
        .and_then(|r| serde_json::from_value::<Vec<PolicyRule>>(r.clone()).ok())
        .unwrap_or_default()
}

fn binding_of(v: &Value) -> Option<Binding> {
    let role_ref: RoleRef = serde_json::from_value(v.get("roleRef")?.clone()).ok()?;
    let subjects = v
        .get("subjects")
        .and_then(|s| serde_json::from_value::<Vec<Subject>>(s.clone()).ok())
        .unwrap_or_default();
    Some(Binding {
        name: str_at(v, &["metadata", "name"]).to_string(),
        namespace: str_at(v, &["metadata", "namespace"]).to_string(),
        role_ref,
        subjects,
    })
}

/// Who a subject is, for reasons: upstream's `describeSubject`.
fn describe_subject(s: &Subject, binding_namespace: &str) -> String {
    if s.kind == "ServiceAccount" {
        let ns = s
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(binding_namespace);
        format!("{} {:?}", s.kind, format!("{}/{ns}", s.name))
    } else {
        format!("{} {:?}", s.kind, s.name)
    }
}

/// Upstream's `appliesToUser`.
fn applies_to(user: &str, groups: &[String], s: &Subject, binding_namespace: &str) -> bool {
    match s.kind.as_str() {
        "User" => user == s.name,
        "Group" => groups.contains(&s.name),
        "ServiceAccount" => {
            let ns = s
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_namespace);
            !ns.is_empty() && user == crate::serviceaccount::username(ns, &s.name)
        }
        _ => false,
    }
}

impl Index {
    /// Builds the index from the objects of the four kinds (as stored JSON).
    pub fn build(
        cluster_roles: &[Value],
        cluster_role_bindings: &[Value],
        roles: &[Value],
        role_bindings: &[Value],
    ) -> Index {
        let mut index = Index::default();
        for r in cluster_roles {
            index
                .cluster_roles
                .insert(str_at(r, &["metadata", "name"]).to_string(), rules_of(r));
        }
        for r in roles {
            index.roles.insert(
                (
                    str_at(r, &["metadata", "namespace"]).to_string(),
                    str_at(r, &["metadata", "name"]).to_string(),
                ),
                rules_of(r),
            );
        }
        index.cluster_role_bindings = cluster_role_bindings
            .iter()
            .filter_map(binding_of)
            .collect();
        for b in role_bindings.iter().filter_map(binding_of) {
            index
                .role_bindings
                .entry(b.namespace.clone())
                .or_default()
                .push(b);
        }
        index
    }

    fn role_rules(&self, r: &RoleRef, namespace: &str) -> Result<&[PolicyRule], String> {
        match r.kind.as_str() {
            "ClusterRole" => self
                .cluster_roles
                .get(&r.name)
                .map(Vec::as_slice)
                .ok_or_else(|| {
                    format!(
                        "clusterrole.rbac.authorization.k8s.io {:?} not found",
                        r.name
                    )
                }),
            "Role" => self
                .roles
                .get(&(namespace.to_string(), r.name.clone()))
                .map(Vec::as_slice)
                .ok_or_else(|| format!("role.rbac.authorization.k8s.io {:?} not found", r.name)),
            other => Err(format!("unknown roleRef kind {other:?}")),
        }
    }

    /// The rules of the role a binding refers to, if it exists.
    pub fn role_rules_of(&self, r: &RoleRef, namespace: &str) -> Option<Vec<PolicyRule>> {
        self.role_rules(r, namespace)
            .ok()
            .map(<[PolicyRule]>::to_vec)
    }

    /// Upstream's `VisitRulesFor`: every rule that applies to the user in `namespace`
    /// (cluster-wide bindings first), with a description of where it came from. `visit`
    /// returns false to stop. Missing roles are reported in `errors`.
    pub fn visit_rules(
        &self,
        user: &str,
        groups: &[String],
        namespace: &str,
        errors: &mut Vec<String>,
        mut visit: impl FnMut(&dyn Fn() -> String, &PolicyRule) -> bool,
    ) {
        for b in &self.cluster_role_bindings {
            let Some(subject) = b.subjects.iter().find(|s| applies_to(user, groups, s, "")) else {
                continue;
            };
            match self.role_rules(&b.role_ref, "") {
                Ok(rules) => {
                    for rule in rules {
                        let describe = || {
                            format!(
                                "ClusterRoleBinding {:?} of {} {:?} to {}",
                                b.name,
                                b.role_ref.kind,
                                b.role_ref.name,
                                describe_subject(subject, "")
                            )
                        };
                        if !visit(&describe, rule) {
                            return;
                        }
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        if namespace.is_empty() {
            return;
        }
        for b in self.role_bindings.get(namespace).into_iter().flatten() {
            let Some(subject) = b
                .subjects
                .iter()
                .find(|s| applies_to(user, groups, s, &b.namespace))
            else {
                continue;
            };
            match self.role_rules(&b.role_ref, namespace) {
                Ok(rules) => {
                    for rule in rules {
                        let describe = || {
                            format!(
                                "RoleBinding {:?} of {} {:?} to {}",
                                format!("{}/{}", b.name, b.namespace),
                                b.role_ref.kind,
                                b.role_ref.name,
                                describe_subject(subject, &b.namespace)
                            )
                        };
                        if !visit(&describe, rule) {
                            return;
                        }
                    }
                }
                Err(e) => errors.push(e),
            }
        }
    }

    /// The RBAC decision for a request.
    pub fn authorize(&self, a: &Attributes) -> (Decision, String) {
        let mut errors = Vec::new();
        let mut allowed_by = None;
        self.visit_rules(
            &a.user,
            &a.groups,
            &a.namespace,
            &mut errors,
            |describe, rule| {
                if rule_allows(a, rule) {
                    allowed_by = Some(describe());
                    false
                } else {
                    true
                }
            },
        );
        match allowed_by {
            Some(by) => (Decision::Allow, format!("RBAC: allowed by {by}")),
            None if errors.is_empty() => (Decision::NoOpinion, String::new()),
            None => (
                Decision::NoOpinion,
                format!("RBAC: [{}]", errors.join(", ")),
            ),
        }
    }

    /// Every rule that applies to the user in a namespace (SelfSubjectRulesReview).
    pub fn rules_for(
        &self,
        user: &str,
        groups: &[String],
        namespace: &str,
    ) -> (Vec<PolicyRule>, Vec<String>) {
        let mut errors = Vec::new();
        let mut rules = Vec::new();
        self.visit_rules(user, groups, namespace, &mut errors, |_, rule| {
            rules.push(rule.clone());
            true
        });
        (rules, errors)
    }
}

/// The RBAC authorizer over the watch caches.
pub struct RbacAuthorizer {
    sources: Sources,
    current: RwLock<(Option<[u64; 4]>, Arc<Index>)>,
    rebuild: Mutex<()>,
}

impl RbacAuthorizer {
    pub fn new(sources: Sources) -> RbacAuthorizer {
        RbacAuthorizer {
            sources,
            current: RwLock::new((None, Arc::new(Index::default()))),
            rebuild: Mutex::new(()),
        }
    }

    fn counters(&self) -> [u64; 4] {
        self.sources
            .rbac_caches()
            .map(|c| c.map_or(0, |c| c.changes()))
    }

    /// The index as of now: rebuilt (once, by one caller) when a cache changed since.
    pub fn index(&self) -> Arc<Index> {
        let now = self.counters();
        {
            let current = self.current.read();
            if current.0 == Some(now) {
                return current.1.clone();
            }
        }
        let _one = self.rebuild.lock();
        let now = self.counters();
        {
            let current = self.current.read();
            if current.0 == Some(now) {
                return current.1.clone();
            }
        }
        // Counters are read before the lists: a change in between shows up next time.
        let [cr, crb, r, rb] = self.sources.rbac_caches();
        let index = Arc::new(Index::build(
            &objects(cr),
            &objects(crb),
            &objects(r),
            &objects(rb),
        ));
        *self.current.write() = (Some(now), index.clone());
        index
    }

    pub fn authorize(&self, a: &Attributes) -> (Decision, String) {
        self.index().authorize(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(v: Value) -> PolicyRule {
        serde_json::from_value(v).unwrap()
    }

    fn resource(
        verb: &str,
        group: &str,
        resource: &str,
        sub: &str,
        ns: &str,
        name: &str,
    ) -> Attributes {
        Attributes {
            user: "u".into(),
            verb: verb.into(),
            resource_request: true,
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn rules_match_as_upstream() {
        let r = rule(
            json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "pods/log"]}),
        );
        assert!(rule_allows(&resource("get", "", "pods", "", "ns", "p"), &r));
        assert!(rule_allows(&resource("list", "", "pods", "", "ns", ""), &r));
        assert!(!rule_allows(
            &resource("delete", "", "pods", "", "ns", "p"),
            &r
        ));
        assert!(!rule_allows(
            &resource("get", "apps", "pods", "", "ns", "p"),
            &r
        ));
        assert!(rule_allows(
            &resource("get", "", "pods", "log", "ns", "p"),
            &r
        ));
        assert!(!rule_allows(
            &resource("get", "", "pods", "exec", "ns", "p"),
            &r
        ));
        // `pods` does not cover subresources; `*/status` covers every status.
        let status =
            rule(json!({"verbs": ["update"], "apiGroups": ["*"], "resources": ["*/status"]}));
        assert!(rule_allows(
            &resource("update", "apps", "deployments", "status", "", "d"),
            &status
        ));
        assert!(!rule_allows(
            &resource("update", "apps", "deployments", "", "", "d"),
            &status
        ));
        let all = rule(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}));
        assert!(rule_allows(
            &resource("escalate", "x", "y", "z", "", ""),
            &all
        ));
        // resourceNames restrict to named objects (a list has no name).
        let named = rule(
            json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["cm1"]}),
        );
        assert!(rule_allows(
            &resource("get", "", "configmaps", "", "ns", "cm1"),
            &named
        ));
        assert!(!rule_allows(
            &resource("get", "", "configmaps", "", "ns", "cm2"),
            &named
        ));
        assert!(!rule_allows(
            &resource("list", "", "configmaps", "", "ns", ""),
            &named
        ));
        // Non-resource URLs: exact or a trailing `*`.
        let urls = rule(json!({"verbs": ["get"], "nonResourceURLs": ["/healthz", "/apis/*"]}));
        let path = |verb: &str, p: &str| Attributes {
            verb: verb.into(),
            path: p.into(),
            ..Default::default()
        };
        assert!(rule_allows(&path("get", "/healthz"), &urls));
        assert!(!rule_allows(&path("get", "/healthz/etcd"), &urls));
        assert!(rule_allows(&path("get", "/apis/apps/v1"), &urls));
        assert!(!rule_allows(&path("post", "/apis/apps/v1"), &urls));
        assert!(!rule_allows(&path("get", "/api"), &urls));
        // A resource rule never matches a non-resource request, and vice versa.
        assert!(!rule_allows(&path("get", "/api"), &all));
        assert!(!rule_allows(
            &resource("get", "", "pods", "", "", ""),
            &urls
        ));
    }

    #[test]
    fn bindings_grant_their_roles_where_they_apply() {
        let index = Index::build(
            &[
                json!({"metadata": {"name": "view"}, "rules": [{"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": ["pods"]}]}),
                json!({"metadata": {"name": "nodes-reader"}, "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["nodes"]}]}),
            ],
            &[
                json!({"metadata": {"name": "readers"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "nodes-reader"}, "subjects": [{"kind": "Group", "name": "readers", "apiGroup": "rbac.authorization.k8s.io"}]}),
            ],
            &[
                json!({"metadata": {"name": "secret-reader", "namespace": "ns1"}, "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}]}),
            ],
            &[
                json!({"metadata": {"name": "sa-view", "namespace": "ns1"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"}, "subjects": [{"kind": "ServiceAccount", "name": "app"}]}),
                json!({"metadata": {"name": "alice-secrets", "namespace": "ns1"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "secret-reader"}, "subjects": [{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}]}),
                json!({"metadata": {"name": "dangling", "namespace": "ns1"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "gone"}, "subjects": [{"kind": "User", "name": "bob", "apiGroup": "rbac.authorization.k8s.io"}]}),
            ],
        );
        let as_user = |user: &str, groups: &[&str], mut a: Attributes| {
            a.user = user.into();
            a.groups = groups.iter().map(|g| g.to_string()).collect();
            index.authorize(&a)
        };
        let sa = "system:serviceaccount:ns1:app";
        let (d, reason) = as_user(sa, &[], resource("list", "", "pods", "", "ns1", ""));
        assert_eq!(d, Decision::Allow);
        assert_eq!(
            reason,
            "RBAC: allowed by RoleBinding \"sa-view/ns1\" of ClusterRole \"view\" to ServiceAccount \"app/ns1\""
        );
        // A RoleBinding to a ClusterRole grants it only in the binding's namespace.
        assert_eq!(
            as_user(sa, &[], resource("list", "", "pods", "", "ns2", "")).0,
            Decision::NoOpinion
        );
        assert_eq!(
            as_user(sa, &[], resource("list", "", "pods", "", "", "")).0,
            Decision::NoOpinion
        );
        assert_eq!(
            as_user(sa, &[], resource("get", "", "secrets", "", "ns1", "s")).0,
            Decision::NoOpinion
        );
        assert_eq!(
            as_user(
                "system:serviceaccount:ns2:app",
                &[],
                resource("list", "", "pods", "", "ns1", "")
            )
            .0,
            Decision::NoOpinion
        );
        assert_eq!(
            as_user("alice", &[], resource("get", "", "secrets", "", "ns1", "s")).0,
            Decision::Allow
        );
        assert_eq!(
            as_user("alice", &[], resource("get", "", "secrets", "", "ns2", "s")).0,
            Decision::NoOpinion
        );
        assert_eq!(
            as_user(
                "carol",
                &["readers"],
                resource("get", "", "nodes", "", "", "n1")
            )
            .0,
            Decision::Allow
        );
        assert_eq!(
            as_user("carol", &[], resource("get", "", "nodes", "", "", "n1")).0,
            Decision::NoOpinion
        );
        let (d, reason) = as_user("bob", &[], resource("get", "", "secrets", "", "ns1", "s"));
        assert_eq!(d, Decision::NoOpinion);
        assert_eq!(
            reason,
            "RBAC: [role.rbac.authorization.k8s.io \"gone\" not found]"
        );
        let (rules, _) = index.rules_for("alice", &[], "ns1");
        assert_eq!(rules.len(), 1);
    }
}
