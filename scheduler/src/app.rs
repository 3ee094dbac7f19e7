//! Starting and stopping the daemon: serve health and metrics, start the informers, win
//! the leader election, then schedule until shutdown (or until leadership is lost, which
//! ends the process as upstream does).

use std::net::SocketAddr;
use std::sync::Arc;

use component_base::leader_election::{LeaderElectionConfig, LeaderElector};
use component_base::options::SecureServingOptions;
use component_base::serving::{self, HealthChecks};
use component_base::shutdown::Shutdown;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{info, Instrument};

use crate::config::Configuration;
use crate::metrics::Metrics;
use crate::scheduler::{write_events, Scheduler};

pub struct Config {
    pub client: kube::Client,
    pub configuration: Configuration,
    pub leader_election: Option<LeaderElectionConfig>,
    /// None: no /healthz, /metrics server (tests that do not need it).
    pub serving: Option<SecureServingOptions>,
    pub registry: prometheus::Registry,
    /// This instance's name in events (`reportingInstance`).
    pub identity: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("registering metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("serving /healthz and /metrics: {0}")]
    Serve(#[from] serving::ServeError),
    #[error("leaderelection lost")]
    LeadershipLost,
}

pub struct Running {
    /// Where /healthz, /readyz and /metrics are served.
    pub serving_addr: Option<SocketAddr>,
    pub scheduler: Arc<Scheduler>,
    /// Ends when the scheduler stops: Ok on shutdown, Err if leadership was lost.
    pub task: JoinHandle<Result<(), Error>>,
}

/// Starts the scheduler; returns once the health server listens.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Running, Error> {
    let frameworks = config.configuration.frameworks().map_err(Error::Config)?;
    for f in &frameworks {
        info!(profile = %f.scheduler_name, plugins = %f.describe(), "profile");
    }
    let metrics = Metrics::new(&config.registry)?;
    let (scheduler, event_rx) = Scheduler::new(
        config.client.clone(),
        frameworks,
        metrics,
        config.configuration.initial_backoff(),
        config.configuration.max_backoff(),
        config.identity.clone(),
    );
    let checks = HealthChecks::new();
    {
        let s = scheduler.clone();
        checks.add_readyz("sched-handler-sync", move || {
            if s.synced() {
                Ok(())
            } else {
                Err("waiting for the pod, node and namespace informers to sync".into())
            }
        });
    }
    let serving_addr = serving::serve_if_configured(
        config.serving.as_ref(),
        crate::DEFAULT_SECURE_PORT,
        &config.registry,
        &checks,
        &config.client,
        "kube-scheduler",
        &shutdown,
    )
    .await?;
    let task = tokio::spawn(
        run(config, scheduler.clone(), event_rx, checks, shutdown)
            .instrument(tracing::info_span!("kube-scheduler")),
    );
    Ok(Running {
        serving_addr,
        scheduler,
        task,
    })
}

async fn run(
    config: Config,
    scheduler: Arc<Scheduler>,
    event_rx: tokio::sync::mpsc::Receiver<k8s_openapi::api::events::v1::Event>,
    checks: HealthChecks,
    mut shutdown: Shutdown,
) -> Result<(), Error> {
    // Informers start at once, leader or not, so a successor's cache is warm. The set
    // aborts every task when dropped, so nothing outlives this function (or its abort).
    let mut tasks = JoinSet::new();
    tasks.spawn(
        scheduler
            .clone()
            .watch_pods()
            .instrument(tracing::info_span!("pod-informer")),
    );
    tasks.spawn(
        scheduler
            .clone()
            .watch_nodes()
            .instrument(tracing::info_span!("node-informer")),
    );
    tasks.spawn(
        scheduler
            .clone()
            .watch_namespaces()
            .instrument(tracing::info_span!("namespace-informer")),
    );
    tasks.spawn(
        write_events(config.client.clone(), event_rx).instrument(tracing::info_span!("events")),
    );
    let leadership = match &config.leader_election {
        Some(le) => {
            let elector = LeaderElector::new(config.client.clone(), le.clone(), &config.registry);
            info!(lease = %format!("{}/{}", le.lease_namespace, le.lease_name), identity = %le.identity, "attempting to acquire leader lease");
            match elector.acquire(&shutdown).await {
                Some(l) => Some(l),
                None => return Ok(()),
            }
        }
        None => None,
    };
    tasks.spawn(scheduler.clone().flush_unschedulable_periodically());
    tasks.spawn(
        scheduler
            .clone()
            .run()
            .instrument(tracing::info_span!("scheduling-loop")),
    );
    component_base::leader_election::run_until_stopped(leadership, &mut shutdown, &checks, tasks)
        .await
        .map_err(|_| Error::LeadershipLost)
}
