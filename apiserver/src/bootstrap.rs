//! What exists from the first start: the default RBAC roles and bindings
//! ([`crate::authz::bootstrap_policy`]), the system namespaces, the system PriorityClasses,
//! and the `kubernetes` Service in `default` with Endpoints and an EndpointSlice listing
//! the live apiservers ([`crate::endpoint_reconciler`]). Service allocations are rebuilt from storage before the first request.

use crate::object;
use crate::request::{Query, ResourceRequest};
use crate::rest;
use crate::status::{ApiError, ApiResult};
use crate::Apiserver;
use api_types::resources::{self, ResourceInfo};
use serde_json::{json, Value};
use std::sync::Arc;

const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

fn info(group: &str, plural: &str) -> ApiResult<&'static ResourceInfo> {
    resources::find(group, "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} not registered")))
}

fn req(
    info: &'static ResourceInfo,
    namespace: Option<&str>,
    name: Option<&str>,
) -> ResourceRequest {
    ResourceRequest {
        info,
        namespace: namespace.map(String::from),
        name: name.map(String::from),
        subresource: None,
    }
}

/// Creates the object unless it exists; an existing one is left as it is.
async fn ensure(api: &Apiserver, r: &ResourceRequest, obj: Value) -> ApiResult<()> {
    let name = object::name(&obj).unwrap_or("").to_string();
    let key = object::key(r.info, r.namespace.as_deref(), &name);
    if api.store.get(&key).await?.is_some() {
        return Ok(());
    }
    match rest::create(api, r, &Query::default(), obj, &[]).await {
        Ok(_) => Ok(()),
        Err(e) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates a default RBAC object when missing, else adds what it lacks (when it keeps
/// upstream's autoupdate annotation).
async fn ensure_policy(api: &Apiserver, info: &'static ResourceInfo, obj: Value) -> ApiResult<()> {
    let name = object::name(&obj).unwrap_or("").to_string();
    let namespace = object::namespace(&obj).map(String::from);
    let ns = namespace.as_deref();
    let key = object::key(info, ns, &name);
    let Some(kv) = api.store.get(&key).await? else {
        return ensure(api, &req(info, ns, None), obj).await;
    };
    let stored = rest::decode_stored(api, info, &kv)?;
    let Some(updated) = crate::authz::bootstrap_policy::reconcile(&stored, &obj) else {
        return Ok(());
    };
    tracing::info!(kind = info.kind, %name, "adding missing default permissions");
    let change = rest::Change::Replace {
        obj: updated,
        duplicates: vec![],
    };
    match rest::update(api, &req(info, ns, Some(&name)), &Query::default(), change).await {
        Ok(_) => Ok(()),
        // Changed meanwhile: the next start reconciles again.
        Err(e) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates or replaces an object the apiserver itself owns, straight in storage: its own
/// endpoints may be a loopback address, which validation refuses for user objects.
pub(crate) async fn reconcile(
    api: &Apiserver,
    r: &ResourceRequest,
    mut obj: Value,
) -> ApiResult<()> {
    let name = r.name.clone().unwrap_or_default();
    let key = object::key(r.info, r.namespace.as_deref(), &name);
    let transformer = api.transformer(r.info);
    for _ in 0..5 {
        let current = api.store.get(&key).await?;
        // The stored value decrypted: what is compared with the wanted object.
        let plain = match &current {
            Some(kv) => Some(
                transformer
                    .from_storage(&kv.value)
                    .map_err(|e| rest::transform_failed(api, &key, e))?
                    .into_owned(),
            ),
            None => None,
        };
        let (uid, created) = match &plain {
            Some(plain) => {
                let old: Value =
                    serde_json::from_slice(plain).map_err(|e| ApiError::internal(e.to_string()))?;
                (
                    object::meta_str(&old, "uid").unwrap_or("").to_string(),
                    object::meta_str(&old, "creationTimestamp")
                        .unwrap_or("")
                        .to_string(),
                )
            }
            None => (uuid::Uuid::new_v4().to_string(), object::now_rfc3339()),
        };
        let meta = object::meta_mut(&mut obj);
        meta.insert("uid".into(), json!(uid));
        meta.insert("creationTimestamp".into(), json!(created));
        let json = serde_json::to_vec(&obj).map_err(|e| ApiError::internal(e.to_string()))?;
        if plain.as_deref() == Some(&json[..]) {
            return Ok(());
        }
        let bytes = bytes::Bytes::from(
            transformer
                .to_storage(json)
                .map_err(|e| rest::transform_failed(api, &key, e))?,
        );
        let result = match current {
            Some(kv) => api
                .store
                .update(&key, bytes, kv.mod_revision)
                .await
                .map(|_| ()),
            None => api.store.create(&key, bytes).await.map(|_| ()),
        };
        match result {
            Ok(()) => return Ok(()),
            Err(store::Error::Conflict { .. } | store::Error::AlreadyExists { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::internal(format!("could not reconcile {key}")))
}

pub async fn run(api: &Arc<Apiserver>) -> ApiResult<()> {
    // Allocations first: nothing may be handed out twice after a restart. (Once: a retried
    // bootstrap must not record the same allocations again.)
    let svc_info = info("", "services")?;
    if !api
        .allocators_rebuilt
        .load(std::sync::atomic::Ordering::Acquire)
    {
        let cache = api.cache(svc_info);
        cache.wait_ready().await?;
        let (services, _) = cache.list(&object::resource_prefix(svc_info));
        crate::registry::core::services::rebuild(
            &mut api.services.lock(),
            services.iter().map(|s| s.value()),
        );
        api.allocators_rebuilt
            .store(true, std::sync::atomic::Ordering::Release);
    }

    // Upstream's "rbac/bootstrap-roles": the default roles and bindings, when missing.
    let cluster_roles = resources::find("rbac.authorization.k8s.io", "v1", "clusterroles")
        .ok_or_else(|| ApiError::internal("clusterroles not registered"))?;
    let cluster_role_bindings =
        resources::find("rbac.authorization.k8s.io", "v1", "clusterrolebindings")
            .ok_or_else(|| ApiError::internal("clusterrolebindings not registered"))?;
    for role in crate::authz::bootstrap_policy::cluster_roles() {
        ensure_policy(api, cluster_roles, role).await?;
    }
    for binding in crate::authz::bootstrap_policy::cluster_role_bindings() {
        ensure_policy(api, cluster_role_bindings, binding).await?;
    }

    let ns_info = info("", "namespaces")?;
    for ns in SYSTEM_NAMESPACES {
        ensure(
            api,
            &req(ns_info, None, None),
            json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns } }),
        )
        .await?;
    }

    // The namespaced default roles and bindings, once kube-system and kube-public exist.
    let roles = info("rbac.authorization.k8s.io", "roles")?;
    let role_bindings = info("rbac.authorization.k8s.io", "rolebindings")?;
    for role in crate::authz::bootstrap_policy::namespaced_roles() {
        ensure_policy(api, roles, role).await?;
    }
    for binding in crate::authz::bootstrap_policy::namespaced_role_bindings() {
        ensure_policy(api, role_bindings, binding).await?;
    }

    // Upstream's "scheduling/bootstrap-system-priority-classes": created when missing, an
    // existing one is left as it is.
    let pc_info = info("scheduling.k8s.io", "priorityclasses")?;
    for pc in crate::registry::scheduling::priority_classes::system_priority_classes() {
        ensure(api, &req(pc_info, None, None), pc).await?;
    }

    let cluster_ip = api.services.lock().ips.first().to_string();
    let port = api.advertise.port();
    let svc = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": "kubernetes", "namespace": "default", "labels": { "component": "apiserver", "provider": "kubernetes" } },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ip,
            "ports": [{ "name": "https", "port": 443, "protocol": "TCP", "targetPort": port }],
            "sessionAffinity": "None",
        },
    });
    ensure(api, &req(svc_info, Some("default"), None), svc).await?;

    // Its endpoints: this apiserver and every other live one (`--endpoint-reconciler-type`).
    crate::endpoint_reconciler::reconcile(api).await?;
    Ok(())
}
