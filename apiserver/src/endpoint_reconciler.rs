//! The `kubernetes` Service's endpoints: every live apiserver, as upstream's lease endpoint
//! reconciler (`--endpoint-reconciler-type=lease`, the default) keeps them.
//!
//! Each apiserver holds a key `masterleases/<advertise IP>` in etcd with a time to live
//! of [`LEASE_TTL`], renewed every [`INTERVAL`]; after each renewal it lists the keys and
//! writes the `kubernetes` Endpoints and EndpointSlice in `default` as the live
//! addresses, sorted, when they differ from what is stored. An apiserver that stops
//! cleanly deletes its key and rewrites the endpoints without itself; one that dies drops
//! out when its key expires, at most [`LEASE_TTL`] later (plus the 5% a shared etcd lease
//! may add). With `none`, nothing writes the endpoints.

use crate::request::ResourceRequest;
use crate::status::{ApiError, ApiResult};
use crate::Apiserver;
use api_types::resources;
use component_base::shutdown::Shutdown;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use store::WriteOptions;

/// How long an apiserver's key outlives its last renewal (upstream's 15 s).
pub const LEASE_TTL: Duration = Duration::from_secs(15);
/// How often an apiserver renews its key and reconciles (upstream's 10 s).
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Where the apiservers' keys live, under `--etcd-prefix` (upstream's key).
const LEASES: &str = "masterleases/";

/// `--endpoint-reconciler-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ReconcilerType {
    /// Every apiserver holds a lease in etcd; the endpoints list the live ones.
    #[default]
    Lease,
    /// Nothing writes the `kubernetes` endpoints.
    None,
}

/// Renews this apiserver's lease and reconciles the endpoints every [`INTERVAL`] until
/// shutdown, then gives the lease up and reconciles once more without this apiserver.
pub(crate) async fn run(api: Arc<Apiserver>, mut shutdown: Shutdown) {
    if api.config.endpoint_reconciler_type == ReconcilerType::None {
        return;
    }
    let mut bootstrapped = api.bootstrapped.subscribe();
    tokio::select! {
        r = bootstrapped.wait_for(|b| *b) => if r.is_err() { return },
        _ = shutdown.signaled() => return,
    }
    loop {
        // Bootstrap reconciled once already; the first tick renews at once anyway, so a
        // restart rejoins the endpoints without waiting for a full interval.
        if let Err(e) = reconcile(&api).await {
            tracing::warn!(error = %e, "reconciling the kubernetes endpoints");
        }
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = shutdown.signaled() => break,
        }
    }
    if let Err(e) = remove(&api).await {
        tracing::warn!(error = %e, "removing this apiserver from the kubernetes endpoints");
    } else {
        tracing::info!(ip = %api.advertise.ip(), "removed from the kubernetes endpoints");
    }
}

/// Renews this apiserver's lease and writes the endpoints of every live lease.
pub(crate) async fn reconcile(api: &Apiserver) -> ApiResult<()> {
    if api.config.endpoint_reconciler_type == ReconcilerType::None {
        return Ok(());
    }
    renew(api).await?;
    let ips = live(api).await?;
    write(api, &ips).await
}

/// Deletes this apiserver's lease and writes the endpoints of the others.
async fn remove(api: &Apiserver) -> ApiResult<()> {
    match api.store.delete(&own_key(api), None).await {
        Ok(_) | Err(store::Error::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let ips = live(api).await?;
    write(api, &ips).await
}

fn own_key(api: &Apiserver) -> String {
    format!("{LEASES}{}", api.advertise.ip())
}

/// Creates or refreshes this apiserver's key with a new time to live. Its value is an
/// Endpoints object naming the address, as upstream stores it.
async fn renew(api: &Apiserver) -> ApiResult<()> {
    let ip = api.advertise.ip().to_string();
    let key = own_key(api);
    let value = json!({
        "kind": "Endpoints",
        "apiVersion": "v1",
        "metadata": { "name": ip },
        "subsets": [{ "addresses": [{ "ip": ip }] }],
    });
    let bytes = bytes::Bytes::from(value.to_string());
    let ttl = WriteOptions {
        ttl: Some(LEASE_TTL),
    };
    for _ in 0..5 {
        let result = match api.store.get(&key).await? {
            Some(kv) => {
                api.store
                    .update_with(&key, bytes.clone(), kv.mod_revision, ttl)
                    .await
            }
            None => api.store.create_with(&key, bytes.clone(), ttl).await,
        };
        match result {
            Ok(_) => return Ok(()),
            // Expired or rewritten between the read and the write: read again.
            Err(
                store::Error::Conflict { .. }
                | store::Error::NotFound { .. }
                | store::Error::AlreadyExists { .. },
            ) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::internal(format!("could not renew {key}")))
}

/// The addresses of the live leases of this apiserver's address family, sorted.
async fn live(api: &Apiserver) -> ApiResult<Vec<IpAddr>> {
    let ipv4 = api.advertise.is_ipv4();
    let mut ips: Vec<IpAddr> = api
        .store
        .list(LEASES, None, 0, None)
        .await?
        .items
        .iter()
        .filter_map(|kv| kv.key.strip_prefix(LEASES)?.parse().ok())
        .filter(|ip: &IpAddr| ip.is_ipv4() == ipv4)
        .collect();
    ips.sort();
    ips.dedup();
    Ok(ips)
}

/// Writes the `kubernetes` Endpoints and EndpointSlice for `ips` (nothing when they are
/// already so).
pub(crate) async fn write(api: &Apiserver, ips: &[IpAddr]) -> ApiResult<()> {
    let port = api.advertise.port();
    let addresses: Vec<Value> = ips
        .iter()
        .map(|ip| json!({ "ip": ip.to_string() }))
        .collect();
    // Upstream leaves no empty subset behind: no addresses, no subsets.
    let subsets = if ips.is_empty() {
        json!([])
    } else {
        json!([{ "addresses": addresses, "ports": [{ "name": "https", "port": port, "protocol": "TCP" }] }])
    };
    let endpoints = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": { "name": "kubernetes", "namespace": "default", "labels": { "endpointslice.kubernetes.io/skip-mirror": "true" } },
        "subsets": subsets,
    });
    crate::bootstrap::reconcile(api, &request("", "v1", "endpoints")?, endpoints).await?;
    let slice_endpoints: Vec<Value> = ips
        .iter()
        .map(|ip| json!({ "addresses": [ip.to_string()], "conditions": { "ready": true } }))
        .collect();
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": { "name": "kubernetes", "namespace": "default", "labels": { "kubernetes.io/service-name": "kubernetes", "endpointslice.kubernetes.io/managed-by": "kube-apiserver" } },
        "addressType": if api.advertise.is_ipv4() { "IPv4" } else { "IPv6" },
        "endpoints": slice_endpoints,
        "ports": [{ "name": "https", "port": port, "protocol": "TCP" }],
    });
    crate::bootstrap::reconcile(
        api,
        &request("discovery.k8s.io", "v1", "endpointslices")?,
        slice,
    )
    .await
}

fn request(group: &str, version: &str, plural: &str) -> ApiResult<ResourceRequest> {
    let info = resources::find(group, version, plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} not registered")))?;
    Ok(ResourceRequest {
        info,
        namespace: Some("default".into()),
        name: Some("kubernetes".into()),
        subresource: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_takes_upstreams_values() {
        use clap::ValueEnum;
        assert_eq!(
            ReconcilerType::from_str("lease", false),
            Ok(ReconcilerType::Lease)
        );
        assert_eq!(
            ReconcilerType::from_str("none", false),
            Ok(ReconcilerType::None)
        );
        assert!(ReconcilerType::from_str("master-count", false).is_err());
    }
}
