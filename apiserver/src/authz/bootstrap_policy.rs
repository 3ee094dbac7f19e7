//! The default roles and bindings (upstream `plugin/pkg/auth/authorizer/rbac/
//! bootstrappolicy`), created at start when missing, each labelled
//! `kubernetes.io/bootstrapping: rbac-defaults` and annotated
//! `rbac.authorization.kubernetes.io/autoupdate: "true"`.
//!
//! pikube's kube-controller-manager runs every controller with its own credentials
//! (upstream's `--use-service-account-credentials=false`), and its garbage collector and
//! namespace controller act on every resource, so `system:kube-controller-manager` carries
//! upstream's rules plus one broad rule: every object verb on every resource (not the
//! privilege verbs `bind`, `escalate`, `impersonate`, nor non-resource URLs).

use k8s_openapi::api::rbac::v1::PolicyRule;
use serde_json::{json, Value};

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];
const READ_WRITE: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

const LEGACY: &str = "";
const APPS: &str = "apps";
const AUTHENTICATION: &str = "authentication.k8s.io";
const AUTHORIZATION: &str = "authorization.k8s.io";
const AUTOSCALING: &str = "autoscaling";
const BATCH: &str = "batch";
const CERTIFICATES: &str = "certificates.k8s.io";
const COORDINATION: &str = "coordination.k8s.io";
const DISCOVERY: &str = "discovery.k8s.io";
const EVENTS: &str = "events.k8s.io";
const EXTENSIONS: &str = "extensions";
const NETWORKING: &str = "networking.k8s.io";
const POLICY: &str = "policy";
const RBAC: &str = "rbac.authorization.k8s.io";
const STORAGE: &str = "storage.k8s.io";

const AGGREGATE_TO_ADMIN: &str = "rbac.authorization.k8s.io/aggregate-to-admin";
const AGGREGATE_TO_EDIT: &str = "rbac.authorization.k8s.io/aggregate-to-edit";
const AGGREGATE_TO_VIEW: &str = "rbac.authorization.k8s.io/aggregate-to-view";

/// A resource rule.
fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Value {
    json!({ "verbs": verbs, "apiGroups": groups, "resources": resources })
}

/// A resource rule limited to named objects.
fn named(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> Value {
    json!({ "verbs": verbs, "apiGroups": groups, "resources": resources, "resourceNames": names })
}

/// A non-resource rule.
fn urls(verbs: &[&str], urls: &[&str]) -> Value {
    json!({ "verbs": verbs, "nonResourceURLs": urls })
}

/// Upstream's `eventsRule`.
fn events_rule() -> Value {
    rule(
        &["create", "update", "patch"],
        &[LEGACY, EVENTS],
        &["events"],
    )
}

fn metadata(name: &str, labels: &[(&str, &str)]) -> Value {
    let mut l = serde_json::Map::new();
    l.insert("kubernetes.io/bootstrapping".into(), json!("rbac-defaults"));
    for (k, v) in labels {
        l.insert((*k).into(), json!(v));
    }
    json!({
        "name": name,
        "labels": l,
        "annotations": { "rbac.authorization.kubernetes.io/autoupdate": "true" },
    })
}

fn cluster_role(name: &str, labels: &[(&str, &str)], rules: Vec<Value>) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": metadata(name, labels),
        "rules": rules,
    })
}

fn aggregated(name: &str, labels: &[(&str, &str)], selector_label: &str) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": metadata(name, labels),
        "aggregationRule": { "clusterRoleSelectors": [{ "matchLabels": { selector_label: "true" } }] },
        "rules": [],
    })
}

/// `system:certificates.k8s.io:<name>`: approving CSRs of one signer.
fn signer_approver(name: &str, signer: &str) -> Value {
    cluster_role(
        &format!("system:certificates.k8s.io:{name}"),
        &[],
        vec![named(
            &["approve"],
            &[CERTIFICATES],
            &["signers"],
            &[signer],
        )],
    )
}

/// A ClusterRoleBinding named after its ClusterRole, as upstream's `NewClusterBinding`.
fn binding(role: &str, subjects: &[(&str, &str)]) -> Value {
    let subjects: Vec<Value> = subjects
        .iter()
        .map(|(kind, name)| json!({ "kind": kind, "apiGroup": RBAC, "name": name }))
        .collect();
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": metadata(role, &[]),
        "roleRef": { "apiGroup": RBAC, "kind": "ClusterRole", "name": role },
        "subjects": subjects,
    })
}

fn node_rule_values() -> Vec<Value> {
    vec![
        // Needed to check API access; these creates are non-mutating.
        rule(&["create"], &[AUTHENTICATION], &["tokenreviews"]),
        rule(
            &["create"],
            &[AUTHORIZATION],
            &["subjectaccessreviews", "localsubjectaccessreviews"],
        ),
        // Services for the pods' environment variables.
        rule(READ, &[LEGACY], &["services"]),
        // Register the Node and report its status (the Node authorizer keeps a node to
        // its own object).
        rule(&["create", "get", "list", "watch"], &[LEGACY], &["nodes"]),
        rule(&["update", "patch"], &[LEGACY], &["nodes/status"]),
        rule(&["update", "patch"], &[LEGACY], &["nodes"]),
        rule(&["create", "update", "patch"], &[LEGACY], &["events"]),
        rule(READ, &[LEGACY], &["pods"]),
        // Mirror pods, pod status and evictions of the pods bound to the node.
        rule(&["create", "delete"], &[LEGACY], &["pods"]),
        rule(&["update", "patch"], &[LEGACY], &["pods/status"]),
        rule(&["create"], &[LEGACY], &["pods/eviction"]),
        // Secrets and ConfigMaps its pods reference (narrowed by the Node authorizer).
        rule(READ, &[LEGACY], &["secrets", "configmaps"]),
        rule(
            &["get"],
            &[LEGACY],
            &["persistentvolumeclaims", "persistentvolumes"],
        ),
        rule(&["get"], &[LEGACY], &["endpoints"]),
        rule(
            &["create", "get", "list", "watch"],
            &[CERTIFICATES],
            &["certificatesigningrequests"],
        ),
        rule(
            &["get", "create", "update", "patch", "delete"],
            &[COORDINATION],
            &["leases"],
        ),
        rule(&["get"], &[STORAGE], &["volumeattachments"]),
        rule(
            &["get", "update", "patch"],
            &[LEGACY],
            &["persistentvolumeclaims/status"],
        ),
        rule(&["create"], &[LEGACY], &["serviceaccounts/token"]),
        rule(&["get", "watch", "list"], &[STORAGE], &["csidrivers"]),
        rule(
            &["get", "create", "update", "patch", "delete"],
            &[STORAGE],
            &["csinodes"],
        ),
        rule(READ, &["node.k8s.io"], &["runtimeclasses"]),
    ]
}

/// Upstream's `NodeRules`: what `system:node` grants and the Node authorizer narrows.
pub fn node_rules() -> Vec<PolicyRule> {
    node_rule_values()
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect()
}

/// The default ClusterRoles.
pub fn cluster_roles() -> Vec<Value> {
    vec![
        cluster_role(
            "cluster-admin",
            &[],
            vec![rule(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])],
        ),
        cluster_role(
            "system:discovery",
            &[],
            vec![urls(
                &["get"],
                &[
                    "/livez",
                    "/readyz",
                    "/healthz",
                    "/version",
                    "/version/",
                    "/openapi",
                    "/openapi/*",
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                ],
            )],
        ),
        cluster_role(
            "system:monitoring",
            &[],
            vec![urls(
                &["get"],
                &[
                    "/metrics",
                    "/metrics/slis",
                    "/livez",
                    "/readyz",
                    "/healthz",
                    "/livez/*",
                    "/readyz/*",
                    "/healthz/*",
                ],
            )],
        ),
        cluster_role(
            "system:basic-user",
            &[],
            vec![
                rule(
                    &["create"],
                    &[AUTHORIZATION],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                rule(&["create"], &[AUTHENTICATION], &["selfsubjectreviews"]),
            ],
        ),
        cluster_role(
            "system:public-info-viewer",
            &[],
            vec![urls(
                &["get"],
                &["/livez", "/readyz", "/healthz", "/version", "/version/"],
            )],
        ),
        aggregated("admin", &[], AGGREGATE_TO_ADMIN),
        aggregated("edit", &[(AGGREGATE_TO_ADMIN, "true")], AGGREGATE_TO_EDIT),
        aggregated("view", &[(AGGREGATE_TO_EDIT, "true")], AGGREGATE_TO_VIEW),
        cluster_role(
            "system:aggregate-to-admin",
            &[(AGGREGATE_TO_ADMIN, "true")],
            vec![
                rule(
                    &["create"],
                    &[AUTHORIZATION],
                    &["localsubjectaccessreviews"],
                ),
                rule(READ_WRITE, &[RBAC], &["roles", "rolebindings"]),
            ],
        ),
        cluster_role(
            "system:aggregate-to-edit",
            &[(AGGREGATE_TO_EDIT, "true")],
            vec![
                rule(
                    READ,
                    &[LEGACY],
                    &[
                        "pods/attach",
                        "pods/proxy",
                        "pods/exec",
                        "pods/portforward",
                        "secrets",
                        "services/proxy",
                    ],
                ),
                rule(&["impersonate"], &[LEGACY], &["serviceaccounts"]),
                rule(
                    WRITE,
                    &[LEGACY],
                    &[
                        "pods",
                        "pods/attach",
                        "pods/proxy",
                        "pods/exec",
                        "pods/portforward",
                    ],
                ),
                rule(&["create"], &[LEGACY], &["pods/eviction"]),
                rule(
                    WRITE,
                    &[LEGACY],
                    &[
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "serviceaccounts",
                        "services",
                        "services/proxy",
                        "persistentvolumeclaims",
                        "configmaps",
                        "secrets",
                        "events",
                    ],
                ),
                rule(&["create"], &[LEGACY], &["serviceaccounts/token"]),
                rule(
                    WRITE,
                    &[APPS],
                    &[
                        "statefulsets",
                        "statefulsets/scale",
                        "daemonsets",
                        "deployments",
                        "deployments/scale",
                        "deployments/rollback",
                        "replicasets",
                        "replicasets/scale",
                    ],
                ),
                rule(WRITE, &[AUTOSCALING], &["horizontalpodautoscalers"]),
                rule(WRITE, &[BATCH], &["jobs", "cronjobs"]),
                rule(
                    WRITE,
                    &[EXTENSIONS],
                    &[
                        "daemonsets",
                        "deployments",
                        "deployments/scale",
                        "deployments/rollback",
                        "ingresses",
                        "replicasets",
                        "replicasets/scale",
                        "replicationcontrollers/scale",
                        "networkpolicies",
                    ],
                ),
                rule(WRITE, &[POLICY], &["poddisruptionbudgets"]),
                rule(WRITE, &[NETWORKING], &["networkpolicies", "ingresses"]),
            ],
        ),
        cluster_role(
            "system:aggregate-to-view",
            &[(AGGREGATE_TO_VIEW, "true")],
            vec![
                rule(
                    READ,
                    &[LEGACY],
                    &[
                        "pods",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "serviceaccounts",
                        "services",
                        "services/status",
                        "endpoints",
                        "persistentvolumeclaims",
                        "persistentvolumeclaims/status",
                        "configmaps",
                    ],
                ),
                rule(
                    READ,
                    &[LEGACY],
                    &[
                        "limitranges",
                        "resourcequotas",
                        "bindings",
                        "events",
                        "pods/status",
                        "resourcequotas/status",
                        "namespaces/status",
                        "replicationcontrollers/status",
                        "pods/log",
                    ],
                ),
                rule(READ, &[LEGACY], &["namespaces"]),
                rule(READ, &[DISCOVERY], &["endpointslices"]),
                rule(
                    READ,
                    &[APPS],
                    &[
                        "controllerrevisions",
                        "statefulsets",
                        "statefulsets/status",
                        "statefulsets/scale",
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/status",
                        "deployments/scale",
                        "replicasets",
                        "replicasets/status",
                        "replicasets/scale",
                    ],
                ),
                rule(
                    READ,
                    &[AUTOSCALING],
                    &[
                        "horizontalpodautoscalers",
                        "horizontalpodautoscalers/status",
                    ],
                ),
                rule(
                    READ,
                    &[BATCH],
                    &["jobs", "cronjobs", "cronjobs/status", "jobs/status"],
                ),
                rule(
                    READ,
                    &[EXTENSIONS],
                    &[
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "ingresses",
                        "ingresses/status",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                        "replicationcontrollers/scale",
                        "networkpolicies",
                    ],
                ),
                rule(
                    READ,
                    &[POLICY],
                    &["poddisruptionbudgets", "poddisruptionbudgets/status"],
                ),
                rule(
                    READ,
                    &[NETWORKING],
                    &["networkpolicies", "ingresses", "ingresses/status"],
                ),
            ],
        ),
        cluster_role("system:node", &[], node_rule_values()),
        cluster_role(
            "system:node-problem-detector",
            &[],
            vec![
                rule(&["get"], &[LEGACY], &["nodes"]),
                rule(&["patch"], &[LEGACY], &["nodes/status"]),
                events_rule(),
            ],
        ),
        cluster_role(
            "system:kubelet-api-admin",
            &[],
            vec![
                rule(READ, &[LEGACY], &["nodes"]),
                rule(&["proxy"], &[LEGACY], &["nodes"]),
                rule(
                    &["*"],
                    &[LEGACY],
                    &[
                        "nodes/proxy",
                        "nodes/metrics",
                        "nodes/spec",
                        "nodes/stats",
                        "nodes/log",
                    ],
                ),
            ],
        ),
        cluster_role(
            "system:node-bootstrapper",
            &[],
            vec![rule(
                &["create", "get", "list", "watch"],
                &[CERTIFICATES],
                &["certificatesigningrequests"],
            )],
        ),
        cluster_role(
            "system:auth-delegator",
            &[],
            vec![
                rule(&["create"], &[AUTHENTICATION], &["tokenreviews"]),
                rule(&["create"], &[AUTHORIZATION], &["subjectaccessreviews"]),
            ],
        ),
        cluster_role(
            "system:kube-aggregator",
            &[],
            vec![rule(READ, &[LEGACY], &["services", "endpoints"])],
        ),
        cluster_role(
            "system:kube-dns",
            &[],
            vec![rule(
                &["list", "watch"],
                &[LEGACY],
                &["endpoints", "services"],
            )],
        ),
        cluster_role(
            "system:persistent-volume-provisioner",
            &[],
            vec![
                rule(
                    &["get", "list", "watch", "create", "delete"],
                    &[LEGACY],
                    &["persistentvolumes"],
                ),
                rule(
                    &["get", "list", "watch", "update"],
                    &[LEGACY],
                    &["persistentvolumeclaims"],
                ),
                rule(READ, &[STORAGE], &["storageclasses"]),
                rule(&["watch"], &[LEGACY], &["events"]),
                events_rule(),
            ],
        ),
        cluster_role(
            "system:volume-scheduler",
            &[],
            vec![
                rule(
                    &["get", "list", "watch", "update", "patch"],
                    &[LEGACY],
                    &["persistentvolumes"],
                ),
                rule(READ, &[STORAGE], &["storageclasses"]),
                rule(
                    &["get", "list", "watch", "update", "patch"],
                    &[LEGACY],
                    &["persistentvolumeclaims"],
                ),
            ],
        ),
        cluster_role(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            &[],
            vec![rule(
                &["create"],
                &[CERTIFICATES],
                &["certificatesigningrequests/nodeclient"],
            )],
        ),
        cluster_role(
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            &[],
            vec![rule(
                &["create"],
                &[CERTIFICATES],
                &["certificatesigningrequests/selfnodeclient"],
            )],
        ),
        signer_approver("legacy-unknown-approver", "kubernetes.io/legacy-unknown"),
        signer_approver("kubelet-serving-approver", "kubernetes.io/kubelet-serving"),
        signer_approver(
            "kube-apiserver-client-approver",
            "kubernetes.io/kube-apiserver-client",
        ),
        signer_approver(
            "kube-apiserver-client-kubelet-approver",
            "kubernetes.io/kube-apiserver-client-kubelet",
        ),
        cluster_role(
            "system:service-account-issuer-discovery",
            &[],
            vec![urls(
                &["get"],
                &[
                    "/.well-known/openid-configuration",
                    "/.well-known/openid-configuration/",
                    "/openid/v1/jwks",
                ],
            )],
        ),
        cluster_role(
            "system:node-proxier",
            &[],
            vec![
                rule(&["list", "watch"], &[LEGACY], &["services", "endpoints"]),
                rule(READ, &[LEGACY], &["nodes"]),
                events_rule(),
                rule(&["list", "watch"], &[DISCOVERY], &["endpointslices"]),
            ],
        ),
        // pikube's own: kube-proxy's ServiceLB (`--enable-service-lb`) elects one writer
        // on a Lease and publishes LoadBalancer ingress in Service status.
        cluster_role(
            "system:pikube:servicelb",
            &[],
            vec![
                rule(&["create"], &[COORDINATION], &["leases"]),
                named(
                    &["get", "update"],
                    &[COORDINATION],
                    &["leases"],
                    &["pikube-servicelb"],
                ),
                rule(&["update", "patch"], &[LEGACY], &["services/status"]),
            ],
        ),
        cluster_role(
            "system:kube-scheduler",
            &[],
            vec![
                events_rule(),
                // Leader election.
                rule(&["create"], &[COORDINATION], &["leases"]),
                named(
                    &["get", "update"],
                    &[COORDINATION],
                    &["leases"],
                    &["kube-scheduler"],
                ),
                // Fundamental resources.
                rule(READ, &[LEGACY], &["nodes"]),
                rule(&["get", "list", "watch", "delete"], &[LEGACY], &["pods"]),
                rule(&["create"], &[LEGACY], &["pods/binding", "bindings"]),
                rule(&["patch", "update"], &[LEGACY], &["pods/status"]),
                // Things that select pods.
                rule(READ, &[LEGACY], &["services", "replicationcontrollers"]),
                rule(READ, &[APPS, EXTENSIONS], &["replicasets"]),
                rule(READ, &[APPS], &["statefulsets"]),
                // Things that pods use or that apply to them.
                rule(READ, &[POLICY], &["poddisruptionbudgets"]),
                rule(
                    READ,
                    &[LEGACY],
                    &["persistentvolumeclaims", "persistentvolumes"],
                ),
                rule(&["create"], &[AUTHENTICATION], &["tokenreviews"]),
                rule(&["create"], &[AUTHORIZATION], &["subjectaccessreviews"]),
                rule(READ, &[STORAGE], &["csinodes"]),
                rule(READ, &[LEGACY], &["namespaces"]),
                rule(READ, &[STORAGE], &["csidrivers"]),
                rule(READ, &[STORAGE], &["csistoragecapacities"]),
            ],
        ),
        cluster_role(
            "system:kube-controller-manager",
            &[],
            vec![
                events_rule(),
                rule(&["create"], &[COORDINATION], &["leases"]),
                named(
                    &["get", "update"],
                    &[COORDINATION],
                    &["leases"],
                    &["kube-controller-manager"],
                ),
                rule(&["create"], &[LEGACY], &["secrets", "serviceaccounts"]),
                rule(&["delete"], &[LEGACY], &["secrets"]),
                rule(
                    &["get"],
                    &[LEGACY],
                    &["namespaces", "secrets", "serviceaccounts", "configmaps"],
                ),
                rule(&["update"], &[LEGACY], &["secrets", "serviceaccounts"]),
                rule(&["create"], &[AUTHENTICATION], &["tokenreviews"]),
                rule(&["create"], &[AUTHORIZATION], &["subjectaccessreviews"]),
                rule(&["list", "watch"], &["*"], &["*"]),
                rule(&["create"], &[LEGACY], &["serviceaccounts/token"]),
                // pikube: the controllers run with this identity (see the module docs).
                rule(READ_WRITE, &["*"], &["*"]),
            ],
        ),
    ]
}

/// The default ClusterRoleBindings.
pub fn cluster_role_bindings() -> Vec<Value> {
    vec![
        binding("cluster-admin", &[("Group", "system:masters")]),
        binding("system:monitoring", &[("Group", "system:monitoring")]),
        binding("system:discovery", &[("Group", "system:authenticated")]),
        binding("system:basic-user", &[("Group", "system:authenticated")]),
        binding(
            "system:public-info-viewer",
            &[
                ("Group", "system:authenticated"),
                ("Group", "system:unauthenticated"),
            ],
        ),
        binding("system:node-proxier", &[("User", "system:kube-proxy")]),
        binding("system:pikube:servicelb", &[("User", "system:kube-proxy")]),
        binding(
            "system:kube-controller-manager",
            &[("User", "system:kube-controller-manager")],
        ),
        binding(
            "system:kube-scheduler",
            &[("User", "system:kube-scheduler")],
        ),
        binding(
            "system:volume-scheduler",
            &[("User", "system:kube-scheduler")],
        ),
        binding(
            "system:service-account-issuer-discovery",
            &[("Group", "system:serviceaccounts")],
        ),
        // Kept without subjects, as upstream: the Node authorizer grants nodes their rights.
        binding("system:node", &[]),
    ]
}

/// Upstream's reconciliation of a default object at start: when the stored one keeps
/// `rbac.authorization.kubernetes.io/autoupdate: "true"`, missing rules (or aggregation
/// selectors), labels, annotations and subjects are added; nothing is taken away. `None`
/// when nothing is to change.
pub fn reconcile(stored: &Value, default: &Value) -> Option<Value> {
    let autoupdate = stored
        .pointer("/metadata/annotations/rbac.authorization.kubernetes.io~1autoupdate")
        .and_then(Value::as_str)
        .unwrap_or("true");
    if autoupdate != "true" {
        return None;
    }
    let mut updated = stored.clone();
    let union = |updated: &mut Value, pointer: &str| {
        let wanted = default
            .pointer(pointer)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let Some((parent, field)) = pointer.rsplit_once('/') else {
            return;
        };
        let have = updated
            .pointer(pointer)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut merged = have.clone();
        for w in wanted {
            if !merged.contains(&w) {
                merged.push(w);
            }
        }
        if merged != have {
            let target = if parent.is_empty() {
                Some(&mut *updated)
            } else {
                updated.pointer_mut(parent)
            };
            if let Some(Value::Object(map)) = target {
                map.insert(field.to_string(), Value::Array(merged));
            }
        }
    };
    if default.get("aggregationRule").is_some() {
        if updated.get("aggregationRule").is_none_or(Value::is_null) {
            updated["aggregationRule"] = json!({ "clusterRoleSelectors": [] });
        }
        union(&mut updated, "/aggregationRule/clusterRoleSelectors");
    } else if default.get("rules").is_some() {
        union(&mut updated, "/rules");
    }
    if default.get("subjects").is_some() {
        union(&mut updated, "/subjects");
    }
    for part in ["labels", "annotations"] {
        if let Some(Value::Object(wanted)) = default.pointer(&format!("/metadata/{part}")) {
            let meta = crate::object::meta_mut(&mut updated);
            let entry = meta.entry(part.to_string()).or_insert_with(|| json!({}));
            if let Value::Object(have) = entry {
                for (k, v) in wanted {
                    if !have.contains_key(k) {
                        have.insert(k.clone(), v.clone());
                    }
                }
            }
        }
    }
    (updated != *stored).then_some(updated)
}

fn namespaced(kind: &str, namespace: &str, name: &str) -> Value {
    let mut meta = metadata(name, &[]);
    meta["namespace"] = json!(namespace);
    json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta })
}

fn role(namespace: &str, name: &str, rules: Vec<Value>) -> Value {
    let mut r = namespaced("Role", namespace, name);
    r["rules"] = json!(rules);
    r
}

/// A RoleBinding to a Role; subjects are Users or `namespace/name` ServiceAccounts.
fn role_binding(
    namespace: &str,
    name: &str,
    role: &str,
    users: &[&str],
    accounts: &[(&str, &str)],
) -> Value {
    let mut b = namespaced("RoleBinding", namespace, name);
    let mut subjects: Vec<Value> = users
        .iter()
        .map(|u| json!({ "kind": "User", "apiGroup": RBAC, "name": u }))
        .collect();
    subjects.extend(
        accounts
            .iter()
            .map(|(ns, n)| json!({ "kind": "ServiceAccount", "namespace": ns, "name": n })),
    );
    b["roleRef"] = json!({ "apiGroup": RBAC, "kind": "Role", "name": role });
    b["subjects"] = json!(subjects);
    b
}

/// Upstream's `NamespaceRoles`: in kube-system and kube-public.
pub fn namespaced_roles() -> Vec<Value> {
    let leader_locking = |component: &str| {
        role(
            "kube-system",
            &format!("system::leader-locking-{component}"),
            vec![
                rule(&["watch"], &[LEGACY], &["configmaps"]),
                named(&["get", "update"], &[LEGACY], &["configmaps"], &[component]),
            ],
        )
    };
    vec![
        role(
            "kube-system",
            "extension-apiserver-authentication-reader",
            vec![named(
                READ,
                &[LEGACY],
                &["configmaps"],
                &["extension-apiserver-authentication"],
            )],
        ),
        leader_locking("kube-controller-manager"),
        leader_locking("kube-scheduler"),
        role(
            "kube-system",
            "system:controller:bootstrap-signer",
            vec![rule(READ, &[LEGACY], &["secrets"])],
        ),
        role(
            "kube-system",
            "system:controller:cloud-provider",
            vec![rule(
                &["create", "get", "list", "watch"],
                &[LEGACY],
                &["configmaps"],
            )],
        ),
        role(
            "kube-system",
            "system:controller:token-cleaner",
            vec![
                rule(&["delete", "get", "list", "watch"], &[LEGACY], &["secrets"]),
                events_rule(),
            ],
        ),
        role(
            "kube-public",
            "system:controller:bootstrap-signer",
            vec![
                rule(READ, &[LEGACY], &["configmaps"]),
                named(&["update"], &[LEGACY], &["configmaps"], &["cluster-info"]),
                events_rule(),
            ],
        ),
        // pikube's own (not upstream's): every daemon reads where the apiservers are, to
        // fail over between them (component_base::failover). The addresses are no secret:
        // kube-public's cluster-info names the control plane to anyone.
        role(
            "default",
            APISERVER_ENDPOINTS_READER,
            vec![named(&["get"], &[LEGACY], &["endpoints"], &["kubernetes"])],
        ),
    ]
}

/// The Role (and RoleBinding) in `default` that lets every authenticated client read the
/// `kubernetes` Endpoints.
pub const APISERVER_ENDPOINTS_READER: &str = "pikube:apiserver-endpoints-reader";

/// Upstream's `NamespaceRoleBindings`.
pub fn namespaced_role_bindings() -> Vec<Value> {
    vec![
        role_binding(
            "kube-system",
            "system::extension-apiserver-authentication-reader",
            "extension-apiserver-authentication-reader",
            &["system:kube-controller-manager", "system:kube-scheduler"],
            &[],
        ),
        role_binding(
            "kube-system",
            "system::leader-locking-kube-controller-manager",
            "system::leader-locking-kube-controller-manager",
            &["system:kube-controller-manager"],
            &[("kube-system", "kube-controller-manager")],
        ),
        role_binding(
            "kube-system",
            "system::leader-locking-kube-scheduler",
            "system::leader-locking-kube-scheduler",
            &["system:kube-scheduler"],
            &[("kube-system", "kube-scheduler")],
        ),
        role_binding(
            "kube-system",
            "system:controller:bootstrap-signer",
            "system:controller:bootstrap-signer",
            &[],
            &[("kube-system", "bootstrap-signer")],
        ),
        role_binding(
            "kube-system",
            "system:controller:cloud-provider",
            "system:controller:cloud-provider",
            &[],
            &[("kube-system", "cloud-provider")],
        ),
        role_binding(
            "kube-system",
            "system:controller:token-cleaner",
            "system:controller:token-cleaner",
            &[],
            &[("kube-system", "token-cleaner")],
        ),
        role_binding(
            "kube-public",
            "system:controller:bootstrap-signer",
            "system:controller:bootstrap-signer",
            &[],
            &[("kube-system", "bootstrap-signer")],
        ),
        {
            let mut b = role_binding(
                "default",
                APISERVER_ENDPOINTS_READER,
                APISERVER_ENDPOINTS_READER,
                &[],
                &[],
            );
            b["subjects"] =
                json!([{ "kind": "Group", "apiGroup": RBAC, "name": "system:authenticated" }]);
            b
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconcile_adds_what_is_missing_when_autoupdate() {
        let default = cluster_roles()
            .into_iter()
            .find(|r| r["metadata"]["name"] == "system:basic-user")
            .unwrap();
        let mut stored = default.clone();
        stored["rules"] = json!([stored["rules"][0].clone(), {"verbs": ["get"], "apiGroups": [""], "resources": ["extra"]}]);
        let updated = reconcile(&stored, &default).unwrap();
        let rules = updated["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 3, "kept the extra rule, added the missing one");
        assert!(reconcile(&updated, &default).is_none());
        stored["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"] =
            json!("false");
        assert!(reconcile(&stored, &default).is_none());
        let binding = cluster_role_bindings().remove(0);
        let mut stored = binding.clone();
        stored["subjects"] = json!([]);
        assert_eq!(
            reconcile(&stored, &binding).unwrap()["subjects"],
            binding["subjects"]
        );
    }
    use api_types::resources;
    use api_types::validation::validate_create;

    #[test]
    fn every_default_object_is_valid() {
        let cr = resources::find("rbac.authorization.k8s.io", "v1", "clusterroles").unwrap();
        let crb =
            resources::find("rbac.authorization.k8s.io", "v1", "clusterrolebindings").unwrap();
        for r in cluster_roles() {
            assert_eq!(validate_create(cr, &r), vec![], "{r}");
        }
        for b in cluster_role_bindings() {
            assert_eq!(validate_create(crb, &b), vec![], "{b}");
        }
        assert_eq!(node_rules().len(), node_rule_values().len());
        let role = resources::find("rbac.authorization.k8s.io", "v1", "roles").unwrap();
        let rb = resources::find("rbac.authorization.k8s.io", "v1", "rolebindings").unwrap();
        for r in namespaced_roles() {
            assert_eq!(validate_create(role, &r), vec![], "{r}");
        }
        for b in namespaced_role_bindings() {
            assert_eq!(validate_create(rb, &b), vec![], "{b}");
        }
    }
}
