//! Admission: the rules between decoding a write and storing it that need cluster state,
//! in upstream's two phases. Mutating plugins run on the defaulted object before the
//! resource's strategy and validation; validating plugins run after validation. Plugins
//! read other resources through the watch caches, as upstream's read informers; writes of
//! those resources answer once the cache has them (see [`reads_cache_of`]).

pub mod config;
pub mod default_toleration_seconds;
pub mod limit_ranger;
pub mod namespace_lifecycle;
pub mod node_restriction;
pub mod pod_security;
pub mod priority;
pub mod resource_quota;
pub mod service_account;

use crate::status::{ApiError, ApiResult};
use crate::Apiserver;
use api_types::resources::{self, ResourceInfo};
use config::AdmissionPlugin;
use serde_json::Value;

/// What a plugin knows of a request (upstream's `admission.Attributes`, reduced).
pub struct Attributes<'a> {
    pub info: &'static ResourceInfo,
    pub namespace: Option<&'a str>,
    /// The object's name; on a create with `generateName` and no name, the generateName,
    /// as upstream's error messages name it before a name is generated.
    pub name: &'a str,
    /// The subresource written (`status`, `eviction`, ...); empty for the main resource.
    pub subresource: &'a str,
}

impl Attributes<'_> {
    fn is(&self, group: &str, plural: &str) -> bool {
        self.info.group == group && self.info.plural == plural
    }

    /// 403 for this request, as upstream's `admission.NewForbidden`.
    fn forbidden(&self, why: impl std::fmt::Display) -> ApiError {
        ApiError::forbidden(self.info, self.name, why)
    }
}

fn enabled(api: &Apiserver, plugin: AdmissionPlugin) -> bool {
    api.config.admission.is_enabled(plugin)
}

/// The mutating phase of a create, the enabled plugins in upstream's order.
pub async fn admit_create(api: &Apiserver, a: &Attributes<'_>, obj: &mut Value) -> ApiResult<()> {
    if let Some(ns) = a.namespace {
        if enabled(api, AdmissionPlugin::NamespaceLifecycle) {
            namespace_lifecycle::admit_create(api, a, ns).await?;
        }
    }
    if a.is("", "pods") {
        if let (Some(ns), true) = (a.namespace, enabled(api, AdmissionPlugin::LimitRanger)) {
            limit_ranger::admit_pod_create(api, ns, obj).await?;
        }
        if let (Some(ns), true) = (a.namespace, enabled(api, AdmissionPlugin::ServiceAccount)) {
            service_account::admit_pod_create(api, a, ns, obj).await?;
        }
        if enabled(api, AdmissionPlugin::Priority) {
            priority::admit_pod_create(api, a, obj).await?;
        }
        if enabled(api, AdmissionPlugin::DefaultTolerationSeconds) {
            default_toleration_seconds::admit_pod_create(&api.config.admission, obj);
        }
    }
    Ok(())
}

/// The mutating phase of an update of the main resource (not of a subresource).
pub fn admit_update(a: &Attributes<'_>, new: &mut Value, old: &Value) {
    if a.is("", "pods") {
        priority::admit_pod_update(new, old);
    }
}

/// The validating phase of a create, after the object's own validation: RBAC escalation
/// prevention, then the enabled plugins in upstream's order, ResourceQuota last (it
/// charges the quota unless `dry_run`). Answers the warnings for the client (PodSecurity's
/// `warn` mode).
pub async fn validate_create(
    api: &Apiserver,
    a: &Attributes<'_>,
    obj: &Value,
    dry_run: bool,
) -> ApiResult<Vec<String>> {
    crate::authz::escalation::check(api, a.info, a.namespace, a.name, obj, None)?;
    if let (Some(ns), true) = (a.namespace, enabled(api, AdmissionPlugin::LimitRanger)) {
        if a.is("", "pods") {
            limit_ranger::validate_pod_create(api, a, ns, obj).await?;
        }
        if a.is("", "persistentvolumeclaims") {
            limit_ranger::validate_claim(api, a, ns, obj).await?;
        }
    }
    if let (Some(ns), true) = (a.namespace, a.is("", "pods")) {
        if enabled(api, AdmissionPlugin::ServiceAccount) {
            service_account::validate_pod_create(api, a, ns, obj).await?;
        }
    }
    if enabled(api, AdmissionPlugin::NodeRestriction) {
        node_restriction::validate_create(a, obj)?;
    }
    let mut warnings = Vec::new();
    if let (Some(ns), true) = (a.namespace, enabled(api, AdmissionPlugin::PodSecurity)) {
        warnings.extend(pod_security::validate_create(api, a, ns, obj).await?);
    }
    if a.is("", "namespaces") && enabled(api, AdmissionPlugin::PodSecurity) {
        warnings.extend(pod_security::validate_namespace(api, a, obj, None)?);
    }
    if a.is("scheduling.k8s.io", "priorityclasses") && enabled(api, AdmissionPlugin::Priority) {
        priority::validate_priority_class(api, a, obj, false).await?;
    }
    if let Some(ns) = a.namespace {
        if enabled(api, AdmissionPlugin::ResourceQuota) {
            resource_quota::validate_create(api, a, ns, obj, dry_run).await?;
        }
    }
    Ok(warnings)
}

/// The validating phase of an update of the main resource, after the object's validation.
/// Answers the warnings for the client (PodSecurity on a stricter namespace label).
pub async fn validate_update(
    api: &Apiserver,
    a: &Attributes<'_>,
    new: &Value,
    old: &Value,
) -> ApiResult<Vec<String>> {
    crate::authz::escalation::check(api, a.info, a.namespace, a.name, new, Some(old))?;
    if enabled(api, AdmissionPlugin::NodeRestriction) {
        node_restriction::validate_update(a, new, old)?;
    }
    if let (Some(ns), true) = (a.namespace, a.is("", "persistentvolumeclaims")) {
        if enabled(api, AdmissionPlugin::LimitRanger) {
            limit_ranger::validate_claim(api, a, ns, new).await?;
        }
    }
    if let (Some(ns), true) = (a.namespace, a.is("", "pods")) {
        if enabled(api, AdmissionPlugin::PodSecurity) {
            pod_security::validate_pod_update(api, a, ns, new, old).await?;
        }
    }
    let mut warnings = Vec::new();
    if a.is("", "namespaces") && enabled(api, AdmissionPlugin::PodSecurity) {
        warnings.extend(pod_security::validate_namespace(api, a, new, Some(old))?);
    }
    if a.is("scheduling.k8s.io", "priorityclasses") && enabled(api, AdmissionPlugin::Priority) {
        priority::validate_priority_class(api, a, new, true).await?;
    }
    Ok(warnings)
}

/// The validating phase of an update of a status-like subresource (`status`, `approval`),
/// after its validation. Of the plugins here only NodeRestriction looks at these (a
/// kubelet writes the status of its own pods and Node only); PodSecurity and the others
/// leave subresources alone, as upstream.
pub fn validate_status_update(
    api: &Apiserver,
    a: &Attributes<'_>,
    new: &Value,
    old: &Value,
) -> ApiResult<()> {
    if enabled(api, AdmissionPlugin::NodeRestriction) {
        node_restriction::validate_update(a, new, old)?;
    }
    Ok(())
}

/// The validating phase of a delete, on the object as stored.
pub fn validate_delete(api: &Apiserver, a: &Attributes<'_>, old: &Value) -> ApiResult<()> {
    if enabled(api, AdmissionPlugin::NodeRestriction) {
        node_restriction::validate_delete(a, old)?;
    }
    Ok(())
}

/// The validating phase of a create of a pod subresource that acts on the pod
/// (`eviction`, `binding`), given the stored pod.
pub fn validate_pod_subresource_create(
    api: &Apiserver,
    a: &Attributes<'_>,
    pod: &Value,
) -> ApiResult<()> {
    if enabled(api, AdmissionPlugin::NodeRestriction) {
        node_restriction::validate_pod_subresource_create(a, pod)?;
    }
    Ok(())
}

/// Whether admission reads this resource's watch cache, so that its writes should answer
/// only once the cache shows them: a client that created a PriorityClass (or deleted a
/// namespace) and then creates a Pod must see the effect.
pub fn reads_cache_of(info: &ResourceInfo) -> bool {
    matches!(
        (info.group, info.plural),
        ("", "namespaces" | "resourcequotas" | "limitranges")
            | ("scheduling.k8s.io", "priorityclasses")
            // The authorizers read these: a new binding holds for the client's next request.
            | ("rbac.authorization.k8s.io", _)
    )
}

fn resource(group: &str, plural: &str) -> ApiResult<&'static ResourceInfo> {
    resources::find(group, "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} not registered")))
}
