//! Starting and stopping the kubelet: check the host, serve /healthz (10248) and the
//! kubelet port (10250), wait for the container runtime, register the Node, then renew
//! the node Lease, report node status and run the node's pods until shutdown.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use component_base::serving::{self, HealthChecks, ServingConfig, TlsSource};
use component_base::shutdown::Shutdown;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Taint;
use tokio::task::{JoinHandle, JoinSet};
use tracing::Instrument;

use crate::cri::{self, RemoteRuntime, RuntimeService};
use crate::kubelet_node_status::NodeStatusManager;
use crate::network::{self, CniSettings};
use crate::nodelease::LeaseController;
use crate::nodestatus::{MachineInfo, NodeSettings};
use crate::pod_workers::{PodManager, PodManagerSettings};
use crate::server;

/// `--cgroup-driver`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupDriver {
    Cgroupfs,
    Systemd,
}

/// Validated settings, from flags and the config file.
#[derive(Clone, Debug)]
pub struct Settings {
    pub node_name: String,
    pub node_ip: Option<IpAddr>,
    pub node_labels: BTreeMap<String, String>,
    pub register_with_taints: Vec<Taint>,
    pub runtime_endpoint: String,
    pub runtime_request_timeout: Duration,
    pub pod_infra_container_image: String,
    pub root_dir: PathBuf,
    /// Where containers' logs go (upstream's fixed /var/log/pods).
    pub pod_logs_dir: PathBuf,
    pub pod_manifest_path: Option<PathBuf>,
    /// How often static pod manifests are read (`fileCheckFrequency`, 20 s).
    pub file_check_frequency: Duration,
    pub cgroup_driver: CgroupDriver,
    pub max_pods: u32,
    /// `--eviction-hard`: the eviction manager's thresholds, also subtracted from
    /// capacity for allocatable.
    pub eviction_hard: crate::nodestatus::EvictionHard,
    pub cluster_dns: Vec<IpAddr>,
    pub cluster_domain: String,
    /// `--resolv-conf`: the host resolver configuration pods with dnsPolicy Default start
    /// from; None: no host DNS.
    pub resolv_conf: Option<PathBuf>,
    pub pod_cidr: Option<IpNet>,
    pub cni_conf_dir: PathBuf,
    /// The pod network's bridge (`cni0`; nodes sharing a network namespace need distinct
    /// ones).
    pub cni_bridge: String,
    /// Keep host-gw routes to the other Nodes' podCIDRs and the masquerade rule for pod
    /// traffic leaving the cluster (`--pod-network-rules`; off for kubelets sharing a
    /// network namespace with another).
    pub pod_network_rules: bool,
    /// The kubelet port (10250); None: not served (tests).
    pub serving: Option<SocketAddr>,
    /// The healthz port (127.0.0.1:10248); None: not served.
    pub healthz: Option<SocketAddr>,
    /// `--tls-cert-file` / `--tls-private-key-file`; else self-signed in `<root>/pki`.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_private_key_file: Option<PathBuf>,
    pub node_status_update_frequency: Duration,
    pub node_status_report_frequency: Duration,
    pub node_lease_duration: Duration,
    /// `--sync-frequency`: the longest time before a pod's changed ConfigMaps, Secrets
    /// and downward API files reach its volumes.
    pub sync_frequency: Duration,
    /// How often stats are collected and eviction signals observed (10 s).
    pub housekeeping_interval: Duration,
    /// `--eviction-pressure-transition-period` (5 m).
    pub eviction_pressure_transition_period: Duration,
    /// `--eviction-minimum-reclaim`.
    pub eviction_minimum_reclaim: crate::eviction::thresholds::MinimumReclaim,
    /// Who may use the kubelet port: `--anonymous-auth`, `--authentication-token-webhook`,
    /// `--client-ca-file`, `--authorization-mode`, or the config file's `authentication`
    /// and `authorization`.
    pub auth: crate::server::AuthSettings,
}

impl Settings {
    /// Defaults for a node named `node_name` (what `kubelet --hostname-override` gives).
    pub fn new(node_name: &str) -> Settings {
        Settings {
            node_name: node_name.to_owned(),
            node_ip: None,
            node_labels: BTreeMap::new(),
            register_with_taints: Vec::new(),
            runtime_endpoint: crate::options::DEFAULT_RUNTIME_ENDPOINT.into(),
            runtime_request_timeout: cri::remote::DEFAULT_REQUEST_TIMEOUT,
            pod_infra_container_image: crate::options::DEFAULT_POD_INFRA_IMAGE.into(),
            root_dir: PathBuf::from("/var/lib/kubelet"),
            pod_logs_dir: PathBuf::from("/var/log/pods"),
            pod_manifest_path: None,
            file_check_frequency: Duration::from_secs(20),
            cgroup_driver: CgroupDriver::Cgroupfs,
            max_pods: 110,
            eviction_hard: crate::nodestatus::EvictionHard::default(),
            cluster_dns: Vec::new(),
            cluster_domain: String::new(),
            resolv_conf: Some(PathBuf::from(crate::options::DEFAULT_RESOLV_CONF)),
            pod_cidr: None,
            cni_conf_dir: PathBuf::from("/etc/cni/net.d"),
            cni_bridge: "cni0".into(),
            pod_network_rules: true,
            serving: Some(SocketAddr::from((
                [0, 0, 0, 0],
                crate::options::DEFAULT_PORT,
            ))),
            healthz: Some(SocketAddr::from((
                [127, 0, 0, 1],
                crate::options::DEFAULT_HEALTHZ_PORT,
            ))),
            tls_cert_file: None,
            tls_private_key_file: None,
            node_status_update_frequency: Duration::from_secs(10),
            node_status_report_frequency: Duration::from_secs(300),
            node_lease_duration: Duration::from_secs(40),
            sync_frequency: crate::pod_workers::SYNC_FREQUENCY,
            housekeeping_interval: Duration::from_secs(10),
            eviction_pressure_transition_period: Duration::from_secs(300),
            eviction_minimum_reclaim: crate::eviction::thresholds::MinimumReclaim::default(),
            auth: crate::server::AuthSettings::default(),
        }
    }
}

pub struct Config {
    pub client: kube::Client,
    pub settings: Settings,
    pub registry: prometheus::Registry,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Host(String),
    #[error("registering metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("container runtime: {0}")]
    Runtime(#[from] cri::Error),
    #[error("serving: {0}")]
    Serve(#[from] serving::ServeError),
    #[error("serving the kubelet port: {0}")]
    Server(#[from] server::Error),
}

pub struct Running {
    /// Where /healthz is served (10248).
    pub healthz_addr: Option<SocketAddr>,
    /// Where the kubelet port is served (10250).
    pub serving_addr: Option<SocketAddr>,
    /// Ends after shutdown.
    pub task: JoinHandle<()>,
    /// The eviction manager (its thresholds can be replaced while running).
    pub eviction: Arc<crate::eviction::EvictionManager>,
}

/// The address of the interface that holds the default route, else loopback. A UDP
/// `connect` only selects a route; nothing is sent.
pub fn default_node_ip() -> IpAddr {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("10.255.255.255:9")?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

/// Checks the host, binds the ports, and starts the kubelet.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Running, Error> {
    crate::cm::check_memory_controller().map_err(Error::Host)?;
    let settings = config.settings.clone();
    let metrics = cri::Metrics::new(&config.registry)?;
    let kubelet_metrics = crate::metrics::Metrics::new(&config.registry)?;
    let runtime = Arc::new(RemoteRuntime::new(
        &settings.runtime_endpoint,
        settings.runtime_request_timeout,
        metrics,
    )?);
    let checks = HealthChecks::new();
    let healthz_addr = match settings.healthz {
        Some(bind) => Some(
            serving::serve(
                ServingConfig {
                    bind,
                    tls: TlsSource::Plain,
                    registry: config.registry.clone(),
                    checks: checks.clone(),
                },
                shutdown.clone(),
            )
            .await?
            .local_addr,
        ),
        None => None,
    };
    let node_ip = settings.node_ip.unwrap_or_else(default_node_ip);
    let (events, event_writer) =
        crate::events::recorder(config.client.clone(), &settings.node_name);
    let eviction_events = events.clone();
    let pods = PodManager::new(
        config.client.clone(),
        events,
        kubelet_metrics,
        runtime.clone(),
        runtime.clone(),
        PodManagerSettings {
            node_name: settings.node_name.clone(),
            pod_manifest_path: settings.pod_manifest_path.clone(),
            file_check_frequency: settings.file_check_frequency,
            root_dir: settings.root_dir.clone(),
            node_ip,
            pod_infra_container_image: settings.pod_infra_container_image.clone(),
            pod_logs_dir: settings.pod_logs_dir.clone(),
            cgroup_driver: settings.cgroup_driver,
            cluster_dns: settings.cluster_dns.clone(),
            cluster_domain: settings.cluster_domain.clone(),
            resolv_conf: settings.resolv_conf.clone(),
            sync_frequency: settings.sync_frequency,
        },
    );
    let stats = crate::stats::StatsProvider::new(
        crate::stats::StatsSettings {
            node_name: settings.node_name.clone(),
            root_dir: settings.root_dir.clone(),
            pod_logs_dir: settings.pod_logs_dir.clone(),
            cgroup_driver: settings.cgroup_driver,
            memory_capacity: MachineInfo::read(&settings.root_dir).memory_bytes,
            housekeeping_interval: settings.housekeeping_interval,
        },
        runtime.clone(),
        runtime.clone(),
    );
    config.registry.register(Box::new(
        crate::stats::metrics::ResourceCollector::containers_only(stats.clone()),
    ))?;
    let resource_registry = prometheus::Registry::new();
    resource_registry.register(Box::new(crate::stats::metrics::ResourceCollector::new(
        stats.clone(),
    )))?;
    let eviction = crate::eviction::EvictionManager::new(
        pods.clone(),
        stats.clone(),
        eviction_events,
        settings.eviction_hard,
        crate::eviction::EvictionSettings {
            minimum_reclaim: settings.eviction_minimum_reclaim.clone(),
            pressure_transition_period: settings.eviction_pressure_transition_period,
            monitoring_period: settings.housekeeping_interval,
        },
        &config.registry,
    )?;
    pods.add_admit_handler(eviction.clone());
    let serving_addr = match settings.serving {
        Some(bind) => {
            let (cert, key) = match (&settings.tls_cert_file, &settings.tls_private_key_file) {
                (Some(c), Some(k)) => (c.clone(), k.clone()),
                _ => server::certificate_files(
                    &settings.root_dir,
                    &[
                        settings.node_name.clone(),
                        node_ip.to_string(),
                        "localhost".into(),
                        "127.0.0.1".into(),
                    ],
                )?,
            };
            let tls = server::tls_config(&cert, &key, settings.auth.client_ca_file.as_deref())?;
            let handlers = Arc::new(server::KubeletServer {
                registry: config.registry.clone(),
                pods: pods.clone(),
                stats: stats.clone(),
                resource_registry,
                auth: server::KubeletAuth::new(
                    settings.auth.clone(),
                    &settings.node_name,
                    config.client.clone(),
                ),
            });
            Some(server::serve(bind, tls, handlers, shutdown.clone()).await?)
        }
        None => None,
    };
    let kubelet_port = serving_addr.map_or(crate::options::DEFAULT_PORT, |a| a.port());
    let task = tokio::spawn(
        run(
            config,
            pods,
            event_writer,
            node_ip,
            runtime,
            kubelet_port,
            eviction.clone(),
            shutdown,
        )
        .instrument(tracing::info_span!("kubelet", node = %settings.node_name)),
    );
    Ok(Running {
        healthz_addr,
        serving_addr,
        task,
        eviction,
    })
}

// The parts start() built, handed over one by one.
#[allow(clippy::too_many_arguments)]
async fn run(
    config: Config,
    pods: Arc<PodManager>,
    event_writer: crate::events::Writer,
    node_ip: IpAddr,
    runtime: Arc<RemoteRuntime>,
    kubelet_port: u16,
    eviction: Arc<crate::eviction::EvictionManager>,
    mut shutdown: Shutdown,
) {
    let settings = config.settings;
    let client = config.client;
    // The runtime first: the Node reports its version.
    let version = loop {
        match runtime.version().await {
            Ok(v) => break v,
            Err(e) => tracing::warn!(error = %e, "waiting for the container runtime"),
        }
        tokio::select! {
            () = shutdown.signaled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    };
    let runtime_version = format!("{}://{}", version.runtime_name, version.runtime_version);
    tracing::info!(runtime = %runtime_version, "container runtime is up");
    let (pod_cidr_tx, pod_cidr_rx) = tokio::sync::watch::channel(settings.pod_cidr);
    let status_manager = NodeStatusManager {
        client: client.clone(),
        settings: NodeSettings {
            name: settings.node_name.clone(),
            ip: node_ip,
            labels: settings.node_labels.clone(),
            taints: settings.register_with_taints.clone(),
            max_pods: settings.max_pods,
            kubelet_port,
            eviction_hard: settings.eviction_hard,
        },
        machine: MachineInfo::read(&settings.root_dir),
        runtime: runtime.clone(),
        runtime_version,
        update_frequency: settings.node_status_update_frequency,
        report_frequency: settings.node_status_report_frequency,
        cni: CniSettings {
            network_name: network::network_name(&settings.node_name),
            bridge: settings.cni_bridge.clone(),
            ipam_data_dir: settings.root_dir.join("cni").join("networks"),
        },
        cni_conf_dir: settings.cni_conf_dir.clone(),
        pod_cidr_flag: settings.pod_cidr,
        pod_cidr: pod_cidr_tx,
        pressure: eviction.pressure(),
    };
    let node = loop {
        match status_manager.register().await {
            Ok(node) => break node,
            Err(e) => tracing::warn!(error = %e, "unable to register node, will retry"),
        }
        tokio::select! {
            () = shutdown.signaled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    };
    pods.set_node_uid(node.metadata.uid.clone());
    let mut tasks = JoinSet::new();
    tasks.spawn(
        event_writer
            .run(shutdown.clone())
            .instrument(tracing::info_span!("events")),
    );
    let lease = LeaseController {
        client: client.clone(),
        node_name: settings.node_name.clone(),
        node_uid: node.metadata.uid.clone(),
        duration: settings.node_lease_duration,
    };
    tasks.spawn(
        lease
            .run(shutdown.clone())
            .instrument(tracing::info_span!("node-lease")),
    );
    tasks.spawn(
        status_manager
            .run(shutdown.clone())
            .instrument(tracing::info_span!("node-status")),
    );
    tasks.spawn(
        pods.run(shutdown.clone())
            .instrument(tracing::info_span!("pods")),
    );
    if settings.pod_network_rules {
        match network::routes::NetlinkRouteTable::connect(network::routes::ROUTE_PROTOCOL) {
            Ok(routes) => {
                let host_gw = network::hostgw::HostGw::new(
                    &settings.node_name,
                    Arc::new(routes),
                    Arc::new(network::masquerade::NftCommand::default()),
                    pod_cidr_rx,
                );
                tasks.spawn(
                    host_gw
                        .run(client.clone(), shutdown.clone())
                        .instrument(tracing::info_span!("host-gw")),
                );
            }
            Err(e) => tracing::error!(error = %e, "no routes to other nodes' pods"),
        }
    }
    tasks.spawn(
        eviction
            .run(shutdown.clone())
            .instrument(tracing::info_span!("eviction-manager")),
    );
    shutdown.signaled().await;
    tracing::info!("shutting down");
    // Tasks end at shutdown; the set aborts whatever is left when dropped.
    let drain = async { while tasks.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
}
