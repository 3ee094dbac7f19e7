//! The Node authorizer (upstream `plugin/pkg/auth/authorizer/node`): a kubelet,
//! authenticated as `system:node:<name>` in the group `system:nodes`, may do what
//! upstream's node rules allow (`bootstrap_policy::node_rules`), narrowed to its own
//! objects: it reads the Secrets, ConfigMaps and PersistentVolumeClaims that pods bound to
//! it reference, requests tokens for their ServiceAccounts, changes only its own Node and
//! node Lease, and writes the status of (and deletes or evicts) only pods bound to it.
//!
//! Upstream keeps a graph of pods, nodes and their references; here the pods of the
//! apiserver's watch cache are scanned per decision (per namespace), which is enough for
//! the number of pods a small cluster runs. Anything else gets "no opinion", so RBAC may
//! still decide.

use super::rbac::{rule_allows, Sources};
use super::{Attributes, Decision};
use crate::watch_cache::{Cached, WatchCache};
use k8s_openapi::api::rbac::v1::PolicyRule;
use serde_json::Value;
use std::sync::Arc;

/// Upstream's `user.NodesGroup`.
pub const NODES_GROUP: &str = "system:nodes";
const NODE_USER_PREFIX: &str = "system:node:";

pub struct NodeAuthorizer {
    pods: Option<Arc<WatchCache>>,
    rules: Vec<PolicyRule>,
}

/// What a pod references, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ref {
    Secret,
    ConfigMap,
    Claim,
}

/// Collects the names of one kind of object a pod spec references (volumes, projected
/// sources, env and envFrom, image pull secrets, CSI secrets).
fn collect(v: &Value, kind: Ref, out: &mut Vec<String>) {
    let name_of = |v: &Value, field: &str| v.get(field).and_then(Value::as_str).map(String::from);
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let found = match (kind, k.as_str()) {
                    (Ref::Secret, "secretName") => child.as_str().map(String::from),
                    (
                        Ref::Secret,
                        "secretKeyRef"
                        | "secretRef"
                        | "nodePublishSecretRef"
                        | "nodeStageSecretRef"
                        | "controllerPublishSecretRef"
                        | "controllerExpandSecretRef"
                        | "nodeExpandSecretRef",
                    ) => name_of(child, "name"),
                    (Ref::Secret, "secret") => {
                        name_of(child, "secretName").or_else(|| name_of(child, "name"))
                    }
                    (Ref::Secret, "imagePullSecrets") => {
                        for s in child.as_array().into_iter().flatten() {
                            if let Some(n) = name_of(s, "name") {
                                out.push(n);
                            }
                        }
                        None
                    }
                    (Ref::ConfigMap, "configMap" | "configMapRef" | "configMapKeyRef") => {
                        name_of(child, "name")
                    }
                    (Ref::Claim, "persistentVolumeClaim") => name_of(child, "claimName"),
                    _ => None,
                };
                if let Some(n) = found {
                    out.push(n);
                }
                collect(child, kind, out);
            }
        }
        Value::Array(items) => {
            for i in items {
                collect(i, kind, out);
            }
        }
        _ => {}
    }
}

fn node_of(pod: &Cached) -> &str {
    pod.field("spec.nodeName").unwrap_or_default()
}

impl NodeAuthorizer {
    pub fn new(sources: &Sources) -> NodeAuthorizer {
        NodeAuthorizer {
            pods: sources.pods.clone(),
            rules: super::bootstrap_policy::node_rules(),
        }
    }

    /// Pods in a namespace bound to the node.
    fn pods_on(&self, node: &str, namespace: &str) -> Vec<Value> {
        let Some(cache) = &self.pods else {
            return Vec::new();
        };
        let Some(info) = api_types::resources::find("", "v1", "pods") else {
            return Vec::new();
        };
        let (pods, _) = cache.list(&crate::object::list_prefix(info, Some(namespace)));
        pods.iter()
            .filter(|p| node_of(p) == node)
            .map(|p| p.value())
            .collect()
    }

    fn pod_bound(&self, node: &str, namespace: &str, name: &str) -> bool {
        let (Some(cache), Some(info)) = (&self.pods, api_types::resources::find("", "v1", "pods"))
        else {
            return false;
        };
        cache
            .get(&crate::object::key(info, Some(namespace), name))
            .is_some_and(|p| node_of(&p) == node)
    }

    fn referenced(&self, node: &str, a: &Attributes, kind: Ref) -> bool {
        self.pods_on(node, &a.namespace).iter().any(|p| {
            let mut names = Vec::new();
            collect(p.get("spec").unwrap_or(&Value::Null), kind, &mut names);
            if kind == Ref::Claim {
                // Generic ephemeral volumes: the claim is `<pod>-<volume>`.
                let pod = p
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                for v in p
                    .pointer("/spec/volumes")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if v.get("ephemeral").is_some() {
                        if let Some(vn) = v.get("name").and_then(Value::as_str) {
                            names.push(format!("{pod}-{vn}"));
                        }
                    }
                }
            }
            names.contains(&a.name)
        })
    }

    fn static_rules(&self, a: &Attributes) -> (Decision, String) {
        if self.rules.iter().any(|r| rule_allows(a, r)) {
            (Decision::Allow, String::new())
        } else {
            (Decision::NoOpinion, String::new())
        }
    }

    fn no_relationship(node: &str) -> (Decision, String) {
        (
            Decision::NoOpinion,
            format!("no relationship found between node '{node}' and this object"),
        )
    }

    /// Reads of one object referenced by a pod on the node.
    fn read_referenced(&self, node: &str, a: &Attributes, kind: Ref) -> (Decision, String) {
        if !matches!(a.verb.as_str(), "get" | "list" | "watch") || !a.subresource.is_empty() {
            return (
                Decision::NoOpinion,
                "can only read resources of this type".to_string(),
            );
        }
        if a.name.is_empty() {
            return (
                Decision::NoOpinion,
                "can only read individual resources of this type".to_string(),
            );
        }
        if self.referenced(node, a, kind) {
            (Decision::Allow, String::new())
        } else {
            Self::no_relationship(node)
        }
    }

    fn decide(&self, node: &str, a: &Attributes) -> (Decision, String) {
        if !a.resource_request {
            return self.static_rules(a);
        }
        match (a.api_group.as_str(), a.resource.as_str()) {
            ("", "secrets") => self.read_referenced(node, a, Ref::Secret),
            ("", "configmaps") => self.read_referenced(node, a, Ref::ConfigMap),
            ("", "persistentvolumeclaims") => {
                if a.subresource == "status" {
                    if !matches!(a.verb.as_str(), "get" | "update" | "patch") {
                        return (
                            Decision::NoOpinion,
                            "can only get, update or patch persistentvolumeclaim status".into(),
                        );
                    }
                    if self.referenced(node, a, Ref::Claim) {
                        return (Decision::Allow, String::new());
                    }
                    return Self::no_relationship(node);
                }
                self.read_referenced(node, a, Ref::Claim)
            }
            ("", "serviceaccounts") if a.subresource == "token" => {
                if a.verb != "create" {
                    return (
                        Decision::NoOpinion,
                        "can only create tokens for individual service accounts".into(),
                    );
                }
                let used = self.pods_on(node, &a.namespace).iter().any(|p| {
                    let sa = p
                        .pointer("/spec/serviceAccountName")
                        .and_then(Value::as_str)
                        .unwrap_or("default");
                    sa == a.name
                });
                if used {
                    (Decision::Allow, String::new())
                } else {
                    Self::no_relationship(node)
                }
            }
            ("", "nodes") => {
                // Its own Node only for writes; reads and registration as the node rules.
                if matches!(a.verb.as_str(), "update" | "patch" | "delete") && a.name != node {
                    return (
                        Decision::NoOpinion,
                        format!("node '{node}' cannot modify node '{}'", a.name),
                    );
                }
                self.static_rules(a)
            }
            ("", "pods") => {
                let writes_bound_pod = matches!(
                    (a.subresource.as_str(), a.verb.as_str()),
                    ("status", "update" | "patch") | ("", "delete") | ("eviction", "create")
                );
                if writes_bound_pod && !self.pod_bound(node, &a.namespace, &a.name) {
                    return (
                        Decision::NoOpinion,
                        format!("node '{node}' can only modify pods bound to it"),
                    );
                }
                self.static_rules(a)
            }
            ("coordination.k8s.io", "leases") => {
                let own = a.namespace == "kube-node-lease"
                    && (a.name == node || a.name.is_empty() && a.verb == "create");
                if own {
                    self.static_rules(a)
                } else {
                    (
                        Decision::NoOpinion,
                        format!("node '{node}' can only access its own lease in kube-node-lease"),
                    )
                }
            }
            _ => self.static_rules(a),
        }
    }
}

impl super::Authorizer for NodeAuthorizer {
    fn authorize(&self, a: &Attributes) -> (Decision, String) {
        let Some(node) = a.user.strip_prefix(NODE_USER_PREFIX) else {
            return (Decision::NoOpinion, String::new());
        };
        if !a.groups.iter().any(|g| g == NODES_GROUP) {
            return (Decision::NoOpinion, String::new());
        }
        if node.is_empty() {
            return (Decision::NoOpinion, "unknown node".to_string());
        }
        self.decide(node, a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_references_are_found() {
        let spec = json!({
            "volumes": [
                {"name": "a", "secret": {"secretName": "s1"}},
                {"name": "b", "configMap": {"name": "c1"}},
                {"name": "c", "persistentVolumeClaim": {"claimName": "pvc1"}},
                {"name": "d", "projected": {"sources": [{"secret": {"name": "s2"}}, {"configMap": {"name": "kube-root-ca.crt"}}]}}
            ],
            "imagePullSecrets": [{"name": "pull"}],
            "containers": [{"name": "x", "env": [{"name": "E", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "k"}}}],
                            "envFrom": [{"configMapRef": {"name": "c2"}}]}]
        });
        let mut secrets = Vec::new();
        collect(&spec, Ref::Secret, &mut secrets);
        secrets.sort();
        secrets.dedup();
        assert_eq!(secrets, ["pull", "s1", "s2", "s3"]);
        let mut cms = Vec::new();
        collect(&spec, Ref::ConfigMap, &mut cms);
        cms.sort();
        assert_eq!(cms, ["c1", "c2", "kube-root-ca.crt"]);
        let mut claims = Vec::new();
        collect(&spec, Ref::Claim, &mut claims);
        assert_eq!(claims, ["pvc1"]);
    }

    #[test]
    fn nodes_change_only_themselves() {
        use super::super::Authorizer;
        let n = NodeAuthorizer::new(&Sources::empty());
        let attrs = |verb: &str, resource: &str, sub: &str, ns: &str, name: &str| Attributes {
            user: "system:node:n1".into(),
            groups: vec![NODES_GROUP.into(), "system:authenticated".into()],
            verb: verb.into(),
            resource_request: true,
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: name.into(),
            ..Default::default()
        };
        assert_eq!(
            n.authorize(&attrs("get", "nodes", "", "", "n2")).0,
            Decision::Allow
        );
        assert_eq!(
            n.authorize(&attrs("patch", "nodes", "status", "", "n1")).0,
            Decision::Allow
        );
        assert_eq!(
            n.authorize(&attrs("patch", "nodes", "status", "", "n2")).0,
            Decision::NoOpinion
        );
        assert_eq!(
            n.authorize(&attrs("update", "nodes", "", "", "n2")).0,
            Decision::NoOpinion
        );
        assert_eq!(
            n.authorize(&attrs("list", "pods", "", "", "")).0,
            Decision::Allow
        );
        assert_eq!(
            n.authorize(&attrs("create", "events", "", "default", "")).0,
            Decision::Allow
        );
        // No pods in this (empty) cache: nothing is bound to the node.
        assert_eq!(
            n.authorize(&attrs("update", "pods", "status", "default", "p"))
                .0,
            Decision::NoOpinion
        );
        assert_eq!(
            n.authorize(&attrs("get", "secrets", "", "default", "s")).0,
            Decision::NoOpinion
        );
        assert_eq!(
            n.authorize(&attrs("list", "secrets", "", "default", "")).0,
            Decision::NoOpinion
        );
        assert_eq!(
            n.authorize(&attrs("update", "leases", "", "kube-node-lease", "n1"))
                .0,
            Decision::NoOpinion,
            "leases are coordination.k8s.io"
        );
        let mut lease = attrs("update", "leases", "", "kube-node-lease", "n1");
        lease.api_group = "coordination.k8s.io".into();
        assert_eq!(n.authorize(&lease).0, Decision::Allow);
        lease.name = "n2".into();
        assert_eq!(n.authorize(&lease).0, Decision::NoOpinion);
        // Not a node: no opinion at all.
        let mut other = attrs("get", "nodes", "", "", "n1");
        other.groups.clear();
        assert_eq!(n.authorize(&other), (Decision::NoOpinion, String::new()));
    }
}
