//! Volumes in real containers: an emptyDir shared by an init container and the main one,
//! a memory-backed emptyDir (tmpfs), hostPath, configMap (following updates), secret and
//! downwardAPI files; all gone from the host once the pod is deleted.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

use crate::common::{phase, wait_until, TestNode, TIMEOUT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_reach_the_containers() {
    let node = TestNode::start().await;
    let host_dir = tempfile::tempdir().unwrap();
    let host_path = host_dir.path().join("made-by-kubelet");
    let cms: Api<ConfigMap> = Api::namespaced(node.client.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "app-config"}, "data": {"app.conf": "level=info", "other": "x"}
    }))
    .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "app-secret"}, "stringData": {"token": "s3cret"}
    }))
    .unwrap();
    Api::<Secret>::namespaced(node.client.clone(), "default")
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let pod = node
        .create_pod(
            "mounted",
            serde_json::json!({
                // sleep as PID 1 ignores SIGTERM: keep the stop short.
                "terminationGracePeriodSeconds": 1,
                "volumes": [
                    {"name": "shared", "emptyDir": {}},
                    {"name": "cache", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
                    {"name": "host", "hostPath": {"path": host_path, "type": "DirectoryOrCreate"}},
                    {"name": "config", "configMap": {"name": "app-config",
                        "items": [{"key": "app.conf", "path": "conf/app.conf"}]}},
                    {"name": "secret", "secret": {"secretName": "app-secret", "defaultMode": 256}},
                    {"name": "info", "downwardAPI": {"items": [
                        {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}}
                ],
                "initContainers": [{"name": "init", "image": "busybox:1.35",
                    "command": ["sh", "-c", "echo from-init > /shared/hello; echo host > /host/file"],
                    "volumeMounts": [{"name": "shared", "mountPath": "/shared"},
                                     {"name": "host", "mountPath": "/host"}]}],
                "containers": [{"name": "main", "image": "busybox:1.35", "command": ["sleep", "3600"],
                    "volumeMounts": [
                        {"name": "shared", "mountPath": "/shared"},
                        {"name": "cache", "mountPath": "/cache"},
                        {"name": "config", "mountPath": "/etc/app", "readOnly": true},
                        {"name": "secret", "mountPath": "/var/run/secret"},
                        {"name": "info", "mountPath": "/etc/podinfo"}
                    ]}]
            }),
        )
        .await;
    let uid = pod.metadata.uid.clone().unwrap();
    let running = node
        .wait_pod("mounted", "pod Running", |p| phase(p) == "Running")
        .await;
    let id = running
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .container_id
        .clone()
        .unwrap()
        .trim_start_matches("containerd://")
        .to_owned();
    assert_eq!(node.exec_in(&id, "cat /shared/hello").await, "from-init");
    assert_eq!(
        std::fs::read_to_string(host_path.join("file")).unwrap(),
        "host\n"
    );
    let cache = node.exec_in(&id, "grep ' /cache ' /proc/mounts").await;
    assert!(cache.starts_with("tmpfs"), "{cache}");
    assert_eq!(
        node.exec_in(&id, "cat /etc/app/conf/app.conf").await,
        "level=info"
    );
    assert_eq!(node.exec_in(&id, "ls /etc/app").await, "conf");
    assert!(node
        .exec_in(&id, "touch /etc/app/x 2>&1 || echo refused")
        .await
        .contains("refused"));
    assert_eq!(
        node.exec_in(&id, "cat /var/run/secret/token").await,
        "s3cret"
    );
    assert_eq!(
        node.exec_in(&id, "stat -c %a /var/run/secret/token").await,
        "400"
    );
    assert_eq!(node.exec_in(&id, "cat /etc/podinfo/name").await, "mounted");

    // A changed ConfigMap reaches the running container.
    cms.patch(
        "app-config",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"data": {"app.conf": "level=debug"}})),
    )
    .await
    .unwrap();
    // The kubelet looks again on its periodic sync; nudge it with a pod change instead
    // of waiting a minute.
    let pods: Api<Pod> = Api::namespaced(node.client.clone(), "default");
    pods.patch(
        "mounted",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"annotations": {"nudge": "1"}}})),
    )
    .await
    .unwrap();
    wait_until(TIMEOUT, "updated config file", || {
        let node = &node;
        let id = id.clone();
        async move {
            use kubelet::cri::RuntimeService;
            let out = node
                .containerd
                .runtime()
                .exec_sync(
                    &id,
                    vec!["cat".into(), "/etc/app/conf/app.conf".into()],
                    Duration::from_secs(5),
                )
                .await
                .ok()?;
            (String::from_utf8_lossy(&out.stdout) == "level=debug").then_some(())
        }
    })
    .await;

    // Deleting the pod removes its volumes from the host (the hostPath stays).
    let volumes_dir = node.settings().root_dir.join("pods").join(&uid);
    assert!(volumes_dir.exists());
    pods.delete("mounted", &DeleteParams::default())
        .await
        .unwrap();
    wait_until(TIMEOUT, "pod gone", || {
        let pods = pods.clone();
        async move { pods.get_opt("mounted").await.ok()?.is_none().then_some(()) }
    })
    .await;
    assert!(!volumes_dir.exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&uid), "{mounts}");
    assert!(host_path.join("file").exists());
}
