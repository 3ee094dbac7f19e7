//! Per-resource strategies over the one generic storage path: what a create, an update
//! and a status update may change, and how a delete proceeds.

pub mod batch;
pub mod certificates;
pub mod core;
pub mod events;
pub mod reviews;
pub mod scheduling;

use crate::object;
use api_types::resources::ResourceInfo;
use serde_json::{json, Value};

/// The behaviour of one resource on the generic storage path.
pub trait Strategy: Send + Sync {
    /// Resets what a create may not set and sets `metadata.generation`.
    fn prepare_for_create(&self, info: &ResourceInfo, obj: &mut Value) {
        if info.has_subresource("status") && !keeps_status_on_create(info) {
            if let Some(o) = obj.as_object_mut() {
                o.remove("status");
            }
        }
        if tracks_generation(info) {
            object::meta_mut(obj).insert("generation".into(), json!(1));
        }
    }

    /// Keeps what an update of the main resource may not change (status, when there is a
    /// status subresource) and bumps the generation when the spec changed.
    fn prepare_for_update(&self, info: &ResourceInfo, new: &mut Value, old: &Value) {
        if info.has_subresource("status") {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(o) = new.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
        }
        if tracks_generation(info) {
            bump_generation(new, old);
        }
    }

    /// A status update changes only the status.
    fn prepare_for_status_update(&self, _info: &ResourceInfo, new: &mut Value, old: &Value) {
        let status = new.get("status").cloned();
        let mut merged = old.clone();
        match status {
            Some(s) => merged["status"] = s,
            None => {
                if let Some(o) = merged.as_object_mut() {
                    o.remove("status");
                }
            }
        }
        // Keep the caller's resourceVersion for the optimistic-concurrency check.
        if let Some(rv) = object::resource_version(new).map(String::from) {
            object::meta_mut(&mut merged).insert("resourceVersion".into(), json!(rv));
        } else {
            object::meta_mut(&mut merged).remove("resourceVersion");
        }
        *new = merged;
    }

    /// Whether a PUT of an absent object creates it.
    fn allow_create_on_update(&self) -> bool {
        false
    }

    /// The grace period of a graceful delete; `None` deletes at once.
    fn graceful_delete_period(&self, _obj: &Value, _requested: Option<i64>) -> Option<i64> {
        None
    }
}

/// Nodes register with their status; namespaces carry their phase from the start.
fn keeps_status_on_create(info: &ResourceInfo) -> bool {
    info.group.is_empty()
        && matches!(
            info.plural,
            "nodes" | "namespaces" | "persistentvolumeclaims" | "persistentvolumes"
        )
}

/// Kinds whose strategies keep `metadata.generation` upstream (those with controllers
/// reporting an observedGeneration, and a few more).
pub fn tracks_generation(info: &ResourceInfo) -> bool {
    matches!(
        (info.group, info.plural),
        (
            "apps",
            "deployments" | "replicasets" | "statefulsets" | "daemonsets"
        ) | ("", "replicationcontrollers")
            | ("batch", "jobs" | "cronjobs")
            | (
                "networking.k8s.io",
                "ingresses" | "ingressclasses" | "networkpolicies"
            )
            | ("policy", "poddisruptionbudgets")
            | ("discovery.k8s.io", "endpointslices")
            | ("scheduling.k8s.io", "priorityclasses")
            | ("node.k8s.io", "runtimeclasses")
    )
}

/// Bumps `generation` when the spec (everything but metadata and status) changed.
pub fn bump_generation(new: &mut Value, old: &Value) {
    let old_gen = old
        .get("metadata")
        .and_then(|m| m.get("generation"))
        .and_then(Value::as_i64);
    let changed = object::spec_part(new) != object::spec_part(old);
    if let Some(g) = old_gen {
        let g = if changed { g + 1 } else { g };
        object::meta_mut(new).insert("generation".into(), json!(g));
    } else if object::has_spec(new) {
        object::meta_mut(new).insert("generation".into(), json!(1));
    }
}

/// Most resources: the defaults of the trait.
pub struct Generic;
impl Strategy for Generic {}

/// Resources that clients (controllers, kubelets) write with PUT whether or not they exist.
pub struct CreateOnUpdate;
impl Strategy for CreateOnUpdate {
    fn allow_create_on_update(&self) -> bool {
        true
    }
}

/// The strategy of a resource.
pub fn strategy_for(info: &ResourceInfo) -> &'static dyn Strategy {
    match (info.group, info.plural) {
        ("", "pods") => &core::pods::PodStrategy,
        ("", "namespaces") => &core::namespaces::NamespaceStrategy,
        ("batch", "jobs") => &batch::jobs::JobStrategy,
        ("certificates.k8s.io", "certificatesigningrequests") => {
            &certificates::certificate_signing_requests::CertificateSigningRequestStrategy
        }
        ("", "endpoints") | ("", "events") | ("events.k8s.io", "events") => &CreateOnUpdate,
        _ => &Generic,
    }
}
