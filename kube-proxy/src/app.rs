//! Starting and running the daemon (upstream `cmd/kube-proxy/app/server.go` and the
//! proxier's `BoundedFrequencyRunner`): pick the proxy mode, serve /metrics and /healthz,
//! reflect Services, EndpointSlices and this node, and sync the rules whenever something
//! changed — at most once per `--min-sync-period`, at least once per `--sync-period`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use component_base::serving::{self, HealthChecks, ServingConfig, TlsSource};
use component_base::shutdown::Shutdown;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info, warn, Instrument};

use crate::endpoints::endpoints_by_service_port;
use crate::healthz::{self, ProxierHealth};
use crate::metrics::Metrics;
use crate::nftables::{self, NftCommand, Proxier, RuleBuilder};
use crate::options::{ProxyConfig, ProxyMode};
use crate::runner::SyncRunner;
use crate::service::{service_port_map, IpFamily};

/// Objects of other proxies (`service.kubernetes.io/service-proxy-name`) and of headless
/// Services are not ours: upstream's informers use this selector for Services and
/// EndpointSlices alike.
const SELECTOR: &str = "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless";
/// Set by the EndpointSlice controller: when the change that led to this slice happened.
const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

pub struct Config {
    pub client: kube::Client,
    pub proxy: ProxyConfig,
    pub registry: prometheus::Registry,
    pub nft: NftCommand,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("registering metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("serving /metrics: {0}")]
    Serve(#[from] serving::ServeError),
    #[error(transparent)]
    Healthz(#[from] healthz::Error),
    #[error("proxy mode nftables: {0}")]
    Nftables(#[source] nftables::Error),
    #[error("the userspace proxy mode is not implemented yet; this node needs nftables ≥ 1.0")]
    UserspaceNotImplemented,
}

pub struct Running {
    pub mode: ProxyMode,
    pub metrics_addr: Option<SocketAddr>,
    pub healthz_addr: Option<SocketAddr>,
    pub health: Arc<ProxierHealth>,
    /// Ends after shutdown.
    pub task: JoinHandle<()>,
}

/// Chooses the proxy mode: nftables when asked for or, with no mode given, when it
/// works here; else userspace (logged, as upstream logs its fallback).
pub async fn select_mode(mode: ProxyMode, nft: &NftCommand) -> Result<ProxyMode, Error> {
    match mode {
        ProxyMode::Nftables => {
            let version = nft.check_usable().await.map_err(Error::Nftables)?;
            info!(%version, "using the nftables proxier");
            Ok(ProxyMode::Nftables)
        }
        ProxyMode::Userspace => Ok(ProxyMode::Userspace),
        ProxyMode::Auto => match nft.check_usable().await {
            Ok(version) => {
                info!(%version, "no proxy mode given: using the nftables proxier");
                Ok(ProxyMode::Nftables)
            }
            Err(e) => {
                warn!(error = %e, "no proxy mode given and nftables is not usable: using the userspace proxier");
                Ok(ProxyMode::Userspace)
            }
        },
    }
}

/// Removes what kube-proxy programmed (`--cleanup`): its `ip` table, and its `ip6`
/// table where the kernel has IPv6 nftables.
pub async fn cleanup(nft: &NftCommand) -> Result<(), nftables::Error> {
    use crate::nftables::Nft as _;
    nft.apply(&nftables::cleanup_transaction(IpFamily::V4))
        .await?;
    if nft.check_family(IpFamily::V6).await.is_ok() {
        nft.apply(&nftables::cleanup_transaction(IpFamily::V6))
            .await?;
    }
    Ok(())
}

/// The families this node programs: IPv4, and IPv6 when its nftables support it.
async fn families(nft: &NftCommand) -> Vec<IpFamily> {
    match nft.check_family(IpFamily::V6).await {
        Ok(()) => vec![IpFamily::V4, IpFamily::V6],
        Err(e) => {
            info!(error = %e, "no IPv6 nftables here: programming IPv4 only");
            vec![IpFamily::V4]
        }
    }
}

/// Starts the proxy; returns once its servers listen.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Running, Error> {
    let mode = select_mode(config.proxy.mode, &config.nft).await?;
    if mode == ProxyMode::Userspace {
        return Err(Error::UserspaceNotImplemented);
    }
    let metrics = Metrics::new(&config.registry)?;
    let health = ProxierHealth::new(2 * config.proxy.sync_period);
    let checks = HealthChecks::new();
    {
        let health = health.clone();
        checks.add_healthz("proxier", move || {
            if health.status(Instant::now()).healthy {
                Ok(())
            } else {
                Err("proxy rules are stale".into())
            }
        });
    }
    let metrics_addr = match config.proxy.metrics_bind_address {
        Some(bind) => Some(
            serving::serve(
                ServingConfig {
                    bind,
                    tls: TlsSource::Plain,
                    registry: config.registry.clone(),
                    checks,
                },
                shutdown.clone(),
            )
            .await?
            .local_addr,
        ),
        None => None,
    };
    let healthz_addr = match config.proxy.healthz_bind_address {
        Some(bind) => Some(healthz::serve(bind, health.clone(), shutdown.clone()).await?),
        None => None,
    };
    let task = tokio::spawn(
        run(config, metrics, health.clone(), shutdown)
            .instrument(tracing::info_span!("kube-proxy")),
    );
    Ok(Running {
        mode,
        metrics_addr,
        healthz_addr,
        health,
        task,
    })
}

/// Feeds a reflector's store and rings `changed` on every event.
fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    changed: Arc<Notify>,
    health: Arc<ProxierHealth>,
) -> (Store<K>, impl Stream<Item = ()> + Send)
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let stream =
        reflector::reflector(writer, watcher(api, config).default_backoff()).map(move |event| {
            match event {
                Ok(_) => {
                    health.queued_update(Instant::now());
                    changed.notify_one();
                }
                Err(e) => warn!(error = %e, "watch failed; retrying"),
            }
        });
    (reader, stream)
}

async fn run(config: Config, metrics: Metrics, health: Arc<ProxierHealth>, mut shutdown: Shutdown) {
    let proxy = &config.proxy;
    let changed = Arc::new(Notify::new());
    let mut tasks = JoinSet::new();
    let (services, stream) = reflect(
        Api::<Service>::all(config.client.clone()),
        watcher::Config::default().labels(SELECTOR),
        changed.clone(),
        health.clone(),
    );
    tasks.spawn(
        stream
            .for_each(|()| async {})
            .instrument(tracing::info_span!("service-informer")),
    );
    let (slices, stream) = reflect(
        Api::<EndpointSlice>::all(config.client.clone()),
        watcher::Config::default().labels(SELECTOR),
        changed.clone(),
        health.clone(),
    );
    tasks.spawn(
        stream
            .for_each(|()| async {})
            .instrument(tracing::info_span!("endpointslice-informer")),
    );
    tasks.spawn(
        watch_node(
            config.client.clone(),
            proxy.hostname.clone(),
            health.clone(),
        )
        .instrument(tracing::info_span!("node-informer")),
    );

    // Upstream waits for the informers before the first sync, so it never programs an
    // empty table over a working one.
    let ready = async {
        let _ = services.wait_until_ready().await;
        let _ = slices.wait_until_ready().await;
    };
    tokio::select! {
        () = ready => info!("services and endpoint slices synced"),
        () = shutdown.signaled() => return,
    }

    let mut proxiers: Vec<Proxier<NftCommand>> = families(&config.nft)
        .await
        .into_iter()
        .map(|family| {
            Proxier::new(
                config.nft.clone(),
                RuleBuilder::new(family, &proxy.cluster_cidrs, &proxy.nodeport_addresses),
            )
        })
        .collect();
    let mut programmed_slices: Option<HashMap<(String, String), String>> = None;
    let mut runner = SyncRunner::new(proxy.min_sync_period, proxy.sync_period);
    while let Some(trigger) = runner.next(&changed, &mut shutdown).await {
        debug!(?trigger, "syncing proxy rules");
        let tick = tokio::time::Instant::now();
        let started = Instant::now();
        health.sync_started();
        let service_list = services.state();
        let slice_list = slices.state();
        let mut ok = true;
        for proxier in &mut proxiers {
            let family = proxier.family();
            let service_ports = service_port_map(service_list.iter().map(|s| &**s), family);
            let endpoints =
                endpoints_by_service_port(slice_list.iter().map(|s| &**s), &proxy.hostname, family);
            match proxier.sync(&service_ports, &endpoints).await {
                Ok(r) if r.transaction_bytes > 0 => info!(
                    ?family,
                    full = r.full,
                    changed = r.changed_service_ports,
                    service_ports = service_ports.len(),
                    bytes = r.transaction_bytes,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "synced proxy rules"
                ),
                Ok(_) => {}
                Err(e) => {
                    ok = false;
                    metrics.sync_failures.inc();
                    warn!(?family, error = %e, "syncing proxy rules failed; the next sync rebuilds the table");
                }
            }
        }
        runner.ran(tick, ok);
        metrics
            .sync_proxy_rules_duration
            .observe(started.elapsed().as_secs_f64());
        if !ok {
            health.sync_failed();
        } else {
            health.updated();
            metrics
                .sync_proxy_rules_last_timestamp
                .set(jiff::Timestamp::now().as_millisecond() as f64 / 1000.0);
            observe_programming(&metrics, &slice_list, &mut programmed_slices);
        }
    }
    info!("kube-proxy stopping; its rules stay in place until --cleanup");
    tasks.abort_all();
}

/// `kubeproxy_network_programming_duration_seconds` for each slice changed since the
/// last successful sync that carries the controller's trigger time.
fn observe_programming(
    metrics: &Metrics,
    slices: &[Arc<EndpointSlice>],
    seen: &mut Option<HashMap<(String, String), String>>,
) {
    let now = jiff::Timestamp::now();
    let mut current = HashMap::with_capacity(slices.len());
    for slice in slices {
        let key = (
            slice.metadata.namespace.clone().unwrap_or_default(),
            slice.metadata.name.clone().unwrap_or_default(),
        );
        let version = slice.metadata.resource_version.clone().unwrap_or_default();
        // Slices present at start were programmed long ago by someone: not measured.
        let changed = seen
            .as_ref()
            .is_some_and(|seen| seen.get(&key) != Some(&version));
        if changed {
            let trigger = slice
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(TRIGGER_TIME_ANNOTATION))
                .and_then(|t| t.parse::<jiff::Timestamp>().ok());
            if let Some(t) = trigger {
                let secs = now.duration_since(t).as_secs_f64();
                if secs >= 0.0 {
                    metrics.network_programming_duration.observe(secs);
                }
            }
        }
        current.insert(key, version);
    }
    *seen = Some(current);
}

/// Follows this node's own Node object: while it is being deleted, /healthz fails.
async fn watch_node(client: kube::Client, hostname: String, health: Arc<ProxierHealth>) {
    let api = Api::<Node>::all(client);
    let config = watcher::Config::default().fields(&format!("metadata.name={hostname}"));
    let mut stream = watcher(api, config).default_backoff().boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(node) | watcher::Event::InitApply(node)) => {
                health.set_node_being_deleted(node.metadata.deletion_timestamp.is_some());
            }
            Ok(watcher::Event::Delete(_)) => health.set_node_being_deleted(true),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "node watch failed; retrying"),
        }
    }
}
