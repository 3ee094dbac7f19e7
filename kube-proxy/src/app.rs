//! Starting and running the daemon (upstream `cmd/kube-proxy/app/server.go` and the
//! proxier's `BoundedFrequencyRunner`): pick the proxy mode, serve /metrics and /healthz,
//! reflect Services, EndpointSlices and this node, and sync the rules whenever something
//! changed — at most once per `--min-sync-period`, at least once per `--sync-period`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use component_base::serving::{self, HealthChecks, ServingConfig, TlsSource};
use component_base::shutdown::Shutdown;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info, warn, Instrument};

use crate::conntrack::{ConntrackTool, StaleEntries};
use crate::feed::{self, Fed};
use crate::healthcheck::ServiceHealthServer;
use crate::healthz::{self, ProxierHealth};
use crate::metrics::Metrics;
use crate::nftables::{self, NftCommand, Proxier, RuleBuilder};
use crate::options::{ProxyConfig, ProxyMode};
use crate::runner::{SyncRunner, Trigger};
use crate::service::IpFamily;
use crate::tracker::{Model, Tracker};
use crate::userspace::UserspaceProxier;
use parking_lot::Mutex;

/// Objects of other proxies (`service.kubernetes.io/service-proxy-name`) and of headless
/// Services are not ours: upstream's informers use this selector for Services and
/// EndpointSlices alike.
const SELECTOR: &str = "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless";
/// Set by the EndpointSlice controller: when the change that led to this slice happened.
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

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
    #[error("cluster dns: {0}")]
    Dns(#[from] crate::dns::Error),
}

pub struct Running {
    pub mode: ProxyMode,
    pub metrics_addr: Option<SocketAddr>,
    pub healthz_addr: Option<SocketAddr>,
    pub health: Arc<ProxierHealth>,
    /// Node-local cluster DNS, when enabled.
    pub dns: Option<crate::dns::Running>,
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
    let dns = match config.proxy.dns.clone() {
        Some(dns) => Some(
            crate::dns::start(
                config.client.clone(),
                dns,
                &config.registry,
                shutdown.clone(),
            )
            .await?,
        ),
        None => None,
    };
    let task = tokio::spawn(
        run(config, mode, metrics, health.clone(), shutdown)
            .instrument(tracing::info_span!("kube-proxy")),
    );
    Ok(Running {
        mode,
        metrics_addr,
        healthz_addr,
        health,
        dns,
        task,
    })
}

/// Feeds watch events of `K` into the tracker and rings `changed` on every change. The
/// objects themselves are not kept (upstream's informers keep them; we keep only what
/// the proxy needs).
async fn track<K>(
    api: Api<K>,
    tracker: Arc<Mutex<Tracker>>,
    changed: Arc<Notify>,
    health: Arc<ProxierHealth>,
) where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
    Tracker: Fed<K>,
{
    feed::watch(api, watcher::Config::default().labels(SELECTOR), |event| {
        if feed::fold(&mut *tracker.lock(), event) {
            health.queued_update(Instant::now());
            changed.notify_one();
        }
    })
    .await;
}

async fn run(
    config: Config,
    mode: ProxyMode,
    metrics: Metrics,
    health: Arc<ProxierHealth>,
    mut shutdown: Shutdown,
) {
    let proxy = &config.proxy;
    let changed = Arc::new(Notify::new());
    let tracker = Arc::new(Mutex::new(Tracker::new(&proxy.hostname)));
    let mut tasks = JoinSet::new();
    tasks.spawn(
        track(
            Api::<Service>::all(config.client.clone()),
            tracker.clone(),
            changed.clone(),
            health.clone(),
        )
        .instrument(tracing::info_span!("service-informer")),
    );
    tasks.spawn(
        track(
            Api::<EndpointSlice>::all(config.client.clone()),
            tracker.clone(),
            changed.clone(),
            health.clone(),
        )
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
    if proxy.service_lb {
        tasks.spawn(
            crate::servicelb::run(
                config.client.clone(),
                config.registry.clone(),
                shutdown.clone(),
            )
            .instrument(tracing::info_span!("servicelb")),
        );
    }

    // Upstream waits for the informers before the first sync, so it never programs an
    // empty table over a working one.
    loop {
        if tracker.lock().synced() {
            info!("services and endpoint slices synced");
            break;
        }
        tokio::select! {
            () = changed.notified() => {}
            () = shutdown.signaled() => return,
        }
    }

    let mut userspace =
        (mode == ProxyMode::Userspace).then(|| UserspaceProxier::new(&proxy.nodeport_addresses));
    let families = if userspace.is_some() {
        Vec::new()
    } else {
        families(&config.nft).await
    };
    let mut proxiers: Vec<Proxier<NftCommand>> = families
        .into_iter()
        .map(|family| {
            Proxier::new(
                config.nft.clone(),
                RuleBuilder::new(family, &proxy.cluster_cidrs, &proxy.nodeport_addresses),
            )
        })
        .collect();
    let mut models: [Model; 2] = Default::default();
    let mut health_checks = ServiceHealthServer::new(&proxy.nodeport_addresses, health.clone());
    // Stale UDP conntrack entries matter where the packet filter DNATs (nftables mode).
    let mut stale_udp = StaleEntries::default();
    let conntrack = ConntrackTool::default();
    let mut runner = SyncRunner::new(proxy.min_sync_period, proxy.sync_period);
    // Node-local DNS answers on the DNS Service's address: the proxier never sees it.
    let dns_exclusion = proxy.dns.as_ref().map(crate::dns::Exclusion::new);
    let mut retry_all = false;
    while let Some(trigger) = runner.next(&changed, &mut shutdown).await {
        debug!(?trigger, "syncing proxy rules");
        let tick = tokio::time::Instant::now();
        let started = Instant::now();
        health.sync_started();
        let (dirty, triggers) = {
            let mut t = tracker.lock();
            (t.flush(&mut models), std::mem::take(&mut t.triggers))
        };
        if let Some(exclusion) = &dns_exclusion {
            exclusion.apply(&mut models, &dirty);
        }
        // After a failure the proxier rebuilds everything anyway.
        let hint = (!retry_all).then_some(&dirty);
        for proxier in &proxiers {
            let family = proxier.family();
            stale_udp.update(family, Tracker::model(&models, family), &dirty);
        }
        let mut ok = true;
        if let Some(userspace) = userspace.as_mut() {
            if !dirty.is_empty() || trigger == Trigger::Initial {
                let listeners = userspace
                    .sync(&[
                        Tracker::model(&models, IpFamily::V4),
                        Tracker::model(&models, IpFamily::V6),
                    ])
                    .await;
                info!(
                    listeners,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "synced userspace proxy"
                );
            }
        }
        for proxier in &mut proxiers {
            let family = proxier.family();
            let model = Tracker::model(&models, family);
            match proxier
                .sync_dirty(&model.services, &model.endpoints, hint)
                .await
            {
                Ok(r) if r.transaction_bytes > 0 => info!(
                    ?family,
                    full = r.full,
                    changed = r.changed_service_ports,
                    service_ports = model.services.len(),
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
        // Health-check node ports follow the model in both modes (a failed bind is
        // retried at every sync).
        health_checks
            .sync(
                &[
                    Tracker::model(&models, IpFamily::V4),
                    Tracker::model(&models, IpFamily::V6),
                ],
                &dirty,
            )
            .await;
        // Upstream cleans conntrack only once the new rules are in place, so the next
        // datagram of a flow meets them; after a failure the cleanup waits.
        if ok && !proxiers.is_empty() {
            stale_udp.clean(&conntrack).await;
        }
        retry_all = !ok;
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
            // `kubeproxy_network_programming_duration_seconds`: from each slice change's
            // trigger time to now.
            let now = jiff::Timestamp::now();
            for t in triggers {
                let secs = now.duration_since(t).as_secs_f64();
                if secs >= 0.0 {
                    metrics.network_programming_duration.observe(secs);
                }
            }
        }
    }
    info!("kube-proxy stopping; its rules stay in place until --cleanup");
    tasks.abort_all();
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
