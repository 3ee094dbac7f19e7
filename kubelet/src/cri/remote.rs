//! The CRI client of a runtime on a unix socket (upstream's `remoteRuntimeService` and
//! `remoteImageService`): containerd's `runtime.v1` gRPC services over tonic, each call
//! counted in [`Metrics`] and bounded by `--runtime-request-timeout`.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

use super::{api, Error, ImageService, Metrics, Result, RuntimeService};

/// Upstream's default `--runtime-request-timeout`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// A CRI runtime reached over gRPC on a unix socket (containerd, CRI-O).
#[derive(Clone, Debug)]
pub struct RemoteRuntime {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    metrics: Metrics,
    socket: PathBuf,
}

/// The socket path of `unix:///path` (or a bare absolute path, as upstream accepts).
pub fn socket_path(endpoint: &str) -> Result<PathBuf> {
    let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    if path.starts_with('/') {
        Ok(PathBuf::from(path))
    } else {
        Err(Error::Endpoint {
            endpoint: endpoint.to_owned(),
            reason: "only unix:///absolute/path sockets are supported".into(),
        })
    }
}

impl RemoteRuntime {
    /// A client of the runtime at `endpoint`; it connects on first use (and again after
    /// the runtime restarts), so the runtime need not be up yet.
    pub fn new(endpoint: &str, request_timeout: Duration, metrics: Metrics) -> Result<Self> {
        let socket = socket_path(endpoint)?;
        let path = socket.clone();
        // The URI is required by tonic but unused: the connector dials the socket.
        let channel = Endpoint::from_static("http://localhost")
            .timeout(request_timeout)
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }));
        Ok(RemoteRuntime {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            metrics,
            socket,
        })
    }

    /// The socket this client dials.
    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    async fn runtime_call<T, F, Fut>(&self, operation: &'static str, f: F) -> Result<T>
    where
        F: FnOnce(RuntimeServiceClient<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let started = Instant::now();
        let result = f(self.runtime.clone()).await;
        self.metrics
            .record(operation, started.elapsed(), result.is_ok());
        result
            .map(tonic::Response::into_inner)
            .map_err(|status| Error::Rpc { operation, status })
    }

    async fn image_call<T, F, Fut>(&self, operation: &'static str, f: F) -> Result<T>
    where
        F: FnOnce(ImageServiceClient<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let started = Instant::now();
        let result = f(self.images.clone()).await;
        self.metrics
            .record(operation, started.elapsed(), result.is_ok());
        result
            .map(tonic::Response::into_inner)
            .map_err(|status| Error::Rpc { operation, status })
    }
}

#[async_trait]
impl RuntimeService for RemoteRuntime {
    async fn version(&self) -> Result<api::VersionResponse> {
        self.runtime_call("version", |mut c| async move {
            c.version(api::VersionRequest {
                version: "v1".into(),
            })
            .await
        })
        .await
    }

    async fn status(&self) -> Result<api::RuntimeStatus> {
        self.runtime_call("status", |mut c| async move {
            c.status(api::StatusRequest { verbose: false }).await
        })
        .await?
        .status
        .ok_or(Error::Incomplete {
            operation: "status",
            field: "status",
        })
    }

    async fn run_pod_sandbox(
        &self,
        config: api::PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<String> {
        let request = api::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: runtime_handler.to_owned(),
        };
        Ok(self
            .runtime_call("run_podsandbox", |mut c| async move {
                c.run_pod_sandbox(request).await
            })
            .await?
            .pod_sandbox_id)
    }

    async fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        let request = api::StopPodSandboxRequest {
            pod_sandbox_id: id.to_owned(),
        };
        self.runtime_call("stop_podsandbox", |mut c| async move {
            c.stop_pod_sandbox(request).await
        })
        .await
        .map(drop)
    }

    async fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        let request = api::RemovePodSandboxRequest {
            pod_sandbox_id: id.to_owned(),
        };
        self.runtime_call("remove_podsandbox", |mut c| async move {
            c.remove_pod_sandbox(request).await
        })
        .await
        .map(drop)
    }

    async fn pod_sandbox_status(&self, id: &str) -> Result<api::PodSandboxStatus> {
        let request = api::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_owned(),
            verbose: false,
        };
        self.runtime_call("podsandbox_status", |mut c| async move {
            c.pod_sandbox_status(request).await
        })
        .await?
        .status
        .ok_or(Error::Incomplete {
            operation: "podsandbox_status",
            field: "status",
        })
    }

    async fn list_pod_sandbox(
        &self,
        filter: Option<api::PodSandboxFilter>,
    ) -> Result<Vec<api::PodSandbox>> {
        Ok(self
            .runtime_call("list_podsandbox", |mut c| async move {
                c.list_pod_sandbox(api::ListPodSandboxRequest { filter })
                    .await
            })
            .await?
            .items)
    }

    async fn create_container(
        &self,
        pod_sandbox_id: &str,
        config: api::ContainerConfig,
        sandbox_config: api::PodSandboxConfig,
    ) -> Result<String> {
        let request = api::CreateContainerRequest {
            pod_sandbox_id: pod_sandbox_id.to_owned(),
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        };
        Ok(self
            .runtime_call("create_container", |mut c| async move {
                c.create_container(request).await
            })
            .await?
            .container_id)
    }

    async fn start_container(&self, id: &str) -> Result<()> {
        let request = api::StartContainerRequest {
            container_id: id.to_owned(),
        };
        self.runtime_call("start_container", |mut c| async move {
            c.start_container(request).await
        })
        .await
        .map(drop)
    }

    async fn stop_container(&self, id: &str, timeout: i64) -> Result<()> {
        let request = api::StopContainerRequest {
            container_id: id.to_owned(),
            timeout,
        };
        // The runtime waits up to `timeout` for the container to exit: allow for it.
        let mut request = tonic::Request::new(request);
        request.set_timeout(
            DEFAULT_REQUEST_TIMEOUT + Duration::from_secs(u64::try_from(timeout).unwrap_or(0)),
        );
        self.runtime_call("stop_container", |mut c| async move {
            c.stop_container(request).await
        })
        .await
        .map(drop)
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        let request = api::RemoveContainerRequest {
            container_id: id.to_owned(),
        };
        self.runtime_call("remove_container", |mut c| async move {
            c.remove_container(request).await
        })
        .await
        .map(drop)
    }

    async fn list_containers(
        &self,
        filter: Option<api::ContainerFilter>,
    ) -> Result<Vec<api::Container>> {
        Ok(self
            .runtime_call("list_containers", |mut c| async move {
                c.list_containers(api::ListContainersRequest { filter })
                    .await
            })
            .await?
            .containers)
    }

    async fn list_container_stats(
        &self,
        filter: Option<api::ContainerStatsFilter>,
    ) -> Result<Vec<api::ContainerStats>> {
        Ok(self
            .runtime_call("list_container_stats", |mut c| async move {
                c.list_container_stats(api::ListContainerStatsRequest { filter })
                    .await
            })
            .await?
            .stats)
    }

    async fn container_status(&self, id: &str) -> Result<api::ContainerStatus> {
        let request = api::ContainerStatusRequest {
            container_id: id.to_owned(),
            verbose: false,
        };
        self.runtime_call("container_status", |mut c| async move {
            c.container_status(request).await
        })
        .await?
        .status
        .ok_or(Error::Incomplete {
            operation: "container_status",
            field: "status",
        })
    }

    async fn exec(&self, request: api::ExecRequest) -> Result<String> {
        Ok(self
            .runtime_call("exec", |mut c| async move { c.exec(request).await })
            .await?
            .url)
    }

    async fn attach(&self, request: api::AttachRequest) -> Result<String> {
        Ok(self
            .runtime_call("attach", |mut c| async move { c.attach(request).await })
            .await?
            .url)
    }

    async fn port_forward(&self, request: api::PortForwardRequest) -> Result<String> {
        Ok(self
            .runtime_call("port_forward", |mut c| async move {
                c.port_forward(request).await
            })
            .await?
            .url)
    }

    async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<api::ExecSyncResponse> {
        let mut request = tonic::Request::new(api::ExecSyncRequest {
            container_id: id.to_owned(),
            cmd,
            timeout: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        });
        request.set_timeout(timeout + Duration::from_secs(5));
        self.runtime_call(
            "exec_sync",
            |mut c| async move { c.exec_sync(request).await },
        )
        .await
    }
}

#[async_trait]
impl ImageService for RemoteRuntime {
    async fn image_status(&self, image: &str) -> Result<Option<api::Image>> {
        let request = api::ImageStatusRequest {
            image: Some(image_spec(image)),
            verbose: false,
        };
        Ok(self
            .image_call("image_status", |mut c| async move {
                c.image_status(request).await
            })
            .await?
            .image)
    }

    async fn pull_image(
        &self,
        image: &str,
        sandbox_config: Option<api::PodSandboxConfig>,
    ) -> Result<String> {
        let request = api::PullImageRequest {
            image: Some(image_spec(image)),
            auth: None,
            sandbox_config,
        };
        Ok(self
            .image_call(
                "pull_image",
                |mut c| async move { c.pull_image(request).await },
            )
            .await?
            .image_ref)
    }

    async fn list_images(&self) -> Result<Vec<api::Image>> {
        Ok(self
            .image_call("list_images", |mut c| async move {
                c.list_images(api::ListImagesRequest { filter: None }).await
            })
            .await?
            .images)
    }

    async fn image_fs_info(&self) -> Result<Vec<api::FilesystemUsage>> {
        Ok(self
            .image_call("image_fs_info", |mut c| async move {
                c.image_fs_info(api::ImageFsInfoRequest {}).await
            })
            .await?
            .image_filesystems)
    }

    async fn remove_image(&self, image: &str) -> Result<()> {
        let request = api::RemoveImageRequest {
            image: Some(image_spec(image)),
        };
        self.image_call("remove_image", |mut c| async move {
            c.remove_image(request).await
        })
        .await
        .map(drop)
    }
}

fn image_spec(image: &str) -> api::ImageSpec {
    api::ImageSpec {
        image: image.to_owned(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_unix_sockets() {
        assert_eq!(
            socket_path("unix:///run/containerd/containerd.sock").unwrap(),
            PathBuf::from("/run/containerd/containerd.sock")
        );
        assert_eq!(
            socket_path("/run/x.sock").unwrap(),
            PathBuf::from("/run/x.sock")
        );
        let err = socket_path("tcp://127.0.0.1:1").unwrap_err();
        assert!(err.to_string().contains("unix://"), "{err}");
    }
}
