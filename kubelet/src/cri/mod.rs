//! The container runtime interface as the kubelet sees it (upstream `pkg/kubelet/cri` and
//! `internalapi`): the [`RuntimeService`] and [`ImageService`] traits over the CRI v1
//! messages, their containerd implementation over gRPC on a unix socket ([`remote`]), and
//! the `kubelet_runtime_operations_*` metrics every call records.

pub mod remote;

use std::time::Duration;

use async_trait::async_trait;
pub use k8s_cri::v1 as api;

pub use remote::RemoteRuntime;

/// Why a CRI call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid container runtime endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("{operation}: {status}")]
    Rpc {
        operation: &'static str,
        #[source]
        status: tonic::Status,
    },
    #[error("{operation}: the runtime's response has no {field}")]
    Incomplete {
        operation: &'static str,
        field: &'static str,
    },
}

impl Error {
    /// The runtime does not know the sandbox, container or image.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Rpc { status, .. } if status.code() == tonic::Code::NotFound)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Pod sandboxes and containers (upstream's `internalapi.RuntimeService`).
#[async_trait]
pub trait RuntimeService: Send + Sync {
    async fn version(&self) -> Result<api::VersionResponse>;
    /// The runtime's conditions (RuntimeReady, NetworkReady).
    async fn status(&self) -> Result<api::RuntimeStatus>;

    /// Creates and starts a sandbox; its id.
    async fn run_pod_sandbox(
        &self,
        config: api::PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<String>;
    async fn stop_pod_sandbox(&self, id: &str) -> Result<()>;
    async fn remove_pod_sandbox(&self, id: &str) -> Result<()>;
    async fn pod_sandbox_status(&self, id: &str) -> Result<api::PodSandboxStatus>;
    async fn list_pod_sandbox(
        &self,
        filter: Option<api::PodSandboxFilter>,
    ) -> Result<Vec<api::PodSandbox>>;

    /// Creates a container in a sandbox; its id.
    async fn create_container(
        &self,
        pod_sandbox_id: &str,
        config: api::ContainerConfig,
        sandbox_config: api::PodSandboxConfig,
    ) -> Result<String>;
    async fn start_container(&self, id: &str) -> Result<()>;
    /// Sends the stop signal, then SIGKILL after `timeout` seconds.
    async fn stop_container(&self, id: &str, timeout: i64) -> Result<()>;
    async fn remove_container(&self, id: &str) -> Result<()>;
    async fn list_containers(
        &self,
        filter: Option<api::ContainerFilter>,
    ) -> Result<Vec<api::Container>>;
    async fn container_status(&self, id: &str) -> Result<api::ContainerStatus>;
    /// Resource usage of the containers (containerd fills cpu, memory and the writable
    /// layer).
    async fn list_container_stats(
        &self,
        filter: Option<api::ContainerStatsFilter>,
    ) -> Result<Vec<api::ContainerStats>>;
    /// A single-use URL on the runtime's streaming server for an exec session.
    async fn exec(&self, request: api::ExecRequest) -> Result<String>;
    /// A single-use URL on the runtime's streaming server to attach to a container.
    async fn attach(&self, request: api::AttachRequest) -> Result<String>;
    /// A single-use URL on the runtime's streaming server to forward ports of a sandbox.
    async fn port_forward(&self, request: api::PortForwardRequest) -> Result<String>;
    /// Runs `cmd` in the container and waits for it, at most `timeout`.
    async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<api::ExecSyncResponse>;
}

/// Images (upstream's `internalapi.ImageManagerService`).
#[async_trait]
pub trait ImageService: Send + Sync {
    /// The image if the runtime has it.
    async fn image_status(&self, image: &str) -> Result<Option<api::Image>>;
    /// Pulls the image; its reference (image id) in the runtime.
    async fn pull_image(
        &self,
        image: &str,
        sandbox_config: Option<api::PodSandboxConfig>,
    ) -> Result<String>;
    async fn list_images(&self) -> Result<Vec<api::Image>>;
    async fn remove_image(&self, image: &str) -> Result<()>;
    /// The filesystems holding images, with their usage.
    async fn image_fs_info(&self) -> Result<Vec<api::FilesystemUsage>>;
}

/// `kubelet_runtime_operations_total`, `_errors_total` and `_duration_seconds` by
/// `operation_type`, as upstream's instrumented runtime service.
#[derive(Clone, Debug)]
pub struct Metrics {
    operations: prometheus::IntCounterVec,
    errors: prometheus::IntCounterVec,
    duration: prometheus::HistogramVec,
}

impl Metrics {
    pub fn new(registry: &prometheus::Registry) -> Result<Metrics, prometheus::Error> {
        let operations = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "kubelet_runtime_operations_total",
                "Cumulative number of runtime operations by operation type.",
            ),
            &["operation_type"],
        )?;
        let errors = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "kubelet_runtime_operations_errors_total",
                "Cumulative number of runtime operation errors by operation type.",
            ),
            &["operation_type"],
        )?;
        let duration = prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new(
                "kubelet_runtime_operations_duration_seconds",
                "Duration in seconds of runtime operations. Broken down by operation type.",
            )
            .buckets(prometheus::exponential_buckets(0.005, 2.5, 14)?),
            &["operation_type"],
        )?;
        registry.register(Box::new(operations.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(Metrics {
            operations,
            errors,
            duration,
        })
    }

    /// Counts one call of `operation` that took `elapsed` and succeeded or not.
    pub fn record(&self, operation: &str, elapsed: Duration, ok: bool) {
        self.operations.with_label_values(&[operation]).inc();
        self.duration
            .with_label_values(&[operation])
            .observe(elapsed.as_secs_f64());
        if !ok {
            self.errors.with_label_values(&[operation]).inc();
        }
    }
}
