//! Upstream's `PodSecurity` admission plugin (staging/src/k8s.io/pod-security-admission):
//! a namespace's `pod-security.kubernetes.io/<mode>` labels pick a Pod Security Standards
//! level (`privileged`, `baseline`, `restricted`) per mode. `enforce` refuses a new Pod
//! that violates it (403); `warn` answers a `Warning` header that kubectl prints, for Pods
//! and for the pod templates of workload resources. Without labels the level is
//! `privileged` and no namespace is exempt, as upstream's default configuration.
//!
//! Every `-version` is evaluated as the latest standards (the message names the version
//! the label gave). `audit` is read but pikube has no audit log to write it to. A pod
//! update is enforced only when it changes the spec or annotations, as upstream, so a
//! pod admitted under an older label can still have its labels and status changed.

mod checks;

use super::Attributes;
use crate::object;
use crate::rest;
use crate::status::ApiResult;
use crate::watch_cache::Cached;
use crate::Apiserver;
use checks::Level;
use serde_json::Value;
use std::sync::Arc;

const LABEL_PREFIX: &str = "pod-security.kubernetes.io/";

/// A mode's level and version, as the namespace labels give them.
#[derive(Debug, PartialEq, Eq)]
struct Policy {
    level: Level,
    version: String,
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.level.as_str(), self.version)
    }
}

/// Whether a `-version` label value is one upstream accepts (`latest` or `v1.<minor>`).
fn valid_version(v: &str) -> bool {
    v == "latest"
        || v.strip_prefix("v1.")
            .is_some_and(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()))
}

/// The policy of `mode` from the namespace labels; a label upstream cannot parse yields
/// `restricted:latest`, as upstream falls back to the most restrictive policy.
fn policy(labels: Option<&Value>, mode: &str) -> Policy {
    let label = |suffix: &str| {
        labels
            .and_then(|l| l.get(format!("{LABEL_PREFIX}{suffix}")))
            .and_then(Value::as_str)
    };
    let version = label(&format!("{mode}-version")).unwrap_or("latest");
    let level = match label(mode) {
        None => Some(Level::Privileged),
        Some(l) => Level::parse(l),
    };
    match level {
        Some(level) if valid_version(version) => Policy {
            level,
            version: version.to_string(),
        },
        _ => Policy {
            level: Level::Restricted,
            version: "latest".into(),
        },
    }
}

async fn namespace(api: &Apiserver, ns: &str) -> ApiResult<Option<Arc<Cached>>> {
    let info = super::resource("", "namespaces")?;
    let key = object::key(info, None, ns);
    if let Some(n) = api.cache(info).get(&key) {
        return Ok(Some(n));
    }
    Ok(match api.store.get(&key).await? {
        Some(kv) => Some(Cached::new(rest::decode_stored(api, info, &kv)?)),
        None => None,
    })
}

/// Where a workload resource keeps its pod template.
fn template_path(group: &str, plural: &str) -> Option<&'static str> {
    match (group, plural) {
        ("", "podtemplates") => Some("/template"),
        ("", "replicationcontrollers")
        | ("apps", "deployments" | "replicasets" | "statefulsets" | "daemonsets")
        | ("batch", "jobs") => Some("/spec/template"),
        ("batch", "cronjobs") => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// Checks a new Pod (enforce, warn) or workload (warn). Returns the warnings.
pub async fn validate_create(
    api: &Apiserver,
    a: &Attributes<'_>,
    ns: &str,
    obj: &Value,
) -> ApiResult<Vec<String>> {
    let is_pod = a.is("", "pods");
    let (meta, spec) = if is_pod {
        (obj.get("metadata"), obj.get("spec"))
    } else {
        let Some(path) = template_path(a.info.group, a.info.plural) else {
            return Ok(vec![]);
        };
        let Some(template) = obj.pointer(path) else {
            return Ok(vec![]);
        };
        (template.get("metadata"), template.get("spec"))
    };
    let Some(spec) = spec else {
        return Ok(vec![]);
    };
    let Some(namespace) = namespace(api, ns).await? else {
        return Ok(vec![]);
    };
    let labels = namespace.pointer("/metadata/labels");
    let meta = meta.cloned().unwrap_or_default();
    let enforce = policy(labels, "enforce");
    if is_pod && enforce.level > Level::Privileged {
        let violations = checks::evaluate(enforce.level, &meta, spec);
        if !violations.is_empty() {
            return Err(a.forbidden(format!(
                "violates PodSecurity \"{enforce}\": {}",
                checks::describe(&violations)
            )));
        }
    }
    let warn = policy(labels, "warn");
    if warn.level > Level::Privileged {
        let violations = checks::evaluate(warn.level, &meta, spec);
        if !violations.is_empty() {
            return Ok(vec![format!(
                "would violate PodSecurity \"{warn}\": {}",
                checks::describe(&violations)
            )]);
        }
    }
    Ok(vec![])
}

/// Enforces the namespace's level on a pod update that changes what the checks read.
pub async fn validate_pod_update(
    api: &Apiserver,
    a: &Attributes<'_>,
    ns: &str,
    new: &Value,
    old: &Value,
) -> ApiResult<()> {
    let significant = new.get("spec") != old.get("spec")
        || new.pointer("/metadata/annotations") != old.pointer("/metadata/annotations");
    let Some(spec) = new.get("spec").filter(|_| significant) else {
        return Ok(());
    };
    let Some(namespace) = namespace(api, ns).await? else {
        return Ok(());
    };
    let enforce = policy(namespace.pointer("/metadata/labels"), "enforce");
    if enforce.level == Level::Privileged {
        return Ok(());
    }
    let meta = new.get("metadata").cloned().unwrap_or_default();
    let violations = checks::evaluate(enforce.level, &meta, spec);
    if violations.is_empty() {
        return Ok(());
    }
    Err(a.forbidden(format!(
        "violates PodSecurity \"{enforce}\": {}",
        checks::describe(&violations)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_pick_the_policy() {
        let labels = json!({
            "pod-security.kubernetes.io/enforce": "baseline",
            "pod-security.kubernetes.io/warn": "restricted",
            "pod-security.kubernetes.io/warn-version": "v1.30",
            "pod-security.kubernetes.io/audit": "strict",
        });
        let enforce = policy(Some(&labels), "enforce");
        assert_eq!(enforce.to_string(), "baseline:latest");
        assert_eq!(
            policy(Some(&labels), "warn").to_string(),
            "restricted:v1.30"
        );
        // An unknown level falls back to the most restrictive policy.
        assert_eq!(
            policy(Some(&labels), "audit").to_string(),
            "restricted:latest"
        );
        assert_eq!(policy(None, "enforce").level, Level::Privileged);
        assert!(!valid_version("1.30"));
        assert_eq!(
            template_path("batch", "cronjobs"),
            Some("/spec/jobTemplate/spec/template")
        );
    }
}
