//! Client-side apiserver failover for a highly available control plane, as the k3s
//! agent's load balancer does, inside each daemon: connections go to the kubeconfig's
//! apiserver, and when it does not answer, to the other apiservers the cluster lists as
//! endpoints of the `default/kubernetes` Service (every live apiserver, kept by the lease
//! endpoint reconciler).
//!
//! Only the TCP target changes: TLS still checks the serving certificate against the
//! kubeconfig's host name, so every apiserver's certificate must name it (pikubeadm signs
//! one serving certificate for all control-plane hosts). The apiserver that answered last
//! is tried first, so a dead one costs a connect attempt only once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use k8s_openapi::api::core::v1::Endpoints;
use parking_lot::Mutex;
use tracing::{debug, info};

/// How often the `kubernetes` endpoints are read again.
pub const REFRESH_PERIOD: Duration = Duration::from_secs(15);

/// The apiservers a client may connect to, as `host:port` authorities.
#[derive(Clone, Debug, Default)]
pub struct Apiservers {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    /// From the `kubernetes` endpoints, in their order.
    listed: Vec<String>,
    /// The one that answered last.
    last_good: Option<String>,
}

impl Apiservers {
    /// The apiservers listed as `kubernetes` endpoints (the kubeconfig's is always tried too).
    pub fn listed(&self) -> Vec<String> {
        self.state.lock().listed.clone()
    }

    /// Replaces the listed apiservers.
    pub fn set_listed(&self, listed: Vec<String>) {
        let mut state = self.state.lock();
        if state.listed != listed {
            info!(apiservers = ?listed, "apiservers to fail over to");
            state.listed = listed;
        }
    }

    /// Where to dial for `configured` (the kubeconfig's authority), in order: the one that
    /// answered last, the configured one, then the listed ones; each once.
    pub fn candidates(&self, configured: &str) -> Vec<String> {
        let state = self.state.lock();
        let mut out: Vec<String> = Vec::with_capacity(state.listed.len() + 2);
        let all = state
            .last_good
            .iter()
            .chain(std::iter::once(&configured.to_string()))
            .chain(state.listed.iter())
            .cloned()
            .collect::<Vec<_>>();
        for a in all {
            if !out.contains(&a) {
                out.push(a);
            }
        }
        out
    }

    fn answered(&self, authority: &str) {
        let mut state = self.state.lock();
        if state.last_good.as_deref() != Some(authority) {
            debug!(apiserver = authority, "connected");
            state.last_good = Some(authority.to_string());
        }
    }
}

/// The authorities (`ip:port`, IPv6 in brackets) of the ready addresses of the
/// `kubernetes` Endpoints' `https` port.
pub fn endpoint_authorities(endpoints: &Endpoints) -> Vec<String> {
    let mut out = Vec::new();
    for subset in endpoints.subsets.iter().flatten() {
        let ports = subset.ports.iter().flatten();
        let Some(port) = ports
            .clone()
            .find(|p| p.name.as_deref() == Some("https"))
            .or_else(|| ports.clone().next())
            .map(|p| p.port)
        else {
            continue;
        };
        for address in subset.addresses.iter().flatten() {
            let host = if address.ip.contains(':') {
                format!("[{}]", address.ip)
            } else {
                address.ip.clone()
            };
            out.push(format!("{host}:{port}"));
        }
    }
    out
}

/// A TCP connector that fails over between [`Apiservers`]; wrap it in the TLS connector.
#[derive(Clone, Debug)]
pub struct FailoverConnector {
    inner: HttpConnector,
    apiservers: Apiservers,
}

impl FailoverConnector {
    pub fn new(inner: HttpConnector, apiservers: Apiservers) -> Self {
        FailoverConnector { inner, apiservers }
    }
}

type Connection = <HttpConnector as tower::Service<Uri>>::Response;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<Uri> for FailoverConnector {
    type Response = Connection;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Connection, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        tower::Service::<Uri>::poll_ready(&mut self.inner, cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let inner = self.inner.clone();
        let apiservers = self.apiservers.clone();
        Box::pin(async move {
            let Some(configured) = uri.authority().map(|a| a.to_string()) else {
                let mut inner = inner;
                return tower::Service::call(&mut inner, uri)
                    .await
                    .map_err(Into::into);
            };
            let mut first_error: Option<BoxError> = None;
            for authority in apiservers.candidates(&configured) {
                let target = match with_authority(&uri, &authority) {
                    Ok(t) => t,
                    Err(e) => {
                        debug!(apiserver = %authority, error = %e, "not an address");
                        continue;
                    }
                };
                let mut inner = inner.clone();
                match tower::Service::call(&mut inner, target).await {
                    Ok(connection) => {
                        apiservers.answered(&authority);
                        return Ok(connection);
                    }
                    Err(e) => {
                        debug!(apiserver = %authority, error = %e, "connect failed");
                        first_error.get_or_insert_with(|| e.into());
                    }
                }
            }
            Err(first_error.unwrap_or_else(|| "no apiserver to connect to".into()))
        })
    }
}

fn with_authority(uri: &Uri, authority: &str) -> Result<Uri, http::Error> {
    let mut parts = uri.clone().into_parts();
    parts.authority = Some(authority.parse()?);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    Ok(Uri::from_parts(parts)?)
}

/// Keeps `apiservers` listing the `kubernetes` endpoints, read through `client` every
/// [`REFRESH_PERIOD`], for as long as the runtime runs. A client that may not read them
/// (RBAC) keeps to its kubeconfig's apiserver.
pub fn follow_kubernetes_endpoints(client: kube::Client, apiservers: Apiservers) {
    tokio::spawn(async move {
        let api: kube::Api<Endpoints> = kube::Api::namespaced(client, "default");
        let mut tick = tokio::time::interval(REFRESH_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match api.get_opt("kubernetes").await {
                Ok(Some(endpoints)) => apiservers.set_listed(endpoint_authorities(&endpoints)),
                Ok(None) => {}
                Err(kube::Error::Api(s)) if s.code == 403 => {
                    info!("may not read the kubernetes endpoints: no apiserver failover");
                    return;
                }
                Err(e) => debug!(error = %e, "reading the kubernetes endpoints"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_last_good_apiserver_comes_first_then_the_configured_one_then_the_listed() {
        let a = Apiservers::default();
        assert_eq!(a.candidates("10.0.0.1:6443"), ["10.0.0.1:6443"]);
        a.set_listed(vec!["10.0.0.1:6443".into(), "10.0.0.2:6443".into()]);
        assert_eq!(
            a.candidates("10.0.0.1:6443"),
            ["10.0.0.1:6443", "10.0.0.2:6443"]
        );
        a.answered("10.0.0.2:6443");
        assert_eq!(
            a.candidates("10.0.0.1:6443"),
            ["10.0.0.2:6443", "10.0.0.1:6443"]
        );
        // A VIP or DNS name in the kubeconfig stays a candidate.
        assert_eq!(
            a.candidates("pikube.lan:6443"),
            ["10.0.0.2:6443", "pikube.lan:6443", "10.0.0.1:6443"]
        );
    }

    #[test]
    fn authorities_are_the_https_port_of_each_address() {
        let endpoints: Endpoints = serde_json::from_value(json!({
            "metadata": {"name": "kubernetes", "namespace": "default"},
            "subsets": [{
                "addresses": [{"ip": "192.168.1.10"}, {"ip": "fd00::10"}],
                "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]
            }]
        }))
        .unwrap();
        assert_eq!(
            endpoint_authorities(&endpoints),
            ["192.168.1.10:6443", "[fd00::10]:6443"]
        );
    }

    #[test]
    fn only_the_authority_of_the_uri_changes() {
        let uri: Uri = "https://pikube.lan:6443/api?x=1".parse().unwrap();
        assert_eq!(
            with_authority(&uri, "10.0.0.2:6443").unwrap().to_string(),
            "https://10.0.0.2:6443/api?x=1"
        );
    }
}
