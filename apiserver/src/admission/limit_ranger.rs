//! Upstream's `LimitRanger` admission plugin (plugin/pkg/admission/limitranger), for pod
//! and PersistentVolumeClaim writes. Mutating: every container gets the namespace's
//! LimitRanges' `Container` defaults (`default` limits, `defaultRequest` requests) for
//! the resources it leaves out, noted in the `kubernetes.io/limit-ranger` annotation.
//! Validating: containers (`Container`), the pod as a whole (`Pod`) and claims
//! (`PersistentVolumeClaim`) stay within `min`, `max` and `maxLimitRequestRatio`;
//! otherwise 403 with every violation, in upstream's words.
//!
//! Pod updates are not checked, as upstream: a pod's containers and their resources do not
//! change after create. Claim updates (a resize) are.

use super::Attributes;
use crate::object;
use crate::status::ApiResult;
use crate::Apiserver;
use api_types::quantity::Quantity;
use api_types::quota::{self, ResourceList};
use serde_json::{json, Value};

const ANNOTATION: &str = "kubernetes.io/limit-ranger";

/// The namespace's LimitRanges, by name.
async fn limit_ranges(api: &Apiserver, ns: &str) -> ApiResult<Vec<Value>> {
    let info = super::resource("", "limitranges")?;
    let cache = api.cache(info);
    cache.wait_ready().await?;
    // Listed in key order: by name.
    let (ranges, _) = cache.list(&object::list_prefix(info, Some(ns)));
    Ok(ranges.iter().map(|r| r.value()).collect())
}

/// The items of one type across the LimitRanges.
fn items<'a>(ranges: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    ranges
        .iter()
        .filter_map(|lr| lr.pointer("/spec/limits").and_then(Value::as_array))
        .flatten()
        .filter(move |item| item.get("type").and_then(Value::as_str) == Some(kind))
}

fn list(v: &Value, field: &str) -> ResourceList {
    quota::parse_list(v.get(field))
}

pub async fn admit_pod_create(api: &Apiserver, ns: &str, pod: &mut Value) -> ApiResult<()> {
    let ranges = limit_ranges(api, ns).await?;
    for item in items(&ranges, "Container") {
        apply_defaults(item, pod);
    }
    Ok(())
}

/// Sets one `Container` item's defaults on every container that lacks them.
fn apply_defaults(item: &Value, pod: &mut Value) {
    let limits = item.get("default").and_then(Value::as_object);
    let requests = item.get("defaultRequest").and_then(Value::as_object);
    if limits.is_none_or(|l| l.is_empty()) && requests.is_none_or(|r| r.is_empty()) {
        return;
    }
    let mut notes = Vec::new();
    for (list, what) in [
        ("containers", "container"),
        ("initContainers", "init container"),
    ] {
        let Some(containers) = pod
            .pointer_mut(&format!("/spec/{list}"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for c in containers {
            let name = c
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            for (defaults, field, word) in [
                (requests, "requests", "request"),
                (limits, "limits", "limit"),
            ] {
                let Some(defaults) = defaults else { continue };
                let resources = &mut c["resources"];
                if !resources.get(field).is_some_and(Value::is_object) {
                    resources[field] = json!({});
                }
                let set = resources[field]
                    .as_object_mut()
                    .expect("made an object above");
                let mut added: Vec<&str> = Vec::new();
                for (k, v) in defaults {
                    if !set.contains_key(k) {
                        set.insert(k.clone(), v.clone());
                        added.push(k);
                    }
                }
                if set.is_empty() {
                    if let Some(r) = resources.as_object_mut() {
                        r.remove(field);
                    }
                }
                if !added.is_empty() {
                    added.sort();
                    notes.push(format!("{} {word} for {what} {name}", added.join(", ")));
                }
            }
        }
    }
    if !notes.is_empty() {
        let meta = &mut pod["metadata"];
        if !meta.get("annotations").is_some_and(Value::is_object) {
            meta["annotations"] = json!({});
        }
        meta["annotations"][ANNOTATION] =
            json!(format!("LimitRanger plugin set: {}", notes.join("; ")));
    }
}

pub async fn validate_pod_create(
    api: &Apiserver,
    a: &Attributes<'_>,
    ns: &str,
    pod: &Value,
) -> ApiResult<()> {
    let ranges = limit_ranges(api, ns).await?;
    let mut errors = Vec::new();
    for item in items(&ranges, "Container") {
        for containers in ["containers", "initContainers"] {
            for c in pod
                .pointer(&format!("/spec/{containers}"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let resources = c.get("resources").cloned().unwrap_or_default();
                check(
                    "Container",
                    item,
                    &list(&resources, "requests"),
                    &list(&resources, "limits"),
                    &mut errors,
                );
            }
        }
    }
    for item in items(&ranges, "Pod") {
        let (requests, limits) = pod_totals(pod);
        check("Pod", item, &requests, &limits, &mut errors);
    }
    refuse(a, errors)
}

/// A claim's storage request against the `PersistentVolumeClaim` items, on create and on
/// update (a resize).
pub async fn validate_claim(
    api: &Apiserver,
    a: &Attributes<'_>,
    ns: &str,
    claim: &Value,
) -> ApiResult<()> {
    let ranges = limit_ranges(api, ns).await?;
    let requests = claim
        .pointer("/spec/resources")
        .map(|r| list(r, "requests"))
        .unwrap_or_default();
    let mut errors = Vec::new();
    for item in items(&ranges, "PersistentVolumeClaim") {
        for (k, min) in list(item, "min") {
            errors.extend(min_constraint(
                "PersistentVolumeClaim",
                &k,
                &min,
                &requests,
                &ResourceList::new(),
            ));
        }
        for (k, max) in list(item, "max") {
            let req = requests.get(&k);
            errors.extend(match req {
                None => Some(format!("maximum {k} usage per PersistentVolumeClaim is {max}.  No request is specified")),
                Some(r) if r.milli_value() > max.milli_value() => Some(format!(
                    "maximum {k} usage per PersistentVolumeClaim is {max}, but request is {r}"
                )),
                Some(_) => None,
            });
        }
    }
    refuse(a, errors)
}

/// Upstream's aggregate error: one message as is, several in brackets; duplicates once.
fn refuse(a: &Attributes<'_>, mut errors: Vec<String>) -> ApiResult<()> {
    let mut seen = std::collections::HashSet::new();
    errors.retain(|e| seen.insert(e.clone()));
    match errors.len() {
        0 => Ok(()),
        1 => Err(a.forbidden(&errors[0])),
        _ => Err(a.forbidden(format!("[{}]", errors.join(", ")))),
    }
}

/// The pod's requests and limits: the containers' sum, or an init container's if larger
/// (init containers run one at a time, before the others), plus the pod's overhead.
fn pod_totals(pod: &Value) -> (ResourceList, ResourceList) {
    let mut totals = (ResourceList::new(), ResourceList::new());
    let containers = |list: &str| -> Vec<Value> {
        pod.pointer(&format!("/spec/{list}"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    for c in containers("containers") {
        let r = c.get("resources").cloned().unwrap_or_default();
        totals.0 = quota::add(&totals.0, &list(&r, "requests"));
        totals.1 = quota::add(&totals.1, &list(&r, "limits"));
    }
    for c in containers("initContainers") {
        let r = c.get("resources").cloned().unwrap_or_default();
        for (total, field) in [(&mut totals.0, "requests"), (&mut totals.1, "limits")] {
            for (k, v) in list(&r, field) {
                let entry = total.entry(k).or_insert(v);
                if v > *entry {
                    *entry = v;
                }
            }
        }
    }
    if let Some(overhead) = pod.pointer("/spec/overhead") {
        let overhead = quota::parse_list(Some(overhead));
        totals.0 = quota::add(&totals.0, &overhead);
        totals.1 = quota::add(&totals.1, &overhead);
    }
    totals
}

/// One item's min, max and maxLimitRequestRatio against requests and limits.
fn check(
    kind: &str,
    item: &Value,
    requests: &ResourceList,
    limits: &ResourceList,
    errors: &mut Vec<String>,
) {
    for (k, min) in list(item, "min") {
        errors.extend(min_constraint(kind, &k, &min, requests, limits));
    }
    for (k, max) in list(item, "max") {
        errors.extend(max_constraint(kind, &k, &max, requests, limits));
    }
    for (k, ratio) in list(item, "maxLimitRequestRatio") {
        errors.extend(ratio_constraint(kind, &k, &ratio, requests, limits));
    }
}

fn min_constraint(
    kind: &str,
    k: &str,
    min: &Quantity,
    requests: &ResourceList,
    limits: &ResourceList,
) -> Option<String> {
    let Some(req) = requests.get(k) else {
        return Some(format!(
            "minimum {k} usage per {kind} is {min}.  No request is specified"
        ));
    };
    if req.milli_value() < min.milli_value() {
        return Some(format!(
            "minimum {k} usage per {kind} is {min}, but request is {req}"
        ));
    }
    match limits.get(k) {
        Some(lim) if lim.milli_value() < min.milli_value() => Some(format!(
            "minimum {k} usage per {kind} is {min}, but limit is {lim}"
        )),
        _ => None,
    }
}

fn max_constraint(
    kind: &str,
    k: &str,
    max: &Quantity,
    requests: &ResourceList,
    limits: &ResourceList,
) -> Option<String> {
    let Some(lim) = limits.get(k) else {
        return Some(format!(
            "maximum {k} usage per {kind} is {max}.  No limit is specified"
        ));
    };
    if lim.milli_value() > max.milli_value() {
        return Some(format!(
            "maximum {k} usage per {kind} is {max}, but limit is {lim}"
        ));
    }
    match requests.get(k) {
        Some(req) if req.milli_value() > max.milli_value() => Some(format!(
            "maximum {k} usage per {kind} is {max}, but request is {req}"
        )),
        _ => None,
    }
}

fn ratio_constraint(
    kind: &str,
    k: &str,
    ratio: &Quantity,
    requests: &ResourceList,
    limits: &ResourceList,
) -> Option<String> {
    let req = requests.get(k).map(Quantity::milli_value).unwrap_or(0);
    if req == 0 {
        return Some(format!(
            "{k} max limit to request ratio per {kind} is {ratio}, but no request is specified or request is 0"
        ));
    }
    let lim = limits.get(k).map(Quantity::milli_value).unwrap_or(0);
    if lim == 0 {
        return Some(format!(
            "{k} max limit to request ratio per {kind} is {ratio}, but no limit is specified or limit is 0"
        ));
    }
    let observed = lim as f64 / req as f64;
    (observed * 1000.0 > ratio.milli_value() as f64).then(|| {
        format!("{k} max limit to request ratio per {kind} is {ratio}, but provided ratio is {observed:.6}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rl(v: Value) -> ResourceList {
        quota::parse_list(Some(&v))
    }

    #[test]
    fn defaults_fill_only_what_a_container_leaves_out() {
        let item = json!({ "type": "Container", "default": { "cpu": "500m", "memory": "256Mi" }, "defaultRequest": { "cpu": "100m", "memory": "128Mi" } });
        let mut pod = json!({ "metadata": { "name": "p" }, "spec": {
            "containers": [{ "name": "web", "resources": { "limits": { "memory": "1Gi" }, "requests": { "memory": "1Gi" } } }],
            "initContainers": [{ "name": "init" }],
        }});
        apply_defaults(&item, &mut pod);
        assert_eq!(
            pod["spec"]["containers"][0]["resources"],
            json!({ "limits": { "memory": "1Gi", "cpu": "500m" }, "requests": { "memory": "1Gi", "cpu": "100m" } })
        );
        assert_eq!(
            pod["spec"]["initContainers"][0]["resources"],
            json!({ "limits": { "cpu": "500m", "memory": "256Mi" }, "requests": { "cpu": "100m", "memory": "128Mi" } })
        );
        assert_eq!(
            pod["metadata"]["annotations"][ANNOTATION],
            "LimitRanger plugin set: cpu request for container web; cpu limit for container web; cpu, memory request for init container init; cpu, memory limit for init container init"
        );
    }

    #[test]
    fn constraints_speak_upstream() {
        let item = json!({ "type": "Container", "min": { "cpu": "100m" }, "max": { "cpu": "1", "memory": "1Gi" }, "maxLimitRequestRatio": { "cpu": "4" } });
        let mut errors = Vec::new();
        check(
            "Container",
            &item,
            &rl(json!({ "cpu": "250m" })),
            &rl(json!({ "cpu": "2" })),
            &mut errors,
        );
        assert_eq!(
            errors,
            [
                "maximum cpu usage per Container is 1, but limit is 2",
                "maximum memory usage per Container is 1Gi.  No limit is specified",
                "cpu max limit to request ratio per Container is 4, but provided ratio is 8.000000",
            ]
        );
        let mut errors = Vec::new();
        check(
            "Container",
            &item,
            &rl(json!({ "cpu": "50m", "memory": "1Gi" })),
            &rl(json!({ "cpu": "100m", "memory": "1Gi" })),
            &mut errors,
        );
        assert_eq!(
            errors,
            ["minimum cpu usage per Container is 100m, but request is 50m"]
        );
        let mut errors = Vec::new();
        check(
            "Container",
            &item,
            &ResourceList::new(),
            &rl(json!({ "cpu": "1", "memory": "1Gi" })),
            &mut errors,
        );
        assert_eq!(
            errors,
            [
                "minimum cpu usage per Container is 100m.  No request is specified",
                "cpu max limit to request ratio per Container is 4, but no request is specified or request is 0",
            ]
        );
    }

    #[test]
    fn a_pod_totals_its_containers_and_its_largest_init_container() {
        let pod = json!({ "spec": {
            "containers": [
                { "resources": { "requests": { "cpu": "200m" }, "limits": { "cpu": "400m" } } },
                { "resources": { "requests": { "cpu": "300m" } } },
            ],
            "initContainers": [{ "resources": { "requests": { "cpu": "1" }, "limits": { "cpu": "300m" } } }],
        }});
        let (requests, limits) = pod_totals(&pod);
        assert_eq!(requests["cpu"].to_string(), "1");
        assert_eq!(limits["cpu"].to_string(), "400m");
    }
}
