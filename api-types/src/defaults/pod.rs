//! Pod, PodSpec and PodTemplateSpec defaults (upstream `SetDefaults_Pod`,
//! `SetDefaults_PodSpec`, `SetDefaults_Container`, `SetDefaults_Volume`, probes, ...).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, EnvVar, EphemeralContainer, HTTPGetAction, Lifecycle, ObjectFieldSelector,
    PersistentVolumeClaimSpec, Pod, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, Volume, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{default_nonzero, default_str};
use crate::quantity::canonicalize_resource_value;

type Res = std::result::Result<(), String>;

/// Upstream's `SetDefaults_ResourceList`: every quantity parsed, rounded up to milli
/// precision and written in canonical form. A malformed quantity is a decode error.
pub(crate) fn resource_list(list: &mut Option<BTreeMap<String, Quantity>>) -> Res {
    for q in list.iter_mut().flat_map(|l| l.values_mut()) {
        q.0 = canonicalize_resource_value(&q.0).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn resource_requirements(r: &mut Option<ResourceRequirements>) -> Res {
    if let Some(r) = r {
        resource_list(&mut r.limits)?;
        resource_list(&mut r.requests)?;
    }
    Ok(())
}

pub(crate) fn volume_resource_requirements(r: &mut Option<VolumeResourceRequirements>) -> Res {
    if let Some(r) = r {
        resource_list(&mut r.limits)?;
        resource_list(&mut r.requests)?;
    }
    Ok(())
}

/// The pull policy upstream defaults for an image: `Always` for a `:latest` tag or no tag
/// at all, `IfNotPresent` otherwise (a digest without a tag, an explicit tag, or an image
/// reference that does not parse).
pub fn image_pull_policy_for(image: &str) -> &'static str {
    if image_tag(image).as_deref() == Some("latest") {
        "Always"
    } else {
        "IfNotPresent"
    }
}

/// The tag upstream's `ParseImageName` reports: the explicit tag, `latest` when there is
/// neither tag nor digest, `None` with only a digest or when the reference is malformed.
fn image_tag(image: &str) -> Option<String> {
    if image.is_empty() || image.chars().any(char::is_whitespace) {
        return None;
    }
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
        None => (name, None),
    };
    // The repository path (everything after a registry host) must be lower case.
    let path = match repo.split_once('/') {
        Some((host, rest)) if host.contains(['.', ':']) || host == "localhost" => rest,
        _ => repo,
    };
    if path.is_empty() || path.chars().any(|c| c.is_ascii_uppercase()) {
        return None;
    }
    match (tag, digest) {
        (Some(t), _) if !t.is_empty() => Some(t.to_string()),
        (Some(_), _) => None,
        (None, Some(_)) => None,
        (None, None) => Some("latest".to_string()),
    }
}

fn http_get(h: &mut HTTPGetAction) {
    default_str(&mut h.path, "/");
    default_str(&mut h.scheme, "HTTP");
}

fn probe(p: &mut Option<Probe>) {
    let Some(p) = p else { return };
    default_nonzero(&mut p.timeout_seconds, 1);
    default_nonzero(&mut p.period_seconds, 10);
    default_nonzero(&mut p.success_threshold, 1);
    default_nonzero(&mut p.failure_threshold, 3);
    if let Some(h) = &mut p.http_get {
        http_get(h);
    }
    if let Some(g) = &mut p.grpc {
        g.service.get_or_insert_with(String::new);
    }
}

fn lifecycle(l: &mut Option<Lifecycle>) {
    let Some(l) = l else { return };
    for handler in [&mut l.post_start, &mut l.pre_stop].into_iter().flatten() {
        if let Some(h) = &mut handler.http_get {
            http_get(h);
        }
    }
}

fn field_selector(f: &mut ObjectFieldSelector) {
    default_str(&mut f.api_version, "v1");
}

fn env(env: &mut Option<Vec<EnvVar>>) {
    for e in env.iter_mut().flatten() {
        if let Some(f) = e.value_from.as_mut().and_then(|v| v.field_ref.as_mut()) {
            field_selector(f);
        }
    }
}

/// Defaults shared by containers, init containers and ephemeral containers (which have the
/// same fields but a different Rust type).
macro_rules! container_defaults {
    ($c:expr) => {{
        let c = $c;
        if c.image_pull_policy
            .as_deref()
            .unwrap_or_default()
            .is_empty()
        {
            let policy = image_pull_policy_for(c.image.as_deref().unwrap_or_default());
            c.image_pull_policy = Some(policy.to_string());
        }
        default_str(&mut c.termination_message_path, "/dev/termination-log");
        default_str(&mut c.termination_message_policy, "File");
        for p in c.ports.iter_mut().flatten() {
            default_str(&mut p.protocol, "TCP");
        }
        env(&mut c.env);
        resource_requirements(&mut c.resources)?;
        probe(&mut c.liveness_probe);
        probe(&mut c.readiness_probe);
        probe(&mut c.startup_probe);
        lifecycle(&mut c.lifecycle);
        Ok::<(), String>(())
    }};
}

fn container(c: &mut Container) -> Res {
    container_defaults!(c)
}

fn ephemeral_container(c: &mut EphemeralContainer) -> Res {
    container_defaults!(c)
}

fn has_volume_source(v: &Volume) -> bool {
    v.aws_elastic_block_store.is_some()
        || v.azure_disk.is_some()
        || v.azure_file.is_some()
        || v.cephfs.is_some()
        || v.cinder.is_some()
        || v.config_map.is_some()
        || v.csi.is_some()
        || v.downward_api.is_some()
        || v.empty_dir.is_some()
        || v.ephemeral.is_some()
        || v.fc.is_some()
        || v.flex_volume.is_some()
        || v.flocker.is_some()
        || v.gce_persistent_disk.is_some()
        || v.git_repo.is_some()
        || v.glusterfs.is_some()
        || v.host_path.is_some()
        || v.image.is_some()
        || v.iscsi.is_some()
        || v.nfs.is_some()
        || v.persistent_volume_claim.is_some()
        || v.photon_persistent_disk.is_some()
        || v.portworx_volume.is_some()
        || v.projected.is_some()
        || v.quobyte.is_some()
        || v.rbd.is_some()
        || v.scale_io.is_some()
        || v.secret.is_some()
        || v.storageos.is_some()
        || v.vsphere_volume.is_some()
}

/// 0644, the mode upstream gives projected files by default.
const DEFAULT_MODE: i32 = 0o644;

/// Upstream's `SetDefaults_PersistentVolumeClaimSpec` plus its resource lists.
pub(crate) fn claim_spec(spec: &mut PersistentVolumeClaimSpec) -> Res {
    default_str(&mut spec.volume_mode, "Filesystem");
    volume_resource_requirements(&mut spec.resources)
}

fn volume(v: &mut Volume) -> Res {
    if !has_volume_source(v) {
        v.empty_dir = Some(Default::default());
    }
    if let Some(h) = &mut v.host_path {
        h.type_.get_or_insert_with(String::new);
    }
    if let Some(s) = &mut v.secret {
        s.default_mode.get_or_insert(DEFAULT_MODE);
    }
    if let Some(c) = &mut v.config_map {
        c.default_mode.get_or_insert(DEFAULT_MODE);
    }
    if let Some(d) = &mut v.downward_api {
        d.default_mode.get_or_insert(DEFAULT_MODE);
        for item in d.items.iter_mut().flatten() {
            if let Some(f) = &mut item.field_ref {
                field_selector(f);
            }
        }
    }
    if let Some(p) = &mut v.projected {
        p.default_mode.get_or_insert(DEFAULT_MODE);
        for source in p.sources.iter_mut().flatten() {
            let items = source.downward_api.as_mut().and_then(|d| d.items.as_mut());
            for item in items.into_iter().flatten() {
                if let Some(f) = &mut item.field_ref {
                    field_selector(f);
                }
            }
            if let Some(t) = &mut source.service_account_token {
                t.expiration_seconds.get_or_insert(3600);
            }
        }
    }
    if let Some(i) = &mut v.iscsi {
        default_str(&mut i.iscsi_interface, "default");
    }
    if let Some(r) = &mut v.rbd {
        default_str(&mut r.pool, "rbd");
        default_str(&mut r.user, "admin");
        default_str(&mut r.keyring, "/etc/ceph/keyring");
    }
    if let Some(a) = &mut v.azure_disk {
        default_str(&mut a.caching_mode, "ReadWrite");
        default_str(&mut a.fs_type, "ext4");
        a.read_only.get_or_insert(false);
        default_str(&mut a.kind, "Shared");
    }
    if let Some(s) = &mut v.scale_io {
        default_str(&mut s.storage_mode, "ThinProvisioned");
        default_str(&mut s.fs_type, "xfs");
    }
    if let Some(t) = v
        .ephemeral
        .as_mut()
        .and_then(|e| e.volume_claim_template.as_mut())
    {
        claim_spec(&mut t.spec)?;
    }
    Ok(())
}

/// Upstream's `SetDefaults_PodSpec` and the per-field defaulters generated for every
/// object embedding a PodSpec (pods, templates, workloads).
pub(crate) fn pod_spec(spec: &mut PodSpec) -> Res {
    default_str(&mut spec.dns_policy, "ClusterFirst");
    default_str(&mut spec.restart_policy, "Always");
    spec.security_context
        .get_or_insert_with(PodSecurityContext::default);
    spec.termination_grace_period_seconds.get_or_insert(30);
    default_str(&mut spec.scheduler_name, "default-scheduler");
    for v in spec.volumes.iter_mut().flatten() {
        volume(v)?;
    }
    for c in spec.init_containers.iter_mut().flatten() {
        container(c)?;
    }
    for c in spec.containers.iter_mut() {
        container(c)?;
    }
    for c in spec.ephemeral_containers.iter_mut().flatten() {
        ephemeral_container(c)?;
    }
    resource_list(&mut spec.overhead)
}

/// Defaults for a pod template (the spec is created when missing, as upstream's
/// non-pointer template spec always gets its defaults).
pub(crate) fn pod_template(t: &mut PodTemplateSpec) -> Res {
    pod_spec(t.spec.get_or_insert_with(Default::default))
}

/// Requests default to limits for resources with a limit but no request.
fn requests_from_limits(c: &mut Container) {
    let Some(r) = &mut c.resources else { return };
    let Some(limits) = &r.limits else { return };
    let requests = r.requests.get_or_insert_with(BTreeMap::new);
    for (k, v) in limits {
        requests.entry(k.clone()).or_insert_with(|| v.clone());
    }
}

/// With host networking every container port is also a host port.
fn host_network_ports(containers: &mut [Container]) {
    for p in containers
        .iter_mut()
        .flat_map(|c| c.ports.iter_mut().flatten())
    {
        if p.host_port.unwrap_or_default() == 0 {
            p.host_port = Some(p.container_port);
        }
    }
}

/// Upstream's `SetObjectDefaults_Pod`: `SetDefaults_Pod`, then the PodSpec defaults.
pub(crate) fn pod(p: &mut Pod) -> Res {
    let spec = p.spec.get_or_insert_with(Default::default);
    for c in spec.containers.iter_mut() {
        requests_from_limits(c);
    }
    for c in spec.init_containers.iter_mut().flatten() {
        requests_from_limits(c);
    }
    spec.enable_service_links.get_or_insert(true);
    if spec.host_network == Some(true) {
        host_network_ports(&mut spec.containers);
        if let Some(init) = &mut spec.init_containers {
            host_network_ports(init);
        }
    }
    pod_spec(spec)
}

/// `IntOrString` zero values: `0` or `""`.
pub(crate) fn int_or_string_is_zero(v: &IntOrString) -> bool {
    match v {
        IntOrString::Int(i) => *i == 0,
        IntOrString::String(s) => s.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_pull_policy_follows_the_tag() {
        assert_eq!(image_pull_policy_for("nginx"), "Always");
        assert_eq!(image_pull_policy_for("nginx:latest"), "Always");
        assert_eq!(image_pull_policy_for("nginx:1.25"), "IfNotPresent");
        assert_eq!(image_pull_policy_for("registry:5000/nginx"), "Always");
        assert_eq!(
            image_pull_policy_for("registry:5000/nginx:1.0"),
            "IfNotPresent"
        );
        assert_eq!(
            image_pull_policy_for(
                "nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
            ),
            "IfNotPresent"
        );
        assert_eq!(image_pull_policy_for("nginx:latest@sha256:abc"), "Always");
        assert_eq!(image_pull_policy_for(""), "IfNotPresent");
        assert_eq!(image_pull_policy_for("Nginx"), "IfNotPresent");
        assert_eq!(image_pull_policy_for("Registry.io/nginx"), "Always");
    }
}
