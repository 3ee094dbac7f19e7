//! The Pod Security Standards' checks (upstream's pod-security-admission `policy` package),
//! at their latest version, over a pod's metadata and spec as JSON. Each check answers
//! upstream's reason and detail, which the messages join.

use serde_json::Value;
use std::collections::BTreeSet;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Privileged,
    Baseline,
    Restricted,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "privileged" => Some(Level::Privileged),
            "baseline" => Some(Level::Baseline),
            "restricted" => Some(Level::Restricted),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

/// One failed check: upstream's `ForbiddenReason` and `ForbiddenDetail`.
#[derive(Debug, PartialEq, Eq)]
pub struct Violation {
    pub reason: String,
    pub detail: String,
}

type Check = fn(&Value, &Value) -> Option<Violation>;

/// The checks of a level, by upstream's check ID, in the order of the messages.
/// Restricted runs the baseline checks too, its own capabilities and seccomp checks in
/// place of baseline's.
fn checks(level: Level) -> Vec<(&'static str, Check)> {
    let mut all: Vec<(&'static str, Check, Level)> = vec![
        (
            "allowPrivilegeEscalation",
            allow_privilege_escalation,
            Level::Restricted,
        ),
        ("appArmorProfile", app_armor_profile, Level::Baseline),
        (
            "capabilities_baseline",
            capabilities_baseline,
            Level::Baseline,
        ),
        (
            "capabilities_restricted",
            capabilities_restricted,
            Level::Restricted,
        ),
        ("hostNamespaces", host_namespaces, Level::Baseline),
        ("hostPathVolumes", host_path_volumes, Level::Baseline),
        ("hostPorts", host_ports, Level::Baseline),
        ("privileged", privileged, Level::Baseline),
        ("procMount", proc_mount, Level::Baseline),
        ("restrictedVolumes", restricted_volumes, Level::Restricted),
        ("runAsNonRoot", run_as_non_root, Level::Restricted),
        ("runAsUser", run_as_user, Level::Restricted),
        ("seLinuxOptions", se_linux_options, Level::Baseline),
        ("seccompProfile_baseline", seccomp_baseline, Level::Baseline),
        (
            "seccompProfile_restricted",
            seccomp_restricted,
            Level::Restricted,
        ),
        ("sysctls", sysctls, Level::Baseline),
        ("windowsHostProcess", windows_host_process, Level::Baseline),
    ];
    if level == Level::Restricted {
        all.retain(|(id, _, _)| {
            !matches!(*id, "capabilities_baseline" | "seccompProfile_baseline")
        });
    }
    // Baseline's checks first, then restricted's, each in ID order (upstream's
    // `orderedIDs`); the sort is stable over the alphabetical list above.
    all.sort_by_key(|(_, _, l)| *l);
    all.into_iter()
        .filter(|(_, _, l)| *l <= level)
        .map(|(id, c, _)| (id, c))
        .collect()
}

/// Every violation of `level` by a pod with this metadata and spec.
pub fn evaluate(level: Level, metadata: &Value, spec: &Value) -> Vec<Violation> {
    checks(level)
        .into_iter()
        .filter_map(|(_, check)| check(metadata, spec))
        .collect()
}

/// Upstream's `ForbiddenDetail` of several results: `reason (detail), reason, ...`.
pub fn describe(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| {
            if v.detail.is_empty() {
                v.reason.clone()
            } else {
                format!("{} ({})", v.reason, v.detail)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn pluralize<'a>(one: &'a str, many: &'a str, n: usize) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

fn join_quote<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    items
        .into_iter()
        .map(|s| format!("{:?}", s.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `container "a"` or `containers "a", "b"`.
fn containers_phrase(names: &[String]) -> String {
    format!(
        "{} {}",
        pluralize("container", "containers", names.len()),
        join_quote(names)
    )
}

/// Init containers, containers, ephemeral containers, in upstream's visiting order.
fn containers(spec: &Value) -> impl Iterator<Item = &Value> {
    ["initContainers", "containers", "ephemeralContainers"]
        .into_iter()
        .filter_map(|l| spec.get(l).and_then(Value::as_array))
        .flatten()
}

fn name(c: &Value) -> String {
    c.get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn sc<'a>(c: &'a Value, path: &str) -> Option<&'a Value> {
    c.pointer(&format!("/securityContext{path}"))
}

fn is_windows(spec: &Value) -> bool {
    spec.pointer("/os/name").and_then(Value::as_str) == Some("windows")
}

fn violation(reason: &str, detail: String) -> Option<Violation> {
    Some(Violation {
        reason: reason.to_string(),
        detail,
    })
}

fn allow_privilege_escalation(_: &Value, spec: &Value) -> Option<Violation> {
    if is_windows(spec) {
        return None;
    }
    let bad: Vec<String> = containers(spec)
        .filter(|c| sc(c, "/allowPrivilegeEscalation").and_then(Value::as_bool) != Some(false))
        .map(name)
        .collect();
    (!bad.is_empty()).then(|| Violation {
        reason: "allowPrivilegeEscalation != false".into(),
        detail: format!(
            "{} must set securityContext.allowPrivilegeEscalation=false",
            containers_phrase(&bad)
        ),
    })
}

fn app_armor_profile(meta: &Value, spec: &Value) -> Option<Violation> {
    let allowed = |p: &Value| {
        matches!(
            p.get("type").and_then(Value::as_str),
            Some("RuntimeDefault" | "Localhost")
        )
    };
    let mut setters = Vec::new();
    let mut values = BTreeSet::new();
    if let Some(p) = spec.pointer("/securityContext/appArmorProfile") {
        if !allowed(p) {
            setters.push("pod".to_string());
            values.insert(
                p.get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            );
        }
    }
    let bad: Vec<String> = containers(spec)
        .filter(|c| {
            sc(c, "/appArmorProfile").is_some_and(|p| {
                let bad = !allowed(p);
                if bad {
                    values.insert(
                        p.get("type")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                    );
                }
                bad
            })
        })
        .map(name)
        .collect();
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    let mut shown: Vec<String> = values.into_iter().collect();
    let mut annotations: Vec<String> = meta
        .get("annotations")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(k, v)| {
            let v = v.as_str().unwrap_or("");
            k.starts_with("container.apparmor.security.beta.kubernetes.io/")
                && v != "runtime/default"
                && !v.starts_with("localhost/")
        })
        .map(|(k, v)| format!("{k}={:?}", v.as_str().unwrap_or("")))
        .collect();
    if !annotations.is_empty() {
        annotations.sort();
        setters.push(pluralize("annotation", "annotations", annotations.len()).into());
        shown.extend(annotations);
    }
    if setters.is_empty() {
        return None;
    }
    violation(
        pluralize(
            "forbidden AppArmor profile",
            "forbidden AppArmor profiles",
            shown.len(),
        ),
        shown.join(", "),
    )
}

/// Upstream's `capabilities_allowed_1_0`.
const BASELINE_CAPABILITIES: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

fn added_capabilities(c: &Value) -> impl Iterator<Item = &str> {
    sc(c, "/capabilities/add")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

fn capabilities_baseline(_: &Value, spec: &Value) -> Option<Violation> {
    let mut caps = BTreeSet::new();
    let mut bad = Vec::new();
    for c in containers(spec) {
        let mut valid = true;
        for cap in added_capabilities(c) {
            if !BASELINE_CAPABILITIES.contains(&cap) {
                valid = false;
                caps.insert(cap.to_string());
            }
        }
        if !valid {
            bad.push(name(c));
        }
    }
    (!bad.is_empty()).then(|| Violation {
        reason: "non-default capabilities".into(),
        detail: format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&bad),
            join_quote(&caps)
        ),
    })
}

fn capabilities_restricted(_: &Value, spec: &Value) -> Option<Violation> {
    if is_windows(spec) {
        return None;
    }
    let mut missing_drop = Vec::new();
    let mut adding = Vec::new();
    let mut caps = BTreeSet::new();
    for c in containers(spec) {
        let dropped_all = sc(c, "/capabilities/drop")
            .and_then(Value::as_array)
            .is_some_and(|d| d.iter().any(|x| x.as_str() == Some("ALL")));
        if !dropped_all {
            missing_drop.push(name(c));
        }
        let mut forbidden = false;
        for cap in added_capabilities(c) {
            if cap != "NET_BIND_SERVICE" {
                forbidden = true;
                caps.insert(cap.to_string());
            }
        }
        if forbidden {
            adding.push(name(c));
        }
    }
    let mut details = Vec::new();
    if !missing_drop.is_empty() {
        details.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            containers_phrase(&missing_drop)
        ));
    }
    if !adding.is_empty() {
        details.push(format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&adding),
            join_quote(&caps)
        ));
    }
    (!details.is_empty()).then(|| Violation {
        reason: "unrestricted capabilities".into(),
        detail: details.join("; "),
    })
}

fn host_namespaces(_: &Value, spec: &Value) -> Option<Violation> {
    let set: Vec<String> = ["hostNetwork", "hostPID", "hostIPC"]
        .into_iter()
        .filter(|f| spec.get(*f).and_then(Value::as_bool) == Some(true))
        .map(|f| format!("{f}=true"))
        .collect();
    (!set.is_empty()).then(|| Violation {
        reason: "host namespaces".into(),
        detail: set.join(", "),
    })
}

fn volumes(spec: &Value) -> impl Iterator<Item = &Value> {
    spec.get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn host_path_volumes(_: &Value, spec: &Value) -> Option<Violation> {
    let bad: Vec<String> = volumes(spec)
        .filter(|v| v.get("hostPath").is_some())
        .map(name)
        .collect();
    (!bad.is_empty()).then(|| Violation {
        reason: "hostPath volumes".into(),
        detail: format!(
            "{} {}",
            pluralize("volume", "volumes", bad.len()),
            join_quote(&bad)
        ),
    })
}

fn host_ports(_: &Value, spec: &Value) -> Option<Violation> {
    let mut ports = BTreeSet::new();
    let mut bad = Vec::new();
    for c in containers(spec) {
        let mut valid = true;
        for p in c
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(hp) = p
                .get("hostPort")
                .and_then(Value::as_i64)
                .filter(|p| *p != 0)
            {
                valid = false;
                ports.insert(hp.to_string());
            }
        }
        if !valid {
            bad.push(name(c));
        }
    }
    (!bad.is_empty()).then(|| Violation {
        reason: "hostPort".into(),
        detail: format!(
            "{} {} {} {}",
            containers_phrase(&bad),
            pluralize("uses", "use", bad.len()),
            pluralize("hostPort", "hostPorts", ports.len()),
            ports.into_iter().collect::<Vec<_>>().join(", ")
        ),
    })
}

fn privileged(_: &Value, spec: &Value) -> Option<Violation> {
    let bad: Vec<String> = containers(spec)
        .filter(|c| sc(c, "/privileged").and_then(Value::as_bool) == Some(true))
        .map(name)
        .collect();
    (!bad.is_empty()).then(|| Violation {
        reason: "privileged".into(),
        detail: format!(
            "{} must not set securityContext.privileged=true",
            containers_phrase(&bad)
        ),
    })
}

fn proc_mount(_: &Value, spec: &Value) -> Option<Violation> {
    // A pod in its own user namespace may unmask /proc (upstream relaxed this in 1.30).
    if spec.get("hostUsers").and_then(Value::as_bool) == Some(false) {
        return None;
    }
    let mut types = BTreeSet::new();
    let bad: Vec<String> = containers(spec)
        .filter(|c| match sc(c, "/procMount").and_then(Value::as_str) {
            Some(t) if t != "Default" => {
                types.insert(t.to_string());
                true
            }
            _ => false,
        })
        .map(name)
        .collect();
    (!bad.is_empty()).then(|| Violation {
        reason: "procMount".into(),
        detail: format!(
            "{} must not set securityContext.procMount to {}",
            containers_phrase(&bad),
            join_quote(&types)
        ),
    })
}

/// The volume sources the restricted level allows.
const RESTRICTED_VOLUME_TYPES: [&str; 8] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

fn restricted_volumes(_: &Value, spec: &Value) -> Option<Violation> {
    let mut types = BTreeSet::new();
    let mut bad = Vec::new();
    for v in volumes(spec) {
        let source = v
            .as_object()
            .and_then(|o| o.keys().find(|k| *k != "name"))
            .map(String::as_str)
            .unwrap_or("unknown");
        if !RESTRICTED_VOLUME_TYPES.contains(&source) {
            bad.push(name(v));
            types.insert(source.to_string());
        }
    }
    (!bad.is_empty()).then(|| Violation {
        reason: "restricted volume types".into(),
        detail: format!(
            "{} {} {} {} {}",
            pluralize("volume", "volumes", bad.len()),
            join_quote(&bad),
            pluralize("uses", "use", bad.len()),
            pluralize(
                "restricted volume type",
                "restricted volume types",
                types.len()
            ),
            join_quote(&types)
        ),
    })
}

fn run_as_non_root(_: &Value, spec: &Value) -> Option<Violation> {
    let mut setters = Vec::new();
    let mut pod_non_root = false;
    match spec
        .pointer("/securityContext/runAsNonRoot")
        .and_then(Value::as_bool)
    {
        Some(false) => setters.push("pod".to_string()),
        Some(true) => pod_non_root = true,
        None => {}
    }
    let mut explicit = Vec::new();
    let mut implicit = Vec::new();
    for c in containers(spec) {
        match sc(c, "/runAsNonRoot").and_then(Value::as_bool) {
            Some(false) => explicit.push(name(c)),
            Some(true) => {}
            None if !pod_non_root => implicit.push(name(c)),
            None => {}
        }
    }
    if !explicit.is_empty() {
        setters.push(containers_phrase(&explicit));
    }
    if !setters.is_empty() {
        return violation(
            "runAsNonRoot != true",
            format!(
                "{} must not set securityContext.runAsNonRoot=false",
                setters.join(" and ")
            ),
        );
    }
    if !implicit.is_empty() {
        return violation(
            "runAsNonRoot != true",
            format!(
                "pod or {} must set securityContext.runAsNonRoot=true",
                containers_phrase(&implicit)
            ),
        );
    }
    None
}

fn run_as_user(_: &Value, spec: &Value) -> Option<Violation> {
    let mut setters = Vec::new();
    if spec
        .pointer("/securityContext/runAsUser")
        .and_then(Value::as_i64)
        == Some(0)
    {
        setters.push("pod".to_string());
    }
    let bad: Vec<String> = containers(spec)
        .filter(|c| sc(c, "/runAsUser").and_then(Value::as_i64) == Some(0))
        .map(name)
        .collect();
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    (!setters.is_empty()).then(|| Violation {
        reason: "runAsUser=0".into(),
        detail: format!("{} must not set runAsUser=0", setters.join(" and ")),
    })
}

fn se_linux_options(_: &Value, spec: &Value) -> Option<Violation> {
    const TYPES: [&str; 5] = [
        "",
        "container_t",
        "container_init_t",
        "container_kvm_t",
        "container_engine_t",
    ];
    let mut types = BTreeSet::new();
    let (mut user, mut role) = (false, false);
    let mut valid = |o: &Value| {
        let mut ok = true;
        let t = o.get("type").and_then(Value::as_str).unwrap_or("");
        if !TYPES.contains(&t) {
            ok = false;
            types.insert(t.to_string());
        }
        if o.get("user")
            .and_then(Value::as_str)
            .is_some_and(|u| !u.is_empty())
        {
            ok = false;
            user = true;
        }
        if o.get("role")
            .and_then(Value::as_str)
            .is_some_and(|r| !r.is_empty())
        {
            ok = false;
            role = true;
        }
        ok
    };
    let mut setters = Vec::new();
    if let Some(o) = spec.pointer("/securityContext/seLinuxOptions") {
        if !valid(o) {
            setters.push("pod".to_string());
        }
    }
    let bad: Vec<String> = containers(spec)
        .filter(|c| sc(c, "/seLinuxOptions").is_some_and(|o| !valid(o)))
        .map(name)
        .collect();
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    if setters.is_empty() {
        return None;
    }
    let mut data = Vec::new();
    if !types.is_empty() {
        data.push(format!(
            "{} {}",
            pluralize("type", "types", types.len()),
            join_quote(&types)
        ));
    }
    if user {
        data.push("user may not be set".to_string());
    }
    if role {
        data.push("role may not be set".to_string());
    }
    violation(
        "seLinuxOptions",
        format!(
            "{} set forbidden securityContext.seLinuxOptions: {}",
            setters.join(" and "),
            data.join("; ")
        ),
    )
}

/// Seccomp: explicit bad values first; under restricted, also every container left
/// without RuntimeDefault or Localhost by itself or by the pod.
fn seccomp(spec: &Value, valid: fn(&str) -> bool, require: bool) -> Option<Violation> {
    let kind = |p: Option<&Value>| {
        p.map(|p| {
            p.get("type")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        })
    };
    let mut setters = Vec::new();
    let mut values = BTreeSet::new();
    let mut pod_set = false;
    if let Some(t) = kind(spec.pointer("/securityContext/seccompProfile")) {
        if valid(&t) {
            pod_set = true;
        } else {
            setters.push("pod".to_string());
            values.insert(t);
        }
    }
    let mut explicit = Vec::new();
    let mut implicit = Vec::new();
    for c in containers(spec) {
        match kind(sc(c, "/seccompProfile")) {
            Some(t) if !valid(&t) => {
                explicit.push(name(c));
                values.insert(t);
            }
            Some(_) => {}
            None if !pod_set => implicit.push(name(c)),
            None => {}
        }
    }
    if !explicit.is_empty() {
        setters.push(containers_phrase(&explicit));
    }
    if !setters.is_empty() {
        return violation(
            "seccompProfile",
            format!(
                "{} must not set securityContext.seccompProfile.type to {}",
                setters.join(" and "),
                join_quote(&values)
            ),
        );
    }
    if require && !implicit.is_empty() {
        return violation(
            "seccompProfile",
            format!(
                "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
                containers_phrase(&implicit)
            ),
        );
    }
    None
}

fn seccomp_baseline(_: &Value, spec: &Value) -> Option<Violation> {
    seccomp(spec, |t| t != "Unconfined", false)
}

fn seccomp_restricted(_: &Value, spec: &Value) -> Option<Violation> {
    if is_windows(spec) {
        return None;
    }
    seccomp(spec, |t| matches!(t, "RuntimeDefault" | "Localhost"), true)
}

/// Upstream's safe sysctls (1.29).
const SAFE_SYSCTLS: [&str; 10] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

fn sysctls(_: &Value, spec: &Value) -> Option<Violation> {
    let bad: Vec<String> = spec
        .pointer("/securityContext/sysctls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("name").and_then(Value::as_str))
        .filter(|n| !SAFE_SYSCTLS.contains(n))
        .map(String::from)
        .collect();
    (!bad.is_empty()).then(|| Violation {
        reason: "forbidden sysctls".into(),
        detail: bad.join(", "),
    })
}

fn windows_host_process(_: &Value, spec: &Value) -> Option<Violation> {
    let mut setters = Vec::new();
    if spec
        .pointer("/securityContext/windowsOptions/hostProcess")
        .and_then(Value::as_bool)
        == Some(true)
    {
        setters.push("pod".to_string());
    }
    let bad: Vec<String> = containers(spec)
        .filter(|c| sc(c, "/windowsOptions/hostProcess").and_then(Value::as_bool) == Some(true))
        .map(name)
        .collect();
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    (!setters.is_empty()).then(|| Violation {
        reason: "hostProcess".into(),
        detail: format!(
            "{} must not set securityContext.windowsOptions.hostProcess=true",
            setters.join(" and ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec_of(containers: Value) -> Value {
        json!({ "containers": containers })
    }

    #[test]
    fn a_bare_pod_meets_baseline_but_not_restricted() {
        let spec = spec_of(json!([{ "name": "c", "image": "busybox" }]));
        assert!(evaluate(Level::Baseline, &json!({}), &spec).is_empty());
        assert_eq!(
            describe(&evaluate(Level::Restricted, &json!({}), &spec)),
            "allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"]), runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container \"c\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
        );
    }

    #[test]
    fn a_locked_down_pod_meets_restricted() {
        let spec = json!({
            "securityContext": { "runAsNonRoot": true, "seccompProfile": { "type": "RuntimeDefault" } },
            "containers": [{ "name": "c", "securityContext": {
                "allowPrivilegeEscalation": false,
                "capabilities": { "drop": ["ALL"], "add": ["NET_BIND_SERVICE"] },
            }}],
            "volumes": [{ "name": "v", "emptyDir": {} }, { "name": "t", "projected": { "sources": [] } }],
        });
        assert_eq!(evaluate(Level::Restricted, &json!({}), &spec), []);
    }

    #[test]
    fn baseline_violations_speak_upstream() {
        let spec = json!({
            "hostNetwork": true,
            "hostPID": true,
            "securityContext": { "sysctls": [{ "name": "kernel.msgmax", "value": "1" }], "seccompProfile": { "type": "Unconfined" } },
            "containers": [
                { "name": "a", "securityContext": { "privileged": true, "capabilities": { "add": ["NET_ADMIN", "SYS_TIME"] } }, "ports": [{ "containerPort": 80, "hostPort": 80 }] },
                { "name": "b", "securityContext": { "privileged": true, "procMount": "Unmasked", "seLinuxOptions": { "type": "spc_t", "user": "u" } }, "ports": [{ "containerPort": 443, "hostPort": 8443 }] },
            ],
            "volumes": [{ "name": "host", "hostPath": { "path": "/" } }],
        });
        let meta = json!({ "annotations": { "container.apparmor.security.beta.kubernetes.io/a": "unconfined" } });
        assert_eq!(
            describe(&evaluate(Level::Baseline, &meta, &spec)),
            [
                "forbidden AppArmor profile (container.apparmor.security.beta.kubernetes.io/a=\"unconfined\")",
                "non-default capabilities (container \"a\" must not include \"NET_ADMIN\", \"SYS_TIME\" in securityContext.capabilities.add)",
                "host namespaces (hostNetwork=true, hostPID=true)",
                "hostPath volumes (volume \"host\")",
                "hostPort (containers \"a\", \"b\" use hostPorts 80, 8443)",
                "privileged (containers \"a\", \"b\" must not set securityContext.privileged=true)",
                "procMount (container \"b\" must not set securityContext.procMount to \"Unmasked\")",
                "seLinuxOptions (container \"b\" set forbidden securityContext.seLinuxOptions: type \"spc_t\"; user may not be set)",
                "seccompProfile (pod must not set securityContext.seccompProfile.type to \"Unconfined\")",
                "forbidden sysctls (kernel.msgmax)",
            ]
            .join(", ")
        );
    }

    #[test]
    fn restricted_names_explicit_settings_before_missing_ones() {
        let spec = json!({
            "securityContext": { "runAsNonRoot": false, "runAsUser": 0 },
            "containers": [
                { "name": "a", "securityContext": { "runAsNonRoot": false, "allowPrivilegeEscalation": false, "capabilities": { "drop": ["ALL"], "add": ["SYS_ADMIN"] }, "seccompProfile": { "type": "Localhost", "localhostProfile": "p.json" } } },
            ],
            "volumes": [{ "name": "nfs", "nfs": { "server": "s", "path": "/" } }],
        });
        assert_eq!(
            describe(&evaluate(Level::Restricted, &json!({}), &spec)),
            [
                "unrestricted capabilities (container \"a\" must not include \"SYS_ADMIN\" in securityContext.capabilities.add)",
                "restricted volume types (volume \"nfs\" uses restricted volume type \"nfs\")",
                "runAsNonRoot != true (pod and container \"a\" must not set securityContext.runAsNonRoot=false)",
                "runAsUser=0 (pod must not set runAsUser=0)",
            ]
            .join(", ")
        );
    }
}
