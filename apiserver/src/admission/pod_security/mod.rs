//! Upstream's `PodSecurity` admission plugin (staging/src/k8s.io/pod-security-admission):
//! a namespace's `pod-security.kubernetes.io/<mode>` labels pick a Pod Security Standards
//! level (`privileged`, `baseline`, `restricted`) per mode. `enforce` refuses a new Pod
//! that violates it (403); `warn` answers a `Warning` header that kubectl prints, for Pods
//! and for the pod templates of workload resources. Without labels the level is
//! `privileged` and no namespace is exempt, as upstream's default configuration.
//!
//! Namespaces are checked too, as upstream's `ValidateNamespace`: a level other than the
//! three or a `-version` other than `latest`/`v1.<minor>` is refused with 422 Invalid
//! (on an update only when the label errors changed, so an old namespace with a bad label
//! can still be edited otherwise). An update that makes `enforce` stricter is allowed and
//! answers warnings naming the existing pods the new level would refuse, grouped by
//! violation, within upstream's limits (3000 pods, one second).
//!
//! Every `-version` is evaluated as the latest standards (the message names the version
//! the label gave). `audit` is read but pikube has no audit log to write it to. A pod
//! update is enforced only when it changes the spec or annotations, as upstream, so a
//! pod admitted under an older label can still have its labels and status changed.

mod checks;

use super::Attributes;
use crate::object;
use crate::rest;
use crate::status::{ApiError, ApiResult};
use crate::Apiserver;
use api_types::validation::{field, FieldError, Path};
use checks::Level;
use serde_json::Value;
use std::time::{Duration, Instant};

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

/// The modes, in the order upstream reads (and reports) their labels.
const MODES: [&str; 3] = ["enforce", "audit", "warn"];

/// Whether a `-version` label value is one upstream accepts: `latest` or `v1.<minor>`,
/// the minor without leading zeros (upstream's `^v1\.([0-9]|[1-9][0-9]*)$`).
fn valid_version(v: &str) -> bool {
    v == "latest"
        || v.strip_prefix("v1.").is_some_and(|m| {
            !m.is_empty()
                && m.bytes().all(|b| b.is_ascii_digit())
                && (m == "0" || !m.starts_with('0'))
        })
}

fn label<'a>(labels: Option<&'a Value>, key: &str) -> Option<&'a str> {
    labels.and_then(|l| l.get(key)).and_then(Value::as_str)
}

/// The policy of `mode` from the namespace labels and the errors of its two labels, as
/// upstream's `PolicyToEvaluate`: level and version are read apart; a level it cannot
/// parse is `restricted` for `enforce` and `privileged` for `audit` and `warn` (they fail
/// open), a version it cannot parse is `latest`.
fn policy_and_errors(labels: Option<&Value>, mode: &str) -> (Policy, Vec<FieldError>) {
    let path = Path::new("metadata").child("labels");
    let mut errors = Vec::new();
    let level_key = format!("{LABEL_PREFIX}{mode}");
    let level = match label(labels, &level_key) {
        None => Level::Privileged,
        Some(l) => Level::parse(l).unwrap_or_else(|| {
            errors.push(field::invalid(
                &path.key(&level_key),
                l,
                "must be one of privileged, baseline, restricted",
            ));
            if mode == "enforce" {
                Level::Restricted
            } else {
                Level::Privileged
            }
        }),
    };
    let version_key = format!("{LABEL_PREFIX}{mode}-version");
    let version = match label(labels, &version_key) {
        None => "latest",
        Some(v) if valid_version(v) => v,
        Some(v) => {
            errors.push(field::invalid(
                &path.key(&version_key),
                v,
                "must be \"latest\" or \"v1.x\"",
            ));
            "latest"
        }
    };
    let policy = Policy {
        level,
        version: version.to_string(),
    };
    (policy, errors)
}

/// The policy of `mode` from the namespace labels.
fn policy(labels: Option<&Value>, mode: &str) -> Policy {
    policy_and_errors(labels, mode).0
}

/// The errors of all the PodSecurity labels, in upstream's order.
fn label_errors(labels: Option<&Value>) -> Vec<FieldError> {
    MODES
        .iter()
        .flat_map(|mode| policy_and_errors(labels, mode).1)
        .collect()
}

async fn namespace(api: &Apiserver, ns: &str) -> ApiResult<Option<Value>> {
    let info = super::resource("", "namespaces")?;
    let key = object::key(info, None, ns);
    if let Some(n) = api.cache(info).get(&key) {
        return Ok(Some(n.value()));
    }
    Ok(match api.store.get(&key).await? {
        Some(kv) => Some(rest::decode_stored(api, info, &kv)?),
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

/// Upstream's limits on the existing pods a stricter `enforce` label is checked against.
const NAMESPACE_MAX_PODS_TO_CHECK: usize = 3000;
const NAMESPACE_POD_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// Checks a Namespace create or update (upstream's `ValidateNamespace`): PodSecurity labels
/// upstream cannot parse are refused (422) on create, and on update when their errors
/// changed; an update that makes `enforce` stricter is allowed, with warnings naming the
/// existing pods that would now be refused.
pub fn validate_namespace(
    api: &Apiserver,
    a: &Attributes<'_>,
    new: &Value,
    old: Option<&Value>,
) -> ApiResult<Vec<String>> {
    let labels = new.pointer("/metadata/labels");
    let errors = label_errors(labels);
    let Some(old) = old else {
        if !errors.is_empty() {
            return Err(ApiError::invalid(a.info, a.name, &errors));
        }
        return Ok(vec![]);
    };
    let old_labels = old.pointer("/metadata/labels");
    if !errors.is_empty() && errors != label_errors(old_labels) {
        return Err(ApiError::invalid(a.info, a.name, &errors));
    }
    let (enforce, was) = (policy(labels, "enforce"), policy(old_labels, "enforce"));
    let relaxed = enforce.version == was.version && enforce.level <= was.level;
    if enforce == was || enforce.level == Level::Privileged || relaxed {
        return Ok(vec![]);
    }
    Ok(evaluate_pods_in_namespace(api, a.name, &enforce))
}

/// The warnings for the pods of `ns` that `enforce` would refuse (upstream's
/// `EvaluatePodsInNamespace`): at most 3000 pods within a second, one pod of each
/// controller before the others, pods with the same violations grouped under the
/// lexically first name.
fn evaluate_pods_in_namespace(api: &Apiserver, ns: &str, enforce: &Policy) -> Vec<String> {
    let deadline = Instant::now() + NAMESPACE_POD_CHECK_TIMEOUT;
    let Ok(info) = super::resource("", "pods") else {
        return vec![];
    };
    // The watch cache, as upstream's pod informer: a pod created a moment ago may not be
    // in it yet.
    let cache = api.cache(info);
    let (pods, _) = cache.list(&object::list_prefix(info, Some(ns)));
    let pods = prioritize(pods.iter().map(|p| p.value()).collect());
    let total = pods.len();
    let mut checked = total.min(NAMESPACE_MAX_PODS_TO_CHECK);
    // Distinct reasons in the order first seen, with the first pod name and the count.
    let mut found: Vec<(String, String, usize)> = Vec::new();
    for (i, pod) in pods.iter().take(checked).enumerate() {
        let meta = pod.get("metadata").cloned().unwrap_or_default();
        let spec = pod.get("spec").cloned().unwrap_or_default();
        let violations = checks::evaluate(enforce.level, &meta, &spec);
        if !violations.is_empty() {
            let reason = violations
                .iter()
                .map(|v| v.reason.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let name = object::name(pod).unwrap_or_default();
            match found.iter_mut().find(|(r, _, _)| *r == reason) {
                Some((_, first, count)) => {
                    if name < first.as_str() {
                        *first = name.to_string();
                    }
                    *count += 1;
                }
                None => found.push((reason, name.to_string(), 1)),
            }
        }
        if Instant::now() >= deadline {
            checked = i + 1;
            break;
        }
    }
    let mut warnings = Vec::new();
    if checked < total {
        warnings.push(format!(
            "new PodSecurity enforce level only checked against the first {checked} of {total} existing pods"
        ));
    }
    if !found.is_empty() {
        warnings.push(format!(
            "existing pods in namespace {ns:?} violate the new PodSecurity enforce level \"{enforce}\""
        ));
    }
    let mut per_pod: Vec<String> = found
        .into_iter()
        .map(|(reason, first, count)| match count {
            1 => format!("{first}: {reason}"),
            2 => format!("{first} (and 1 other pod): {reason}"),
            n => format!("{first} (and {} other pods): {reason}", n - 1),
        })
        .collect();
    per_pod.sort();
    warnings.extend(per_pod);
    warnings
}

/// The pods in the order they are checked: the first pod of each controller (and every
/// pod without one) in the cache's order, then the other pods of controllers seen.
fn prioritize(pods: Vec<Value>) -> Vec<Value> {
    let mut seen = std::collections::HashSet::new();
    let (mut first, mut rest) = (Vec::with_capacity(pods.len()), Vec::new());
    for pod in pods {
        let controller = pod
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .and_then(|refs| {
                refs.iter()
                    .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
            })
            .and_then(|r| r.get("uid"))
            .and_then(Value::as_str)
            .map(String::from);
        match controller {
            Some(uid) if seen.contains(&uid) => rest.push(pod),
            Some(uid) => {
                seen.insert(uid);
                first.push(pod);
            }
            None => first.push(pod),
        }
    }
    first.extend(rest);
    first
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
        // An unknown level is restricted for enforce, and fails open for audit and warn.
        assert_eq!(
            policy(Some(&labels), "audit").to_string(),
            "privileged:latest"
        );
        let bad = json!({
            "pod-security.kubernetes.io/enforce": "strict",
            "pod-security.kubernetes.io/enforce-version": "v1.030",
            "pod-security.kubernetes.io/warn": "baseline",
            "pod-security.kubernetes.io/warn-version": "1.30",
        });
        assert_eq!(
            policy(Some(&bad), "enforce").to_string(),
            "restricted:latest"
        );
        assert_eq!(policy(Some(&bad), "warn").to_string(), "baseline:latest");
        let errors: Vec<String> = label_errors(Some(&bad))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errors,
            [
                "metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: \"strict\": must be one of privileged, baseline, restricted",
                "metadata.labels[pod-security.kubernetes.io/enforce-version]: Invalid value: \"v1.030\": must be \"latest\" or \"v1.x\"",
                "metadata.labels[pod-security.kubernetes.io/warn-version]: Invalid value: \"1.30\": must be \"latest\" or \"v1.x\"",
            ]
        );
        assert!(label_errors(Some(&labels)).len() == 1, "audit: strict");
        assert!(valid_version("v1.0") && valid_version("v1.32") && valid_version("latest"));
        assert_eq!(policy(None, "enforce").level, Level::Privileged);
        assert!(!valid_version("1.30") && !valid_version("v1.") && !valid_version("v1.05"));
        assert_eq!(
            template_path("batch", "cronjobs"),
            Some("/spec/jobTemplate/spec/template")
        );
    }

    #[test]
    fn one_pod_per_controller_is_checked_first() {
        let pod = |name: &str, controller: Option<&str>| {
            let refs = controller
                .map(|uid| json!([{ "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": uid, "controller": true }]))
                .unwrap_or(json!([]));
            json!({ "metadata": { "name": name, "ownerReferences": refs } })
        };
        let order: Vec<String> = prioritize(vec![
            pod("a", Some("rs1")),
            pod("b", Some("rs1")),
            pod("c", None),
            pod("d", Some("rs2")),
            pod("e", Some("rs1")),
        ])
        .iter()
        .map(|p| object::name(p).unwrap_or_default().to_string())
        .collect();
        assert_eq!(order, ["a", "c", "d", "b", "e"]);
    }
}
