//! Upstream's `NamespaceLifecycle` for creates: new content only in existing namespaces
//! that are not being terminated.

use super::Attributes;
use crate::object;
use crate::registry::core::namespaces;
use crate::rest;
use crate::status::{ApiError, ApiResult};
use crate::Apiserver;
use serde_json::{json, Value};

pub async fn admit_create(api: &Apiserver, a: &Attributes<'_>, namespace: &str) -> ApiResult<()> {
    let ns_info = super::resource("", "namespaces")?;
    let key = object::key(ns_info, None, namespace);
    let ns: Option<Value> = match api.cache(ns_info).get(&key) {
        Some(ns) => Some(ns.value()),
        None => match api.store.get(&key).await? {
            Some(kv) => Some(rest::decode_stored(api, ns_info, &kv)?),
            None => None,
        },
    };
    match ns {
        None => Err(ApiError::not_found(ns_info, namespace)),
        Some(ns) if namespaces::is_terminating(&ns) => Err(ApiError::new(
            403,
            "Forbidden",
            format!(
                "{} \"{}\" is forbidden: unable to create new content in namespace {} because it is being terminated",
                a.info.group_resource(),
                a.name,
                namespace
            ),
        )
        .with_details(json!({ "name": a.name, "kind": a.info.plural, "causes": [{ "reason": "NamespaceTerminating", "message": format!("namespace {namespace} is being terminated"), "field": "metadata.namespace" }] }))),
        Some(_) => Ok(()),
    }
}
