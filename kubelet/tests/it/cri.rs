//! The CRI client against a real private containerd: version and status, images, and a
//! host-network sandbox running a busybox container through its whole life.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kubelet::cri::{api, ImageService, RuntimeService};

use crate::common::{containerd, BUSYBOX_IMAGE, PAUSE_IMAGE};

fn sandbox_config(name: &str, uid: &str) -> api::PodSandboxConfig {
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: name.into(),
            uid: uid.into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        linux: Some(api::LinuxPodSandboxConfig {
            security_context: Some(api::LinuxSandboxSecurityContext {
                namespace_options: Some(api::NamespaceOption {
                    network: api::NamespaceMode::Node.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        labels: HashMap::from([("io.kubernetes.pod.name".into(), name.into())]),
        ..Default::default()
    }
}

#[tokio::test]
async fn runtime_version_status_and_images() {
    let containerd = containerd().await;
    let registry = prometheus::Registry::new();
    let runtime = kubelet::cri::RemoteRuntime::new(
        &containerd.endpoint(),
        kubelet::cri::remote::DEFAULT_REQUEST_TIMEOUT,
        kubelet::cri::Metrics::new(&registry).unwrap(),
    )
    .unwrap();

    let version = runtime.version().await.unwrap();
    assert_eq!(version.runtime_name, "containerd");
    assert_eq!(version.runtime_api_version, "v1");
    assert!(!version.runtime_version.is_empty());

    let status = runtime.status().await.unwrap();
    let ready = |t: &str| {
        status
            .conditions
            .iter()
            .find(|c| c.r#type == t)
            .map(|c| c.status)
    };
    assert_eq!(ready("RuntimeReady"), Some(true), "{status:?}");
    // No CNI configuration written yet.
    assert_eq!(ready("NetworkReady"), Some(false), "{status:?}");

    let busybox = runtime.image_status(BUSYBOX_IMAGE).await.unwrap();
    let busybox = busybox.expect("busybox imported by hack/images.sh");
    assert!(busybox.id.starts_with("sha256:"), "{busybox:?}");
    assert!(runtime
        .image_status("busybox:1.35")
        .await
        .unwrap()
        .is_some());
    assert!(runtime.image_status(PAUSE_IMAGE).await.unwrap().is_some());
    assert!(runtime
        .image_status("docker.io/library/nothing:here")
        .await
        .unwrap()
        .is_none());
    let tags: Vec<String> = runtime
        .list_images()
        .await
        .unwrap()
        .into_iter()
        .flat_map(|i| i.repo_tags)
        .collect();
    assert!(tags.iter().any(|t| t == BUSYBOX_IMAGE), "{tags:?}");
    assert!(tags.iter().any(|t| t == PAUSE_IMAGE), "{tags:?}");

    // A pull of an absent image goes to the loopback mirror and fails at once.
    let started = Instant::now();
    let err = runtime
        .pull_image("docker.io/library/nothing:here", None)
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(20), "{err}");
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");

    let text = String::from_utf8(component_base::metrics::encode_text(&registry)).unwrap();
    assert!(
        text.contains("kubelet_runtime_operations_total{operation_type=\"version\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("kubelet_runtime_operations_errors_total{operation_type=\"pull_image\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn sandbox_and_container_lifecycle() {
    let containerd = containerd().await;
    let runtime = containerd.runtime();
    let config = sandbox_config("cri-lifecycle", "0b8c0c1e-cri-lifecycle");
    let sandbox = runtime.run_pod_sandbox(config.clone(), "").await.unwrap();
    let status = runtime.pod_sandbox_status(&sandbox).await.unwrap();
    assert_eq!(status.state(), api::PodSandboxState::SandboxReady);

    let container = api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: "main".into(),
            attempt: 0,
        }),
        image: Some(api::ImageSpec {
            image: BUSYBOX_IMAGE.into(),
            ..Default::default()
        }),
        command: vec!["sleep".into(), "3600".into()],
        ..Default::default()
    };
    let id = runtime
        .create_container(&sandbox, container, config)
        .await
        .unwrap();
    runtime.start_container(&id).await.unwrap();
    let status = runtime.container_status(&id).await.unwrap();
    assert_eq!(status.state(), api::ContainerState::ContainerRunning);

    let out = runtime
        .exec_sync(
            &id,
            vec!["sh".into(), "-c".into(), "echo hello; exit 3".into()],
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    assert_eq!(out.exit_code, 3);

    let listed = runtime.list_containers(None).await.unwrap();
    assert!(listed
        .iter()
        .any(|c| c.id == id && c.pod_sandbox_id == sandbox));

    runtime.stop_container(&id, 1).await.unwrap();
    let status = runtime.container_status(&id).await.unwrap();
    assert_eq!(status.state(), api::ContainerState::ContainerExited);
    runtime.remove_container(&id).await.unwrap();
    let err = runtime.container_status(&id).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");

    runtime.stop_pod_sandbox(&sandbox).await.unwrap();
    runtime.remove_pod_sandbox(&sandbox).await.unwrap();
    assert!(runtime.list_pod_sandbox(None).await.unwrap().is_empty());
}
