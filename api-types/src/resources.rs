//! The resource registry: every built-in resource the apiserver serves, with the names,
//! scope, verbs and subresources discovery reports and routing relies on.

/// Verbs of a resource that supports everything.
const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
/// Reviews (access checks, token reviews) are only ever created, never stored.
const CREATE_ONLY: &[&str] = &["create"];
/// Namespaces cannot be deleted as a collection upstream.
const NO_DELETECOLLECTION: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

/// One resource (a plural name in a group/version) as discovery describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceInfo {
    /// API group; empty for the core ("legacy") group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub namespaced: bool,
    pub verbs: &'static [&'static str],
    /// Subresources served under `{plural}/{name}/{subresource}`.
    pub subresources: &'static [&'static str],
    /// The OpenAPI definition name of the kind, e.g. `io.k8s.api.core.v1.Pod`.
    pub definition: &'static str,
}

impl ResourceInfo {
    /// `apiVersion` as written in objects: `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The kind of the list type, e.g. `PodList`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// `plural` or `plural.group`, the name RBAC and error messages use.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn has_subresource(&self, name: &str) -> bool {
        self.subresources.contains(&name)
    }
}

macro_rules! resource {
    ($group:expr, $version:expr, $kind:expr, $plural:expr, $singular:expr, short: [$($short:expr),*], categories: [$($cat:expr),*], namespaced: $ns:expr, verbs: $verbs:expr, sub: [$($sub:expr),*], def: $def:expr) => {
        ResourceInfo {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            short_names: &[$($short),*],
            categories: &[$($cat),*],
            namespaced: $ns,
            verbs: $verbs,
            subresources: &[$($sub),*],
            definition: $def,
        }
    };
}

/// Every served resource, grouped by API group in discovery order.
pub static RESOURCES: &[ResourceInfo] = &[
    // core/v1
    resource!("", "v1", "ConfigMap", "configmaps", "configmap", short: ["cm"], categories: [], namespaced: true, verbs: ALL_VERBS, sub: [], def: "io.k8s.api.core.v1.ConfigMap"),
    resource!("", "v1", "Endpoints", "endpoints", "endpoints", short: ["ep"], categories: [], namespaced: true, verbs: ALL_VERBS, sub: [], def: "io.k8s.api.core.v1.Endpoints"),
    resource!("", "v1", "Event", "events", "event", short: ["ev"], categories: [], namespaced: true, verbs: ALL_VERBS, sub: [], def: "io.k8s.api.core.v1.Event"),
    resource!("", "v1", "LimitRange", "limitranges", "limitrange", short: ["limits"], categories: [], namespaced: true, verbs: ALL_VERBS, sub: [], def: "io.k8s.api.core.v1.LimitRange"),
    resource!("", "v1", "Namespace", "namespaces", "namespace", short: ["ns"], categories: [], namespaced: false, verbs: NO_DELETECOLLECTION, sub: ["status", "finalize"], def: "io.k8s.api.core.v1.Namespace"),
    resource!("", "v1", "Node", "nodes", "node", short: ["no"], categories: [], namespaced: false, verbs: ALL_VERBS, sub: ["proxy", "status"], def: "io.k8s.api.core.v1.Node"),
    resource!("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", "persistentvolumeclaim", short: ["pvc"], categories: [], namespaced: true, verbs: ALL_VERBS, sub: ["status"], def: "io.k8s.api.core.v1.PersistentVolumeClaim"),
    resource!("", "v1", "PersistentVolume", "persistentvolumes", "persistentvolume", short: ["pv"], categories: [], namespaced: false, verbs: ALL_VERBS, sub: ["status"], def: "io.k8s.api.core.v1.PersistentVolume"),
    resource!("", "v1", "Pod", "pods", "pod", short: ["po"], categories: ["all"], namespaced: true, verbs: ALL_VERBS, sub: ["attach", "binding", "eviction", "exec", "log", "portforward", "proxy", "status"], def: "io.k8s.api.core.v1.Pod"),
    resource!("", "v1", "ReplicationController", "replicationcontrollers", "replicationcontroller", short: ["rc"], categories: ["all"], namespaced: true, verbs: ALL_VERBS, sub: ["status", "scale"], def: "io.k8s.api.core.v1.ReplicationController"),
    resource!("", "v1", "ResourceQuota", "resourcequotas", "resourcequota", short: ["quota"], categories: [], namespaced: true, verbs: ALL_VERBS, sub: ["status"], def: "io.k8s.api.core.v1.ResourceQuota"),
    resource!("", "v1", "Secret", "secrets", "secret", short: [], categories: [], namespaced: true, verbs: ALL_VERBS, sub: [], def: "io.k8s.api.core.v1.Secret"),
    resource!("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", short: ["sa"], categories: [], namespaced: true, verbs: ALL_VERBS, sub: ["token"], def: "io.k8s.api.core.v1.ServiceAccount"),
    resource!("", "v1", "Service", "services", "service", short: ["svc"], categories: ["all"], namespaced: true, verbs: ALL_VERBS, sub: ["proxy", "status"], def: "io.k8s.api.core.v1.Service"),
    // apps/v1
    resource!("apps", "v1", "ControllerRevision", "controllerrevisions", "controllerrevision", short: [], categories: [], namespaced: true, verbs: ALL_VERBS, sub: [], def: "io.k8s.api.apps.v1.ControllerRevision"),
    resource!("apps", "v1", "DaemonSet", "daemonsets", "daemonset", short: ["ds"], categories: ["all"], namespaced: true, verbs: ALL_VERBS, sub: ["status"], def: "io.k8s.api.apps.v1.DaemonSet"),
    resource!("apps", "v1", "Deployment", "deployments", "deployment", short: ["deploy"], categories: ["all"], namespaced: true, verbs: ALL_VERBS, sub: ["status", "scale"], def: "io.k8s.api.apps.v1.Deployment"),
    resource!("apps", "v1", "ReplicaSet", "replicasets", "replicaset", short: ["rs"], categories: ["all"], namespaced: true, verbs: ALL_VERBS, sub: ["status", "scale"], def: "io.k8s.api.apps.v1.ReplicaSet"),
    resource!("apps", "v1", "StatefulSet", "statefulsets", "statefulset", short: ["sts"], categories: ["all"], namespaced: true, verbs: ALL_VERBS, sub: ["status", "scale"], def: "io.k8s.api.apps.v1.StatefulSet"),
    // batch/v1
    resource!("batch", "v1", "CronJob", "cronjobs", "cronjob", short: ["cj"], categories: ["all"], namespaced: true, verbs: ALL_VERBS, sub: ["status"], def: "io.k8s.api.batch.v1.CronJob"),
    resource!("batch", "v1", "Job", "jobs", "job", short: [], categories: ["all"], namespaced: true, verbs: ALL_VERBS, sub: ["status"], def: "io.k8s.api.batch.v1.Job"),
    // authentication.k8s.io/v1
    resource!("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews", "selfsubjectreview", short: [], categories: [], namespaced: false, verbs: CREATE_ONLY, sub: [], def: "io.k8s.api.authentication.v1.SelfSubjectReview"),
    resource!("authentication.k8s.io", "v1", "TokenReview", "tokenreviews", "tokenreview", short: [], categories: [], namespaced: false, verbs: CREATE_ONLY, sub: [], def: "io.k8s.api.authentication.v1.TokenReview"),
    // authorization.k8s.io/v1
    resource!("authorization.k8s.io", "v1", "LocalSubjectAccessReview", "localsubjectaccessreviews", "localsubjectaccessreview", short: [], categories: [], namespaced: true, verbs: CREATE_ONLY, sub: [], def: "io.k8s.api.authorization.v1.LocalSubjectAccessReview"),
    resource!("authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews", "selfsubjectaccessreview", short: [], categories: [], namespaced: false, verbs: CREATE_ONLY, sub: [], def: "io.k8s.api.authorization.v1.SelfSubjectAccessReview"),
    resource!("authorization.k8s.io", "v1", "SelfSubjectRulesReview", "selfsubjectrulesreviews", "selfsubjectrulesreview", short: [], categories: [], namespaced: false, verbs: CREATE_ONLY, sub: [], def: "io.k8s.api.authorization.v1.SelfSubjectRulesReview"),
    resource!("authorization.k8s.io", "v1", "SubjectAccessReview", "subjectaccessreviews", "subjectaccessreview", short: [], categories: [], namespaced: false, verbs: CREATE_ONLY, sub: [], def: "io.k8s.api.authorization.v1.SubjectAccessReview"),
    // certificates.k8s.io/v1
    resource!("certificates.k8s.io", "v1", "CertificateSigningRequest", "certificatesigningrequests", "certificatesigningrequest", short: ["csr"], categories: [], namespaced: false, verbs: ALL_VERBS, sub: ["approval", "status"], def: "io.k8s.api.certificates.v1.CertificateSigningRequest"),
    // coordination.k8s.io/v1
    resource!("coordination.k8s.io", "v1", "Lease", "leases", "lease", short: [], categories: [], namespaced: true, verbs: ALL_VERBS, sub: [], def: "io.k8s.api.coordination.v1.Lease"),
    // discovery.k8s.io/v1
    resource!("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice", short: [], categories: [], namespaced: true, verbs: ALL_VERBS, sub: [], def: "io.k8s.api.discovery.v1.EndpointSlice"),
    // events.k8s.io/v1
    resource!("events.k8s.io", "v1", "Event", "events", "event", short: ["ev"], categories: [], namespaced: true, verbs: ALL_VERBS, sub: [], def: "io.k8s.api.events.v1.Event"),
    // networking.k8s.io/v1
    resource!("networking.k8s.io", "v1", "IngressClass", "ingressclasses", "ingressclass", short: [], categories: [], namespaced: false, verbs: ALL_VERBS, sub: [], def: "io.k8s.api.networking.v1.IngressClass"),
    resource!("networking.k8s.io", "v1", "Ingress", "ingresses", "ingress", short: ["ing"], categories: [], namespaced: true, verbs: ALL_VERBS, sub: ["status"], def: "io.k8s.api.networking.v1.Ingress"),
    resource!("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", "networkpolicy", short: ["netpol"], categories: [], namespaced: true, verbs: ALL_VERBS, sub: [], def: "io.k8s.api.networking.v1.NetworkPolicy"),
    // node.k8s.io/v1
    resource!("node.k8s.io", "v1", "RuntimeClass", "runtimeclasses", "runtimeclass", short: [], categories: [], namespaced: false, verbs: ALL_VERBS, sub: [], def: "io.k8s.api.node.v1.RuntimeClass"),
    // policy/v1
    resource!("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", "poddisruptionbudget", short: ["pdb"], categories: [], namespaced: true, verbs: ALL_VERBS, sub: ["status"], def: "io.k8s.api.policy.v1.PodDisruptionBudget"),
    // rbac.authorization.k8s.io/v1
    resource!("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", "clusterrolebinding", short: [], categories: [], namespaced: false, verbs: ALL_VERBS, sub: [], def: "io.k8s.api.rbac.v1.ClusterRoleBinding"),
    resource!("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", "clusterrole", short: [], categories: [], namespaced: false, verbs: ALL_VERBS, sub: [], def: "io.k8s.api.rbac.v1.ClusterRole"),
    resource!("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", "rolebinding", short: [], categories: [], namespaced: true, verbs: ALL_VERBS, sub: [], def: "io.k8s.api.rbac.v1.RoleBinding"),
    resource!("rbac.authorization.k8s.io", "v1", "Role", "roles", "role", short: [], categories: [], namespaced: true, verbs: ALL_VERBS, sub: [], def: "io.k8s.api.rbac.v1.Role"),
    // scheduling.k8s.io/v1
    resource!("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", "priorityclass", short: ["pc"], categories: [], namespaced: false, verbs: ALL_VERBS, sub: [], def: "io.k8s.api.scheduling.v1.PriorityClass"),
];

/// The API groups in the order `/apis` lists them (the core group is served at `/api`).
pub static GROUPS: &[&str] = &[
    "apps",
    "events.k8s.io",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "batch",
    "certificates.k8s.io",
    "policy",
    "networking.k8s.io",
    "rbac.authorization.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "scheduling.k8s.io",
    "node.k8s.io",
];

/// Whether objects of the resource are stored (and watched); reviews are not.
pub fn is_stored(info: &ResourceInfo) -> bool {
    info.verbs.contains(&"get")
}

/// Looks a resource up by group, version and plural name.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Looks a resource up by group, version and kind.
pub fn find_by_kind(group: &str, version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.kind == kind)
}

/// All resources of one group/version.
pub fn in_group_version<'a>(
    group: &'a str,
    version: &'a str,
) -> impl Iterator<Item = &'static ResourceInfo> + 'a {
    RESOURCES
        .iter()
        .filter(move |r| r.group == group && r.version == version)
}

/// Versions served for a group (one per group today).
pub fn versions_of(group: &str) -> Vec<&'static str> {
    let mut versions: Vec<&'static str> = RESOURCES
        .iter()
        .filter(|r| r.group == group)
        .map(|r| r.version)
        .collect();
    versions.dedup();
    versions
}

/// Splits an `apiVersion` into group and version: `apps/v1` → (`apps`, `v1`), `v1` → (``, `v1`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_is_unique_and_has_a_definition_in_its_group() {
        for (i, r) in RESOURCES.iter().enumerate() {
            assert!(
                RESOURCES[i + 1..]
                    .iter()
                    .all(|o| (o.group, o.version, o.plural) != (r.group, r.version, r.plural)),
                "duplicate {}",
                r.group_resource()
            );
            assert!(r.definition.ends_with(&format!(".{}", r.kind)));
            if !r.group.is_empty() {
                assert!(GROUPS.contains(&r.group), "{} not in GROUPS", r.group);
            }
        }
    }

    #[test]
    fn lookups() {
        assert_eq!(
            find("apps", "v1", "deployments").unwrap().kind,
            "Deployment"
        );
        assert_eq!(find_by_kind("", "v1", "Pod").unwrap().plural, "pods");
        assert_eq!(split_api_version("apps/v1"), ("apps", "v1"));
        assert_eq!(split_api_version("v1"), ("", "v1"));
        assert_eq!(find("", "v1", "namespaces").unwrap().api_version(), "v1");
        assert_eq!(versions_of("batch"), vec!["v1"]);
    }
}
