//! kube-apiserver: the Kubernetes REST API over etcd.
//!
//! A request flows TLS → authentication → impersonation → authorization ([`authz`]:
//! AlwaysAllow, AlwaysDeny, Node, RBAC) → in-flight limits →
//! routing ([`request`]) → the generic REST handlers ([`rest`], [`watch`]) with each
//! resource's strategy ([`registry`]) → the [`store`] crate. Reads at `resourceVersion=0`
//! and every watch are served by one [`watch_cache`] per resource. The connect
//! subresources (`pods/log`, `pods/exec`, `pods/attach`, `pods/portforward` and the
//! `proxy` of pods, nodes and services) go through the upgrade-aware [`proxy`] to kubelets
//! ([`kubelet_client`]) and pods.

mod admission;
mod authn;
pub mod authz;
mod bootstrap;
pub mod cli;
mod codec;
mod discovery;
pub mod encryption;
pub mod endpoint_reconciler;
mod filter;
mod impersonation;
mod ipalloc;
pub mod kubelet_client;
mod metrics;
mod object;
pub mod options;
mod proxy;
mod registry;
mod request;
mod rest;
mod server;
pub mod serviceaccount;
mod serviceaccount_authenticator;
mod status;
mod table;
#[cfg(feature = "testing")]
pub mod testing;
mod tls;
mod watch;
mod watch_cache;

pub use admission::config::{AdmissionConfig, AdmissionPlugin};
use api_types::resources::{ResourceInfo, RESOURCES};
use component_base::shutdown::Shutdown;
use ipnet::IpNet;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use store::{EtcdConfig, EtcdStore, Store};
use tokio::sync::Semaphore;
use watch_cache::WatchCache;

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsConfig {
    Files { cert: PathBuf, key: PathBuf },
    SelfSigned { cert_dir: PathBuf },
}

/// Validated configuration of one apiserver.
#[derive(Debug, Clone)]
pub struct Config {
    pub etcd_servers: Vec<String>,
    pub etcd_prefix: String,
    /// `--etcd-cafile`, `--etcd-certfile`, `--etcd-keyfile`: TLS to https:// etcd servers.
    pub etcd_tls: store::EtcdTls,
    pub bind_address: IpAddr,
    pub secure_port: u16,
    pub advertise_address: Option<IpAddr>,
    pub tls: TlsConfig,
    pub token_auth_file: Option<PathBuf>,
    /// `--client-ca-file`: client certificates signed by these CAs authenticate (x509).
    pub client_ca_file: Option<PathBuf>,
    pub anonymous_auth: bool,
    /// `--authorization-mode`, in order.
    pub authorization_modes: Vec<authz::Mode>,
    pub service_cluster_ip_range: IpNet,
    pub service_node_port_range: (u16, u16),
    pub max_requests_inflight: usize,
    pub max_mutating_requests_inflight: usize,
    /// How often to compact etcd's history; zero leaves compaction to someone else.
    pub etcd_compaction_interval: std::time::Duration,
    /// How to reach kubelets for logs, exec, attach, port-forward and node proxying.
    pub kubelet: kubelet_client::KubeletClientConfig,
    /// ServiceAccount token signing and verification (`serviceaccounts/token`).
    pub service_account: serviceaccount::ServiceAccountConfig,
    /// `--encryption-provider-config`: how stored objects are encrypted at rest; read at
    /// every start, so a restart picks up a rotated key.
    pub encryption_provider_config: Option<PathBuf>,
    /// Which admission plugins run, and their settings.
    pub admission: AdmissionConfig,
    /// `--endpoint-reconciler-type`: how the `kubernetes` Service's endpoints are kept.
    pub endpoint_reconciler_type: endpoint_reconciler::ReconcilerType,
    /// `--event-ttl`: how long an Event is kept after its last write.
    pub event_ttl: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connecting to etcd: {0}")]
    Etcd(#[from] store::Error),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    TokenFile(#[from] authn::TokenFileError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    KubeletClient(#[from] kubelet_client::Error),
    #[error("service account keys: {0}")]
    ServiceAccount(#[from] serviceaccount::Error),
    #[error("--encryption-provider-config: {0}")]
    Encryption(#[from] encryption::ConfigError),
    #[error("registering metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Shared state of a running apiserver.
pub(crate) struct Apiserver {
    #[allow(dead_code)]
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub caches: HashMap<(&'static str, &'static str), Arc<WatchCache>>,
    pub services: Mutex<registry::core::services::ServiceAllocators>,
    pub metrics: metrics::Metrics,
    pub authn: authn::Authenticator,
    pub authz: authz::Chain,
    pub readonly_inflight: Semaphore,
    pub mutating_inflight: Semaphore,
    pub advertise: SocketAddr,
    pub shutdown: Shutdown,
    pub kubelet: kubelet_client::KubeletClient,
    /// Encrypts and decrypts stored objects (`--encryption-provider-config`).
    pub transformers: encryption::Transformers,
    /// Signs `serviceaccounts/token` answers; `None` without a signing key.
    pub tokens: Option<serviceaccount::TokenGenerator>,
    /// The built-in objects exist.
    pub bootstrapped: tokio::sync::watch::Sender<bool>,
    /// Service allocations were rebuilt from storage (the first step of bootstrap).
    pub allocators_rebuilt: std::sync::atomic::AtomicBool,
}

impl Apiserver {
    pub fn is_bootstrapped(&self) -> bool {
        *self.bootstrapped.borrow()
    }

    /// How objects of `info` are transformed to and from their stored bytes.
    pub fn transformer(&self, info: &ResourceInfo) -> &Arc<encryption::Transformer> {
        if registry::events::is_events_v1(info) {
            return self.transformers.for_resource("", "events");
        }
        self.transformers.for_resource(info.group, info.plural)
    }

    pub fn cache(&self, info: &'static ResourceInfo) -> &Arc<WatchCache> {
        // Every stored resource has a cache, built in `start`; events.k8s.io Events are
        // core Events in storage.
        let info = registry::events::storage_of(info);
        &self.caches[&(info.group, info.plural)]
    }
}

/// A started apiserver: where it listens and how to wait for it.
pub struct Running {
    pub local_addr: SocketAddr,
    /// PEM of the CA that signed the serving certificate (self-signed mode), for clients.
    pub ca_pem: Option<String>,
    pub task: tokio::task::JoinHandle<()>,
    ready: tokio::sync::watch::Receiver<bool>,
}

impl Running {
    /// Completes once the built-in objects exist (what `/readyz` reports), which needs etcd.
    pub async fn ready(&mut self) {
        let _ = self.ready.wait_for(|r| *r).await;
    }
}

/// Starts an apiserver and returns once it listens; it runs until `shutdown` fires.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Running, Error> {
    let metrics = metrics::Metrics::new()?;
    let transformers = match &config.encryption_provider_config {
        Some(path) => encryption::Transformers::load(path)?,
        None => encryption::Transformers::identity(),
    };
    transformers.register(&metrics.registry)?;
    let kubelet = kubelet_client::KubeletClient::new(&config.kubelet)?;
    let tokens = serviceaccount::TokenGenerator::from_config(&config.service_account)?;
    let authn =
        authn::Authenticator::new(config.token_auth_file.as_deref(), config.anonymous_auth)?;
    let store: Arc<dyn Store> = Arc::new(
        EtcdStore::connect(EtcdConfig {
            endpoints: config.etcd_servers.clone(),
            prefix: config.etcd_prefix.clone(),
            request_timeout: std::time::Duration::from_secs(10),
            metrics: Some(metrics.registry.clone()),
            tls: config.etcd_tls.clone(),
        })
        .await?,
    );

    let bind = SocketAddr::new(config.bind_address, config.secure_port);
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|source| Error::Bind { addr: bind, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| Error::Bind { addr: bind, source })?;
    let advertise_ip =
        config
            .advertise_address
            .unwrap_or(if config.bind_address.is_unspecified() {
                IpAddr::from([127, 0, 0, 1])
            } else {
                config.bind_address
            });
    let advertise = SocketAddr::new(advertise_ip, local_addr.port());

    let ips = ipalloc::IpAllocator::new(config.service_cluster_ip_range);
    let first_service_ip = ips.first();
    let (cert, key, ca_pem) = match &config.tls {
        TlsConfig::Files { cert, key } => (cert.clone(), key.clone(), None),
        TlsConfig::SelfSigned { cert_dir } => {
            let mut addrs = vec![IpAddr::from([127, 0, 0, 1]), advertise_ip, first_service_ip];
            if !config.bind_address.is_unspecified() {
                addrs.push(config.bind_address);
            }
            addrs.sort();
            addrs.dedup();
            let mut dns: Vec<String> = [
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
                let h = h.trim();
                if !h.is_empty() {
                    dns.push(h.to_string());
                }
            }
            let (c, k) = tls::ensure_self_signed(cert_dir, &addrs, &dns)?;
            let ca = std::fs::read_to_string(cert_dir.join("ca.crt")).ok();
            (c, k, ca)
        }
    };
    let tls_config = tls::server_config(&cert, &key, config.client_ca_file.as_deref())?;

    let mut caches = HashMap::new();
    for info in RESOURCES
        .iter()
        .filter(|i| !registry::events::is_events_v1(i))
    {
        let gauge = metrics
            .storage_objects
            .with_label_values(&[&info.group_resource()]);
        let transformer = transformers.for_resource(info.group, info.plural).clone();
        caches.insert(
            (info.group, info.plural),
            WatchCache::new(info, gauge, transformer),
        );
    }
    let (node_base, node_max) = config.service_node_port_range;
    let authz = authz::Chain::new(
        &config.authorization_modes,
        &authz::rbac::Sources::from_caches(&caches),
    );
    let api = Arc::new(Apiserver {
        authz,
        services: Mutex::new(registry::core::services::ServiceAllocators {
            ips,
            ports: ipalloc::PortAllocator::new(node_base, node_max),
        }),
        readonly_inflight: Semaphore::new(config.max_requests_inflight),
        mutating_inflight: Semaphore::new(config.max_mutating_requests_inflight),
        config,
        store: store.clone(),
        caches,
        metrics,
        authn,
        advertise,
        shutdown: shutdown.clone(),
        kubelet,
        transformers,
        tokens,
        bootstrapped: tokio::sync::watch::channel(false).0,
        allocators_rebuilt: std::sync::atomic::AtomicBool::new(false),
    });
    for cache in api.caches.values() {
        let cache = cache.clone();
        let store = store.clone();
        let shutdown = shutdown.clone();
        let span = tracing::info_span!("watch_cache", resource = %cache.info.group_resource());
        tokio::spawn(tracing::Instrument::instrument(
            cache.run(store, shutdown),
            span,
        ));
    }
    tokio::spawn(tracing::Instrument::instrument(
        authz::aggregation::run(api.clone(), shutdown.clone()),
        tracing::info_span!("clusterrole_aggregation"),
    ));
    if !api.config.etcd_compaction_interval.is_zero() {
        let span = tracing::info_span!("compactor");
        tokio::spawn(tracing::Instrument::instrument(
            compact(
                store.clone(),
                api.config.etcd_compaction_interval,
                shutdown.clone(),
            ),
            span,
        ));
    }
    // Serve at once, as upstream: /livez answers while etcd is still unreachable and
    // /readyz reports it; the built-in objects follow as soon as etcd is there.
    let ready = api.bootstrapped.subscribe();
    tokio::spawn(tracing::Instrument::instrument(
        bootstrap_until_done(api.clone(), shutdown.clone()),
        tracing::info_span!("bootstrap"),
    ));
    tracing::info!(%local_addr, "serving securely");
    // The endpoint reconciler gives this apiserver's lease up at shutdown, while the
    // server drains; the task ends once both are done (bounded, if etcd is gone).
    let reconciler = tokio::spawn(tracing::Instrument::instrument(
        endpoint_reconciler::run(api.clone(), shutdown.clone()),
        tracing::info_span!("endpoint_reconciler"),
    ));
    let task = tokio::spawn(async move {
        server::serve(api, listener, tls_config, shutdown).await;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), reconciler).await;
    });
    Ok(Running {
        local_addr,
        ca_pem,
        task,
        ready,
    })
}

/// Creates the built-in objects, retrying (with a bounded backoff) until etcd answers.
async fn bootstrap_until_done(api: Arc<Apiserver>, mut shutdown: Shutdown) {
    let mut backoff = std::time::Duration::from_millis(200);
    loop {
        match bootstrap::run(&api).await {
            Ok(()) => {
                api.bootstrapped.send_replace(true);
                tracing::info!("built-in objects are in place");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "bootstrapping (waiting for etcd?)"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.signaled() => return,
        }
        backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
    }
}

/// Compacts etcd every interval to the revision seen one interval before, as upstream's
/// compactor: watchers keep at least one interval of history, and an SD card does not fill
/// with old revisions.
async fn compact(store: Arc<dyn Store>, interval: std::time::Duration, mut shutdown: Shutdown) {
    let mut previous: Option<i64> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.signaled() => return,
        }
        if let Some(rev) = previous {
            match store.compact(rev).await {
                Ok(()) | Err(store::Error::Compacted { .. }) => {
                    tracing::debug!(revision = rev, "compacted")
                }
                Err(e) => tracing::warn!(revision = rev, error = %e, "compaction failed"),
            }
        }
        previous = store.current_revision().await.ok();
    }
}

/// Runs an apiserver until shutdown, telling systemd it is ready once `/readyz` would
/// say so.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), Error> {
    let Running {
        mut task,
        mut ready,
        ..
    } = start(config, shutdown).await?;
    tokio::select! {
        // Ends early, as an error, when the apiserver stops before it was ready.
        r = ready.wait_for(|r| *r) => {
            if r.is_ok() {
                component_base::systemd::ready();
            }
        }
        _ = &mut task => return Ok(()),
    }
    let _ = task.await;
    Ok(())
}
