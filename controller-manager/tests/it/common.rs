//! A real etcd + kube-apiserver (in-process) and an in-process kube-controller-manager
//! running the controllers a test names. No kubelet: tests play its part by setting pod
//! status.
#![allow(dead_code)]

use std::time::Duration;

use component_base::shutdown::{self, Trigger};
use kube::Client;

pub use apiserver::testing::{wait_until, TestApi};
use controller_manager::app::{self, Config, Running};
use controller_manager::options::ControllerOptions;

pub const TIMEOUT: Duration = Duration::from_secs(30);

pub struct Cluster {
    pub api: TestApi,
    pub client: Client,
    pub manager: Option<(Trigger, Running)>,
}

impl Cluster {
    /// The control plane and a controller-manager running `controllers`.
    pub async fn start(controllers: &[&'static str]) -> Cluster {
        Cluster::start_with(controllers, ControllerOptions::default()).await
    }

    pub async fn start_with(controllers: &[&'static str], options: ControllerOptions) -> Cluster {
        init_logs();
        let api = TestApi::start().await;
        let client = api.client().await;
        let mut cluster = Cluster {
            api,
            client,
            manager: None,
        };
        cluster.start_manager(controllers, options).await;
        cluster
    }

    /// The control plane only; start the manager later with [`Cluster::start_manager`].
    pub async fn control_plane() -> Cluster {
        init_logs();
        let api = TestApi::start().await;
        let client = api.client().await;
        Cluster {
            api,
            client,
            manager: None,
        }
    }

    pub async fn start_manager(
        &mut self,
        controllers: &[&'static str],
        options: ControllerOptions,
    ) {
        let (trigger, shutdown) = shutdown::channel();
        let config = Config {
            client: self.client.clone(),
            controllers: options,
            enabled: controllers.to_vec(),
            leader_election: None,
            serving: Some(component_base::options::SecureServingOptions {
                bind_address: "127.0.0.1".parse().unwrap(),
                secure_port: Some(0),
                ..Default::default()
            }),
            registry: prometheus::Registry::new(),
        };
        let running = app::start(config, shutdown)
            .await
            .expect("controller-manager starts");
        let informers = running.informers.clone();
        wait_until(TIMEOUT, "informers synced", || {
            let informers = informers.clone();
            async move { informers.synced().then_some(()) }
        })
        .await;
        self.manager = Some((trigger, running));
    }

    pub async fn stop_manager(&mut self) {
        if let Some((trigger, running)) = self.manager.take() {
            trigger.shutdown();
            let _ = running.task.await;
        }
    }
}

/// The controllers' logs (RUST_LOG, else info from the controller-manager and warnings
/// from the rest) go to the test's captured output, so a failing test shows them.
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,controller_manager=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .with_ansi(false)
        .try_init();
}

/// A pod neither finished nor being deleted (upstream's `IsPodActive`).
pub fn is_active(p: &k8s_openapi::api::core::v1::Pod) -> bool {
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    p.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// The pod's controller ownerReference names `uid`.
pub fn controlled_by(p: &k8s_openapi::api::core::v1::Pod, uid: &str) -> bool {
    p.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && r.uid == uid)
}

/// Every pod in `ns` (finished and deleting ones too) whose controller is `uid`.
pub async fn controlled_pods(
    c: &Cluster,
    ns: &str,
    uid: &str,
) -> Vec<k8s_openapi::api::core::v1::Pod> {
    kube::Api::<k8s_openapi::api::core::v1::Pod>::namespaced(c.client.clone(), ns)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| controlled_by(p, uid))
        .collect()
}

/// The events `controller` reported about the object `name` in `ns`.
pub async fn events_by(
    c: &Cluster,
    ns: &str,
    controller: &str,
    name: &str,
) -> Vec<k8s_openapi::api::events::v1::Event> {
    kube::Api::<k8s_openapi::api::events::v1::Event>::namespaced(c.client.clone(), ns)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.reporting_controller.as_deref() == Some(controller)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
        .collect()
}
