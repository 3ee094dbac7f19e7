//! Starting and stopping the daemon: serve health and metrics, win the leader election,
//! start the selected controllers and the informers they asked for, run until shutdown
//! (or until leadership is lost, which ends the process as upstream does).

use std::net::SocketAddr;
use std::sync::Arc;

use component_base::leader_election::{LeaderElectionConfig, LeaderElector};
use component_base::options::SecureServingOptions;
use component_base::serving::{self, HealthChecks};
use component_base::shutdown::Shutdown;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{info, Instrument};

use crate::controllers::{descriptors, Context};
use crate::informers::Informers;
use crate::options::ControllerOptions;
use crate::workqueue::WorkqueueMetrics;

pub struct Config {
    pub client: kube::Client,
    pub controllers: ControllerOptions,
    /// The controllers to run (names from the descriptor table).
    pub enabled: Vec<&'static str>,
    pub leader_election: Option<LeaderElectionConfig>,
    /// None: no /healthz, /metrics server.
    pub serving: Option<SecureServingOptions>,
    pub registry: prometheus::Registry,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("registering metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("serving /healthz and /metrics: {0}")]
    Serve(#[from] serving::ServeError),
    #[error("leaderelection lost")]
    LeadershipLost,
}

pub struct Running {
    pub serving_addr: Option<SocketAddr>,
    pub informers: Arc<Informers>,
    /// Ends when the controllers stop: Ok on shutdown, Err if leadership was lost.
    pub task: JoinHandle<Result<(), Error>>,
}

pub async fn start(config: Config, shutdown: Shutdown) -> Result<Running, Error> {
    let metrics = WorkqueueMetrics::new(&config.registry)?;
    let informers = Informers::new(config.client.clone());
    let checks = HealthChecks::new();
    {
        let informers = informers.clone();
        checks.add_readyz("informer-sync", move || {
            if informers.synced() {
                Ok(())
            } else {
                Err("waiting for the informers to sync".into())
            }
        });
    }
    let serving_addr = serving::serve_if_configured(
        config.serving.as_ref(),
        crate::DEFAULT_SECURE_PORT,
        &config.registry,
        &checks,
        &config.client,
        "kube-controller-manager",
        &shutdown,
    )
    .await?;
    let ctx = Context {
        client: config.client.clone(),
        informers: informers.clone(),
        options: Arc::new(config.controllers.clone()),
        metrics,
    };
    let task = tokio::spawn(
        run(config, ctx, checks, shutdown)
            .instrument(tracing::info_span!("kube-controller-manager")),
    );
    Ok(Running {
        serving_addr,
        informers,
        task,
    })
}

async fn run(
    config: Config,
    ctx: Context,
    checks: HealthChecks,
    mut shutdown: Shutdown,
) -> Result<(), Error> {
    let leadership = match &config.leader_election {
        Some(le) => {
            let elector = LeaderElector::new(config.client.clone(), le.clone(), &config.registry);
            match elector.acquire(&shutdown).await {
                Some(l) => Some(l),
                None => return Ok(()),
            }
        }
        None => None,
    };
    // Every task ends when this set is dropped (shutdown, lost leadership, or abort).
    let mut tasks = JoinSet::new();
    for d in descriptors() {
        if config.enabled.contains(&d.name) {
            info!(controller = d.name, "starting controller");
            let run = (d.start)(&ctx);
            tasks.spawn(run.instrument(tracing::info_span!("controller", name = d.name)));
        }
    }
    ctx.informers.start(&mut tasks);
    component_base::leader_election::run_until_stopped(leadership, &mut shutdown, &checks, tasks)
        .await
        .map_err(|_| Error::LeadershipLost)
}
