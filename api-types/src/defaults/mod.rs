//! Per-kind defaulting with upstream's `SetDefaults_*` rules, applied on the typed
//! k8s-openapi structs.
//!
//! [`apply_defaults`] decodes the JSON object into the kind's struct (which also checks
//! every field's type and drops unknown fields, as upstream's decoder does), applies the
//! defaults, and encodes it back. It runs on every decoded request body, create and update.

mod core;
mod pod;
mod workloads;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use thiserror::Error;

use crate::resources::ResourceInfo;

pub use pod::image_pull_policy_for;

/// Why an object could not be defaulted.
#[derive(Debug, Error)]
pub enum DefaultsError {
    /// The object does not decode as its kind (a field of the wrong type, an invalid
    /// quantity, a mismatched `apiVersion`/`kind`). The message is upstream's decode
    /// failure; the apiserver answers 400 BadRequest with it.
    #[error("{kind} in version \"{version}\" cannot be handled as a {kind}: {message}")]
    Decode {
        kind: String,
        version: String,
        message: String,
    },
    /// The defaulted struct could not be encoded back to JSON.
    #[error("encoding defaulted {kind}")]
    Encode {
        kind: String,
        #[source]
        source: serde_json::Error,
    },
}

/// `Result` with [`DefaultsError`].
pub type Result<T, E = DefaultsError> = std::result::Result<T, E>;

/// Decodes `obj` as `T`, runs `f`, and encodes the result back into `obj`. `f` reports
/// decode-level problems (such as malformed quantities) as strings.
fn with_typed<T: DeserializeOwned + Serialize>(
    info: &ResourceInfo,
    obj: &mut Value,
    f: impl FnOnce(&mut T) -> std::result::Result<(), String>,
) -> Result<()> {
    let decode = |message: String| DefaultsError::Decode {
        kind: info.kind.to_string(),
        version: info.version.to_string(),
        message,
    };
    let mut typed = T::deserialize(&*obj).map_err(|e| decode(e.to_string()))?;
    f(&mut typed).map_err(decode)?;
    let mut encoded = serde_json::to_value(&typed).map_err(|source| DefaultsError::Encode {
        kind: info.kind.to_string(),
        source,
    })?;
    keep_absent(info, obj, &mut encoded);
    *obj = encoded;
    Ok(())
}

/// Fields Go models as pointers but k8s-openapi as required values: when the request left
/// them out they must stay out, so validation can report them as required (an apps/v1
/// workload's `spec.selector`).
fn keep_absent(info: &ResourceInfo, input: &Value, encoded: &mut Value) {
    let pointer_fields: &[(&str, &str)] = match (info.group, info.kind) {
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet") => {
            &[("/spec", "selector")]
        }
        _ => &[],
    };
    for (parent, field) in pointer_fields {
        let absent = input
            .pointer(parent)
            .and_then(|p| p.get(field))
            .is_none_or(Value::is_null);
        if absent {
            if let Some(Value::Object(map)) = encoded.pointer_mut(parent) {
                map.remove(*field);
            }
        }
    }
}

fn none(_: &mut impl Sized) -> std::result::Result<(), String> {
    Ok(())
}

/// Applies upstream's defaults for the object's kind. Kinds outside the registry are left
/// unchanged; registry kinds without defaults are still decoded and re-encoded.
///
/// Beyond upstream's `SetDefaults_*` functions this also applies the create-time values
/// upstream sets in its registry strategies and that need no cluster state: a Namespace's
/// `kubernetes` finalizer (only while it is not being deleted), a Secret's `stringData`
/// folded into `data`, and a Service's `clusterIPs`/`ipFamilies`/`ipFamilyPolicy` for a
/// single-stack IPv4 cluster (the apiserver still allocates the cluster IP itself).
pub fn apply_defaults(info: &ResourceInfo, obj: &mut Value) -> Result<()> {
    use k8s_openapi::api::{
        apps::v1 as apps, coordination::v1 as coordination, core::v1 as corev1,
        events::v1 as events, networking::v1 as networking, policy::v1 as policy,
        scheduling::v1 as scheduling,
    };
    match (info.group, info.kind) {
        ("", "ConfigMap") => with_typed::<corev1::ConfigMap>(info, obj, none),
        ("", "Endpoints") => with_typed(info, obj, core::endpoints),
        ("", "Event") => with_typed::<corev1::Event>(info, obj, none),
        ("", "LimitRange") => with_typed(info, obj, core::limit_range),
        ("", "Namespace") => with_typed(info, obj, core::namespace),
        ("", "Node") => with_typed(info, obj, core::node),
        ("", "PersistentVolumeClaim") => with_typed(info, obj, core::persistent_volume_claim),
        ("", "PersistentVolume") => with_typed(info, obj, core::persistent_volume),
        ("", "Pod") => with_typed(info, obj, pod::pod),
        ("", "PodTemplate") => with_typed(info, obj, |t: &mut corev1::PodTemplate| {
            t.template
                .as_mut()
                .map(pod::pod_template)
                .transpose()
                .map(|_| ())
        }),
        ("", "ReplicationController") => with_typed(info, obj, workloads::replication_controller),
        ("", "ResourceQuota") => with_typed(info, obj, core::resource_quota),
        ("", "Secret") => with_typed(info, obj, core::secret),
        ("", "ServiceAccount") => with_typed::<corev1::ServiceAccount>(info, obj, none),
        ("", "Service") => with_typed(info, obj, core::service),
        ("apps", "ControllerRevision") => with_typed::<apps::ControllerRevision>(info, obj, none),
        ("apps", "DaemonSet") => with_typed(info, obj, workloads::daemon_set),
        ("apps", "Deployment") => with_typed(info, obj, workloads::deployment),
        ("apps", "ReplicaSet") => with_typed(info, obj, workloads::replica_set),
        ("apps", "StatefulSet") => with_typed(info, obj, workloads::stateful_set),
        ("batch", "CronJob") => with_typed(info, obj, workloads::cron_job),
        ("batch", "Job") => with_typed(info, obj, workloads::job),
        ("coordination.k8s.io", "Lease") => with_typed::<coordination::Lease>(info, obj, none),
        ("discovery.k8s.io", "EndpointSlice") => with_typed(info, obj, core::endpoint_slice),
        ("events.k8s.io", "Event") => with_typed::<events::Event>(info, obj, none),
        ("networking.k8s.io", "IngressClass") => with_typed(info, obj, core::ingress_class),
        ("networking.k8s.io", "Ingress") => with_typed::<networking::Ingress>(info, obj, none),
        ("networking.k8s.io", "NetworkPolicy") => with_typed(info, obj, core::network_policy),
        ("node.k8s.io", "RuntimeClass") => with_typed(info, obj, core::runtime_class),
        ("policy", "PodDisruptionBudget") => {
            with_typed::<policy::PodDisruptionBudget>(info, obj, none)
        }
        ("rbac.authorization.k8s.io", "Role" | "ClusterRole") => {
            fill_rbac_zero_values(obj);
            let mut typed = obj.clone();
            if info.kind == "Role" {
                with_typed::<k8s_openapi::api::rbac::v1::Role>(info, &mut typed, none)?;
            } else {
                with_typed::<k8s_openapi::api::rbac::v1::ClusterRole>(info, &mut typed, none)?;
            }
            *obj = typed;
            Ok(())
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            fill_rbac_zero_values(obj);
            default_binding(obj);
            let mut typed = obj.clone();
            if info.kind == "RoleBinding" {
                with_typed::<k8s_openapi::api::rbac::v1::RoleBinding>(info, &mut typed, none)?;
            } else {
                with_typed::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>(
                    info, &mut typed, none,
                )?;
            }
            *obj = typed;
            Ok(())
        }
        ("scheduling.k8s.io", "PriorityClass") => {
            with_typed(info, obj, |pc: &mut scheduling::PriorityClass| {
                if pc
                    .preemption_policy
                    .as_deref()
                    .unwrap_or_default()
                    .is_empty()
                {
                    pc.preemption_policy = Some("PreemptLowerPriority".to_string());
                }
                Ok(())
            })
        }
        _ => Ok(()),
    }
}

/// Go decodes an absent struct or string as its zero value, k8s-openapi insists on
/// them: a binding without `roleRef`, a subject without `kind`/`name` or a rule without
/// `verbs` get their zero values so validation reports them as upstream does (422, not a
/// decode failure).
fn fill_rbac_zero_values(obj: &mut Value) {
    let Some(o) = obj.as_object_mut() else { return };
    if let Some(r) = o.get_mut("roleRef") {
        if r.is_null() {
            *r = serde_json::json!({});
        }
    }
    if let Some(Value::Array(rules)) = o.get_mut("rules") {
        for rule in rules.iter_mut().filter_map(Value::as_object_mut) {
            if rule.get("verbs").is_none_or(Value::is_null) {
                rule.insert("verbs".into(), serde_json::json!([]));
            }
        }
    }
    if let Some(Value::Array(subjects)) = o.get_mut("subjects") {
        for s in subjects.iter_mut().filter_map(Value::as_object_mut) {
            for f in ["kind", "name"] {
                if s.get(f).is_none_or(Value::is_null) {
                    s.insert(f.into(), Value::from(""));
                }
            }
        }
    }
}

/// Upstream's `SetDefaults_RoleBinding`/`SetDefaults_ClusterRoleBinding` and
/// `SetDefaults_Subject`: the roleRef's and User/Group subjects' API group is RBAC's.
fn default_binding(obj: &mut Value) {
    const RBAC: &str = "rbac.authorization.k8s.io";
    let Some(o) = obj.as_object_mut() else { return };
    let role_ref = o.entry("roleRef").or_insert_with(|| serde_json::json!({}));
    if let Some(r) = role_ref.as_object_mut() {
        for f in ["kind", "name"] {
            if r.get(f).is_none_or(Value::is_null) {
                r.insert(f.into(), Value::from(""));
            }
        }
        if r.get("apiGroup")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            r.insert("apiGroup".into(), Value::from(RBAC));
        }
    }
    if let Some(Value::Array(subjects)) = o.get_mut("subjects") {
        for s in subjects.iter_mut().filter_map(Value::as_object_mut) {
            let empty = s
                .get("apiGroup")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty();
            let kind = s.get("kind").and_then(Value::as_str).unwrap_or("");
            if empty && matches!(kind, "User" | "Group") {
                s.insert("apiGroup".into(), Value::from(RBAC));
            }
        }
    }
}

/// Sets `slot` to `value` when it is unset or holds the zero value, as upstream's
/// `if x == "" { x = default }` checks do.
fn default_str(slot: &mut Option<String>, value: &str) {
    if slot.as_deref().unwrap_or_default().is_empty() {
        *slot = Some(value.to_string());
    }
}

/// Sets an integer to `value` when unset or zero.
fn default_nonzero<T: Default + PartialEq + Copy>(slot: &mut Option<T>, value: T) {
    if slot.is_none_or(|v| v == T::default()) {
        *slot = Some(value);
    }
}

#[cfg(test)]
mod tests;
