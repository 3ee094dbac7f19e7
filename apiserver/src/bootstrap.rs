//! What exists from the first start: the system namespaces, and the `kubernetes` Service
//! in `default` with Endpoints and an EndpointSlice pointing at this apiserver. Service
//! allocations are rebuilt from storage before the first request.

use crate::object;
use crate::request::{Query, ResourceRequest};
use crate::rest::{self, Change};
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

/// Creates or replaces the object (the apiserver owns its endpoints).
async fn reconcile(api: &Apiserver, r: &ResourceRequest, obj: Value) -> ApiResult<()> {
    let name = r.name.clone();
    let item = ResourceRequest {
        name: name.clone(),
        ..r.clone()
    };
    match rest::update(
        api,
        &item,
        &Query::default(),
        Change::Replace {
            obj: obj.clone(),
            duplicates: vec![],
        },
    )
    .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.code == 404 => {
            ensure(
                api,
                &ResourceRequest {
                    name: None,
                    ..r.clone()
                },
                obj,
            )
            .await
        }
        Err(e) => Err(e),
    }
}

pub async fn run(api: &Arc<Apiserver>) -> ApiResult<()> {
    // Allocations first: nothing may be handed out twice after a restart.
    let svc_info = info("", "services")?;
    let cache = api.cache(svc_info);
    cache.wait_ready().await?;
    let (services, _) = cache.list(&object::resource_prefix(svc_info));
    crate::registry::core::services::rebuild(&mut api.services.lock(), &services);

    let ns_info = info("", "namespaces")?;
    for ns in SYSTEM_NAMESPACES {
        ensure(
            api,
            &req(ns_info, None, None),
            json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns } }),
        )
        .await?;
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

    let ip = api.advertise.ip().to_string();
    let endpoints = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": { "name": "kubernetes", "namespace": "default", "labels": { "endpointslice.kubernetes.io/skip-mirror": "true" } },
        "subsets": [{ "addresses": [{ "ip": ip }], "ports": [{ "name": "https", "port": port, "protocol": "TCP" }] }],
    });
    reconcile(
        api,
        &req(info("", "endpoints")?, Some("default"), Some("kubernetes")),
        endpoints,
    )
    .await?;
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": { "name": "kubernetes", "namespace": "default", "labels": { "kubernetes.io/service-name": "kubernetes", "endpointslice.kubernetes.io/managed-by": "kube-apiserver" } },
        "addressType": if api.advertise.is_ipv4() { "IPv4" } else { "IPv6" },
        "endpoints": [{ "addresses": [ip], "conditions": { "ready": true } }],
        "ports": [{ "name": "https", "port": port, "protocol": "TCP" }],
    });
    reconcile(
        api,
        &req(
            info("discovery.k8s.io", "endpointslices")?,
            Some("default"),
            Some("kubernetes"),
        ),
        slice,
    )
    .await?;
    Ok(())
}
