//! Cluster DNS served by kube-proxy on every node (pikube's take on upstream's
//! NodeLocal DNSCache with CoreDNS's `kubernetes`, `cache` and `forward` plugins behind
//! it, in one process): with `--enable-cluster-dns`, kube-proxy puts the cluster DNS
//! address (`--cluster-dns-ip`, else the ClusterIP of Service kube-system/kube-dns) on
//! a dummy link of its own ([`interface`]), keeps connection tracking off DNS to it
//! ([`filter`]), never DNATs that Service ([`Exclusion`]), and answers on it, UDP and
//! TCP port 53 ([`server`]): cluster names from its own index of Services and
//! EndpointSlices ([`records`], fed by [`watch`]), everything else through the node's
//! upstream resolvers with a small cache ([`forward`]). Metrics carry CoreDNS's names
//! ([`metrics`]).

pub mod filter;
pub mod forward;
pub mod interface;
pub mod metrics;
pub mod records;
pub mod server;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod watch;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use component_base::shutdown::Shutdown;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use parking_lot::RwLock;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch as channel;
use tracing::{info, warn, Instrument};

use crate::tracker::{ports_of, Model, ServiceKey};

use self::forward::Forwarder;
use self::metrics::DnsMetrics;
use self::records::Zone;
use self::server::Handler;

/// The Service whose ClusterIP is the cluster DNS address when `--cluster-dns-ip` is
/// not given (kubeadm's and k3s's name for it).
pub const DNS_SERVICE_NAMESPACE: &str = "kube-system";
pub const DNS_SERVICE_NAME: &str = "kube-dns";
/// The DNS port.
pub const PORT: u16 = 53;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Zone(#[from] records::Error),
    #[error(transparent)]
    Upstreams(#[from] forward::Error),
    #[error("registering dns metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Interface(#[from] interface::Error),
    #[error(transparent)]
    Filter(#[from] filter::Error),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What `--enable-cluster-dns` and its flags say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsConfig {
    /// `--cluster-dns-ip`; None: the ClusterIP of kube-system/kube-dns.
    pub ip: Option<IpAddr>,
    /// `--cluster-domain`.
    pub domain: String,
    /// `--dns-upstream-resolv-conf`: where the upstream resolvers are listed.
    pub upstream_resolv_conf: PathBuf,
    /// The `nft` binary.
    pub nft: PathBuf,
}

impl DnsConfig {
    /// Defaults: the kube-dns Service's address, `cluster.local`, /etc/resolv.conf.
    pub fn new() -> DnsConfig {
        DnsConfig {
            ip: None,
            domain: "cluster.local".into(),
            upstream_resolv_conf: PathBuf::from("/etc/resolv.conf"),
            nft: PathBuf::from("nft"),
        }
    }
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig::new()
    }
}

/// Which Service the proxier must not see: node-local DNS answers on its address, so a
/// DNAT (or a no-endpoints reject) for it would steal the packets.
#[derive(Clone, Debug, Default)]
pub struct Exclusion {
    /// Excluded by name (the address comes from it).
    key: Option<ServiceKey>,
    /// Excluded by ClusterIP.
    ip: Option<IpAddr>,
}

impl Exclusion {
    pub fn new(config: &DnsConfig) -> Exclusion {
        match config.ip {
            Some(ip) => Exclusion {
                key: None,
                ip: Some(ip),
            },
            None => Exclusion {
                key: Some((DNS_SERVICE_NAMESPACE.into(), DNS_SERVICE_NAME.into())),
                ip: None,
            },
        }
    }

    /// Removes the DNS Service's ports from `models` right after the tracker folded
    /// the `dirty` Services in (only those can have brought it back), before the
    /// proxier reads them. The Service stays in `dirty`, so a proxier that had rules
    /// for it drops them.
    pub fn apply(&self, models: &mut [Model; 2], dirty: &HashSet<ServiceKey>) {
        for key in dirty {
            for model in models.iter_mut() {
                let gone: Vec<_> = ports_of(&model.services, key)
                    .filter(|(_, port)| {
                        self.key.as_ref() == Some(key)
                            || (self.ip.is_some() && port.cluster_ip == self.ip)
                    })
                    .map(|(name, _)| name.clone())
                    .collect();
                for name in gone {
                    model.services.remove(&name);
                    model.endpoints.remove(&name);
                }
            }
        }
    }
}

/// The DNS side of a running kube-proxy.
pub struct Running {
    pub zone: Arc<RwLock<Zone>>,
    /// The address being served, once it is.
    pub serving: channel::Receiver<Option<SocketAddr>>,
}

/// Starts the watches and, once they have synced and the address is known, the
/// listeners. Returns at once; bad configuration is reported here.
pub async fn start(
    client: kube::Client,
    config: DnsConfig,
    registry: &prometheus::Registry,
    shutdown: Shutdown,
) -> Result<Running, Error> {
    let zone = Arc::new(RwLock::new(Zone::new(&config.domain)?));
    // Unreadable upstream configuration is a configuration error: report it now.
    forward::read_resolv_conf(&config.upstream_resolv_conf, &[])?;
    let metrics = DnsMetrics::new(registry)?;
    let (changed, mut changes) = channel::channel(());
    tokio::spawn(
        watch::index(
            Api::<Service>::all(client.clone()),
            zone.clone(),
            changed.clone(),
        )
        .instrument(tracing::info_span!("dns-service-informer")),
    );
    tokio::spawn(
        watch::index(Api::<EndpointSlice>::all(client), zone.clone(), changed)
            .instrument(tracing::info_span!("dns-endpointslice-informer")),
    );
    let (serving_tx, serving) = channel::channel(None);
    let task_zone = zone.clone();
    tokio::spawn(
        async move {
            let mut shutdown = shutdown;
            let mut current: Option<(IpAddr, tokio::sync::oneshot::Sender<()>)> = None;
            loop {
                let want = {
                    let z = task_zone.read();
                    if z.synced() {
                        config.ip.or_else(|| {
                            z.cluster_ips(DNS_SERVICE_NAMESPACE, DNS_SERVICE_NAME)
                                .first()
                                .copied()
                        })
                    } else {
                        None
                    }
                };
                if let Some(ip) = want {
                    if current.as_ref().map(|c| c.0) != Some(ip) {
                        // Stop the old listeners (a changed kube-dns ClusterIP).
                        current = None;
                        match serve(
                            ip,
                            &config,
                            task_zone.clone(),
                            metrics.clone(),
                            shutdown.clone(),
                        )
                        .await
                        {
                            Ok((addr, stopper)) => {
                                info!(%addr, domain = %config.domain, "serving cluster DNS");
                                serving_tx.send_replace(Some(addr));
                                current = Some((ip, stopper));
                            }
                            Err(e) => {
                                warn!(%ip, error = %e, "cannot serve cluster DNS yet; retrying");
                                tokio::select! {
                                    () = tokio::time::sleep(Duration::from_secs(2)) => continue,
                                    () = shutdown.signaled() => return,
                                }
                            }
                        }
                    }
                }
                tokio::select! {
                    r = changes.changed() => if r.is_err() { return },
                    () = shutdown.signaled() => return,
                }
            }
        }
        .instrument(tracing::info_span!("cluster-dns")),
    );
    Ok(Running { zone, serving })
}

/// Sets up the address and filter table for `ip` and starts the listeners; they stop
/// on shutdown or when the returned sender is dropped.
async fn serve(
    ip: IpAddr,
    config: &DnsConfig,
    zone: Arc<RwLock<Zone>>,
    metrics: DnsMetrics,
    shutdown: Shutdown,
) -> Result<(SocketAddr, tokio::sync::oneshot::Sender<()>), Error> {
    let upstreams = forward::read_resolv_conf(&config.upstream_resolv_conf, &[ip])?;
    interface::ensure(ip).await?;
    filter::apply(&config.nft, &filter::transaction(ip)).await?;
    let addr = SocketAddr::new(ip, PORT);
    let udp = UdpSocket::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })?;
    let tcp = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })?;
    info!(?upstreams, "forwarding names outside the cluster domain");
    let forwarder = Arc::new(Forwarder::new(upstreams, metrics.clone()));
    let handler = Arc::new(Handler::new(zone, forwarder, metrics));
    // The listeners stop on the daemon's shutdown or when this address is replaced.
    let (stopper, stopped) = tokio::sync::oneshot::channel::<()>();
    let (trigger, stop) = component_base::shutdown::channel();
    {
        let mut outer = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = outer.signaled() => {}
                _ = stopped => {}
            }
            trigger.shutdown();
        });
    }
    tokio::spawn(server::serve_udp(udp, handler.clone(), stop.clone()).in_current_span());
    tokio::spawn(server::serve_tcp(tcp, handler, stop).in_current_span());
    Ok((addr, stopper))
}

/// `--cleanup`: removes the filter tables and the dummy link.
pub async fn cleanup(nft: &std::path::Path) -> Result<(), Error> {
    filter::apply(nft, &filter::cleanup_transaction("ip")).await?;
    // Kernels without IPv6 nftables have no ip6 table to remove.
    let _ = filter::apply(nft, &filter::cleanup_transaction("ip6")).await;
    interface::remove().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::Tracker;

    fn svc(yaml: &str) -> Service {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn the_dns_service_never_reaches_the_proxier() {
        for exclusion in [
            Exclusion::new(&DnsConfig::new()),
            Exclusion::new(&DnsConfig {
                ip: Some("10.96.0.10".parse().unwrap()),
                ..DnsConfig::new()
            }),
        ] {
            let mut t = Tracker::new("node-a");
            let mut models: [Model; 2] = Default::default();
            t.apply_service(&svc(
                "metadata: {namespace: kube-system, name: kube-dns}\nspec: {clusterIP: 10.96.0.10, ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53}]}",
            ));
            t.apply_service(&svc(
                "metadata: {namespace: ns, name: web}\nspec: {clusterIP: 10.96.0.20, ports: [{name: http, port: 80}]}",
            ));
            let dirty = t.flush(&mut models);
            exclusion.apply(&mut models, &dirty);
            let v4 = Tracker::model(&models, crate::service::IpFamily::V4);
            assert_eq!(v4.services.len(), 1, "{exclusion:?}");
            assert_eq!(&*v4.services.keys().next().unwrap().name, "web");
            // A later change of the DNS Service does not bring it back.
            t.apply_service(&svc(
                "metadata: {namespace: kube-system, name: kube-dns}\nspec: {clusterIP: 10.96.0.10, ports: [{name: dns, port: 53, protocol: UDP}]}",
            ));
            let dirty = t.flush(&mut models);
            assert!(dirty.contains(&("kube-system".into(), "kube-dns".into())));
            exclusion.apply(&mut models, &dirty);
            assert_eq!(
                Tracker::model(&models, crate::service::IpFamily::V4)
                    .services
                    .len(),
                1
            );
        }
    }
}
