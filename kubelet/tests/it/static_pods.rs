//! Static pods from --pod-manifest-path: run without the API's say-so, shown as mirror
//! pods that carry their status, kept when the mirror is deleted, removed with their
//! manifest.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};
use kubelet::cri::{api, RuntimeService};

use crate::common::{phase, wait_until, TestNode, TIMEOUT};

const MANIFEST: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {tier: static}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: busybox:1.35\n    command: [sleep, '3600']\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_pods_run_with_mirror_pods() {
    let manifests = tempfile::tempdir().unwrap();
    let dir = manifests.path().to_path_buf();
    let node = TestNode::start_with(move |s| {
        s.pod_manifest_path = Some(dir.clone());
        s.file_check_frequency = Duration::from_millis(500);
    })
    .await;
    std::fs::write(manifests.path().join("web.yaml"), MANIFEST).unwrap();
    let name = format!("web-{}", node.name);
    let mirror = node
        .wait_pod(&name, "mirror pod Running", |p| phase(p) == "Running")
        .await;
    let annotations = mirror.metadata.annotations.clone().unwrap();
    let hash = annotations["kubernetes.io/config.mirror"].clone();
    assert_eq!(annotations["kubernetes.io/config.source"], "file");
    assert_ne!(mirror.metadata.uid.as_deref(), Some(hash.as_str()));
    assert_eq!(mirror.metadata.labels.unwrap()["tier"], "static");
    let owner = &mirror.metadata.owner_references.clone().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Node", node.name.as_str())
    );

    // The runtime runs the static pod (its uid is the hash), not the mirror.
    let runtime = node.containerd.runtime();
    let ours = HashMap::from([("io.kubernetes.pod.uid".to_owned(), hash.clone())]);
    let containers = runtime
        .list_containers(Some(api::ContainerFilter {
            label_selector: ours.clone(),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(containers.len(), 1);
    let container = containers[0].id.clone();

    // Deleting the mirror does not stop the static pod; the kubelet recreates the mirror.
    let pods: Api<Pod> = Api::namespaced(node.client.clone(), "default");
    let force = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    pods.delete(&name, &force).await.unwrap();
    let old_uid = mirror.metadata.uid.clone();
    node.wait_pod(&name, "a new mirror pod", |p| {
        p.metadata.uid != old_uid && phase(p) == "Running"
    })
    .await;
    let containers = runtime
        .list_containers(Some(api::ContainerFilter {
            label_selector: ours.clone(),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0].id, container);

    // Removing the manifest removes the pod and its mirror.
    std::fs::remove_file(manifests.path().join("web.yaml")).unwrap();
    wait_until(TIMEOUT, "mirror pod deleted", || {
        let pods = pods.clone();
        let name = name.clone();
        async move { pods.get_opt(&name).await.ok()?.is_none().then_some(()) }
    })
    .await;
    wait_until(TIMEOUT, "static pod removed from containerd", || {
        let runtime = runtime.clone();
        let ours = ours.clone();
        async move {
            runtime
                .list_pod_sandbox(Some(api::PodSandboxFilter {
                    label_selector: ours,
                    ..Default::default()
                }))
                .await
                .ok()?
                .is_empty()
                .then_some(())
        }
    })
    .await;
}
