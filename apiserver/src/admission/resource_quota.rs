//! Upstream's `ResourceQuota` admission plugin (plugin/pkg/admission/resourcequota): a
//! create in a namespace with ResourceQuotas is refused (403) when it would take a quota's
//! usage past its hard limits, and otherwise charged to the quota's `status.used` in etcd
//! before the object is stored, with a compare-and-swap on the quota so concurrent
//! creates cannot both take the last unit. The kube-controller-manager's resourcequota
//! controller computes `status.used` from what exists (and corrects any charge whose
//! create then failed).
//!
//! Creates only: updates that change usage (a Service's type, a claim's size) are
//! counted when the controller recomputes.

use super::Attributes;
use crate::object;
use crate::rest;
use crate::status::{ApiError, ApiResult};
use crate::Apiserver;
use api_types::quota::{self, ResourceList};
use serde_json::Value;

/// Compare-and-swap attempts on one quota before giving up (upstream retries too).
const ATTEMPTS: usize = 10;

fn hard_of(q: &Value) -> ResourceList {
    quota::parse_list(q.pointer("/spec/hard"))
}

fn used_of(q: &Value) -> Option<ResourceList> {
    q.pointer("/status/used")
        .map(|u| quota::parse_list(Some(u)))
}

pub async fn validate_create(
    api: &Apiserver,
    a: &Attributes<'_>,
    ns: &str,
    obj: &Value,
    dry_run: bool,
) -> ApiResult<()> {
    let info = super::resource("", "resourcequotas")?;
    let cache = api.cache(info);
    cache.wait_ready().await?;
    let (quotas, _) = cache.list(&object::list_prefix(info, Some(ns)));
    if quotas.is_empty() {
        return Ok(());
    }
    let quotas: Vec<Value> = quotas.iter().map(|q| q.value()).collect();
    let usage = quota::usage(a.info.group, a.info.plural, obj);
    let mut names: Vec<String> = quotas
        .iter()
        .filter(|q| {
            let spec = q.get("spec").cloned().unwrap_or_default();
            quota::scopes_match(&spec, a.info.plural, a.info.group, obj)
                && hard_of(q).keys().any(|k| usage.contains_key(k))
        })
        .filter_map(|q| object::name(q).map(String::from))
        .collect();
    names.sort();
    // Check every quota before charging any.
    for q in quotas
        .iter()
        .filter(|q| object::name(q).is_some_and(|n| names.iter().any(|m| m == n)))
    {
        let name = object::name(q).unwrap_or_default();
        let hard = hard_of(q);
        if a.is("", "pods") {
            if let Some(missing) = quota::missing_pod_constraints(&hard, obj) {
                return Err(a.forbidden(format!("failed quota: {name}: {missing}")));
            }
        }
        if let Some(why) = quota::check(name, &hard, used_of(q).as_ref(), &usage) {
            return Err(a.forbidden(why));
        }
    }
    if dry_run {
        return Ok(());
    }
    for name in names {
        charge(api, a, info, ns, &name, &usage).await?;
    }
    Ok(())
}

/// Adds `usage` to the quota's `status.used`, re-checking against the stored quota.
async fn charge(
    api: &Apiserver,
    a: &Attributes<'_>,
    info: &'static api_types::resources::ResourceInfo,
    ns: &str,
    name: &str,
    usage: &ResourceList,
) -> ApiResult<()> {
    let key = object::key(info, Some(ns), name);
    for _ in 0..ATTEMPTS {
        let Some(kv) = api.store.get(&key).await? else {
            // Deleted meanwhile: nothing to charge.
            return Ok(());
        };
        let mut stored = rest::decode_stored(api, info, &kv)?;
        let hard = hard_of(&stored);
        let used = used_of(&stored);
        if let Some(why) = quota::check(name, &hard, used.as_ref(), usage) {
            return Err(a.forbidden(why));
        }
        let charged: ResourceList = usage
            .iter()
            .filter(|(k, _)| hard.contains_key(*k))
            .map(|(k, q)| (k.clone(), *q))
            .collect();
        let total = quota::add(&used.unwrap_or_default(), &charged);
        stored["status"]["used"] = quota::to_json(&total);
        match api
            .store
            .update(
                &key,
                rest::encode_stored(api, info, &mut stored)?,
                kv.mod_revision,
            )
            .await
        {
            Ok(_) => return Ok(()),
            Err(store::Error::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::internal(format!(
        "resource quota {name}: too many concurrent updates, try again"
    )))
}
