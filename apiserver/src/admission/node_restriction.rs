//! NodeRestriction (upstream `plugin/pkg/admission/noderestriction`), the part that
//! complements the Node authorizer by looking at the objects: a kubelet
//! (`system:node:<name>` in `system:nodes`) may create, change (`nodes/status` too) and
//! delete only its own Node, without touching its taints or labels outside the kubelet's
//! own set; create only mirror pods bound to itself that reference no Secret, ConfigMap,
//! ServiceAccount or claim; update `pods/status`, delete and create `pods/eviction` only
//! for pods bound to itself (not their labels through the status), and no other pod
//! update or subresource; and write only its own Lease in `kube-node-lease`. Other users
//! are not affected.
//!
//! The Node authorizer refuses most of these first; this plugin holds them when RBAC (or
//! another authorizer) grants a node more, as upstream's two layers do.
//!
//! One departure: the kubelet may add and remove the node-pressure taints
//! (`node.kubernetes.io/{memory,disk,pid}-pressure`), because pikube's kubelet, not the
//! node lifecycle controller as upstream, keeps them in step with its conditions.

use super::Attributes;
use crate::authz::escalation::REQUEST_USER;
use crate::status::ApiResult;
use serde_json::Value;
use std::collections::BTreeSet;

/// The annotation of a static pod's mirror pod.
const CONFIG_MIRROR: &str = "kubernetes.io/config.mirror";
const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// The taints pikube's kubelet keeps itself (see the module documentation).
const PRESSURE_TAINTS: [&str; 3] = [
    "node.kubernetes.io/memory-pressure",
    "node.kubernetes.io/disk-pressure",
    "node.kubernetes.io/pid-pressure",
];
/// Labels a kubelet may set in the kubernetes.io and k8s.io namespaces (upstream's
/// `kubeletapis.IsKubeletLabel`).
const KUBELET_LABELS: [&str; 11] = [
    "kubernetes.io/hostname",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
];

/// The node name of the request's user, when a node makes it.
fn requesting_node() -> Option<String> {
    REQUEST_USER
        .try_with(|u| {
            let node = u.name.strip_prefix("system:node:")?;
            let in_group = u
                .groups
                .iter()
                .any(|g| g == crate::authz::node::NODES_GROUP);
            (in_group && !node.is_empty()).then(|| node.to_string())
        })
        .ok()
        .flatten()
}

/// Checks a create by a node.
pub fn validate_create(a: &Attributes<'_>, obj: &Value) -> ApiResult<()> {
    let Some(node) = requesting_node() else {
        return Ok(());
    };
    if a.is("", "nodes") {
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        if name != node {
            return Err(a.forbidden(format!(
                "node {node:?} is not allowed to modify node {name:?}"
            )));
        }
        if obj
            .pointer("/spec/configSource")
            .is_some_and(|c| !c.is_null())
        {
            return Err(a.forbidden(format!(
                "node {node:?} is not allowed to create pods with a non-nil configSource"
            )));
        }
        let forbidden = forbidden_labels(&modified_labels(labels(obj), None));
        if !forbidden.is_empty() {
            return Err(a.forbidden(format!(
                "node {node:?} is not allowed to set the following labels: {}",
                forbidden.join(", ")
            )));
        }
    }
    if a.is("", "pods") {
        let mirror = obj
            .pointer("/metadata/annotations")
            .and_then(|m| m.get(CONFIG_MIRROR))
            .is_some();
        if !mirror {
            return Err(a.forbidden(format!(
                "pod does not have {CONFIG_MIRROR:?} annotation, node {node:?} can only create mirror pods"
            )));
        }
        let bound = obj
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if bound != node {
            return Err(a.forbidden(format!(
                "node {node:?} can only create pods with spec.nodeName set to itself"
            )));
        }
        let spec = obj.get("spec").cloned().unwrap_or_default();
        if spec
            .get("serviceAccountName")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
        {
            return Err(a.forbidden(format!(
                "node {node:?} can not create pods that reference a service account"
            )));
        }
        if super::service_account::references_secrets(&spec) {
            return Err(a.forbidden(format!(
                "node {node:?} can not create pods that reference secrets"
            )));
        }
        if references_config_maps(&spec) {
            return Err(a.forbidden(format!(
                "node {node:?} can not create pods that reference configmaps"
            )));
        }
        let volumes = spec.get("volumes").and_then(Value::as_array);
        if volumes
            .into_iter()
            .flatten()
            .any(|v| v.get("persistentVolumeClaim").is_some())
        {
            return Err(a.forbidden(format!(
                "node {node:?} can not create pods that reference persistentvolumeclaims"
            )));
        }
    }
    if a.is("coordination.k8s.io", "leases") {
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        check_lease(a, &node, name)?;
    }
    Ok(())
}

/// Checks an update (or patch) by a node, of a main resource or of its status.
pub fn validate_update(a: &Attributes<'_>, new: &Value, old: &Value) -> ApiResult<()> {
    let Some(node) = requesting_node() else {
        return Ok(());
    };
    if a.is("", "nodes") {
        if a.name != node {
            return Err(a.forbidden(format!(
                "node {node:?} is not allowed to modify node {:?}",
                a.name
            )));
        }
        let config_source = new.pointer("/spec/configSource").filter(|c| !c.is_null());
        if config_source.is_some() && config_source != old.pointer("/spec/configSource") {
            return Err(a.forbidden(format!(
                "node {node:?} is not allowed to update configSource to a new non-nil configSource"
            )));
        }
        if other_taints(new) != other_taints(old) {
            return Err(a.forbidden(format!("node {node:?} is not allowed to modify taints")));
        }
        let forbidden = forbidden_labels(&modified_labels(labels(new), labels(old)));
        if !forbidden.is_empty() {
            return Err(a.forbidden(format!(
                "is not allowed to modify labels: {}",
                forbidden.join(", ")
            )));
        }
    }
    if a.is("", "pods") {
        return match a.subresource {
            "" => Err(a.forbidden(format!(
                "unexpected operation \"UPDATE\", node {node:?} can only create and delete mirror pods"
            ))),
            "status" => check_pod_status_update(a, &node, new, old),
            other => Err(unexpected_pod_subresource(a, other)),
        };
    }
    if a.is("coordination.k8s.io", "leases") {
        check_lease(a, &node, a.name)?;
    }
    Ok(())
}

/// Checks a delete by a node, given the object as stored.
pub fn validate_delete(a: &Attributes<'_>, old: &Value) -> ApiResult<()> {
    let Some(node) = requesting_node() else {
        return Ok(());
    };
    if a.is("", "nodes") && a.name != node {
        return Err(a.forbidden(format!(
            "node {node:?} is not allowed to modify node {:?}",
            a.name
        )));
    }
    if a.is("", "pods") && bound_node(old) != node {
        return Err(a.forbidden(format!(
            "node {node:?} can only delete pods with spec.nodeName set to itself"
        )));
    }
    if a.is("coordination.k8s.io", "leases") {
        check_lease(a, &node, a.name)?;
    }
    Ok(())
}

/// Checks a create of a pod subresource by a node: only an eviction of a pod bound to it.
pub fn validate_pod_subresource_create(a: &Attributes<'_>, pod: &Value) -> ApiResult<()> {
    let Some(node) = requesting_node() else {
        return Ok(());
    };
    if a.subresource != "eviction" {
        return Err(unexpected_pod_subresource(a, a.subresource));
    }
    if bound_node(pod) != node {
        // Upstream prints this node name unquoted.
        return Err(a.forbidden(format!(
            "node {node} can only evict pods with spec.nodeName set to itself"
        )));
    }
    Ok(())
}

fn unexpected_pod_subresource(a: &Attributes<'_>, subresource: &str) -> crate::status::ApiError {
    a.forbidden(format!(
        "unexpected pod subresource {subresource:?}, only 'status' and 'eviction' are allowed"
    ))
}

fn bound_node(pod: &Value) -> &str {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// A kubelet writes the status of its own pods, and not their labels or the claims the
/// scheduler and the resource claim controller record there.
fn check_pod_status_update(
    a: &Attributes<'_>,
    node: &str,
    new: &Value,
    old: &Value,
) -> ApiResult<()> {
    if bound_node(old) != node {
        return Err(a.forbidden(format!(
            "node {node:?} can only update pod status for pods with spec.nodeName set to itself"
        )));
    }
    let non_empty = |pod| labels(pod).filter(|l| !l.is_empty());
    if non_empty(new) != non_empty(old) {
        return Err(a.forbidden(format!(
            "node {node:?} cannot update labels through pod status"
        )));
    }
    if claim_statuses(new) != claim_statuses(old) {
        return Err(a.forbidden(format!(
            "node {node:?} cannot update resource claim statues"
        )));
    }
    Ok(())
}

/// `status.resourceClaimStatuses` as (name, claim name) pairs, the fields upstream compares.
fn claim_statuses(pod: &Value) -> Vec<(Option<&Value>, Option<&Value>)> {
    pod.pointer("/status/resourceClaimStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s.get("name"),
                s.get("resourceClaimName").filter(|n| !n.is_null()),
            )
        })
        .collect()
}

fn check_lease(a: &Attributes<'_>, node: &str, name: &str) -> ApiResult<()> {
    if a.namespace != Some(NODE_LEASE_NAMESPACE) {
        return Err(a.forbidden(format!(
            "can only access leases in the {NODE_LEASE_NAMESPACE:?} system namespace"
        )));
    }
    if name != node {
        return Err(
            a.forbidden("can only access node lease with the same name as the requesting node")
        );
    }
    Ok(())
}

/// The taints other than the pressure taints the kubelet keeps.
fn other_taints(node: &Value) -> Vec<&Value> {
    node.pointer("/spec/taints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|t| {
            !t.get("key")
                .and_then(Value::as_str)
                .is_some_and(|k| PRESSURE_TAINTS.contains(&k))
        })
        .collect()
}

fn labels(obj: &Value) -> Option<&serde_json::Map<String, Value>> {
    obj.pointer("/metadata/labels").and_then(Value::as_object)
}

/// The label keys added, removed or changed.
fn modified_labels(
    new: Option<&serde_json::Map<String, Value>>,
    old: Option<&serde_json::Map<String, Value>>,
) -> BTreeSet<String> {
    let empty = serde_json::Map::new();
    let (new, old) = (new.unwrap_or(&empty), old.unwrap_or(&empty));
    new.keys()
        .chain(old.keys())
        .filter(|k| new.get(*k) != old.get(*k))
        .cloned()
        .collect()
}

fn label_namespace(key: &str) -> &str {
    key.split_once('/').map(|(ns, _)| ns).unwrap_or("")
}

fn in_namespace(ns: &str, domain: &str) -> bool {
    ns == domain || ns.ends_with(&format!(".{domain}"))
}

/// Upstream's `getForbiddenLabels`: node-restriction.kubernetes.io labels, and
/// kubernetes.io/k8s.io labels that are not the kubelet's, sorted.
fn forbidden_labels(modified: &BTreeSet<String>) -> Vec<String> {
    modified
        .iter()
        .filter(|key| {
            let ns = label_namespace(key);
            let kubelet_label = KUBELET_LABELS.contains(&key.as_str())
                || in_namespace(ns, "kubelet.kubernetes.io")
                || in_namespace(ns, "node.kubernetes.io");
            in_namespace(ns, "node-restriction.kubernetes.io")
                || ((in_namespace(ns, "kubernetes.io") || in_namespace(ns, "k8s.io"))
                    && !kubelet_label)
        })
        .cloned()
        .collect()
}

/// Whether the pod spec names a ConfigMap (volumes, projections, env, envFrom).
fn references_config_maps(spec: &Value) -> bool {
    let containers = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .filter_map(|l| spec.get(*l).and_then(Value::as_array))
        .flatten();
    let in_containers = containers.into_iter().any(|c| {
        let env = c.get("env").and_then(Value::as_array).into_iter().flatten();
        let env_from = c
            .get("envFrom")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        env.into_iter()
            .any(|e| e.pointer("/valueFrom/configMapKeyRef").is_some())
            || env_from
                .into_iter()
                .any(|f| f.get("configMapRef").is_some())
    });
    in_containers
        || spec
            .get("volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|v| {
                v.get("configMap").is_some()
                    || v.pointer("/projected/sources")
                        .and_then(Value::as_array)
                        .is_some_and(|ss| ss.iter().any(|s| s.get("configMap").is_some()))
            })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kubelets_may_set_only_their_own_labels() {
        let modified: BTreeSet<String> = [
            "kubernetes.io/hostname",
            "node-role.kubernetes.io/control-plane",
            "node.kubernetes.io/exclude-from-external-load-balancers",
            "example.com/rack",
            "node-restriction.kubernetes.io/trusted",
            "k8s.io/anything",
        ]
        .map(String::from)
        .into();
        assert_eq!(
            forbidden_labels(&modified),
            [
                "k8s.io/anything",
                "node-restriction.kubernetes.io/trusted",
                "node-role.kubernetes.io/control-plane",
            ]
        );
    }

    #[test]
    fn pressure_taints_are_the_kubelets_and_the_others_are_not() {
        let with = |keys: &[&str]| json!({ "spec": { "taints": keys.iter().map(|k| json!({ "key": k, "effect": "NoSchedule" })).collect::<Vec<_>>() } });
        let admin = "dedicated";
        assert_eq!(
            other_taints(&with(&[admin, "node.kubernetes.io/memory-pressure"])),
            other_taints(&with(&[admin]))
        );
        assert_ne!(other_taints(&with(&[])), other_taints(&with(&[admin])));
        assert!(references_config_maps(
            &json!({ "volumes": [{ "name": "c", "configMap": { "name": "x" } }] })
        ));
        assert!(!references_config_maps(
            &json!({ "containers": [{ "name": "c" }] })
        ));
    }

    /// Runs `check` as the request of node `n1`.
    fn as_n1<T>(check: impl FnOnce() -> T) -> T {
        let user = crate::authn::UserInfo {
            name: "system:node:n1".into(),
            uid: String::new(),
            groups: vec![crate::authz::node::NODES_GROUP.into()],
        };
        REQUEST_USER.sync_scope(user, check)
    }

    fn attributes(
        plural: &str,
        subresource: &'static str,
        name: &'static str,
    ) -> Attributes<'static> {
        Attributes {
            info: api_types::resources::find("", "v1", plural).unwrap(),
            namespace: (plural == "pods").then_some("default"),
            name,
            subresource,
        }
    }

    fn message<T: std::fmt::Debug>(r: ApiResult<T>) -> String {
        r.unwrap_err().message
    }

    #[test]
    fn pod_status_deletes_and_evictions_only_of_pods_bound_to_the_node() {
        let on = |node: &str| json!({ "metadata": { "name": "p", "labels": { "a": "b" } }, "spec": { "nodeName": node }, "status": {} });
        let (mine, theirs) = (on("n1"), on("n2"));
        as_n1(|| {
            let status = attributes("pods", "status", "p");
            assert!(validate_update(&status, &mine, &mine).is_ok());
            assert_eq!(
                message(validate_update(&status, &theirs, &theirs)),
                "pods \"p\" is forbidden: node \"n1\" can only update pod status for pods with spec.nodeName set to itself"
            );
            let mut relabelled = mine.clone();
            relabelled["metadata"]["labels"] = json!({ "a": "c" });
            assert_eq!(
                message(validate_update(&status, &relabelled, &mine)),
                "pods \"p\" is forbidden: node \"n1\" cannot update labels through pod status"
            );
            let mut claimed = mine.clone();
            claimed["status"]["resourceClaimStatuses"] =
                json!([{ "name": "gpu", "resourceClaimName": "p-gpu" }]);
            assert!(validate_update(&status, &claimed, &mine).is_err());

            let main = attributes("pods", "", "p");
            assert!(validate_delete(&main, &mine).is_ok());
            assert_eq!(
                message(validate_delete(&main, &theirs)),
                "pods \"p\" is forbidden: node \"n1\" can only delete pods with spec.nodeName set to itself"
            );
            let eviction = attributes("pods", "eviction", "p");
            assert!(validate_pod_subresource_create(&eviction, &mine).is_ok());
            assert_eq!(
                message(validate_pod_subresource_create(&eviction, &theirs)),
                "pods \"p\" is forbidden: node n1 can only evict pods with spec.nodeName set to itself"
            );
            assert_eq!(
                message(validate_pod_subresource_create(&attributes("pods", "binding", "p"), &mine)),
                "pods \"p\" is forbidden: unexpected pod subresource \"binding\", only 'status' and 'eviction' are allowed"
            );

            let node = |name: &str| json!({ "metadata": { "name": name } });
            assert!(validate_update(
                &attributes("nodes", "status", "n1"),
                &node("n1"),
                &node("n1")
            )
            .is_ok());
            assert_eq!(
                message(validate_update(
                    &attributes("nodes", "status", "n2"),
                    &node("n2"),
                    &node("n2")
                )),
                "nodes \"n2\" is forbidden: node \"n1\" is not allowed to modify node \"n2\""
            );
            assert!(validate_delete(&attributes("nodes", "", "n2"), &node("n2")).is_err());
        });
        // Other users are not the plugin's concern.
        assert!(validate_delete(&attributes("pods", "", "p"), &theirs).is_ok());
    }
}
