//! Defaults for core/v1 kinds other than pods and controllers, and for the networking,
//! discovery and node groups.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ClientIPConfig, Endpoints, LimitRange, Namespace, NamespaceSpec, NamespaceStatus, Node,
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimStatus, PersistentVolumeStatus,
    ResourceQuota, Secret, Service, SessionAffinityConfig,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{IngressClass, NetworkPolicy};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;

use super::default_str;
use super::pod::{claim_spec, int_or_string_is_zero, resource_list};
use crate::validation::names::parse_ip_sloppy;

type Res = std::result::Result<(), String>;

/// The label upstream puts on every named namespace.
pub const LABEL_METADATA_NAME: &str = "kubernetes.io/metadata.name";

pub(crate) fn endpoints(e: &mut Endpoints) -> Res {
    for subset in e.subsets.iter_mut().flatten() {
        for p in subset.ports.iter_mut().flatten() {
            default_str(&mut p.protocol, "TCP");
        }
    }
    Ok(())
}

pub(crate) fn endpoint_slice(e: &mut EndpointSlice) -> Res {
    for p in e.ports.iter_mut().flatten() {
        p.name.get_or_insert_with(String::new);
        default_str(&mut p.protocol, "TCP");
    }
    Ok(())
}

pub(crate) fn limit_range(l: &mut LimitRange) -> Res {
    for item in l.spec.iter_mut().flat_map(|s| s.limits.iter_mut()) {
        if item.type_ == "Container" {
            let default = item.default.get_or_insert_with(BTreeMap::new);
            for (k, v) in item.max.iter().flatten() {
                default.entry(k.clone()).or_insert_with(|| v.clone());
            }
            let request = item.default_request.get_or_insert_with(BTreeMap::new);
            for (k, v) in item.default.iter().flatten() {
                request.entry(k.clone()).or_insert_with(|| v.clone());
            }
            for (k, v) in item.min.iter().flatten() {
                request.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        resource_list(&mut item.max)?;
        resource_list(&mut item.min)?;
        resource_list(&mut item.default)?;
        resource_list(&mut item.default_request)?;
        resource_list(&mut item.max_limit_request_ratio)?;
    }
    Ok(())
}

pub(crate) fn resource_quota(q: &mut ResourceQuota) -> Res {
    if let Some(spec) = &mut q.spec {
        resource_list(&mut spec.hard)?;
    }
    if let Some(status) = &mut q.status {
        resource_list(&mut status.hard)?;
        resource_list(&mut status.used)?;
    }
    Ok(())
}

/// `SetDefaults_Namespace` (the `kubernetes.io/metadata.name` label), the status phase, and
/// the `kubernetes` finalizer upstream's strategy adds on create. The finalizer is only
/// added while the namespace is not being deleted, so finalizing cannot resurrect it.
pub(crate) fn namespace(ns: &mut Namespace) -> Res {
    if let Some(name) = ns.metadata.name.clone().filter(|n| !n.is_empty()) {
        ns.metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(LABEL_METADATA_NAME.to_string(), name);
    }
    if ns.metadata.deletion_timestamp.is_none() {
        let spec = ns.spec.get_or_insert_with(NamespaceSpec::default);
        let finalizers = spec.finalizers.get_or_insert_with(Vec::new);
        if finalizers.is_empty() {
            finalizers.push("kubernetes".to_string());
        }
    }
    let status = ns.status.get_or_insert_with(NamespaceStatus::default);
    default_str(&mut status.phase, "Active");
    Ok(())
}

pub(crate) fn node(n: &mut Node) -> Res {
    if let Some(status) = &mut n.status {
        if status.allocatable.is_none() && status.capacity.is_some() {
            status.allocatable = status.capacity.clone();
        }
        resource_list(&mut status.capacity)?;
        resource_list(&mut status.allocatable)?;
    }
    Ok(())
}

pub(crate) fn persistent_volume(pv: &mut PersistentVolume) -> Res {
    let status = pv
        .status
        .get_or_insert_with(PersistentVolumeStatus::default);
    default_str(&mut status.phase, "Pending");
    let spec = pv.spec.get_or_insert_with(Default::default);
    default_str(&mut spec.persistent_volume_reclaim_policy, "Retain");
    default_str(&mut spec.volume_mode, "Filesystem");
    resource_list(&mut spec.capacity)?;
    if let Some(h) = &mut spec.host_path {
        h.type_.get_or_insert_with(String::new);
    }
    if let Some(i) = &mut spec.iscsi {
        default_str(&mut i.iscsi_interface, "default");
    }
    if let Some(r) = &mut spec.rbd {
        default_str(&mut r.pool, "rbd");
        default_str(&mut r.user, "admin");
        default_str(&mut r.keyring, "/etc/ceph/keyring");
    }
    if let Some(a) = &mut spec.azure_disk {
        default_str(&mut a.caching_mode, "ReadWrite");
        default_str(&mut a.fs_type, "ext4");
        a.read_only.get_or_insert(false);
        default_str(&mut a.kind, "Shared");
    }
    if let Some(s) = &mut spec.scale_io {
        default_str(&mut s.storage_mode, "ThinProvisioned");
        default_str(&mut s.fs_type, "xfs");
    }
    Ok(())
}

/// PVC defaults, also applied to StatefulSet volume claim templates.
pub(crate) fn persistent_volume_claim(pvc: &mut PersistentVolumeClaim) -> Res {
    let status = pvc
        .status
        .get_or_insert_with(PersistentVolumeClaimStatus::default);
    default_str(&mut status.phase, "Pending");
    resource_list(&mut status.capacity)?;
    resource_list(&mut status.allocated_resources)?;
    claim_spec(pvc.spec.get_or_insert_with(Default::default))
}

/// `SetDefaults_Secret`, plus `stringData` folded into `data` (upstream's conversion
/// does this on decode; `stringData` is write-only and never stored).
pub(crate) fn secret(s: &mut Secret) -> Res {
    default_str(&mut s.type_, "Opaque");
    if let Some(string_data) = s.string_data.take() {
        if !string_data.is_empty() {
            let data = s.data.get_or_insert_with(BTreeMap::new);
            for (k, v) in string_data {
                data.insert(k, ByteString(v.into_bytes()));
            }
        }
    }
    Ok(())
}

const DEFAULT_CLIENT_IP_SERVICE_AFFINITY_SECONDS: i32 = 10800;

/// `SetDefaults_Service`, and the IP-family fields upstream's service registry fills in
/// before allocation, for a single-stack IPv4 cluster.
pub(crate) fn service(svc: &mut Service) -> Res {
    let spec = svc.spec.get_or_insert_with(Default::default);
    default_str(&mut spec.session_affinity, "None");
    match spec.session_affinity.as_deref() {
        Some("None") => spec.session_affinity_config = None,
        Some("ClientIP") => {
            let has_timeout = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .is_some();
            if !has_timeout {
                spec.session_affinity_config = Some(SessionAffinityConfig {
                    client_ip: Some(ClientIPConfig {
                        timeout_seconds: Some(DEFAULT_CLIENT_IP_SERVICE_AFFINITY_SECONDS),
                    }),
                });
            }
        }
        _ => {}
    }
    default_str(&mut spec.type_, "ClusterIP");
    for p in spec.ports.iter_mut().flatten() {
        default_str(&mut p.protocol, "TCP");
        if p.target_port.as_ref().is_none_or(int_or_string_is_zero) {
            p.target_port = Some(IntOrString::Int(p.port));
        }
    }
    let ty = spec.type_.clone().unwrap_or_default();
    let externally_accessible = ty == "LoadBalancer"
        || ty == "NodePort"
        || (ty == "ClusterIP"
            && spec
                .external_ips
                .as_ref()
                .is_some_and(|ips| !ips.is_empty()));
    if externally_accessible {
        default_str(&mut spec.external_traffic_policy, "Cluster");
    }
    if spec.internal_traffic_policy.is_none()
        && matches!(ty.as_str(), "NodePort" | "LoadBalancer" | "ClusterIP")
    {
        spec.internal_traffic_policy = Some("Cluster".to_string());
    }
    if ty == "LoadBalancer" {
        spec.allocate_load_balancer_node_ports.get_or_insert(true);
        let ingress = svc
            .status
            .as_mut()
            .and_then(|s| s.load_balancer.as_mut())
            .and_then(|lb| lb.ingress.as_mut());
        for ing in ingress.into_iter().flatten() {
            if ing.ip.as_deref().is_some_and(|ip| !ip.is_empty()) && ing.ip_mode.is_none() {
                ing.ip_mode = Some("VIP".to_string());
            }
        }
    }
    if ty != "ExternalName" {
        ip_families(svc);
    }
    Ok(())
}

/// `clusterIP`/`clusterIPs` kept in step, `ipFamilyPolicy` and `ipFamilies` filled in.
fn ip_families(svc: &mut Service) {
    let Some(spec) = svc.spec.as_mut() else {
        return;
    };
    let cluster_ip = spec.cluster_ip.clone().unwrap_or_default();
    let cluster_ips = spec.cluster_ips.get_or_insert_with(Vec::new);
    if cluster_ips.is_empty() && !cluster_ip.is_empty() {
        cluster_ips.push(cluster_ip.clone());
    } else if cluster_ip.is_empty() && !cluster_ips.is_empty() {
        spec.cluster_ip = cluster_ips.first().cloned();
    }
    if spec.cluster_ips.as_ref().is_some_and(Vec::is_empty) {
        spec.cluster_ips = None;
    }
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let selectorless = spec.selector.as_ref().is_none_or(BTreeMap::is_empty);
    if spec
        .ip_family_policy
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        let policy = if headless && selectorless {
            "RequireDualStack"
        } else {
            "SingleStack"
        };
        spec.ip_family_policy = Some(policy.to_string());
    }
    if spec.ip_families.as_ref().is_none_or(Vec::is_empty) {
        let mut families: Vec<String> = spec
            .cluster_ips
            .iter()
            .flatten()
            .filter_map(|ip| parse_ip_sloppy(ip))
            .map(|ip| if ip.is_ipv4() { "IPv4" } else { "IPv6" }.to_string())
            .collect();
        families.dedup();
        if families.is_empty() {
            families.push("IPv4".to_string());
        }
        spec.ip_families = Some(families);
    }
}

pub(crate) fn ingress_class(c: &mut IngressClass) -> Res {
    if let Some(p) = c.spec.as_mut().and_then(|s| s.parameters.as_mut()) {
        if p.scope.is_none() {
            p.scope = Some("Cluster".to_string());
        }
    }
    Ok(())
}

pub(crate) fn network_policy(np: &mut NetworkPolicy) -> Res {
    let Some(spec) = np.spec.as_mut() else {
        return Ok(());
    };
    let ingress_ports = spec
        .ingress
        .iter_mut()
        .flatten()
        .flat_map(|r| r.ports.iter_mut().flatten());
    let egress_ports = spec
        .egress
        .iter_mut()
        .flatten()
        .flat_map(|r| r.ports.iter_mut().flatten());
    for p in ingress_ports.chain(egress_ports) {
        default_str(&mut p.protocol, "TCP");
    }
    if spec.policy_types.as_ref().is_none_or(Vec::is_empty) {
        let mut types = vec!["Ingress".to_string()];
        if spec.egress.as_ref().is_some_and(|e| !e.is_empty()) {
            types.push("Egress".to_string());
        }
        spec.policy_types = Some(types);
    }
    Ok(())
}

pub(crate) fn runtime_class(_: &mut RuntimeClass) -> Res {
    Ok(())
}
