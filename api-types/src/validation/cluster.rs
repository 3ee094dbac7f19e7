//! Validation of the remaining core/v1 kinds (Namespace, Node, PersistentVolume(Claim),
//! LimitRange, ResourceQuota, Endpoints, Event) and of Lease, PriorityClass, RuntimeClass,
//! PodDisruptionBudget and events.k8s.io Event.

use std::collections::BTreeSet;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    EndpointAddress, Endpoints, Event, LimitRange, Namespace, Node, PersistentVolume,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, ResourceQuota,
};
use k8s_openapi::api::events::v1::Event as EventV1;
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use serde_json::Value;

use super::field::{
    duplicate, forbidden, immutable, invalid, not_supported, required, FieldError, Path,
};
use super::meta::{immutable_field, label_name, label_selector, labels, name_errors, to_json};
use super::names::{
    is_dns1123_label, is_dns1123_subdomain, is_qualified_name, is_valid_cidr, is_valid_ip,
    is_valid_label_value, is_valid_port_num, parse_cidr,
};
use super::networking::non_special_ip;
use super::pod::{parse_quantity, resource_list_values, tolerations};
use super::workloads::positive_int_or_percent;
use crate::quantity::Quantity;

const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];
const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];
const VOLUME_MODES: &[&str] = &["Block", "Filesystem"];
const RECLAIM_POLICIES: &[&str] = &["Delete", "Recycle", "Retain"];
const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];

pub(crate) fn namespace(ns: &Namespace) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let path = Path::new("spec").child("finalizers");
    for f in ns.spec.iter().flat_map(|s| s.finalizers.iter().flatten()) {
        errs.extend(name_errors(&path, f, is_qualified_name(f)));
        if !f.contains('/') && !STANDARD_FINALIZERS.contains(&f.as_str()) {
            errs.push(invalid(
                &path,
                f.as_str(),
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
    errs
}

pub(crate) fn namespace_status(ns: &Namespace) -> Vec<FieldError> {
    let phase = ns
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    let path = Path::new("status").child("Phase");
    if ns.metadata.deletion_timestamp.is_none() {
        if phase != "Active" {
            return vec![invalid(
                &path,
                phase,
                "may only be 'Active' if `deletionTimestamp` is empty",
            )];
        }
    } else if phase != "Terminating" {
        return vec![invalid(
            &path,
            phase,
            "may only be 'Terminating' if `deletionTimestamp` is not empty",
        )];
    }
    Vec::new()
}

pub(crate) fn node(n: &Node) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = n.spec.clone().unwrap_or_default();
    let taints_path = Path::new("spec").child("taints");
    let mut seen = BTreeSet::new();
    for (i, t) in spec.taints.iter().flatten().enumerate() {
        let p = taints_path.index(i);
        errs.extend(label_name(&t.key, &p.child("key")));
        let value = t.value.as_deref().unwrap_or_default();
        errs.extend(name_errors(
            &p.child("value"),
            value,
            is_valid_label_value(value),
        ));
        if t.effect.is_empty() {
            errs.push(required(&p.child("effect"), ""));
        } else if !TAINT_EFFECTS.contains(&t.effect.as_str()) {
            errs.push(not_supported(
                &p.child("effect"),
                t.effect.as_str(),
                TAINT_EFFECTS,
            ));
        }
        if !seen.insert((t.key.clone(), t.effect.clone())) {
            errs.push(
                duplicate(&p, to_json(t))
                    .with_detail("taints must be unique by key and effect pair"),
            );
        }
    }
    let cidrs = spec.pod_cidrs.clone().unwrap_or_default();
    let cp = Path::new("spec").child("podCIDRs");
    for (i, c) in cidrs.iter().enumerate() {
        errs.extend(name_errors(&cp.index(i), c, is_valid_cidr(c)));
    }
    if cidrs.len() > 1 {
        let parsed: Vec<_> = cidrs.iter().filter_map(|c| parse_cidr(c)).collect();
        let dual = parsed.len() == 2 && parsed[0].0.is_ipv4() != parsed[1].0.is_ipv4();
        if !dual || cidrs.len() > 2 {
            errs.push(invalid(
                &cp,
                to_json(&cidrs),
                "may specify no more than one CIDR for each IP family",
            ));
        }
    }
    if let Some(status) = &n.status {
        errs.extend(resource_list_values(
            status.capacity.as_ref(),
            &Path::new("status").child("capacity"),
        ));
        errs.extend(resource_list_values(
            status.allocatable.as_ref(),
            &Path::new("status").child("allocatable"),
        ));
    }
    errs
}

pub(crate) fn node_update(new: &Node, old: &Node) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let (ns, os) = (
        new.spec.clone().unwrap_or_default(),
        old.spec.clone().unwrap_or_default(),
    );
    let old_cidrs = os.pod_cidrs.unwrap_or_default();
    if !old_cidrs.is_empty() && ns.pod_cidrs.unwrap_or_default() != old_cidrs {
        errs.push(forbidden(
            &Path::new("spec").child("podCIDRs"),
            "node updates may not change podCIDR except from \"\" to valid",
        ));
    }
    let old_provider = os.provider_id.unwrap_or_default();
    if !old_provider.is_empty() && ns.provider_id.unwrap_or_default() != old_provider {
        errs.push(forbidden(
            &Path::new("spec").child("providerID"),
            "node updates may not change providerID except from \"\" to valid",
        ));
    }
    errs
}

fn access_modes(modes: &[String], path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for m in modes {
        if !ACCESS_MODES.contains(&m.as_str()) {
            errs.push(not_supported(path, m.as_str(), ACCESS_MODES));
        }
    }
    if modes.len() > 1 && modes.iter().any(|m| m == "ReadWriteOncePod") {
        errs.push(forbidden(
            path,
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
    errs
}

fn positive_quantity(q: &Quantity, path: &Path) -> Vec<FieldError> {
    if q.is_negative() || q.is_zero() {
        vec![invalid(path, q.to_string(), "must be greater than zero")]
    } else {
        Vec::new()
    }
}

/// Upstream's `ValidatePersistentVolumeClaimSpec`.
pub(crate) fn claim_spec(spec: &PersistentVolumeClaimSpec, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let modes = spec.access_modes.clone().unwrap_or_default();
    if modes.is_empty() {
        errs.push(required(
            &path.child("accessModes"),
            "at least 1 access mode is required",
        ));
    }
    if let Some(s) = &spec.selector {
        errs.extend(label_selector(s, &path.child("selector")));
    }
    errs.extend(access_modes(&modes, &path.child("accessModes")));
    let storage_path = path.child("resources").key("storage");
    let storage = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"));
    match storage {
        None => errs.push(required(&storage_path, "")),
        Some(q) => match parse_quantity(q, &storage_path) {
            Ok(parsed) => errs.extend(positive_quantity(&parsed, &storage_path)),
            Err(e) => errs.push(*e),
        },
    }
    if let Some(class) = spec.storage_class_name.as_deref().filter(|c| !c.is_empty()) {
        errs.extend(name_errors(
            &path.child("storageClassName"),
            class,
            is_dns1123_subdomain(class),
        ));
    }
    if let Some(mode) = spec.volume_mode.as_deref() {
        if !VOLUME_MODES.contains(&mode) {
            errs.push(not_supported(&path.child("volumeMode"), mode, VOLUME_MODES));
        }
    }
    errs
}

pub(crate) fn persistent_volume_claim(pvc: &PersistentVolumeClaim) -> Vec<FieldError> {
    claim_spec(&pvc.spec.clone().unwrap_or_default(), &Path::new("spec"))
}

fn storage_request(spec: &PersistentVolumeClaimSpec) -> Option<Quantity> {
    spec.resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .and_then(|q| Quantity::parse(&q.0).ok())
}

/// Upstream's `ValidatePersistentVolumeClaimUpdate`: the spec is immutable except the
/// volume name (set once), the storage request of a bound claim, and the volume
/// attributes class.
pub(crate) fn persistent_volume_claim_update(
    new: &PersistentVolumeClaim,
    old: &PersistentVolumeClaim,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let (mut n, mut o) = (
        new.spec.clone().unwrap_or_default(),
        old.spec.clone().unwrap_or_default(),
    );
    if o.volume_name.as_deref().unwrap_or_default().is_empty() {
        o.volume_name = n.volume_name.clone();
    }
    let bound = new.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    let (new_size, old_size) = (storage_request(&n), storage_request(&o));
    if bound {
        if let Some(requests) = n.resources.as_mut().and_then(|r| r.requests.as_mut()) {
            if let Some(old_q) = o
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"))
            {
                requests.insert("storage".to_string(), old_q.clone());
            }
        }
    }
    n.volume_attributes_class_name = o.volume_attributes_class_name.clone();
    if to_json(&n) != to_json(&o) {
        errs.push(forbidden(
            &Path::new("spec"),
            "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
        ));
    }
    if let (Some(new_size), Some(old_size)) = (new_size, old_size) {
        let capacity = old
            .status
            .as_ref()
            .and_then(|s| s.capacity.as_ref())
            .and_then(|c| c.get("storage"))
            .and_then(|q| Quantity::parse(&q.0).ok());
        if new_size < old_size && capacity.is_none_or(|c| new_size <= c) {
            errs.push(forbidden(
                &Path::new("spec")
                    .child("resources")
                    .child("requests")
                    .child("storage"),
                "field can not be less than previous value",
            ));
        }
    }
    errs.extend(immutable_field(
        &new.spec.as_ref().and_then(|s| s.volume_mode.clone()),
        &old.spec.as_ref().and_then(|s| s.volume_mode.clone()),
        &Path::new("volumeMode"),
    ));
    errs
}

/// JSON names of the persistent volume sources set on a PV spec.
fn pv_sources(spec: &Value) -> Vec<String> {
    const SOURCES: &[&str] = &[
        "gcePersistentDisk",
        "awsElasticBlockStore",
        "hostPath",
        "glusterfs",
        "nfs",
        "rbd",
        "quobyte",
        "cinder",
        "cephfs",
        "iscsi",
        "fc",
        "flocker",
        "flexVolume",
        "azureFile",
        "vsphereVolume",
        "azureDisk",
        "photonPersistentDisk",
        "portworxVolume",
        "scaleIO",
        "local",
        "storageos",
        "csi",
    ];
    SOURCES
        .iter()
        .filter(|s| spec.get(**s).is_some_and(|v| !v.is_null()))
        .map(|s| s.to_string())
        .collect()
}

pub(crate) fn persistent_volume(pv: &PersistentVolume) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = pv.spec.clone().unwrap_or_default();
    let path = Path::new("spec");
    let modes = spec.access_modes.clone().unwrap_or_default();
    if modes.is_empty() {
        errs.push(required(&path.child("accessModes"), ""));
    }
    errs.extend(access_modes(&modes, &path.child("accessModes")));
    let capacity = spec.capacity.clone().unwrap_or_default();
    if capacity.is_empty() {
        errs.push(required(&path.child("capacity"), ""));
    }
    if !capacity.contains_key("storage") || capacity.len() > 1 {
        errs.push(not_supported(
            &path.child("capacity"),
            to_json(&capacity),
            &["storage"],
        ));
    }
    for (name, q) in &capacity {
        let p = path.child("capacity").key(name);
        match parse_quantity(q, &p) {
            Ok(parsed) => errs.extend(positive_quantity(&parsed, &p)),
            Err(e) => errs.push(*e),
        }
    }
    if let Some(class) = spec.storage_class_name.as_deref().filter(|c| !c.is_empty()) {
        errs.extend(name_errors(
            &path.child("storageClassName"),
            class,
            is_dns1123_subdomain(class),
        ));
    }
    if let Some(mode) = spec.volume_mode.as_deref() {
        if !VOLUME_MODES.contains(&mode) {
            errs.push(not_supported(&path.child("volumeMode"), mode, VOLUME_MODES));
        }
    }
    if let Some(policy) = spec
        .persistent_volume_reclaim_policy
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        if !RECLAIM_POLICIES.contains(&policy) {
            errs.push(not_supported(
                &path.child("persistentVolumeReclaimPolicy"),
                policy,
                RECLAIM_POLICIES,
            ));
        }
    }
    let sources = pv_sources(&to_json(&spec));
    if sources.is_empty() {
        errs.push(required(&path, "must specify a volume type"));
    }
    for name in sources.iter().skip(1) {
        errs.push(forbidden(
            &path.child(name),
            "may not specify more than 1 volume type",
        ));
    }
    if let Some(h) = &spec.host_path {
        if h.path.is_empty() {
            errs.push(required(&path.child("hostPath").child("path"), ""));
        } else if h.path.split('/').any(|p| p == "..") {
            errs.push(invalid(
                &path.child("hostPath").child("path"),
                h.path.as_str(),
                "must not contain '..'",
            ));
        }
    }
    if let Some(l) = &spec.local {
        if !l.path.starts_with('/') {
            errs.push(invalid(
                &path.child("local").child("path"),
                l.path.as_str(),
                "must be an absolute path",
            ));
        }
        if spec.node_affinity.is_none() {
            errs.push(required(
                &path.child("nodeAffinity"),
                "Local volume requires node affinity",
            ));
        }
    }
    errs
}

pub(crate) fn persistent_volume_update(
    new: &PersistentVolume,
    old: &PersistentVolume,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let (n, o) = (to_json(&new.spec), to_json(&old.spec));
    let source = |v: &Value| -> Value {
        let mut out = serde_json::Map::new();
        for s in pv_sources(v) {
            if let Some(x) = v.get(&s) {
                out.insert(s, x.clone());
            }
        }
        Value::Object(out)
    };
    if source(&n) != source(&o) {
        errs.push(forbidden(
            &Path::new("spec").child("persistentvolumesource"),
            "spec.persistentvolumesource is immutable after creation",
        ));
    }
    let mode = |pv: &PersistentVolume| pv.spec.as_ref().and_then(|s| s.volume_mode.clone());
    errs.extend(immutable_field(
        &mode(new),
        &mode(old),
        &Path::new("volumeMode"),
    ));
    errs
}

pub(crate) fn limit_range(lr: &LimitRange) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let path = Path::new("spec").child("limits");
    for (i, item) in lr.spec.iter().flat_map(|s| s.limits.iter()).enumerate() {
        let p = path.index(i);
        if !["Container", "Pod", "PersistentVolumeClaim"].contains(&item.type_.as_str()) {
            errs.push(not_supported(
                &p.child("type"),
                item.type_.as_str(),
                &["Container", "PersistentVolumeClaim", "Pod"],
            ));
        }
        for (field, list) in [
            ("max", &item.max),
            ("min", &item.min),
            ("default", &item.default),
            ("defaultRequest", &item.default_request),
            ("maxLimitRequestRatio", &item.max_limit_request_ratio),
        ] {
            errs.extend(resource_list_values(list.as_ref(), &p.child(field)));
        }
        let parse = |list: &Option<
            std::collections::BTreeMap<
                String,
                k8s_openapi::apimachinery::pkg::api::resource::Quantity,
            >,
        >,
                     k: &str| {
            list.as_ref()
                .and_then(|l| l.get(k))
                .and_then(|q| Quantity::parse(&q.0).ok())
        };
        for (name, _) in item.min.iter().flatten() {
            if let (Some(min), Some(max)) = (parse(&item.min, name), parse(&item.max, name)) {
                if min > max {
                    errs.push(invalid(
                        &p.child("min").key(name),
                        min.to_string(),
                        &format!("min value {min} is greater than max value {max}"),
                    ));
                }
            }
        }
        for (name, _) in item.default.iter().flatten() {
            if let (Some(d), Some(max)) = (parse(&item.default, name), parse(&item.max, name)) {
                if d > max {
                    errs.push(invalid(
                        &p.child("default").key(name),
                        d.to_string(),
                        &format!("default value {d} is greater than max value {max}"),
                    ));
                }
            }
        }
    }
    errs
}

pub(crate) fn resource_quota(q: &ResourceQuota) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(spec) = &q.spec {
        errs.extend(resource_list_values(
            spec.hard.as_ref(),
            &Path::new("spec").child("hard"),
        ));
        for (i, scope) in spec.scopes.iter().flatten().enumerate() {
            const SCOPES: &[&str] = &[
                "BestEffort",
                "CrossNamespacePodAffinity",
                "NotBestEffort",
                "NotTerminating",
                "PriorityClass",
                "Terminating",
                "VolumeAttributesClass",
            ];
            if !SCOPES.contains(&scope.as_str()) {
                errs.push(not_supported(
                    &Path::new("spec").child("scopes").index(i),
                    scope.as_str(),
                    SCOPES,
                ));
            }
        }
    }
    errs
}

fn endpoint_address(a: &EndpointAddress, path: &Path) -> Vec<FieldError> {
    let ip_path = path.child("ip");
    let msgs = is_valid_ip(&a.ip);
    let mut errs = if msgs.is_empty() {
        non_special_ip(&a.ip, &ip_path)
    } else {
        name_errors(&ip_path, &a.ip, msgs)
    };
    if let Some(h) = a.hostname.as_deref().filter(|h| !h.is_empty()) {
        errs.extend(name_errors(&path.child("hostname"), h, is_dns1123_label(h)));
    }
    if let Some(n) = a.node_name.as_deref().filter(|n| !n.is_empty()) {
        errs.extend(name_errors(
            &path.child("nodeName"),
            n,
            is_dns1123_subdomain(n),
        ));
    }
    errs
}

pub(crate) fn endpoints(e: &Endpoints) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, ss) in e.subsets.iter().flatten().enumerate() {
        let p = Path::new("subsets").index(i);
        let addresses = ss.addresses.as_deref().unwrap_or_default();
        let not_ready = ss.not_ready_addresses.as_deref().unwrap_or_default();
        if addresses.is_empty() && not_ready.is_empty() {
            errs.push(required(
                &p,
                "must specify `addresses` or `notReadyAddresses`",
            ));
        }
        for (j, a) in addresses.iter().enumerate() {
            errs.extend(endpoint_address(a, &p.child("addresses").index(j)));
        }
        for (j, a) in not_ready.iter().enumerate() {
            errs.extend(endpoint_address(a, &p.child("notReadyAddresses").index(j)));
        }
        let ports = ss.ports.as_deref().unwrap_or_default();
        for (j, port) in ports.iter().enumerate() {
            let pp = p.child("ports").index(j);
            let name = port.name.as_deref().unwrap_or_default();
            if ports.len() > 1 && name.is_empty() {
                errs.push(required(&pp.child("name"), ""));
            } else if !name.is_empty() {
                errs.extend(name_errors(&pp.child("name"), name, is_dns1123_label(name)));
            }
            for msg in is_valid_port_num(i64::from(port.port)) {
                errs.push(invalid(&pp.child("port"), port.port, &msg));
            }
            match port.protocol.as_deref().unwrap_or_default() {
                "" => errs.push(required(&pp.child("protocol"), "")),
                proto if !["SCTP", "TCP", "UDP"].contains(&proto) => errs.push(not_supported(
                    &pp.child("protocol"),
                    proto,
                    &["SCTP", "TCP", "UDP"],
                )),
                _ => {}
            }
        }
    }
    errs
}

const REPORTING_INSTANCE_LIMIT: usize = 128;
const ACTION_LIMIT: usize = 128;
const REASON_LIMIT: usize = 128;
const NOTE_LIMIT: usize = 1024;

/// The fields of an event that upstream's validation looks at, from either API version.
struct EventView<'a> {
    namespace: &'a str,
    involved_namespace: &'a str,
    has_event_time: bool,
    reporting_controller: &'a str,
    reporting_instance: &'a str,
    action: &'a str,
    reason: &'a str,
    message: &'a str,
}

/// Upstream's `legacyValidateEvent`, which every event passes; paths use the core names.
fn legacy_event(e: &EventView<'_>, reporting_field: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let ns_path = Path::new("involvedObject").child("namespace");
    let mismatch = || {
        invalid(
            &ns_path,
            e.involved_namespace,
            "does not match event.namespace",
        )
    };
    if !e.has_event_time {
        if e.involved_namespace.is_empty() {
            if !e.namespace.is_empty() && e.namespace != "default" {
                errs.push(mismatch());
            }
        } else if e.namespace != e.involved_namespace {
            errs.push(mismatch());
        }
    } else {
        if e.involved_namespace.is_empty()
            && e.namespace != "default"
            && e.namespace != "kube-system"
        {
            errs.push(mismatch());
        }
        let rp = Path::new(reporting_field);
        if e.reporting_controller.is_empty() {
            errs.push(required(&rp, ""));
        }
        errs.extend(name_errors(
            &rp,
            e.reporting_controller,
            is_qualified_name(e.reporting_controller),
        ));
        let limits = [
            (
                "reportingInstance",
                e.reporting_instance,
                REPORTING_INSTANCE_LIMIT,
                true,
            ),
            ("action", e.action, ACTION_LIMIT, true),
            ("reason", e.reason, REASON_LIMIT, true),
            ("message", e.message, NOTE_LIMIT, false),
        ];
        for (field, value, limit, mandatory) in limits {
            if mandatory && value.is_empty() {
                errs.push(required(&Path::new(field), ""));
            }
            if value.len() > limit {
                errs.push(invalid(
                    &Path::new(field),
                    "",
                    &format!("can have at most {limit} characters"),
                ));
            }
        }
    }
    errs.extend(name_errors(
        &Path::new("namespace"),
        e.namespace,
        is_dns1123_subdomain(e.namespace),
    ));
    errs
}

/// A core/v1 Event: legacy checks only, as upstream applies to the v1 API.
pub(crate) fn event(e: &Event) -> Vec<FieldError> {
    let view = EventView {
        namespace: e.metadata.namespace.as_deref().unwrap_or_default(),
        involved_namespace: e.involved_object.namespace.as_deref().unwrap_or_default(),
        has_event_time: e.event_time.is_some(),
        reporting_controller: e.reporting_component.as_deref().unwrap_or_default(),
        reporting_instance: e.reporting_instance.as_deref().unwrap_or_default(),
        action: e.action.as_deref().unwrap_or_default(),
        reason: e.reason.as_deref().unwrap_or_default(),
        message: e.message.as_deref().unwrap_or_default(),
    };
    legacy_event(&view, "reportingComponent")
}

/// An events.k8s.io/v1 Event: legacy checks plus the strict ones for the new API.
pub(crate) fn event_v1(e: &EventV1) -> Vec<FieldError> {
    let view = EventView {
        namespace: e.metadata.namespace.as_deref().unwrap_or_default(),
        involved_namespace: e
            .regarding
            .as_ref()
            .and_then(|r| r.namespace.as_deref())
            .unwrap_or_default(),
        has_event_time: e.event_time.is_some(),
        reporting_controller: e.reporting_controller.as_deref().unwrap_or_default(),
        reporting_instance: e.reporting_instance.as_deref().unwrap_or_default(),
        action: e.action.as_deref().unwrap_or_default(),
        reason: e.reason.as_deref().unwrap_or_default(),
        message: e.note.as_deref().unwrap_or_default(),
    };
    let mut errs = legacy_event(&view, "reportingController");
    if e.event_time.is_none() {
        errs.push(required(&Path::new("eventTime"), ""));
    }
    let ty = e.type_.as_deref().unwrap_or_default();
    if ty != "Normal" && ty != "Warning" {
        errs.push(invalid(
            &Path::new("type"),
            "",
            &format!("has invalid value: {ty}"),
        ));
    }
    for (field, set) in [
        (
            "deprecatedFirstTimestamp",
            e.deprecated_first_timestamp.is_some(),
        ),
        (
            "deprecatedLastTimestamp",
            e.deprecated_last_timestamp.is_some(),
        ),
        (
            "deprecatedCount",
            e.deprecated_count.unwrap_or_default() != 0,
        ),
        (
            "deprecatedSource",
            e.deprecated_source
                .as_ref()
                .is_some_and(|s| s.component.is_some() || s.host.is_some()),
        ),
    ] {
        if set {
            errs.push(invalid(&Path::new(field), "", "needs to be unset"));
        }
    }
    if let Some(series) = &e.series {
        if series.count < 2 {
            errs.push(invalid(
                &Path::new("series").child("count"),
                "",
                "should be at least 2",
            ));
        }
    }
    errs
}

pub(crate) fn event_v1_update(new: &EventV1, old: &EventV1) -> Vec<FieldError> {
    let mut errs = Vec::new();
    errs.extend(immutable_field(
        &new.regarding,
        &old.regarding,
        &Path::new("involvedObject"),
    ));
    errs.extend(immutable_field(
        &new.reason,
        &old.reason,
        &Path::new("reason"),
    ));
    errs.extend(immutable_field(&new.note, &old.note, &Path::new("message")));
    errs.extend(immutable_field(&new.type_, &old.type_, &Path::new("type")));
    errs.extend(immutable_field(
        &new.event_time,
        &old.event_time,
        &Path::new("eventTime"),
    ));
    errs.extend(immutable_field(
        &new.action,
        &old.action,
        &Path::new("action"),
    ));
    errs.extend(immutable_field(
        &new.related,
        &old.related,
        &Path::new("related"),
    ));
    errs.extend(immutable_field(
        &new.reporting_controller,
        &old.reporting_controller,
        &Path::new("reportingController"),
    ));
    errs.extend(immutable_field(
        &new.reporting_instance,
        &old.reporting_instance,
        &Path::new("reportingInstance"),
    ));
    errs
}

pub(crate) fn lease(l: &Lease) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(spec) = &l.spec else { return errs };
    let path = Path::new("spec");
    if let Some(d) = spec.lease_duration_seconds.filter(|d| *d <= 0) {
        errs.push(invalid(
            &path.child("leaseDurationSeconds"),
            d,
            "must be greater than 0",
        ));
    }
    if let Some(t) = spec.lease_transitions.filter(|t| *t < 0) {
        errs.push(invalid(
            &path.child("leaseTransitions"),
            t,
            "must be greater than or equal to 0",
        ));
    }
    if let Some(s) = spec.strategy.as_deref() {
        if s != "OldestEmulationVersion" {
            errs.push(not_supported(
                &path.child("strategy"),
                s,
                &["OldestEmulationVersion"],
            ));
        }
    }
    let preferred = spec.preferred_holder.as_deref().unwrap_or_default();
    if !preferred.is_empty() && spec.strategy.as_deref().unwrap_or_default().is_empty() {
        errs.push(forbidden(
            &path.child("preferredHolder"),
            "may only be specified if `strategy` is defined",
        ));
    }
    errs
}

/// Upstream's highest priority a user-defined class may have.
pub const HIGHEST_USER_DEFINABLE_PRIORITY: i32 = 1_000_000_000;
const SYSTEM_PRIORITY_CLASSES: &[(&str, i32)] = &[
    ("system-node-critical", 2_000_001_000),
    ("system-cluster-critical", 2_000_000_000),
];

pub(crate) fn priority_class(pc: &PriorityClass) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = pc.metadata.name.as_deref().unwrap_or_default();
    if name.starts_with("system-") {
        let problem = match SYSTEM_PRIORITY_CLASSES.iter().find(|(n, _)| *n == name) {
            None => Some(format!("name {name} is not a known system priority class")),
            Some((_, v)) if *v != pc.value => {
                Some(format!("value of {name} PriorityClass must be {v}"))
            }
            Some(_) if pc.global_default == Some(true) => Some(format!(
                "globalDefault of {name} PriorityClass must be false"
            )),
            Some(_) => None,
        };
        if let Some(problem) = problem {
            errs.push(forbidden(
                &Path::new("metadata").child("name"),
                &format!("priority class names with 'system-' prefix are reserved for system use only. error: {problem}"),
            ));
        }
    } else if pc.value > HIGHEST_USER_DEFINABLE_PRIORITY {
        errs.push(forbidden(
            &Path::new("value"),
            &format!("maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE_PRIORITY}"),
        ));
    }
    if let Some(p) = pc.preemption_policy.as_deref() {
        if p != "PreemptLowerPriority" && p != "Never" {
            errs.push(not_supported(
                &Path::new("preemptionPolicy"),
                p,
                &["Never", "PreemptLowerPriority"],
            ));
        }
    }
    errs
}

pub(crate) fn priority_class_update(new: &PriorityClass, old: &PriorityClass) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if new.value != old.value {
        errs.push(forbidden(
            &Path::new("value"),
            "may not be changed in an update.",
        ));
    }
    errs.extend(immutable_field(
        &new.preemption_policy,
        &old.preemption_policy,
        &Path::new("preemptionPolicy"),
    ));
    errs
}

pub(crate) fn runtime_class(rc: &RuntimeClass) -> Vec<FieldError> {
    let mut errs = name_errors(
        &Path::new("handler"),
        &rc.handler,
        is_dns1123_label(&rc.handler),
    );
    if let Some(o) = &rc.overhead {
        errs.extend(resource_list_values(
            o.pod_fixed.as_ref(),
            &Path::new("overhead").child("podFixed"),
        ));
    }
    if let Some(s) = &rc.scheduling {
        errs.extend(labels(
            s.node_selector.as_ref(),
            &Path::new("scheduling").child("nodeSelector"),
        ));
        errs.extend(tolerations(
            s.tolerations.as_deref().unwrap_or_default(),
            &Path::new("scheduling").child("tolerations"),
        ));
    }
    errs
}

pub(crate) fn runtime_class_update(new: &RuntimeClass, old: &RuntimeClass) -> Vec<FieldError> {
    if new.handler == old.handler {
        Vec::new()
    } else {
        vec![immutable(&Path::new("handler"), new.handler.as_str())]
    }
}

pub(crate) fn pod_disruption_budget(pdb: &PodDisruptionBudget) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = pdb.spec.clone().unwrap_or_default();
    let path = Path::new("spec");
    if spec.min_available.is_some() && spec.max_unavailable.is_some() {
        errs.push(invalid(
            &path,
            to_json(&spec),
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    errs.extend(positive_int_or_percent(
        spec.min_available.as_ref(),
        &path.child("minAvailable"),
    ));
    errs.extend(positive_int_or_percent(
        spec.max_unavailable.as_ref(),
        &path.child("maxUnavailable"),
    ));
    if let Some(s) = &spec.selector {
        errs.extend(label_selector(s, &path.child("selector")));
    }
    if let Some(p) = spec.unhealthy_pod_eviction_policy.as_deref() {
        if p != "AlwaysAllow" && p != "IfHealthyBudget" {
            errs.push(not_supported(
                &path.child("unhealthyPodEvictionPolicy"),
                p,
                &["AlwaysAllow", "IfHealthyBudget"],
            ));
        }
    }
    errs
}
