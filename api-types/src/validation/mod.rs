//! Per-kind validation with upstream's rules, field paths, reasons and messages.
//!
//! The entry points take objects as JSON, already defaulted (see [`crate::defaults`]), and
//! return upstream-shaped [`FieldError`]s. An empty list means valid. The apiserver answers
//! a non-empty list with 422 Invalid, using [`invalid_status_message`] for the message and
//! each error's `reason()`, `message` and `field` for the status causes.
//!
//! Not covered here, because they need cluster state or belong to the registry: name
//! generation, resourceVersion preconditions, node port and cluster IP allocation, quota,
//! admission (priority, service accounts, limit ranges) and the Job selector generation.

pub mod certificates;
pub mod cron;
pub mod field;
pub mod names;

mod cluster;
mod config;
mod meta;
mod networking;
mod pod;
pub mod rbac;
mod service;
mod workloads;

#[cfg(test)]
mod tests;

pub use field::{aggregate_message, invalid_status_message, FieldError, FieldErrorType, Path};
pub use meta::{annotations, label_selector, labels, object_meta, object_meta_update, NameFn};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::resources::ResourceInfo;
use names::{
    is_valid_path_segment_name, name_is_dns1035_label, name_is_dns_label, name_is_dns_subdomain,
};
use pod::PodContext;

/// The name rule of a kind: DNS-1123 labels for namespaces, RFC 1035 labels for services,
/// path segments for persistent volumes and CSRs, DNS-1123 subdomains for everything else.
pub fn name_fn(info: &ResourceInfo) -> NameFn {
    match (info.group, info.kind) {
        ("", "Namespace") => name_is_dns_label,
        ("", "Service") => name_is_dns1035_label,
        ("", "PersistentVolume") => is_valid_path_segment_name,
        // Upstream's `ValidateRBACName`.
        ("rbac.authorization.k8s.io", _) => is_valid_path_segment_name,
        // Upstream does not care what CSRs are called (kubelets name theirs
        // `node-csr-<base64url digest>`, upper case and `_` included).
        ("certificates.k8s.io", "CertificateSigningRequest") => is_valid_path_segment_name,
        _ => name_is_dns_subdomain,
    }
}

fn decode<T: DeserializeOwned>(info: &ResourceInfo, obj: &Value) -> Result<T, Box<FieldError>> {
    T::deserialize(obj).map_err(|e| {
        Box::new(field::invalid(
            &Path::root(),
            Value::Null,
            &format!(
                "{} in version \"{}\" cannot be handled as a {}: {e}",
                info.kind, info.version, info.kind
            ),
        ))
    })
}

fn metadata(info: &ResourceInfo, obj: &Value) -> Result<ObjectMeta, Box<FieldError>> {
    match obj.get("metadata") {
        None | Some(Value::Null) => Ok(ObjectMeta::default()),
        Some(m) => decode(info, m),
    }
}

/// core/v1 Events keep upstream's lenient legacy validation (no ObjectMeta checks).
fn is_core_event(info: &ResourceInfo) -> bool {
    info.group.is_empty() && info.kind == "Event"
}

/// Decodes `$obj` as `$ty` and runs `$body` on it, turning a decode failure into an error.
macro_rules! with {
    ($info:expr, $obj:expr, $ty:ty, |$v:ident| $body:expr) => {
        match decode::<$ty>($info, $obj) {
            Ok($v) => $body,
            Err(e) => vec![*e],
        }
    };
}

/// Decodes both objects as `$ty` and runs `$body` on the pair.
macro_rules! with2 {
    ($info:expr, $new:expr, $old:expr, $ty:ty, |$n:ident, $o:ident| $body:expr) => {
        match (decode::<$ty>($info, $new), decode::<$ty>($info, $old)) {
            (Ok($n), Ok($o)) => $body,
            (Err(e), _) | (_, Err(e)) => vec![*e],
        }
    };
}

/// The spec-level checks of a kind, shared by create and update (`old` is set on update,
/// for the rules that depend on it).
fn kind_checks(info: &ResourceInfo, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    use k8s_openapi::api::{
        apps::v1 as apps, batch::v1 as batch, coordination::v1 as coordination, core::v1 as core,
        discovery::v1 as discovery, events::v1 as events, networking::v1 as net, node::v1 as node,
        policy::v1 as policy, rbac::v1 as rbac_v1, scheduling::v1 as scheduling,
    };
    match (info.group, info.kind) {
        ("rbac.authorization.k8s.io", "Role") => {
            with!(info, obj, rbac_v1::Role, |v| rbac::role(&v))
        }
        ("rbac.authorization.k8s.io", "ClusterRole") => {
            with!(info, obj, rbac_v1::ClusterRole, |v| rbac::cluster_role(&v))
        }
        ("rbac.authorization.k8s.io", "RoleBinding") => {
            with!(info, obj, rbac_v1::RoleBinding, |v| rbac::role_binding(&v))
        }
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            with!(info, obj, rbac_v1::ClusterRoleBinding, |v| {
                rbac::cluster_role_binding(&v)
            })
        }
        ("certificates.k8s.io", "CertificateSigningRequest") => certificates::csr(obj),
        ("", "ConfigMap") => with!(info, obj, core::ConfigMap, |v| config::config_map(&v)),
        ("", "Endpoints") => with!(info, obj, core::Endpoints, |v| cluster::endpoints(&v)),
        ("", "Event") => with!(info, obj, core::Event, |v| cluster::event(&v)),
        ("", "LimitRange") => with!(info, obj, core::LimitRange, |v| cluster::limit_range(&v)),
        ("", "Namespace") => with!(info, obj, core::Namespace, |v| cluster::namespace(&v)),
        ("", "Node") => with!(info, obj, core::Node, |v| cluster::node(&v)),
        ("", "PersistentVolumeClaim") => with!(info, obj, core::PersistentVolumeClaim, |v| {
            cluster::persistent_volume_claim(&v)
        }),
        ("", "PersistentVolume") => {
            with!(info, obj, core::PersistentVolume, |v| {
                cluster::persistent_volume(&v)
            })
        }
        ("", "Pod") => {
            let context = if old.is_some() {
                PodContext::PodUpdate
            } else {
                PodContext::PodCreate
            };
            with!(info, obj, core::Pod, |v| pod::pod(&v, context))
        }
        ("", "ReplicationController") => with!(info, obj, core::ReplicationController, |v| {
            workloads::replication_controller(&v)
        }),
        ("", "ResourceQuota") => {
            with!(info, obj, core::ResourceQuota, |v| cluster::resource_quota(
                &v
            ))
        }
        ("", "Secret") => with!(info, obj, core::Secret, |v| config::secret(&v)),
        ("", "ServiceAccount") => {
            with!(
                info,
                obj,
                core::ServiceAccount,
                |v| config::service_account(&v)
            )
        }
        ("", "Service") => with!(info, obj, core::Service, |v| service::service(&v)),
        ("apps", "ControllerRevision") => with!(info, obj, apps::ControllerRevision, |v| {
            workloads::controller_revision(&v)
        }),
        ("apps", "DaemonSet") => with!(info, obj, apps::DaemonSet, |v| workloads::daemon_set(
            &v, obj
        )),
        ("apps", "Deployment") => {
            with!(info, obj, apps::Deployment, |v| workloads::deployment(
                &v, obj
            ))
        }
        ("apps", "ReplicaSet") => {
            with!(info, obj, apps::ReplicaSet, |v| workloads::replica_set(
                &v, obj
            ))
        }
        ("apps", "StatefulSet") => {
            with!(info, obj, apps::StatefulSet, |v| workloads::stateful_set(
                &v, obj
            ))
        }
        ("batch", "CronJob") => match old {
            None => with!(info, obj, batch::CronJob, |v| workloads::cron_job(&v)),
            Some(old) => with2!(info, obj, old, batch::CronJob, |n, o| {
                workloads::cron_job_update(&n, &o)
            }),
        },
        ("batch", "Job") => with!(info, obj, batch::Job, |v| workloads::job(&v)),
        ("coordination.k8s.io", "Lease") => {
            with!(info, obj, coordination::Lease, |v| cluster::lease(&v))
        }
        ("discovery.k8s.io", "EndpointSlice") => with!(info, obj, discovery::EndpointSlice, |v| {
            networking::endpoint_slice(&v)
        }),
        ("events.k8s.io", "Event") => with!(info, obj, events::Event, |v| cluster::event_v1(&v)),
        ("networking.k8s.io", "IngressClass") => {
            with!(info, obj, net::IngressClass, |v| networking::ingress_class(
                &v
            ))
        }
        ("networking.k8s.io", "Ingress") => {
            with!(info, obj, net::Ingress, |v| networking::ingress(&v))
        }
        ("networking.k8s.io", "NetworkPolicy") => {
            with!(info, obj, net::NetworkPolicy, |v| {
                networking::network_policy(&v)
            })
        }
        ("node.k8s.io", "RuntimeClass") => {
            with!(info, obj, node::RuntimeClass, |v| cluster::runtime_class(
                &v
            ))
        }
        ("policy", "PodDisruptionBudget") => with!(info, obj, policy::PodDisruptionBudget, |v| {
            cluster::pod_disruption_budget(&v)
        }),
        ("scheduling.k8s.io", "PriorityClass") => {
            with!(info, obj, scheduling::PriorityClass, |v| {
                cluster::priority_class(&v)
            })
        }
        _ => Vec::new(),
    }
}

/// The rules that compare an update with the stored object (immutable fields).
fn update_checks(info: &ResourceInfo, new: &Value, old: &Value) -> Vec<FieldError> {
    use k8s_openapi::api::{
        apps::v1 as apps, batch::v1 as batch, core::v1 as core, discovery::v1 as discovery,
        events::v1 as events, networking::v1 as net, node::v1 as node, rbac::v1 as rbac_v1,
        scheduling::v1 as scheduling,
    };
    match (info.group, info.kind) {
        ("rbac.authorization.k8s.io", "RoleBinding") => {
            with2!(info, new, old, rbac_v1::RoleBinding, |n, o| {
                rbac::role_binding_update(&n, &o)
            })
        }
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            with2!(info, new, old, rbac_v1::ClusterRoleBinding, |n, o| {
                rbac::cluster_role_binding_update(&n, &o)
            })
        }
        ("certificates.k8s.io", "CertificateSigningRequest") => certificates::csr_update(new, old),
        ("", "ConfigMap") => with2!(info, new, old, core::ConfigMap, |n, o| {
            config::config_map_update(&n, &o)
        }),
        ("", "Secret") => with2!(info, new, old, core::Secret, |n, o| config::secret_update(
            &n, &o
        )),
        ("", "Pod") => with2!(info, new, old, core::Pod, |n, o| pod::pod_update(&n, &o)),
        ("", "Service") => with2!(info, new, old, core::Service, |n, o| {
            service::service_update(&n, &o)
        }),
        ("", "Node") => with2!(info, new, old, core::Node, |n, o| cluster::node_update(
            &n, &o
        )),
        ("", "PersistentVolumeClaim") => {
            with2!(info, new, old, core::PersistentVolumeClaim, |n, o| {
                cluster::persistent_volume_claim_update(&n, &o)
            })
        }
        ("", "PersistentVolume") => with2!(info, new, old, core::PersistentVolume, |n, o| {
            cluster::persistent_volume_update(&n, &o)
        }),
        ("apps", "Deployment") => with2!(info, new, old, apps::Deployment, |n, o| {
            workloads::deployment_update(&n, &o)
        }),
        ("apps", "ReplicaSet") => with2!(info, new, old, apps::ReplicaSet, |n, o| {
            workloads::replica_set_update(&n, &o)
        }),
        ("apps", "StatefulSet") => with2!(info, new, old, apps::StatefulSet, |n, o| {
            workloads::stateful_set_update(&n, &o)
        }),
        ("apps", "DaemonSet") => with2!(info, new, old, apps::DaemonSet, |n, o| {
            workloads::daemon_set_update(&n, &o)
        }),
        ("apps", "ControllerRevision") => {
            with2!(info, new, old, apps::ControllerRevision, |n, o| {
                workloads::controller_revision_update(&n, &o)
            })
        }
        ("batch", "Job") => with2!(info, new, old, batch::Job, |n, o| workloads::job_update(
            &n, &o
        )),
        ("discovery.k8s.io", "EndpointSlice") => {
            with2!(info, new, old, discovery::EndpointSlice, |n, o| {
                networking::endpoint_slice_update(&n, &o)
            })
        }
        ("events.k8s.io", "Event") => with2!(info, new, old, events::Event, |n, o| {
            cluster::event_v1_update(&n, &o)
        }),
        ("networking.k8s.io", "IngressClass") => {
            with2!(info, new, old, net::IngressClass, |n, o| {
                networking::ingress_class_update(&n, &o)
            })
        }
        ("node.k8s.io", "RuntimeClass") => with2!(info, new, old, node::RuntimeClass, |n, o| {
            cluster::runtime_class_update(&n, &o)
        }),
        ("scheduling.k8s.io", "PriorityClass") => {
            with2!(info, new, old, scheduling::PriorityClass, |n, o| {
                cluster::priority_class_update(&n, &o)
            })
        }
        _ => Vec::new(),
    }
}

/// Validates an object on create: its metadata (name rule and namespace scope from the
/// registry) and the kind's own rules.
pub fn validate_create(info: &ResourceInfo, obj: &Value) -> Vec<FieldError> {
    let mut errs = match metadata(info, obj) {
        Err(e) => return vec![*e],
        Ok(meta) if is_core_event(info) => {
            let name = meta.name.as_deref().unwrap_or_default();
            let generate = meta.generate_name.as_deref().unwrap_or_default();
            if name.is_empty() && generate.is_empty() {
                vec![field::required(
                    &Path::new("metadata").child("name"),
                    "name or generateName is required",
                )]
            } else {
                Vec::new()
            }
        }
        Ok(meta) => object_meta(
            &meta,
            info.namespaced,
            name_fn(info),
            &Path::new("metadata"),
        ),
    };
    errs.extend(kind_checks(info, obj, None));
    errs
}

/// Validates an update: metadata changes, the kind's rules on the new object, and the
/// fields the kind makes immutable (pod specs, selectors, job templates, cluster IPs,
/// immutable ConfigMaps/Secrets, ...).
pub fn validate_update(info: &ResourceInfo, new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if !is_core_event(info) {
        match (metadata(info, new), metadata(info, old)) {
            (Ok(n), Ok(o)) => errs.extend(object_meta_update(&n, &o, &Path::new("metadata"))),
            (Err(e), _) | (_, Err(e)) => return vec![*e],
        }
    }
    errs.extend(kind_checks(info, new, Some(old)));
    errs.extend(update_checks(info, new, old));
    errs
}

/// Status counters that must never be negative, wherever a kind has them.
const STATUS_COUNTERS: &[&str] = &[
    "replicas",
    "readyReplicas",
    "availableReplicas",
    "updatedReplicas",
    "unavailableReplicas",
    "fullyLabeledReplicas",
    "currentReplicas",
    "terminatingReplicas",
    "observedGeneration",
    "collisionCount",
    "currentNumberScheduled",
    "numberMisscheduled",
    "desiredNumberScheduled",
    "numberReady",
    "updatedNumberScheduled",
    "numberAvailable",
    "numberUnavailable",
    "active",
    "succeeded",
    "failed",
    "terminating",
    "ready",
    "currentHealthy",
    "desiredHealthy",
    "disruptionsAllowed",
    "expectedPods",
];

/// Validates a status-subresource update: metadata changes plus light status checks
/// (pod IPs and conditions, namespace phase, non-negative counters).
pub fn validate_status_update(info: &ResourceInfo, new: &Value, old: &Value) -> Vec<FieldError> {
    use k8s_openapi::api::core::v1 as core;
    let mut errs = match (metadata(info, new), metadata(info, old)) {
        (Ok(n), Ok(o)) => object_meta_update(&n, &o, &Path::new("metadata")),
        (Err(e), _) | (_, Err(e)) => return vec![*e],
    };
    let status_path = Path::new("status");
    if let Some(status) = new.get("status").and_then(Value::as_object) {
        for counter in STATUS_COUNTERS {
            if let Some(v) = status.get(*counter).and_then(Value::as_i64) {
                errs.extend(meta::nonnegative(v, &status_path.child(counter)));
            }
        }
    }
    match (info.group, info.kind) {
        ("", "Pod") => errs.extend(with!(info, new, core::Pod, |v| pod::pod_status(&v))),
        ("", "Namespace") => errs.extend(with!(info, new, core::Namespace, |v| {
            cluster::namespace_status(&v)
        })),
        ("certificates.k8s.io", "CertificateSigningRequest") => {
            errs.extend(certificates::csr_status_update(new, old));
        }
        _ => {}
    }
    errs
}
