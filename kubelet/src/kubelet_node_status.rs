//! Registering the Node and keeping its status current (upstream
//! `kubelet_node_status.go`): create the Node, or adopt an existing one and restore the
//! default labels; then every `nodeStatusUpdateFrequency` read the runtime's health and
//! the node's podCIDR (writing the pod network's CNI configuration when it is known), and
//! write the status when it changed or `nodeStatusReportFrequency` passed; the pressure
//! taints follow the eviction manager's pressure conditions.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use tokio::sync::watch;

use component_base::shutdown::Shutdown;

use crate::cri::RuntimeService;
use crate::network::{self, CniSettings};
use crate::nodestatus::{self, MachineInfo, NodeSettings, RuntimeHealth};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("registering node {name}: {source}")]
    Register {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("updating node {name} status: {source}")]
    Update {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Network(#[from] network::Error),
}

/// Registers the node and reports its status.
pub struct NodeStatusManager {
    pub client: Client,
    pub settings: NodeSettings,
    pub machine: MachineInfo,
    pub runtime: Arc<dyn RuntimeService>,
    /// `containerd://<version>`.
    pub runtime_version: String,
    pub update_frequency: Duration,
    pub report_frequency: Duration,
    pub cni: CniSettings,
    pub cni_conf_dir: PathBuf,
    /// `--pod-cidr`, used while Node.spec.podCIDR is empty.
    pub pod_cidr_flag: Option<IpNet>,
    /// The pod CIDR in use, for whoever needs it.
    pub pod_cidr: watch::Sender<Option<IpNet>>,
    /// The pressure conditions the eviction manager reports; they also set the
    /// pressure taints.
    pub pressure: watch::Receiver<nodestatus::NodePressure>,
}

/// How often the node status is synced at start-up until the node is Ready, and for at
/// most how long (upstream polls every 100 ms, bounded by its node-ready grace period).
const FAST_STATUS_PERIOD: Duration = Duration::from_millis(100);
const FAST_STATUS_FOR: Duration = Duration::from_secs(120);

impl NodeStatusManager {
    fn api(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    /// Creates the Node, or adopts the existing one (restoring the default labels); the
    /// Node as stored.
    pub async fn register(&self) -> Result<Node, Error> {
        let name = self.settings.name.clone();
        let err = |source| Error::Register {
            name: name.clone(),
            source,
        };
        let node = nodestatus::initial_node(&self.settings, &self.machine, &self.runtime_version);
        match self.api().create(&PostParams::default(), &node).await {
            Ok(created) => {
                tracing::info!(node = %name, "successfully registered node");
                Ok(created)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let existing = self.api().get(&name).await.map_err(err)?;
                let labels = existing.metadata.labels.clone().unwrap_or_default();
                let wanted = nodestatus::node_labels(&self.settings);
                let missing: serde_json::Map<String, serde_json::Value> = wanted
                    .into_iter()
                    .filter(|(k, v)| labels.get(k) != Some(v))
                    .map(|(k, v)| (k, serde_json::Value::String(v)))
                    .collect();
                if missing.is_empty() {
                    return Ok(existing);
                }
                let patch = serde_json::json!({"metadata": {"labels": missing}});
                self.api()
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(err)
            }
            Err(e) => Err(err(e)),
        }
    }

    async fn health(&self) -> RuntimeHealth {
        match self.runtime.status().await {
            Ok(status) => RuntimeHealth::from_status(&status),
            Err(e) => RuntimeHealth::unreachable(&e.to_string()),
        }
    }

    /// One round: network config, then status if due. `last_report` is when status was
    /// last written. Whether the node is Ready as written.
    pub async fn sync(&self, last_report: &mut Option<Instant>) -> Result<bool, Error> {
        let name = self.settings.name.clone();
        let node = self
            .api()
            .get(&name)
            .await
            .map_err(|source| Error::Update {
                name: name.clone(),
                source,
            })?;
        let spec_cidr = node
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_deref())
            .and_then(|c| c.parse::<IpNet>().ok());
        if let Some(cidr) = spec_cidr.or(self.pod_cidr_flag) {
            let text = network::conflist(&self.cni, cidr);
            if network::write_conflist(&self.cni_conf_dir, &text)? {
                tracing::info!(pod_cidr = %cidr, dir = %self.cni_conf_dir.display(), "wrote the pod network configuration");
            }
            self.pod_cidr.send_if_modified(|c| {
                let changed = *c != Some(cidr);
                *c = Some(cidr);
                changed
            });
        }
        let health = self.health().await;
        let pressure = self.pressure.borrow().clone();
        let desired = nodestatus::desired_status(
            &self.settings,
            &self.machine,
            &self.runtime_version,
            &health,
            &pressure,
            node.status.as_ref(),
            Time(jiff::Timestamp::now()),
        );
        let ready = desired
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let due = last_report.is_none_or(|t| t.elapsed() >= self.report_frequency);
        let mut resource_version = node.metadata.resource_version.clone();
        if due || nodestatus::status_changed(node.status.as_ref(), &desired) {
            let patch = serde_json::json!({ "status": desired });
            let written = self
                .api()
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|source| Error::Update {
                    name: name.clone(),
                    source,
                })?;
            resource_version = written.metadata.resource_version;
            *last_report = Some(Instant::now());
        }
        // The pressure taints follow the conditions just written.
        let current_taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        if let Some(taints) = nodestatus::pressure_taints(&current_taints, &pressure) {
            // resourceVersion makes this a compare-and-swap with other taint writers; a
            // conflict is retried on the next round.
            let patch = serde_json::json!({
                "metadata": {"resourceVersion": resource_version},
                "spec": {"taints": taints},
            });
            match self
                .api()
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => tracing::info!(pressure = ?pressure, "node pressure taints updated"),
                Err(e) => tracing::warn!(error = %e, "updating the node's pressure taints"),
            }
        }
        Ok(ready)
    }

    /// Syncs every `update_frequency` until shutdown; at start-up every
    /// `FAST_STATUS_PERIOD` until the node is Ready (upstream's `fastStatusUpdateOnce`):
    /// the pod network configuration written once the node has its podCIDR makes it Ready
    /// within a moment, not at the next 10 s round.
    pub async fn run(self, mut shutdown: Shutdown) {
        let mut last_report = None;
        let started = Instant::now();
        let mut fast = true;
        loop {
            match self.sync(&mut last_report).await {
                Ok(ready) => fast &= !ready,
                Err(e) => tracing::warn!(error = %e, "error updating node status, will retry"),
            }
            fast &= started.elapsed() < FAST_STATUS_FOR;
            let period = if fast {
                FAST_STATUS_PERIOD
            } else {
                self.update_frequency
            };
            tokio::select! {
                () = shutdown.signaled() => return,
                () = tokio::time::sleep(period) => {}
            }
        }
    }
}
