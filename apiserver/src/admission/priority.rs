//! Upstream's `Priority` admission plugin (plugin/pkg/admission/priority): a new Pod's
//! `spec.priority` and `spec.preemptionPolicy` come from its PriorityClass, or from the
//! global default class when it names none; and at most one class is the global default.

use super::Attributes;
use crate::object;
use crate::rest;
use crate::status::ApiResult;
use crate::Apiserver;
use serde_json::{json, Value};

/// A Pod's priority when it names no class and no class is the global default (upstream's
/// `DefaultPriorityWhenNoDefaultClassExists`).
const DEFAULT_PRIORITY: i64 = 0;
const DEFAULT_PREEMPTION_POLICY: &str = "PreemptLowerPriority";

fn value(pc: &Value) -> i64 {
    pc.get("value").and_then(Value::as_i64).unwrap_or(0)
}

fn is_global_default(pc: &Value) -> bool {
    pc.get("globalDefault").and_then(Value::as_bool) == Some(true)
}

/// A class's policy; one stored without (never defaulted) preempts, as the defaulting would.
fn preemption_policy(pc: &Value) -> &str {
    pc.get("preemptionPolicy")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_PREEMPTION_POLICY)
}

/// The class of that name: from the cache, else from etcd (another apiserver may have
/// created it a moment ago).
async fn priority_class(api: &Apiserver, name: &str) -> ApiResult<Option<Value>> {
    let info = super::resource("scheduling.k8s.io", "priorityclasses")?;
    let key = object::key(info, None, name);
    if let Some(pc) = api.cache(info).get(&key) {
        return Ok(Some(pc.value()));
    }
    Ok(match api.store.get(&key).await? {
        Some(kv) => Some(rest::decode_stored(api, info, &kv)?),
        None => None,
    })
}

/// The global default class; should a race have made several, the one of lowest value, as
/// upstream.
async fn default_priority_class(api: &Apiserver) -> ApiResult<Option<Value>> {
    let info = super::resource("scheduling.k8s.io", "priorityclasses")?;
    let cache = api.cache(info);
    cache.wait_ready().await?;
    let (classes, _) = cache.list(&object::resource_prefix(info));
    Ok(classes
        .into_iter()
        .map(|pc| pc.value())
        .filter(is_global_default)
        .min_by_key(value))
}

/// Resolves a new Pod's priority. A priority or preemption policy the client set must
/// equal the resolved one.
pub async fn admit_pod_create(
    api: &Apiserver,
    a: &Attributes<'_>,
    pod: &mut Value,
) -> ApiResult<()> {
    // A Pod without a spec object is refused by validation.
    if !pod.get("spec").is_some_and(Value::is_object) {
        return Ok(());
    }
    let named = pod
        .pointer("/spec/priorityClassName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(String::from);
    let (class_name, priority, policy) = match named {
        Some(name) => {
            let pc = priority_class(api, &name).await?.ok_or_else(|| {
                a.forbidden(format!("no PriorityClass with name {name} was found"))
            })?;
            (name, value(&pc), preemption_policy(&pc).to_string())
        }
        None => match default_priority_class(api).await? {
            Some(pc) => (
                object::name(&pc).unwrap_or_default().to_string(),
                value(&pc),
                preemption_policy(&pc).to_string(),
            ),
            None => (
                String::new(),
                DEFAULT_PRIORITY,
                DEFAULT_PREEMPTION_POLICY.to_string(),
            ),
        },
    };
    if let Some(given) = pod.pointer("/spec/priority").filter(|v| !v.is_null()) {
        if given.as_i64() != Some(priority) {
            return Err(a.forbidden(format!(
                "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {priority} from the given PriorityClass name"
            )));
        }
    }
    if let Some(given) = pod
        .pointer("/spec/preemptionPolicy")
        .and_then(Value::as_str)
    {
        if given != policy {
            return Err(a.forbidden(format!(
                "the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name"
            )));
        }
    }
    let spec = &mut pod["spec"];
    if !class_name.is_empty() {
        spec["priorityClassName"] = json!(class_name);
    }
    spec["priority"] = json!(priority);
    spec["preemptionPolicy"] = json!(policy);
    Ok(())
}

/// An update that leaves out the priority or preemption policy keeps the stored ones
/// (validation refuses any other change of them).
pub fn admit_pod_update(new: &mut Value, old: &Value) {
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    for field in ["priority", "preemptionPolicy"] {
        if spec.get(field).is_none_or(Value::is_null) {
            if let Some(v) = old.get("spec").and_then(|s| s.get(field)) {
                spec.insert(field.into(), v.clone());
            }
        }
    }
}

/// At most one class is the global default: a create, or an update of another class,
/// marking one while a default exists is refused.
pub async fn validate_priority_class(
    api: &Apiserver,
    a: &Attributes<'_>,
    pc: &Value,
    update: bool,
) -> ApiResult<()> {
    if !is_global_default(pc) {
        return Ok(());
    }
    if let Some(existing) = default_priority_class(api).await? {
        let existing = object::name(&existing).unwrap_or_default();
        if !update || existing != a.name {
            return Err(a.forbidden(format!(
                "PriorityClass {existing} is already marked as default. Only one default can exist"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_without_priority_keeps_the_stored_one() {
        let old = json!({ "spec": { "priority": 100, "preemptionPolicy": "Never" } });
        let mut new = json!({ "spec": { "priority": null } });
        admit_pod_update(&mut new, &old);
        assert_eq!(new, old);

        // A changed value stays, for validation to refuse.
        let mut changed = json!({ "spec": { "priority": 5 } });
        admit_pod_update(&mut changed, &old);
        assert_eq!(
            changed,
            json!({ "spec": { "priority": 5, "preemptionPolicy": "Never" } })
        );
    }
}
