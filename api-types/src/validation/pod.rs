//! Pod, PodSpec and PodTemplateSpec validation (upstream `ValidatePodSpec`,
//! `ValidatePodTemplateSpec`, `ValidatePodUpdate`, ...).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Container, EnvFromSource, EnvVar, EphemeralContainer, HTTPGetAction, KeyToPath,
    LifecycleHandler, ObjectFieldSelector, Pod, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as QuantityString;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::field::{
    duplicate, forbidden, invalid, not_found, not_supported, required, FieldError, Path,
};
use super::meta::{annotations, label_name, labels, name_errors, nonnegative, to_json};
use super::names::{
    inclusive_range_error, is_config_map_key, is_dns1123_label, is_dns1123_subdomain,
    is_env_var_name, is_qualified_name, is_valid_ip, is_valid_label_value, is_valid_port_name,
    is_valid_port_num,
};
use crate::quantity::Quantity;

/// What is being validated: a pod itself (on create or update), or a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PodContext {
    PodCreate,
    PodUpdate,
    Template,
}

impl PodContext {
    fn is_pod(self) -> bool {
        self != PodContext::Template
    }
}

const SUPPORTED_PORT_PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const DNS_POLICIES: &[&str] = &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const TERMINATION_MESSAGE_POLICIES: &[&str] = &["File", "FallbackToLogsOnError"];
const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];
const HOST_PATH_TYPES: &[&str] = &[
    "",
    "BlockDevice",
    "CharDevice",
    "Directory",
    "DirectoryOrCreate",
    "File",
    "FileOrCreate",
    "Socket",
];
const MOUNT_PROPAGATION_MODES: &[&str] = &["Bidirectional", "HostToContainer", "None"];
const ENV_FIELD_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];
const VOLUME_FIELD_PATHS: &[&str] = &[
    "metadata.annotations",
    "metadata.labels",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
];
const CONTAINER_RESOURCE_FIELDS: &[&str] = &[
    "limits.cpu",
    "limits.ephemeral-storage",
    "limits.memory",
    "requests.cpu",
    "requests.ephemeral-storage",
    "requests.memory",
];
const FILE_MODE_ERROR: &str = "must be a number between 0 and 0777 (octal), both inclusive";

/// `restartPolicy` of a pod.
pub(crate) fn restart_policy(policy: Option<&str>, path: &Path) -> Vec<FieldError> {
    match policy.unwrap_or_default() {
        "Always" | "OnFailure" | "Never" => Vec::new(),
        "" => vec![required(path, "")],
        other => vec![not_supported(path, other, RESTART_POLICIES)],
    }
}

/// `ValidatePortNumOrName`
pub(crate) fn port_num_or_name(port: &IntOrString, path: &Path) -> Vec<FieldError> {
    match port {
        IntOrString::Int(n) => is_valid_port_num(i64::from(*n))
            .into_iter()
            .map(|m| invalid(path, *n, &m))
            .collect(),
        IntOrString::String(s) => name_errors(path, s, is_valid_port_name(s)),
    }
}

/// `validateLocalDescendingPath`: relative, no `..` elements.
fn local_descending_path(target: &str, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if target.starts_with('/') {
        errs.push(invalid(path, target, "must be a relative path"));
    }
    if target.split(['/', '\\']).any(|part| part == "..") {
        errs.push(invalid(path, target, "must not contain '..'"));
    }
    errs
}

/// `validateLocalNonReservedPath`: a descending path that does not start with `..`.
fn local_non_reserved_path(target: &str, path: &Path) -> Vec<FieldError> {
    let mut errs = local_descending_path(target, path);
    if target.starts_with("..") && !target.starts_with("../") {
        errs.push(invalid(path, target, "must not start with '..'"));
    }
    errs
}

fn file_mode(mode: Option<i32>, path: &Path) -> Vec<FieldError> {
    match mode {
        Some(m) if !(0..=0o777).contains(&m) => vec![invalid(path, m, FILE_MODE_ERROR)],
        _ => Vec::new(),
    }
}

fn key_to_paths(items: Option<&Vec<KeyToPath>>, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, item) in items.into_iter().flatten().enumerate() {
        let p = path.index(i);
        if item.key.is_empty() {
            errs.push(required(&p.child("key"), ""));
        }
        if item.path.is_empty() {
            errs.push(required(&p.child("path"), ""));
        }
        errs.extend(local_non_reserved_path(&item.path, &p.child("path")));
        errs.extend(file_mode(item.mode, &p.child("mode")));
    }
    errs
}

/// Field paths a downward-API selector may name: the fixed list, or a subscripted
/// `metadata.labels['key']` / `metadata.annotations['key']`.
fn object_field_selector(
    f: &ObjectFieldSelector,
    allowed: &[&str],
    path: &Path,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if f.api_version.as_deref().unwrap_or_default().is_empty() {
        errs.push(required(&path.child("apiVersion"), ""));
    }
    let fp = f.field_path.as_str();
    if fp.is_empty() {
        errs.push(required(&path.child("fieldPath"), ""));
        return errs;
    }
    let subscript = ["metadata.labels", "metadata.annotations"]
        .iter()
        .find_map(|prefix| {
            fp.strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix("['"))
                .and_then(|rest| rest.strip_suffix("']"))
                .map(|key| (*prefix, key))
        });
    match subscript {
        Some(("metadata.annotations", key)) => {
            for msg in is_qualified_name(&key.to_lowercase()) {
                errs.push(invalid(&path.child("fieldPath"), fp, &msg));
            }
        }
        Some((_, key)) => {
            for msg in is_qualified_name(key) {
                errs.push(invalid(&path.child("fieldPath"), fp, &msg));
            }
        }
        None => {
            if !allowed.contains(&fp) {
                errs.push(not_supported(&path.child("fieldPath"), fp, allowed));
            }
        }
    }
    errs
}

fn key_selector(name: &str, key: &str, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if name.is_empty() {
        errs.push(required(&path.child("name"), ""));
    }
    if key.is_empty() {
        errs.push(required(&path.child("key"), ""));
    } else {
        errs.extend(name_errors(&path.child("key"), key, is_config_map_key(key)));
    }
    errs
}

fn env_vars(vars: Option<&Vec<EnvVar>>, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, ev) in vars.into_iter().flatten().enumerate() {
        let p = path.index(i);
        if ev.name.is_empty() {
            errs.push(required(&p.child("name"), ""));
        } else {
            errs.extend(name_errors(
                &p.child("name"),
                &ev.name,
                is_env_var_name(&ev.name),
            ));
        }
        let Some(from) = &ev.value_from else { continue };
        let vp = p.child("valueFrom");
        let mut sources = 0;
        if let Some(f) = &from.field_ref {
            sources += 1;
            errs.extend(object_field_selector(
                f,
                ENV_FIELD_PATHS,
                &vp.child("fieldRef"),
            ));
        }
        if let Some(r) = &from.resource_field_ref {
            sources += 1;
            let rp = vp.child("resourceFieldRef");
            if r.resource.is_empty() {
                errs.push(required(&rp.child("resource"), ""));
            } else if !CONTAINER_RESOURCE_FIELDS.contains(&r.resource.as_str())
                && !r.resource.starts_with("limits.hugepages-")
                && !r.resource.starts_with("requests.hugepages-")
            {
                errs.push(not_supported(
                    &rp.child("resource"),
                    r.resource.as_str(),
                    CONTAINER_RESOURCE_FIELDS,
                ));
            }
        }
        if let Some(k) = &from.config_map_key_ref {
            sources += 1;
            errs.extend(key_selector(&k.name, &k.key, &vp.child("configMapKeyRef")));
        }
        if let Some(k) = &from.secret_key_ref {
            sources += 1;
            errs.extend(key_selector(&k.name, &k.key, &vp.child("secretKeyRef")));
        }
        if sources == 0 {
            errs.push(invalid(
                &vp,
                "",
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            ));
        } else if !ev.value.as_deref().unwrap_or_default().is_empty() {
            errs.push(invalid(
                &vp,
                "",
                "may not be specified when `value` is not empty",
            ));
        } else if sources > 1 {
            errs.push(invalid(
                &vp,
                "",
                "may not have more than one field specified at a time",
            ));
        }
    }
    errs
}

fn env_from(sources: Option<&Vec<EnvFromSource>>, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, ev) in sources.into_iter().flatten().enumerate() {
        let p = path.index(i);
        if let Some(prefix) = ev.prefix.as_deref().filter(|s| !s.is_empty()) {
            errs.extend(name_errors(
                &p.child("prefix"),
                prefix,
                is_env_var_name(prefix),
            ));
        }
        let mut n = 0;
        if let Some(c) = &ev.config_map_ref {
            n += 1;
            if c.name.is_empty() {
                errs.push(required(&p.child("configMapRef").child("name"), ""));
            }
        }
        if let Some(s) = &ev.secret_ref {
            if n > 0 {
                errs.push(invalid(
                    &p,
                    "",
                    "may not have more than one field specified at a time",
                ));
            } else if s.name.is_empty() {
                errs.push(required(&p.child("secretRef").child("name"), ""));
            }
            n += 1;
        }
        if n == 0 {
            errs.push(invalid(
                &p,
                "",
                "must specify one of: `configMapRef` or `secretRef`",
            ));
        }
    }
    errs
}

fn is_native_resource(name: &str) -> bool {
    !name.contains('/') || name.contains("kubernetes.io/")
}

fn is_hugepages(name: &str) -> bool {
    name.starts_with("hugepages-")
}

fn is_overcommit_allowed(name: &str) -> bool {
    is_native_resource(name) && !is_hugepages(name)
}

fn is_standard_container_resource(name: &str) -> bool {
    matches!(name, "cpu" | "memory" | "ephemeral-storage") || is_hugepages(name)
}

/// Extended resources (a domain other than kubernetes.io) are counted in whole units.
fn is_integer_resource(name: &str) -> bool {
    !is_native_resource(name)
}

fn container_resource_name(name: &str, path: &Path) -> Vec<FieldError> {
    let mut errs = name_errors(path, name, is_qualified_name(name));
    if !name.contains('/') {
        if !is_standard_container_resource(name) {
            errs.push(invalid(
                path,
                name,
                "must be a standard resource for containers",
            ));
        }
    } else if !is_native_resource(name) && name.starts_with("requests.") {
        errs.push(invalid(
            path,
            name,
            "doesn't follow extended resource name standard",
        ));
    }
    errs
}

/// Parses a quantity field, reporting a malformed one as Invalid.
pub(crate) fn parse_quantity(q: &QuantityString, path: &Path) -> Result<Quantity, Box<FieldError>> {
    Quantity::parse(&q.0).map_err(|e| Box::new(invalid(path, q.0.as_str(), &e.to_string())))
}

/// `ValidateResourceQuantityValue`: non-negative, whole for integer resources.
pub(crate) fn resource_quantity(
    name: &str,
    q: &QuantityString,
    path: &Path,
) -> (Vec<FieldError>, Option<Quantity>) {
    let parsed = match parse_quantity(q, path) {
        Ok(p) => p,
        Err(e) => return (vec![*e], None),
    };
    let mut errs = Vec::new();
    if parsed.is_negative() {
        errs.push(invalid(
            path,
            parsed.to_string(),
            super::meta::IS_NEGATIVE_ERROR_MSG,
        ));
    }
    if is_integer_resource(name) && !parsed.is_integer() {
        errs.push(invalid(path, parsed.to_string(), "must be an integer"));
    }
    (errs, Some(parsed))
}

/// `ValidateResourceRequirements` for a container.
fn resource_requirements(r: Option<&ResourceRequirements>, path: &Path) -> Vec<FieldError> {
    let Some(r) = r else { return Vec::new() };
    let mut errs = Vec::new();
    let lim_path = path.child("limits");
    let req_path = path.child("requests");
    let mut limits: BTreeMap<&str, Quantity> = BTreeMap::new();
    for (name, q) in r.limits.iter().flatten() {
        let p = lim_path.key(name);
        errs.extend(container_resource_name(name, &p));
        let (e, parsed) = resource_quantity(name, q, &p);
        errs.extend(e);
        if let Some(parsed) = parsed {
            limits.insert(name, parsed);
        }
    }
    for (name, q) in r.requests.iter().flatten() {
        let p = req_path.key(name);
        errs.extend(container_resource_name(name, &p));
        let (e, parsed) = resource_quantity(name, q, &p);
        errs.extend(e);
        let Some(request) = parsed else { continue };
        match limits.get(name.as_str()) {
            Some(limit) if request != *limit && !is_overcommit_allowed(name) => errs.push(invalid(
                &req_path,
                request.to_string(),
                &format!("must be equal to {name} limit of {limit}"),
            )),
            Some(limit) if request > *limit => errs.push(invalid(
                &req_path,
                request.to_string(),
                &format!("must be less than or equal to {name} limit of {limit}"),
            )),
            None if !is_overcommit_allowed(name) => errs.push(required(
                &lim_path,
                "Limit must be set for non overcommitable resources",
            )),
            _ => {}
        }
    }
    errs
}

fn http_get(h: &HTTPGetAction, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if h.path.as_deref().unwrap_or_default().is_empty() {
        errs.push(required(&path.child("path"), ""));
    }
    errs.extend(port_num_or_name(&h.port, &path.child("port")));
    let scheme = h.scheme.as_deref().unwrap_or_default();
    if scheme != "HTTP" && scheme != "HTTPS" {
        errs.push(not_supported(
            &path.child("scheme"),
            scheme,
            &["HTTP", "HTTPS"],
        ));
    }
    for (i, header) in h.http_headers.iter().flatten().enumerate() {
        let ok = !header.name.is_empty()
            && header
                .name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-');
        if !ok {
            errs.push(invalid(
                &path.child("httpHeaders").index(i).child("name"),
                header.name.as_str(),
                "a valid HTTP header must consist of alphanumeric characters or '-' (e.g. 'X-Header-Name', regex used for validation is '[-A-Za-z0-9]+')",
            ));
        }
    }
    errs
}

/// The action of a probe or lifecycle hook: exactly one handler.
struct Handler<'a> {
    exec: Option<&'a k8s_openapi::api::core::v1::ExecAction>,
    http_get: Option<&'a HTTPGetAction>,
    tcp_socket: Option<&'a k8s_openapi::api::core::v1::TCPSocketAction>,
    grpc: Option<&'a k8s_openapi::api::core::v1::GRPCAction>,
    sleep: Option<&'a k8s_openapi::api::core::v1::SleepAction>,
}

fn handler(h: Handler<'_>, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut count = 0;
    let mut one = |name: &str, errs: &mut Vec<FieldError>| -> bool {
        if count > 0 {
            errs.push(forbidden(
                &path.child(name),
                "may not specify more than 1 handler type",
            ));
            false
        } else {
            count += 1;
            true
        }
    };
    if let Some(e) = h.exec {
        if one("exec", &mut errs) && e.command.as_ref().is_none_or(Vec::is_empty) {
            errs.push(required(&path.child("exec").child("command"), ""));
        }
    }
    if let Some(g) = h.http_get {
        if one("httpGet", &mut errs) {
            errs.extend(http_get(g, &path.child("httpGet")));
        }
    }
    if let Some(t) = h.tcp_socket {
        if one("tcpSocket", &mut errs) {
            errs.extend(port_num_or_name(
                &t.port,
                &path.child("tcpSocket").child("port"),
            ));
        }
    }
    if let Some(g) = h.grpc {
        if one("grpc", &mut errs) {
            for msg in is_valid_port_num(i64::from(g.port)) {
                errs.push(invalid(&path.child("grpc").child("port"), g.port, &msg));
            }
        }
    }
    if let Some(s) = h.sleep {
        if one("sleep", &mut errs) && s.seconds < 0 {
            errs.push(invalid(
                &path.child("sleep").child("seconds"),
                s.seconds,
                super::meta::IS_NEGATIVE_ERROR_MSG,
            ));
        }
    }
    if count == 0 {
        errs.push(required(path, "must specify a handler type"));
    }
    errs
}

fn probe(p: Option<&Probe>, path: &Path) -> Vec<FieldError> {
    let Some(p) = p else { return Vec::new() };
    let mut errs = handler(
        Handler {
            exec: p.exec.as_ref(),
            http_get: p.http_get.as_ref(),
            tcp_socket: p.tcp_socket.as_ref(),
            grpc: p.grpc.as_ref(),
            sleep: None,
        },
        path,
    );
    for (name, v) in [
        ("initialDelaySeconds", p.initial_delay_seconds),
        ("timeoutSeconds", p.timeout_seconds),
        ("periodSeconds", p.period_seconds),
        ("successThreshold", p.success_threshold),
        ("failureThreshold", p.failure_threshold),
    ] {
        errs.extend(nonnegative(
            i64::from(v.unwrap_or_default()),
            &path.child(name),
        ));
    }
    if let Some(t) = p.termination_grace_period_seconds.filter(|t| *t <= 0) {
        errs.push(invalid(
            &path.child("terminationGracePeriodSeconds"),
            t,
            "must be greater than 0",
        ));
    }
    errs
}

fn lifecycle_handler(h: Option<&LifecycleHandler>, path: &Path) -> Vec<FieldError> {
    let Some(h) = h else { return Vec::new() };
    handler(
        Handler {
            exec: h.exec.as_ref(),
            http_get: h.http_get.as_ref(),
            tcp_socket: h.tcp_socket.as_ref(),
            grpc: None,
            sleep: h.sleep.as_ref(),
        },
        path,
    )
}

fn volume_mounts(
    mounts: Option<&Vec<VolumeMount>>,
    volumes: &BTreeSet<String>,
    path: &Path,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut mount_points = BTreeSet::new();
    for (i, m) in mounts.into_iter().flatten().enumerate() {
        let p = path.index(i);
        if m.name.is_empty() {
            errs.push(required(&p.child("name"), ""));
        }
        if !volumes.contains(&m.name) {
            errs.push(not_found(&p.child("name"), m.name.as_str()));
        }
        if m.mount_path.is_empty() {
            errs.push(required(&p.child("mountPath"), ""));
        }
        if !mount_points.insert(m.mount_path.as_str()) {
            errs.push(invalid(
                &p.child("mountPath"),
                m.mount_path.as_str(),
                "must be unique",
            ));
        }
        let sub_path = m.sub_path.as_deref().unwrap_or_default();
        if !sub_path.is_empty() {
            errs.extend(local_descending_path(sub_path, &path.child("subPath")));
        }
        if let Some(expr) = m.sub_path_expr.as_deref().filter(|s| !s.is_empty()) {
            if !sub_path.is_empty() {
                errs.push(invalid(
                    &p.child("subPathExpr"),
                    expr,
                    "subPathExpr and subPath are mutually exclusive",
                ));
            }
            errs.extend(local_descending_path(expr, &path.child("subPathExpr")));
        }
        if let Some(mode) = m.mount_propagation.as_deref() {
            if !MOUNT_PROPAGATION_MODES.contains(&mode) {
                errs.push(not_supported(
                    &p.child("mountPropagation"),
                    mode,
                    MOUNT_PROPAGATION_MODES,
                ));
            }
        }
    }
    errs
}

/// The fields shared by every kind of container, borrowed from either container type.
struct ContainerView<'a> {
    name: &'a str,
    image: Option<&'a str>,
    image_pull_policy: Option<&'a str>,
    termination_message_policy: Option<&'a str>,
    ports: Option<&'a Vec<k8s_openapi::api::core::v1::ContainerPort>>,
    env: Option<&'a Vec<EnvVar>>,
    env_from: Option<&'a Vec<EnvFromSource>>,
    volume_mounts: Option<&'a Vec<VolumeMount>>,
    resources: Option<&'a ResourceRequirements>,
}

macro_rules! view {
    ($c:expr) => {
        ContainerView {
            name: &$c.name,
            image: $c.image.as_deref(),
            image_pull_policy: $c.image_pull_policy.as_deref(),
            termination_message_policy: $c.termination_message_policy.as_deref(),
            ports: $c.ports.as_ref(),
            env: $c.env.as_ref(),
            env_from: $c.env_from.as_ref(),
            volume_mounts: $c.volume_mounts.as_ref(),
            resources: $c.resources.as_ref(),
        }
    };
}

/// `validateContainerCommon`: name, image, ports, env, mounts, pull policy, resources.
fn container_common(
    c: ContainerView<'_>,
    volumes: &BTreeSet<String>,
    all_names: &mut BTreeSet<String>,
    path: &Path,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name_path = path.child("name");
    if c.name.is_empty() {
        errs.push(required(&name_path, ""));
    } else {
        errs.extend(name_errors(&name_path, c.name, is_dns1123_label(c.name)));
        if !all_names.insert(c.name.to_string()) {
            errs.push(duplicate(&name_path, c.name));
        }
    }
    let image = c.image.unwrap_or_default();
    if image.is_empty() {
        errs.push(required(&path.child("image"), ""));
    } else if image.trim() != image {
        errs.push(invalid(
            &path.child("image"),
            image,
            "must not have leading or trailing whitespace",
        ));
    }
    match c.termination_message_policy.unwrap_or_default() {
        "File" | "FallbackToLogsOnError" => {}
        "" => errs.push(required(&path.child("terminationMessagePolicy"), "")),
        other => errs.push(not_supported(
            &path.child("terminationMessagePolicy"),
            other,
            TERMINATION_MESSAGE_POLICIES,
        )),
    }
    let mut port_names = BTreeSet::new();
    for (i, port) in c.ports.into_iter().flatten().enumerate() {
        let p = path.child("ports").index(i);
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            let msgs = is_valid_port_name(name);
            if !msgs.is_empty() {
                errs.extend(name_errors(&p.child("name"), name, msgs));
            } else if !port_names.insert(name) {
                errs.push(duplicate(&p.child("name"), name));
            }
        }
        if port.container_port == 0 {
            errs.push(required(&p.child("containerPort"), ""));
        } else {
            for msg in is_valid_port_num(i64::from(port.container_port)) {
                errs.push(invalid(
                    &p.child("containerPort"),
                    port.container_port,
                    &msg,
                ));
            }
        }
        if let Some(hp) = port.host_port.filter(|hp| *hp != 0) {
            for msg in is_valid_port_num(i64::from(hp)) {
                errs.push(invalid(&p.child("hostPort"), hp, &msg));
            }
        }
        match port.protocol.as_deref().unwrap_or_default() {
            "" => errs.push(required(&p.child("protocol"), "")),
            proto if !SUPPORTED_PORT_PROTOCOLS.contains(&proto) => errs.push(not_supported(
                &p.child("protocol"),
                proto,
                SUPPORTED_PORT_PROTOCOLS,
            )),
            _ => {}
        }
    }
    errs.extend(env_vars(c.env, &path.child("env")));
    errs.extend(env_from(c.env_from, &path.child("envFrom")));
    errs.extend(volume_mounts(
        c.volume_mounts,
        volumes,
        &path.child("volumeMounts"),
    ));
    match c.image_pull_policy.unwrap_or_default() {
        "Always" | "IfNotPresent" | "Never" => {}
        "" => errs.push(required(&path.child("imagePullPolicy"), "")),
        other => errs.push(not_supported(
            &path.child("imagePullPolicy"),
            other,
            PULL_POLICIES,
        )),
    }
    errs.extend(resource_requirements(c.resources, &path.child("resources")));
    errs
}

fn regular_container(
    c: &Container,
    volumes: &BTreeSet<String>,
    all_names: &mut BTreeSet<String>,
    path: &Path,
) -> Vec<FieldError> {
    let mut errs = container_common(view!(c), volumes, all_names, path);
    if let Some(l) = &c.lifecycle {
        errs.extend(lifecycle_handler(
            l.post_start.as_ref(),
            &path.child("lifecycle").child("postStart"),
        ));
        errs.extend(lifecycle_handler(
            l.pre_stop.as_ref(),
            &path.child("lifecycle").child("preStop"),
        ));
    }
    errs.extend(probe(
        c.liveness_probe.as_ref(),
        &path.child("livenessProbe"),
    ));
    errs.extend(probe(
        c.readiness_probe.as_ref(),
        &path.child("readinessProbe"),
    ));
    errs.extend(probe(c.startup_probe.as_ref(), &path.child("startupProbe")));
    for (name, p) in [
        ("livenessProbe", &c.liveness_probe),
        ("startupProbe", &c.startup_probe),
    ] {
        if let Some(t) = p
            .as_ref()
            .and_then(|p| p.success_threshold)
            .filter(|t| *t != 1)
        {
            errs.push(invalid(
                &path.child(name).child("successThreshold"),
                t,
                "must be 1",
            ));
        }
    }
    errs
}

fn containers(
    list: &[Container],
    volumes: &BTreeSet<String>,
    all_names: &mut BTreeSet<String>,
    path: &Path,
) -> Vec<FieldError> {
    if list.is_empty() {
        return vec![required(path, "")];
    }
    let mut errs = Vec::new();
    for (i, c) in list.iter().enumerate() {
        let p = path.index(i);
        errs.extend(regular_container(c, volumes, all_names, &p));
        if c.restart_policy.is_some() {
            errs.push(forbidden(
                &p.child("restartPolicy"),
                "may not be set for non-init containers",
            ));
        }
    }
    errs
}

fn init_containers(
    list: &[Container],
    volumes: &BTreeSet<String>,
    all_names: &mut BTreeSet<String>,
    path: &Path,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, c) in list.iter().enumerate() {
        let p = path.index(i);
        let sidecar = c.restart_policy.as_deref() == Some("Always");
        if let Some(rp) = c.restart_policy.as_deref().filter(|rp| *rp != "Always") {
            errs.push(not_supported(&p.child("restartPolicy"), rp, &["Always"]));
        }
        if sidecar {
            errs.extend(regular_container(c, volumes, all_names, &p));
            continue;
        }
        errs.extend(container_common(view!(c), volumes, all_names, &p));
        let hooks = c
            .lifecycle
            .as_ref()
            .is_some_and(|l| l.post_start.is_some() || l.pre_stop.is_some());
        if hooks {
            errs.push(forbidden(
                &p.child("lifecycle"),
                "may not be set for init containers without restartPolicy=Always",
            ));
        }
        for (name, pr) in [
            ("livenessProbe", &c.liveness_probe),
            ("readinessProbe", &c.readiness_probe),
            ("startupProbe", &c.startup_probe),
        ] {
            if pr.is_some() {
                errs.push(forbidden(
                    &p.child(name),
                    "may not be set for init containers without restartPolicy=Always",
                ));
            }
        }
    }
    errs
}

fn ephemeral_containers(
    list: &[EphemeralContainer],
    volumes: &BTreeSet<String>,
    all_names: &mut BTreeSet<String>,
    path: &Path,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, c) in list.iter().enumerate() {
        let p = path.index(i);
        errs.extend(container_common(view!(c), volumes, all_names, &p));
        for (name, set) in [
            ("ports", c.ports.is_some()),
            ("livenessProbe", c.liveness_probe.is_some()),
            ("readinessProbe", c.readiness_probe.is_some()),
            ("startupProbe", c.startup_probe.is_some()),
            ("lifecycle", c.lifecycle.is_some()),
        ] {
            if set {
                errs.push(forbidden(
                    &p.child(name),
                    "cannot be set for an Ephemeral Container",
                ));
            }
        }
    }
    errs
}

/// The JSON names of volume sources, in upstream's counting order, and whether each is set.
fn volume_sources(v: &Volume) -> Vec<&'static str> {
    [
        ("emptyDir", v.empty_dir.is_some()),
        ("hostPath", v.host_path.is_some()),
        ("gitRepo", v.git_repo.is_some()),
        ("gcePersistentDisk", v.gce_persistent_disk.is_some()),
        ("awsElasticBlockStore", v.aws_elastic_block_store.is_some()),
        ("secret", v.secret.is_some()),
        ("nfs", v.nfs.is_some()),
        ("iscsi", v.iscsi.is_some()),
        ("glusterfs", v.glusterfs.is_some()),
        ("flexVolume", v.flex_volume.is_some()),
        ("persistentVolumeClaim", v.persistent_volume_claim.is_some()),
        ("rbd", v.rbd.is_some()),
        ("quobyte", v.quobyte.is_some()),
        ("cinder", v.cinder.is_some()),
        ("cephfs", v.cephfs.is_some()),
        ("flocker", v.flocker.is_some()),
        ("downwardAPI", v.downward_api.is_some()),
        ("fc", v.fc.is_some()),
        ("azureFile", v.azure_file.is_some()),
        ("configMap", v.config_map.is_some()),
        ("vsphereVolume", v.vsphere_volume.is_some()),
        ("photonPersistentDisk", v.photon_persistent_disk.is_some()),
        ("projected", v.projected.is_some()),
        ("portworxVolume", v.portworx_volume.is_some()),
        ("azureDisk", v.azure_disk.is_some()),
        ("storageos", v.storageos.is_some()),
        ("scaleIO", v.scale_io.is_some()),
        ("csi", v.csi.is_some()),
        ("ephemeral", v.ephemeral.is_some()),
        ("image", v.image.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect()
}

fn volume_source(v: &Volume, path: &Path) -> Vec<FieldError> {
    let sources = volume_sources(v);
    if sources.is_empty() {
        return vec![required(path, "must specify a volume type")];
    }
    let mut errs: Vec<FieldError> = sources[1..]
        .iter()
        .map(|name| forbidden(&path.child(name), "may not specify more than 1 volume type"))
        .collect();
    if let Some(e) = &v.empty_dir {
        if let Some(q) = &e.size_limit {
            match parse_quantity(q, &path.child("emptyDir").child("sizeLimit")) {
                Ok(parsed) if parsed.is_negative() => errs.push(invalid(
                    &path.child("emptyDir").child("sizeLimit"),
                    parsed.to_string(),
                    super::meta::IS_NEGATIVE_ERROR_MSG,
                )),
                Ok(_) => {}
                Err(e) => errs.push(*e),
            }
        }
    }
    if let Some(h) = &v.host_path {
        let p = path.child("hostPath");
        if h.path.is_empty() {
            errs.push(required(&p.child("path"), ""));
        } else if h.path.split('/').any(|part| part == "..") {
            errs.push(invalid(
                &p.child("path"),
                h.path.as_str(),
                "must not contain '..'",
            ));
        }
        let ty = h.type_.as_deref().unwrap_or_default();
        if !HOST_PATH_TYPES.contains(&ty) {
            errs.push(not_supported(&p.child("type"), ty, HOST_PATH_TYPES));
        }
    }
    if let Some(s) = &v.secret {
        let p = path.child("secret");
        if s.secret_name.as_deref().unwrap_or_default().is_empty() {
            errs.push(required(&p.child("secretName"), ""));
        }
        errs.extend(file_mode(s.default_mode, &p.child("defaultMode")));
        errs.extend(key_to_paths(s.items.as_ref(), &p.child("items")));
    }
    if let Some(c) = &v.config_map {
        let p = path.child("configMap");
        if c.name.is_empty() {
            errs.push(required(&p.child("name"), ""));
        }
        errs.extend(file_mode(c.default_mode, &p.child("defaultMode")));
        errs.extend(key_to_paths(c.items.as_ref(), &p.child("items")));
    }
    if let Some(n) = &v.nfs {
        let p = path.child("nfs");
        if n.server.is_empty() {
            errs.push(required(&p.child("server"), ""));
        }
        if n.path.is_empty() {
            errs.push(required(&p.child("path"), ""));
        } else if !n.path.starts_with('/') {
            errs.push(invalid(
                &p.child("path"),
                n.path.as_str(),
                "must be an absolute path",
            ));
        }
    }
    if let Some(c) = &v.persistent_volume_claim {
        if c.claim_name.is_empty() {
            errs.push(required(
                &path.child("persistentVolumeClaim").child("claimName"),
                "",
            ));
        }
    }
    if let Some(c) = &v.csi {
        if c.driver.is_empty() {
            errs.push(required(&path.child("csi").child("driver"), ""));
        }
    }
    if let Some(d) = &v.downward_api {
        let p = path.child("downwardAPI");
        errs.extend(file_mode(d.default_mode, &p.child("defaultMode")));
        for (i, item) in d.items.iter().flatten().enumerate() {
            let ip = p.child("items").index(i);
            if item.path.is_empty() {
                errs.push(required(&ip.child("path"), ""));
            }
            errs.extend(local_non_reserved_path(&item.path, &ip.child("path")));
            errs.extend(file_mode(item.mode, &ip.child("mode")));
            match (&item.field_ref, &item.resource_field_ref) {
                (Some(f), None) => errs.extend(object_field_selector(
                    f,
                    VOLUME_FIELD_PATHS,
                    &ip.child("fieldRef"),
                )),
                (None, Some(_)) => {}
                (Some(_), Some(_)) => errs.push(invalid(
                    &ip,
                    "resource",
                    "fieldRef and resourceFieldRef can not be specified simultaneously",
                )),
                (None, None) => errs.push(required(
                    &ip,
                    "one of fieldRef and resourceFieldRef is required",
                )),
            }
        }
    }
    if let Some(pr) = &v.projected {
        let p = path.child("projected");
        errs.extend(file_mode(pr.default_mode, &p.child("defaultMode")));
        for (i, source) in pr.sources.iter().flatten().enumerate() {
            let sp = p.child("sources").index(i);
            let set = [
                ("secret", source.secret.is_some()),
                ("downwardAPI", source.downward_api.is_some()),
                ("configMap", source.config_map.is_some()),
                (
                    "serviceAccountToken",
                    source.service_account_token.is_some(),
                ),
                ("clusterTrustBundle", source.cluster_trust_bundle.is_some()),
            ];
            let names: Vec<&str> = set.iter().filter(|(_, s)| *s).map(|(n, _)| *n).collect();
            if names.is_empty() {
                errs.push(required(&sp, "must specify exactly 1 of: secret, downwardAPI, configMap, serviceAccountToken, clusterTrustBundle"));
            }
            for name in names.iter().skip(1) {
                errs.push(forbidden(
                    &sp.child(name),
                    "may not specify more than 1 volume type per source",
                ));
            }
            if let Some(t) = &source.service_account_token {
                let tp = sp.child("serviceAccountToken");
                if let Some(exp) = t.expiration_seconds.filter(|e| *e < 600) {
                    errs.push(invalid(
                        &tp.child("expirationSeconds"),
                        exp,
                        "may not specify a duration less than 10 minutes",
                    ));
                }
                if t.path.is_empty() {
                    errs.push(required(&tp.child("path"), ""));
                }
            }
        }
    }
    if let Some(e) = &v.ephemeral {
        if e.volume_claim_template.is_none() {
            errs.push(required(
                &path.child("ephemeral").child("volumeClaimTemplate"),
                "",
            ));
        }
    }
    errs
}

/// `ValidateVolumes`: names unique DNS labels, one source each. Returns the names of the
/// valid volumes, which container mounts may refer to.
fn volumes(list: &[Volume], path: &Path) -> (Vec<FieldError>, BTreeSet<String>) {
    let mut errs = Vec::new();
    let mut names = BTreeSet::new();
    for (i, v) in list.iter().enumerate() {
        let p = path.index(i);
        let name_path = p.child("name");
        let mut el = volume_source(v, &p);
        if v.name.is_empty() {
            el.push(required(&name_path, ""));
        } else {
            el.extend(name_errors(&name_path, &v.name, is_dns1123_label(&v.name)));
        }
        if names.contains(&v.name) {
            el.push(duplicate(&name_path, v.name.as_str()));
        }
        if el.is_empty() {
            names.insert(v.name.clone());
        } else {
            errs.extend(el);
        }
    }
    (errs, names)
}

fn taint_effect(effect: &str, path: &Path) -> Vec<FieldError> {
    if TAINT_EFFECTS.contains(&effect) {
        Vec::new()
    } else {
        vec![not_supported(path, effect, TAINT_EFFECTS)]
    }
}

/// `ValidateTolerations`
pub(crate) fn tolerations(list: &[Toleration], path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let p = path.index(i);
        let key = t.key.as_deref().unwrap_or_default();
        let op = t.operator.as_deref().unwrap_or_default();
        let effect = t.effect.as_deref().unwrap_or_default();
        let value = t.value.as_deref().unwrap_or_default();
        if !key.is_empty() {
            errs.extend(label_name(key, &p.child("key")));
        }
        if key.is_empty() && op != "Exists" {
            errs.push(invalid(
                &p.child("operator"),
                op,
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        if t.toleration_seconds.is_some() && effect != "NoExecute" {
            errs.push(invalid(
                &p.child("effect"),
                effect,
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        match op {
            "Equal" | "" => {
                let msgs = is_valid_label_value(value);
                if !msgs.is_empty() {
                    errs.push(invalid(&p.child("operator"), value, &msgs.join(";")));
                }
            }
            "Exists" => {
                if !value.is_empty() {
                    errs.push(invalid(
                        &p.child("operator"),
                        to_json(t),
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            other => errs.push(not_supported(
                &p.child("operator"),
                other,
                &["Equal", "Exists"],
            )),
        }
        if !effect.is_empty() {
            errs.extend(taint_effect(effect, &p.child("effect")));
        }
    }
    errs
}

fn dns_policy(spec: &PodSpec, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    match spec.dns_policy.as_deref().unwrap_or_default() {
        "ClusterFirstWithHostNet" | "ClusterFirst" | "Default" => {}
        "None" => {
            let has_nameservers = spec
                .dns_config
                .as_ref()
                .and_then(|c| c.nameservers.as_ref())
                .is_some_and(|n| !n.is_empty());
            if spec.dns_config.is_none() {
                errs.push(required(
                    &path.child("dnsConfig"),
                    "must provide `dnsConfig` when `dnsPolicy` is None",
                ));
            } else if !has_nameservers {
                errs.push(required(
                    &path.child("dnsConfig").child("nameservers"),
                    "must provide at least one DNS nameserver when `dnsPolicy` is None",
                ));
            }
        }
        "" => errs.push(required(&path.child("dnsPolicy"), "")),
        other => errs.push(not_supported(&path.child("dnsPolicy"), other, DNS_POLICIES)),
    }
    if let Some(config) = &spec.dns_config {
        let cp = path.child("dnsConfig");
        let nameservers = config.nameservers.as_deref().unwrap_or_default();
        if nameservers.len() > 3 {
            errs.push(invalid(
                &cp.child("nameservers"),
                to_json(&nameservers),
                "must not have more than 3 nameservers",
            ));
        }
        for (i, ns) in nameservers.iter().enumerate() {
            errs.extend(name_errors(
                &cp.child("nameservers").index(i),
                ns,
                is_valid_ip(ns),
            ));
        }
        for (i, s) in config.searches.iter().flatten().enumerate() {
            let search = s.strip_suffix('.').unwrap_or(s);
            errs.extend(name_errors(
                &cp.child("searches").index(i),
                search,
                is_dns1123_subdomain(search),
            ));
        }
    }
    errs
}

/// Host ports must match container ports with host networking, and be unique per protocol.
fn host_ports(spec: &PodSpec, context: PodContext, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let host_network = spec.host_network == Some(true);
    let mut seen = BTreeSet::new();
    let lists = [
        ("containers", Some(&spec.containers)),
        ("initContainers", spec.init_containers.as_ref()),
    ];
    for (field, list) in lists {
        for (i, c) in list.into_iter().flatten().enumerate() {
            for (j, port) in c.ports.iter().flatten().enumerate() {
                let p = path.child(field).index(i).child("ports").index(j);
                let host_port = port.host_port.unwrap_or_default();
                if host_network
                    && field == "containers"
                    && host_port != port.container_port
                    && (host_port != 0 || context.is_pod())
                {
                    errs.push(invalid(
                        &p.child("containerPort"),
                        port.container_port,
                        "must match `hostPort` when `hostNetwork` is true",
                    ));
                }
                if host_port != 0 {
                    let key = format!(
                        "{}/{}/{}",
                        port.host_ip.as_deref().unwrap_or_default(),
                        host_port,
                        port.protocol.as_deref().unwrap_or_default()
                    );
                    if !seen.insert(key) {
                        errs.push(duplicate(
                            &p.child("hostPort"),
                            format!(
                                "{host_port}/{}",
                                port.protocol.as_deref().unwrap_or_default()
                            ),
                        ));
                    }
                }
            }
        }
    }
    errs
}

/// Upstream's `ValidatePodSpec`.
pub(crate) fn pod_spec(spec: &PodSpec, context: PodContext, path: &Path) -> Vec<FieldError> {
    let (mut errs, volume_names) = volumes(
        spec.volumes.as_deref().unwrap_or_default(),
        &path.child("volumes"),
    );
    let mut all_names = BTreeSet::new();
    errs.extend(init_containers(
        spec.init_containers.as_deref().unwrap_or_default(),
        &volume_names,
        &mut all_names,
        &path.child("initContainers"),
    ));
    errs.extend(containers(
        &spec.containers,
        &volume_names,
        &mut all_names,
        &path.child("containers"),
    ));
    let ephemeral = spec.ephemeral_containers.as_deref().unwrap_or_default();
    match context {
        PodContext::PodCreate if !ephemeral.is_empty() => {
            errs.push(forbidden(
                &path.child("ephemeralContainers"),
                "cannot be set on create",
            ));
        }
        PodContext::Template if !ephemeral.is_empty() => {
            errs.push(forbidden(
                &path.child("ephemeralContainers"),
                "ephemeral containers not allowed in pod template",
            ));
        }
        _ => errs.extend(ephemeral_containers(
            ephemeral,
            &volume_names,
            &mut all_names,
            &path.child("ephemeralContainers"),
        )),
    }
    errs.extend(host_ports(spec, context, path));
    errs.extend(restart_policy(
        spec.restart_policy.as_deref(),
        &path.child("restartPolicy"),
    ));
    errs.extend(dns_policy(spec, path));
    errs.extend(labels(
        spec.node_selector.as_ref(),
        &path.child("nodeSelector"),
    ));
    if let Some(sa) = spec
        .service_account_name
        .as_deref()
        .filter(|s| !s.is_empty())
    {
        errs.extend(name_errors(
            &path.child("serviceAccountName"),
            sa,
            is_dns1123_subdomain(sa),
        ));
    }
    if let Some(node) = spec.node_name.as_deref().filter(|s| !s.is_empty()) {
        errs.extend(name_errors(
            &path.child("nodeName"),
            node,
            is_dns1123_subdomain(node),
        ));
    }
    if let Some(ads) = spec.active_deadline_seconds {
        if !(1..=i64::from(u32::MAX)).contains(&ads) {
            errs.push(invalid(
                &path.child("activeDeadlineSeconds"),
                ads,
                &inclusive_range_error(1, i64::from(u32::MAX)),
            ));
        }
    }
    for (field, value) in [("hostname", &spec.hostname), ("subdomain", &spec.subdomain)] {
        if let Some(v) = value.as_deref().filter(|s| !s.is_empty()) {
            errs.extend(name_errors(&path.child(field), v, is_dns1123_label(v)));
        }
    }
    for (field, value) in [
        ("schedulerName", &spec.scheduler_name),
        ("priorityClassName", &spec.priority_class_name),
        ("runtimeClassName", &spec.runtime_class_name),
    ] {
        if let Some(v) = value.as_deref().filter(|s| !s.is_empty()) {
            errs.extend(name_errors(&path.child(field), v, is_dns1123_subdomain(v)));
        }
    }
    errs.extend(tolerations(
        spec.tolerations.as_deref().unwrap_or_default(),
        &path.child("tolerations"),
    ));
    for (i, s) in spec.image_pull_secrets.iter().flatten().enumerate() {
        if s.name.is_empty() {
            errs.push(required(
                &path.child("imagePullSecrets").index(i).child("name"),
                "",
            ));
        }
    }
    for (i, gate) in spec.readiness_gates.iter().flatten().enumerate() {
        errs.extend(label_name(
            &gate.condition_type,
            &path.child("readinessGates").index(i).child("conditionType"),
        ));
    }
    for (i, gate) in spec.scheduling_gates.iter().flatten().enumerate() {
        errs.extend(label_name(
            &gate.name,
            &path.child("schedulingGates").index(i).child("name"),
        ));
    }
    if let Some(sc) = &spec.security_context {
        let sp = path.child("securityContext");
        for (field, v) in [
            ("runAsUser", sc.run_as_user),
            ("runAsGroup", sc.run_as_group),
            ("fsGroup", sc.fs_group),
        ] {
            if let Some(v) = v.filter(|v| !(0..=i64::from(i32::MAX)).contains(v)) {
                errs.push(invalid(
                    &sp.child(field),
                    v,
                    &inclusive_range_error(0, i64::from(i32::MAX)),
                ));
            }
        }
    }
    errs.extend(resource_list_values(
        spec.overhead.as_ref(),
        &path.child("overhead"),
    ));
    errs
}

/// Non-negative, well-formed quantities in a resource list.
pub(crate) fn resource_list_values(
    list: Option<&BTreeMap<String, QuantityString>>,
    path: &Path,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (name, q) in list.into_iter().flatten() {
        let p = path.key(name);
        errs.extend(name_errors(&p, name, is_qualified_name(name)));
        errs.extend(resource_quantity(name, q, &p).0);
    }
    errs
}

/// Upstream's `ValidatePodTemplateSpec`.
pub(crate) fn pod_template_spec(t: &PodTemplateSpec, path: &Path) -> Vec<FieldError> {
    let meta = t.metadata.as_ref();
    let mut errs = labels(
        meta.and_then(|m| m.labels.as_ref()),
        &path.child("metadata").child("labels"),
    );
    errs.extend(annotations(
        meta.and_then(|m| m.annotations.as_ref()),
        &path.child("metadata").child("annotations"),
    ));
    let default_spec = PodSpec::default();
    let spec = t.spec.as_ref().unwrap_or(&default_spec);
    errs.extend(pod_spec(spec, PodContext::Template, &path.child("spec")));
    errs
}

/// A pod on create or update (the object-meta checks are done by the caller).
pub(crate) fn pod(p: &Pod, context: PodContext) -> Vec<FieldError> {
    let default_spec = PodSpec::default();
    let spec = p.spec.as_ref().unwrap_or(&default_spec);
    pod_spec(spec, context, &Path::new("spec"))
}

const POD_UPDATE_FORBIDDEN: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// Lists the JSON paths where two values differ, as `path: old -> new` lines.
fn json_diff(old: &Value, new: &Value, path: &str, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                json_diff(
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                    &child,
                    out,
                );
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                json_diff(x, y, &format!("{path}[{i}]"), out);
            }
        }
        (a, b) if a != b => out.push(format!("  {path}: {a} -> {b}")),
        _ => {}
    }
}

/// The pod-specific update rules of upstream's `ValidatePodUpdate`.
pub(crate) fn pod_update(new: &Pod, old: &Pod) -> Vec<FieldError> {
    let spec_path = Path::new("spec");
    let mut errs = Vec::new();
    let (Some(new_spec), Some(old_spec)) = (&new.spec, &old.spec) else {
        return errs;
    };

    let old_tolerations = old_spec.tolerations.as_deref().unwrap_or_default();
    let new_tolerations = new_spec.tolerations.as_deref().unwrap_or_default();
    for old_t in old_tolerations {
        let found = new_tolerations.iter().any(|n| {
            let mut clone = old_t.clone();
            clone.toleration_seconds = n.toleration_seconds;
            clone == *n
        });
        if !found {
            errs.push(forbidden(
                &spec_path.child("tolerations"),
                "existing toleration can not be modified except its tolerationSeconds",
            ));
            break;
        }
    }

    match (
        new_spec.active_deadline_seconds,
        old_spec.active_deadline_seconds,
    ) {
        (Some(n), Some(o)) if n > o => errs.push(invalid(
            &spec_path.child("activeDeadlineSeconds"),
            n,
            "must be less than or equal to previous value",
        )),
        (None, Some(_)) => errs.push(invalid(
            &spec_path.child("activeDeadlineSeconds"),
            Value::Null,
            "must not update from a positive integer to nil value",
        )),
        _ => {}
    }

    let old_gates: Vec<&String> = old_spec
        .scheduling_gates
        .iter()
        .flatten()
        .map(|g| &g.name)
        .collect();
    for g in new_spec.scheduling_gates.iter().flatten() {
        if !old_gates.contains(&&g.name) {
            errs.push(forbidden(
                &spec_path.child("schedulingGates"),
                &format!(
                    "only deletion is allowed, but found new scheduling gate '{}'",
                    g.name
                ),
            ));
        }
    }

    // Compare the specs with the updatable fields taken from the old pod.
    let mut munged = new_spec.clone();
    for (i, c) in munged.containers.iter_mut().enumerate() {
        if let Some(o) = old_spec.containers.get(i) {
            c.image = o.image.clone();
        }
    }
    if let (Some(new_init), Some(old_init)) =
        (&mut munged.init_containers, &old_spec.init_containers)
    {
        for (i, c) in new_init.iter_mut().enumerate() {
            if let Some(o) = old_init.get(i) {
                c.image = o.image.clone();
            }
        }
    }
    munged.active_deadline_seconds = old_spec.active_deadline_seconds;
    munged.tolerations = old_spec.tolerations.clone();
    munged.scheduling_gates = old_spec.scheduling_gates.clone();
    munged.ephemeral_containers = old_spec.ephemeral_containers.clone();
    if old_spec
        .termination_grace_period_seconds
        .is_some_and(|t| t < 0)
        && new_spec.termination_grace_period_seconds == Some(1)
    {
        munged.termination_grace_period_seconds = old_spec.termination_grace_period_seconds;
    }
    let (old_json, new_json) = (to_json(old_spec), to_json(&munged));
    if old_json != new_json {
        let mut lines = Vec::new();
        json_diff(&old_json, &new_json, "", &mut lines);
        errs.push(forbidden(
            &spec_path,
            &format!("{POD_UPDATE_FORBIDDEN}\n{}", lines.join("\n")),
        ));
    }
    errs
}

/// Light checks on a pod status update: IPs and condition types.
pub(crate) fn pod_status(p: &Pod) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(status) = &p.status else { return errs };
    let sp = Path::new("status");
    for (i, ip) in status.pod_ips.iter().flatten().enumerate() {
        errs.extend(name_errors(
            &sp.child("podIPs").index(i),
            &ip.ip,
            is_valid_ip(&ip.ip),
        ));
    }
    for (i, ip) in status.host_ips.iter().flatten().enumerate() {
        errs.extend(name_errors(
            &sp.child("hostIPs").index(i),
            &ip.ip,
            is_valid_ip(&ip.ip),
        ));
    }
    if let (Some(pod_ip), Some(first)) = (
        status.pod_ip.as_deref().filter(|s| !s.is_empty()),
        status.pod_ips.as_ref().and_then(|ips| ips.first()),
    ) {
        if pod_ip != first.ip {
            errs.push(invalid(
                &sp.child("podIPs").index(0).child("ip"),
                first.ip.as_str(),
                "must be equal to podIP",
            ));
        }
    }
    for (i, c) in status.conditions.iter().flatten().enumerate() {
        errs.extend(label_name(
            &c.type_,
            &sp.child("conditions").index(i).child("type"),
        ));
    }
    errs
}
