//! ResourceQuota arithmetic shared by the apiserver's admission and the
//! controller-manager's resourcequota controller (upstream's pkg/quota/v1 evaluators):
//! what one object uses, whether a quota's scopes cover it, and how a request compares
//! with a quota's hard limits and recorded usage.
//!
//! Objects are read as JSON (both callers have it); quantities are [`Quantity`].
//!
//! Names used (upstream's): `count/<plural>[.<group>]` for every kind; `pods`,
//! `services`, `services.nodeports`, `services.loadbalancers`, `configmaps`, `secrets`,
//! `replicationcontrollers`, `resourcequotas`, `persistentvolumeclaims`; for pods
//! `requests.cpu|memory|ephemeral-storage` (`cpu`, `memory`, `ephemeral-storage` are the
//! same), `limits.cpu|memory|ephemeral-storage` and `requests.<extended resource>`; for
//! claims `requests.storage` and `<class>.storageclass.storage.k8s.io/requests.storage`
//! and `.../persistentvolumeclaims`.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::quantity::{Format, Quantity};

/// A set of named quantities (upstream's `ResourceList`).
pub type ResourceList = BTreeMap<String, Quantity>;

/// The kinds with a legacy (un-prefixed) object-count name.
const LEGACY_COUNTS: &[&str] = &[
    "pods",
    "services",
    "configmaps",
    "secrets",
    "replicationcontrollers",
    "resourcequotas",
    "persistentvolumeclaims",
];

/// Pod resources quota tracks both as requests and limits.
const COMPUTE: &[&str] = &["cpu", "memory", "ephemeral-storage"];

fn one() -> Quantity {
    Quantity::from_units(1, Format::DecimalSI)
}

/// `count/<plural>` for the core group, `count/<plural>.<group>` otherwise.
pub fn count_name(group: &str, plural: &str) -> String {
    if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    }
}

/// Parses a `{name: quantity}` JSON map; entries that do not parse are skipped.
pub fn parse_list(v: Option<&Value>) -> ResourceList {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, q)| Some((k.clone(), q.as_str()?.parse().ok()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// A `ResourceList` as JSON, quantities in canonical form.
pub fn to_json(list: &ResourceList) -> Value {
    Value::Object(
        list.iter()
            .map(|(k, q)| (k.clone(), Value::String(q.to_canonical_string())))
            .collect(),
    )
}

fn add_to(list: &mut ResourceList, name: &str, q: Quantity) {
    match list.get_mut(name) {
        Some(have) => *have = have.checked_add(&q).unwrap_or(*have),
        None => {
            list.insert(name.to_string(), q);
        }
    }
}

/// `a + b`, name by name.
pub fn add(a: &ResourceList, b: &ResourceList) -> ResourceList {
    let mut out = a.clone();
    for (k, q) in b {
        add_to(&mut out, k, *q);
    }
    out
}

/// Whether a pod still uses quota: not Succeeded or Failed (upstream's `QuotaV1Pod`;
/// a pod past its deletion grace period also stops counting, which the kubelet's
/// removal reaches soon after).
pub fn pod_counts(pod: &Value) -> bool {
    !matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    )
}

/// Upstream's `PodRequests`/`PodLimits` for one of `requests`/`limits`: the larger of the
/// containers' sum (sidecars included) and each init container's need at its turn,
/// plus the pod overhead.
fn pod_amounts(pod: &Value, which: &str) -> ResourceList {
    let amounts = |c: &Value| parse_list(c.pointer(&format!("/resources/{which}")));
    let spec = pod.get("spec");
    let list = |field: &str| -> Vec<Value> {
        spec.and_then(|s| s.get(field))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let mut sum = ResourceList::new();
    for c in list("containers") {
        sum = add(&sum, &amounts(&c));
    }
    let mut sidecars = ResourceList::new();
    let mut init_max = ResourceList::new();
    for c in list("initContainers") {
        let restartable = c.get("restartPolicy").and_then(Value::as_str) == Some("Always");
        if restartable {
            sidecars = add(&sidecars, &amounts(&c));
            sum = add(&sum, &amounts(&c));
        }
        // An init container runs beside the sidecars started before it.
        let at_turn = if restartable {
            sidecars.clone()
        } else {
            add(&sidecars, &amounts(&c))
        };
        for (k, q) in at_turn {
            if init_max.get(&k).is_none_or(|have| q > *have) {
                init_max.insert(k, q);
            }
        }
    }
    for (k, q) in init_max {
        if sum.get(&k).is_none_or(|have| q > *have) {
            sum.insert(k, q);
        }
    }
    if let Some(overhead) = spec.and_then(|s| s.get("overhead")) {
        sum = add(&sum, &parse_list(Some(overhead)));
    }
    sum
}

/// What one object of `group`/`plural` uses (upstream's evaluators' `Usage`).
pub fn usage(group: &str, plural: &str, obj: &Value) -> ResourceList {
    let mut out = ResourceList::new();
    out.insert(count_name(group, plural), one());
    if group.is_empty() && LEGACY_COUNTS.contains(&plural) {
        if plural == "pods" && !pod_counts(obj) {
            return out;
        }
        out.insert(plural.to_string(), one());
    }
    match (group, plural) {
        ("", "pods") => {
            for (k, q) in pod_amounts(obj, "requests") {
                if COMPUTE.contains(&k.as_str()) {
                    out.insert(k.clone(), q);
                }
                out.insert(format!("requests.{k}"), q);
            }
            for (k, q) in pod_amounts(obj, "limits") {
                if COMPUTE.contains(&k.as_str()) {
                    out.insert(format!("limits.{k}"), q);
                }
            }
        }
        ("", "services") => {
            let type_ = obj
                .pointer("/spec/type")
                .and_then(Value::as_str)
                .unwrap_or("ClusterIP");
            let ports = obj
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map_or(0, Vec::len) as i64;
            if type_ == "LoadBalancer" {
                out.insert("services.loadbalancers".into(), one());
            }
            let node_ports = match type_ {
                "NodePort" => ports,
                "LoadBalancer"
                    if obj
                        .pointer("/spec/allocateLoadBalancerNodePorts")
                        .and_then(Value::as_bool)
                        != Some(false) =>
                {
                    ports
                }
                _ => 0,
            };
            out.insert(
                "services.nodeports".into(),
                Quantity::from_units(node_ports, Format::DecimalSI),
            );
        }
        ("", "persistentvolumeclaims") => {
            let request = parse_list(obj.pointer("/spec/resources/requests"))
                .get("storage")
                .copied()
                .unwrap_or_else(|| Quantity::from_units(0, Format::BinarySI));
            out.insert("requests.storage".into(), request);
            let class = obj
                .pointer("/metadata/annotations/volume.beta.kubernetes.io~1storage-class")
                .or_else(|| obj.pointer("/spec/storageClassName"))
                .and_then(Value::as_str)
                .unwrap_or("");
            if !class.is_empty() {
                let prefix = format!("{class}.storageclass.storage.k8s.io/");
                out.insert(format!("{prefix}requests.storage"), request);
                out.insert(format!("{prefix}persistentvolumeclaims"), one());
            }
        }
        _ => {}
    }
    out
}

/// Whether a quota (its `spec`) covers a pod through its scopes; quotas with scopes
/// cover nothing but pods.
pub fn scopes_match(quota_spec: &Value, plural: &str, group: &str, obj: &Value) -> bool {
    let mut scopes: Vec<(String, String, Vec<String>)> = quota_spec
        .get("scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|s| (s.to_string(), "Exists".to_string(), Vec::new()))
        .collect();
    for e in quota_spec
        .pointer("/scopeSelector/matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let field = |f: &str| e.get(f).and_then(Value::as_str).unwrap_or("").to_string();
        let values = e
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect();
        scopes.push((field("scopeName"), field("operator"), values));
    }
    if scopes.is_empty() {
        return true;
    }
    if !(group.is_empty() && plural == "pods") {
        return false;
    }
    scopes
        .iter()
        .all(|(scope, op, values)| pod_in_scope(obj, scope, op, values))
}

fn pod_in_scope(pod: &Value, scope: &str, op: &str, values: &[String]) -> bool {
    let holds = match scope {
        "Terminating" => pod
            .pointer("/spec/activeDeadlineSeconds")
            .and_then(Value::as_i64)
            .is_some_and(|s| s >= 0),
        "NotTerminating" => pod
            .pointer("/spec/activeDeadlineSeconds")
            .and_then(Value::as_i64)
            .is_none_or(|s| s < 0),
        "BestEffort" => is_best_effort(pod),
        "NotBestEffort" => !is_best_effort(pod),
        "PriorityClass" => {
            let class = pod
                .pointer("/spec/priorityClassName")
                .and_then(Value::as_str);
            return match op {
                "In" => class.is_some_and(|c| values.iter().any(|v| v == c)),
                "NotIn" => class.is_none_or(|c| !values.iter().any(|v| v == c)),
                "DoesNotExist" => class.is_none_or(str::is_empty),
                _ => class.is_some_and(|c| !c.is_empty()),
            };
        }
        // Scopes pikube does not know (e.g. CrossNamespacePodAffinity) match nothing.
        _ => false,
    };
    if op == "DoesNotExist" {
        !holds
    } else {
        holds
    }
}

/// No container asks for or limits cpu or memory (upstream's BestEffort QoS).
fn is_best_effort(pod: &Value) -> bool {
    let containers = ["containers", "initContainers"].into_iter().flat_map(|f| {
        pod.pointer(&format!("/spec/{f}"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    });
    containers.into_iter().all(|c| {
        ["requests", "limits"].iter().all(|w| {
            let l = parse_list(c.pointer(&format!("/resources/{w}")));
            !l.contains_key("cpu") && !l.contains_key("memory")
        })
    })
}

/// Why a quota refuses a new object with `usage` (upstream's `CheckRequest`, the message
/// after "forbidden: "), or None when it fits. `hard` and `used` are the quota's.
pub fn check(
    name: &str,
    hard: &ResourceList,
    used: Option<&ResourceList>,
    usage: &ResourceList,
) -> Option<String> {
    let requested: ResourceList = usage
        .iter()
        .filter(|(k, _)| hard.contains_key(*k))
        .map(|(k, q)| (k.clone(), *q))
        .collect();
    if requested.is_empty() {
        return None;
    }
    let unknown: Vec<&str> = requested
        .keys()
        .filter(|k| used.is_none_or(|u| !u.contains_key(*k)))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Some(format!(
            "status unknown for quota: {name}, resources: {}",
            unknown.join(",")
        ));
    }
    let used = used.cloned().unwrap_or_default();
    let mut over = Vec::new();
    for (k, q) in &requested {
        let now = used[k].checked_add(q).unwrap_or(used[k]);
        if now > hard[k] {
            over.push(k.clone());
        }
    }
    if over.is_empty() {
        return None;
    }
    let render = |l: &ResourceList| {
        over.iter()
            .map(|k| {
                format!(
                    "{k}={}",
                    l.get(k)
                        .map(Quantity::to_canonical_string)
                        .unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    Some(format!(
        "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
        render(&requested),
        render(&used),
        render(hard)
    ))
}

/// Upstream's pod evaluator `Constraints`: a pod must state each compute resource a
/// quota limits, in every container. The message names what is missing.
pub fn missing_pod_constraints(hard: &ResourceList, pod: &Value) -> Option<String> {
    let mut missing = Vec::new();
    for (key, which, resource) in [
        ("requests.cpu", "requests", "cpu"),
        ("cpu", "requests", "cpu"),
        ("requests.memory", "requests", "memory"),
        ("memory", "requests", "memory"),
        ("limits.cpu", "limits", "cpu"),
        ("limits.memory", "limits", "memory"),
    ] {
        if !hard.contains_key(key) {
            continue;
        }
        let containers = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let names: Vec<String> = containers
            .iter()
            .filter(|c| {
                !parse_list(c.pointer(&format!("/resources/{which}"))).contains_key(resource)
            })
            .filter_map(|c| c.get("name").and_then(Value::as_str).map(String::from))
            .collect();
        let what = format!("{which}.{resource}");
        if !names.is_empty()
            && !missing
                .iter()
                .any(|(w, _): &(String, Vec<String>)| *w == what)
        {
            missing.push((what, names));
        }
    }
    (!missing.is_empty()).then(|| {
        missing
            .iter()
            .map(|(w, names)| format!("must specify {w} for: {}", names.join(",")))
            .collect::<Vec<_>>()
            .join("; ")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(s: &str) -> Quantity {
        s.parse().unwrap()
    }

    fn list(pairs: &[(&str, &str)]) -> ResourceList {
        pairs.iter().map(|(k, v)| (k.to_string(), q(v))).collect()
    }

    #[test]
    fn pod_usage_sums_containers_and_takes_the_largest_init_container() {
        let pod = json!({"spec": {
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                    "limits": {"cpu": "200m", "memory": "128Mi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "150m"}}},
            ],
            "initContainers": [
                {"name": "init", "resources": {"requests": {"cpu": "1", "memory": "32Mi"}}},
            ],
            "overhead": {"memory": "10Mi"},
        }});
        let u = usage("", "pods", &pod);
        assert_eq!(u["pods"], q("1"));
        assert_eq!(u["count/pods"], q("1"));
        assert_eq!(u["requests.cpu"], q("1"));
        assert_eq!(u["cpu"], q("1"));
        assert_eq!(u["requests.memory"], q("74Mi"));
        assert_eq!(u["limits.cpu"], q("200m"));
        // A finished pod only counts as an object.
        let mut done = pod.clone();
        done["status"] = json!({"phase": "Succeeded"});
        assert_eq!(usage("", "pods", &done), list(&[("count/pods", "1")]));
    }

    #[test]
    fn services_claims_and_other_kinds() {
        let svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 443}]}});
        let u = usage("", "services", &svc);
        assert_eq!(u["services"], q("1"));
        assert_eq!(u["services.nodeports"], q("2"));
        assert!(!u.contains_key("services.loadbalancers"));
        let pvc = json!({"spec": {"storageClassName": "fast",
            "resources": {"requests": {"storage": "5Gi"}}}});
        let u = usage("", "persistentvolumeclaims", &pvc);
        assert_eq!(u["requests.storage"], q("5Gi"));
        assert_eq!(
            u["fast.storageclass.storage.k8s.io/requests.storage"],
            q("5Gi")
        );
        let u = usage("apps", "deployments", &json!({}));
        assert_eq!(u, list(&[("count/deployments.apps", "1")]));
    }

    #[test]
    fn scopes_select_pods() {
        let best_effort = json!({"spec": {"containers": [{"name": "a"}]}});
        let burstable = json!({"spec": {"containers": [{"name": "a",
            "resources": {"requests": {"cpu": "1"}}}], "activeDeadlineSeconds": 30,
            "priorityClassName": "high"}});
        let be = json!({"scopes": ["BestEffort"]});
        assert!(scopes_match(&be, "pods", "", &best_effort));
        assert!(!scopes_match(&be, "pods", "", &burstable));
        assert!(!scopes_match(&be, "services", "", &json!({})));
        let term = json!({"scopes": ["Terminating", "NotBestEffort"]});
        assert!(scopes_match(&term, "pods", "", &burstable));
        let high = json!({"scopeSelector": {"matchExpressions": [
            {"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}});
        assert!(scopes_match(&high, "pods", "", &burstable));
        assert!(!scopes_match(&high, "pods", "", &best_effort));
        assert!(scopes_match(&json!({}), "secrets", "", &json!({})));
    }

    #[test]
    fn check_refuses_what_exceeds_hard_limits_with_upstreams_message() {
        let hard = list(&[("pods", "2"), ("requests.cpu", "1")]);
        let used = list(&[("pods", "2"), ("requests.cpu", "500m")]);
        let want = list(&[("pods", "1"), ("requests.cpu", "250m"), ("count/pods", "1")]);
        assert_eq!(
            check("compute", &hard, Some(&used), &want).unwrap(),
            "exceeded quota: compute, requested: pods=1, used: pods=2, limited: pods=2"
        );
        let used = list(&[("pods", "1"), ("requests.cpu", "500m")]);
        assert_eq!(check("compute", &hard, Some(&used), &want), None);
        assert!(check("compute", &hard, None, &want)
            .unwrap()
            .starts_with("status unknown for quota: compute"));
        // Nothing it limits: no opinion.
        assert_eq!(check("x", &list(&[("secrets", "1")]), None, &want), None);
        let pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b",
            "resources": {"limits": {"cpu": "1"}}}]}});
        assert_eq!(
            missing_pod_constraints(&list(&[("limits.cpu", "2")]), &pod).unwrap(),
            "must specify limits.cpu for: a"
        );
    }
}
