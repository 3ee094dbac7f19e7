//! Volumes in real containers: an emptyDir shared by an init container and the main one,
//! a memory-backed emptyDir (tmpfs), hostPath, configMap (following updates through the
//! periodic resync), secret and downwardAPI files; all gone from the host once the pod is
//! deleted. Projected volumes with ServiceAccount tokens (the `kube-api-access-*` shape)
//! and persistentVolumeClaims are in `projected_volumes` and `persistent_volume_claims`.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

use crate::common::{phase, wait_until, TestNode, TIMEOUT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_reach_the_containers() {
    // A short --sync-frequency: a changed ConfigMap reaches the pod within seconds.
    let node = TestNode::start_with(|s| s.sync_frequency = Duration::from_secs(2)).await;
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
    // Upstream's layout: the files live in a timestamped directory behind `..data`.
    let listing = node.exec_in(&id, "ls -a /etc/app").await;
    assert!(listing.contains("..data"), "{listing}");
    assert_eq!(
        node.exec_in(&id, "readlink /etc/app/conf").await,
        "..data/conf"
    );
    assert!(node
        .exec_in(&id, "touch /etc/app/x 2>&1 || echo refused")
        .await
        .contains("refused"));
    assert_eq!(
        node.exec_in(&id, "cat /var/run/secret/token").await,
        "s3cret"
    );
    assert_eq!(
        node.exec_in(&id, "stat -L -c %a /var/run/secret/token")
            .await,
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
    // Nothing about the pod changes: the kubelet's periodic resync brings the new file.
    let pods: Api<Pod> = Api::namespaced(node.client.clone(), "default");
    wait_until(Duration::from_secs(30), "updated config file", || {
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

/// The id of the pod's first container, as CRI knows it.
fn container_id(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.container_id.clone())
        .expect("a started container")
        .trim_start_matches("containerd://")
        .to_owned()
}

/// The claims of a projected token, verified with the test apiserver's public key.
fn verified_claims(node: &TestNode, token: &str, audience: &str) -> serde_json::Value {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    let pem = std::fs::read(node.api.dir.path().join("sa.pub")).unwrap();
    let key = DecodingKey::from_ec_pem(&pem).unwrap();
    let mut v = Validation::new(Algorithm::ES256);
    v.set_audience(&[audience]);
    v.set_issuer(&[apiserver::testing::SERVICE_ACCOUNT_ISSUER]);
    jsonwebtoken::decode::<serde_json::Value>(token, &key, &v)
        .unwrap_or_else(|e| panic!("the projected token does not verify: {e}"))
        .claims
}

async fn create<K>(client: &kube::Client, obj: serde_json::Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let obj: K = serde_json::from_value(obj).unwrap();
    Api::<K>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &obj)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projected_volumes() {
    let node = TestNode::start_with(|s| s.sync_frequency = Duration::from_secs(2)).await;
    let client = node.client.clone();
    // What the controller-manager would make: the namespace's `default` ServiceAccount
    // and the `kube-root-ca.crt` ConfigMap.
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), "default");
    if sas.get_opt("default").await.unwrap().is_none() {
        let _: k8s_openapi::api::core::v1::ServiceAccount = create(
            &client,
            serde_json::json!({"metadata": {"name": "default"}}),
        )
        .await;
    }
    let ca = std::fs::read_to_string(node.api.dir.path().join("certs/ca.crt")).unwrap();
    let _: ConfigMap = create(
        &client,
        serde_json::json!({"metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": ca}}),
    )
    .await;
    let _: ConfigMap = create(
        &client,
        serde_json::json!({"metadata": {"name": "settings"}, "data": {"mode": "blue", "unused": "x"}}),
    )
    .await;
    let _: Secret = create(
        &client,
        serde_json::json!({"metadata": {"name": "creds"}, "stringData": {"password": "hunter2"}}),
    )
    .await;

    // The volume the ServiceAccount admission plugin adds upstream, spelled out, and a
    // second projected volume mixing every other source.
    let pod = node
        .create_pod(
            "projected",
            serde_json::json!({
                "terminationGracePeriodSeconds": 1,
                "volumes": [
                    {"name": "kube-api-access-x7k2p", "projected": {"defaultMode": 420, "sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                        {"configMap": {"name": "kube-root-ca.crt",
                                       "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                        {"downwardAPI": {"items": [{"path": "namespace",
                            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
                    ]}},
                    {"name": "mixed", "projected": {"defaultMode": 0o440, "sources": [
                        {"serviceAccountToken": {"audience": "vault", "expirationSeconds": 600,
                                                 "path": "vault/token"}},
                        {"configMap": {"name": "settings", "items": [{"key": "mode", "path": "conf/mode"}]}},
                        {"configMap": {"name": "absent", "optional": true}},
                        {"secret": {"name": "creds", "items": [{"key": "password", "path": "pw", "mode": 0o400}]}},
                        {"downwardAPI": {"items": [{"path": "podname",
                            "fieldRef": {"fieldPath": "metadata.name"}}]}}
                    ]}}
                ],
                "containers": [{"name": "main", "image": "busybox:1.35", "command": ["sleep", "3600"],
                    "volumeMounts": [
                        {"name": "kube-api-access-x7k2p", "readOnly": true,
                         "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"},
                        {"name": "mixed", "mountPath": "/projected"}
                    ]}]
            }),
        )
        .await;
    let uid = pod.metadata.uid.clone().unwrap();
    let running = node
        .wait_pod("projected", "pod Running", |p| phase(p) == "Running")
        .await;
    let id = container_id(&running);
    let sa_dir = "/var/run/secrets/kubernetes.io/serviceaccount";

    // kube-api-access: token, ca.crt and namespace, as in-cluster clients read them.
    assert_eq!(
        node.exec_in(&id, &format!("ls {sa_dir}")).await,
        "ca.crt\nnamespace\ntoken"
    );
    assert_eq!(
        node.exec_in(&id, &format!("cat {sa_dir}/namespace")).await,
        "default"
    );
    assert_eq!(
        node.exec_in(&id, &format!("cat {sa_dir}/ca.crt")).await,
        ca.trim()
    );
    assert_eq!(
        node.exec_in(&id, &format!("stat -L -c %a {sa_dir}/token"))
            .await,
        "644"
    );
    let token = node.exec_in(&id, &format!("cat {sa_dir}/token")).await;
    let claims = verified_claims(&node, &token, apiserver::testing::SERVICE_ACCOUNT_ISSUER);
    assert_eq!(claims["sub"], "system:serviceaccount:default:default");
    assert_eq!(claims["kubernetes.io"]["pod"]["name"], "projected");
    assert_eq!(claims["kubernetes.io"]["pod"]["uid"], uid.as_str());
    assert_eq!(claims["kubernetes.io"]["namespace"], "default");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3607
    );

    // The mixed volume: audience, paths, modes, the optional source that is absent.
    let vault = node.exec_in(&id, "cat /projected/vault/token").await;
    let claims = verified_claims(&node, &vault, "vault");
    assert_eq!(claims["aud"], serde_json::json!(["vault"]));
    assert_eq!(claims["kubernetes.io"]["pod"]["uid"], uid.as_str());
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        600
    );
    assert_eq!(node.exec_in(&id, "cat /projected/conf/mode").await, "blue");
    assert_eq!(node.exec_in(&id, "cat /projected/pw").await, "hunter2");
    assert_eq!(
        node.exec_in(&id, "cat /projected/podname").await,
        "projected"
    );
    assert_eq!(
        node.exec_in(&id, "stat -L -c %a /projected/pw /projected/conf/mode")
            .await,
        "400\n440"
    );
    assert_eq!(
        node.exec_in(&id, "ls /projected").await,
        "conf\npodname\npw\nvault"
    );

    // A changed ConfigMap reaches the projected file; the token stays (not yet due).
    Api::<ConfigMap>::namespaced(client.clone(), "default")
        .patch(
            "settings",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"mode": "green"}})),
        )
        .await
        .unwrap();
    wait_until(
        Duration::from_secs(30),
        "projected configMap file updated",
        || {
            let node = &node;
            let id = id.clone();
            async move {
                use kubelet::cri::RuntimeService;
                let out = node
                    .containerd
                    .runtime()
                    .exec_sync(
                        &id,
                        vec!["cat".into(), "/projected/conf/mode".into()],
                        Duration::from_secs(5),
                    )
                    .await
                    .ok()?;
                (String::from_utf8_lossy(&out.stdout) == "green").then_some(())
            }
        },
    )
    .await;
    assert_eq!(
        node.exec_in(&id, "cat /projected/vault/token").await,
        vault,
        "a token is renewed at 80% of its lifetime, not on every sync"
    );

    // Ownership as upstream: with an fsGroup the files belong to that group, which may
    // read them (and the container runs with it); with only a runAsUser the token is
    // that user's alone.
    let volumes = serde_json::json!([
        {"name": "v", "projected": {"sources": [
            {"serviceAccountToken": {"path": "token"}},
            {"secret": {"name": "creds", "items": [{"key": "password", "path": "pw", "mode": 0o400}]}}
        ]}}
    ]);
    for (name, security) in [
        (
            "grouped",
            serde_json::json!({"runAsUser": 1000, "fsGroup": 2000}),
        ),
        ("user", serde_json::json!({"runAsUser": 1000})),
    ] {
        node.create_pod(
            name,
            serde_json::json!({
                "terminationGracePeriodSeconds": 1,
                "securityContext": security,
                "volumes": volumes,
                "containers": [{"name": "main", "image": "busybox:1.35", "command": ["sleep", "3600"],
                    "volumeMounts": [{"name": "v", "mountPath": "/v"}]}]
            }),
        )
        .await;
    }
    let grouped = node
        .wait_pod("grouped", "grouped Running", |p| phase(p) == "Running")
        .await;
    let id = container_id(&grouped);
    assert_eq!(
        node.exec_in(&id, "stat -L -c '%a %g' /v/token /v/pw").await,
        "640 2000\n440 2000"
    );
    assert!(node
        .exec_in(&id, "id -G")
        .await
        .split(' ')
        .any(|g| g == "2000"));
    assert_eq!(node.exec_in(&id, "cat /v/pw").await, "hunter2");
    assert!(!node.exec_in(&id, "cat /v/token").await.is_empty());
    let user = node
        .wait_pod("user", "user Running", |p| phase(p) == "Running")
        .await;
    let id = container_id(&user);
    assert_eq!(
        node.exec_in(&id, "stat -L -c '%a %u' /v/token").await,
        "600 1000"
    );
    assert!(!node.exec_in(&id, "cat /v/token").await.is_empty());

    // A pod of a ServiceAccount that does not exist gets no token and waits.
    node.create_pod(
        "orphan",
        serde_json::json!({
            "serviceAccountName": "ghost",
            "volumes": volumes,
            "containers": [{"name": "main", "image": "busybox:1.35", "command": ["sleep", "3600"],
                "volumeMounts": [{"name": "v", "mountPath": "/v"}]}]
        }),
    )
    .await;
    let events = node.wait_events("orphan", &["FailedMount"]).await;
    assert!(
        events.iter().any(|e| e.message.as_deref().is_some_and(|m| m.contains(
            "failed to fetch token for service account default/ghost: serviceaccounts \"ghost\" not found"
        ))),
        "{events:?}"
    );
}

/// A hostPath or local PV and a claim bound to it, as the PV controller leaves them.
async fn bound_claim(client: &kube::Client, claim: &str, pv: serde_json::Value) {
    let pv_name = pv["metadata"]["name"].as_str().unwrap().to_owned();
    let mut pv = pv;
    pv["spec"]["capacity"] = serde_json::json!({"storage": "1Gi"});
    pv["spec"]["accessModes"] = serde_json::json!(["ReadWriteOnce"]);
    pv["spec"]["claimRef"] =
        serde_json::json!({"kind": "PersistentVolumeClaim", "namespace": "default", "name": claim});
    let pv: PersistentVolume = serde_json::from_value(pv).unwrap();
    Api::<PersistentVolume>::all(client.clone())
        .create(&PostParams::default(), &pv)
        .await
        .unwrap();
    let _: PersistentVolumeClaim = create(
        client,
        serde_json::json!({
            "metadata": {"name": claim},
            "spec": {"accessModes": ["ReadWriteOnce"], "volumeName": pv_name,
                     "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Bound"}
        }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_volume_claims() {
    let node = TestNode::start().await;
    let client = node.client.clone();
    let storage = tempfile::tempdir().unwrap();
    let host_pv_dir = storage.path().join("pv-data");
    let local_dir = storage.path().join("local-disk");
    std::fs::create_dir(&local_dir).unwrap();
    std::fs::write(local_dir.join("seed"), "from-the-disk").unwrap();
    bound_claim(
        &client,
        "data",
        serde_json::json!({"metadata": {"name": "pv-host"},
            "spec": {"hostPath": {"path": host_pv_dir, "type": "DirectoryOrCreate"}}}),
    )
    .await;
    bound_claim(
        &client,
        "disk",
        serde_json::json!({"metadata": {"name": "pv-local"},
            "spec": {"local": {"path": local_dir},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [node.name]}]}]}}}}),
    )
    .await;
    let pod = |name: &str, claim: &str, read_only: bool, script: &str| {
        serde_json::json!({
            "terminationGracePeriodSeconds": 1,
            "volumes": [{"name": "vol", "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}}],
            "containers": [{"name": "main", "image": "busybox:1.35",
                "command": ["sh", "-c", format!("{script}; exec sleep 3600")],
                "volumeMounts": [{"name": "vol", "mountPath": "/data"}]}],
            "hostname": name,
        })
    };

    // Written in the container, seen on the host path of the PV.
    node.create_pod(
        "writer",
        pod("writer", "data", false, "echo hello > /data/out"),
    )
    .await;
    let writer = node
        .wait_pod("writer", "writer Running", |p| phase(p) == "Running")
        .await;
    wait_until(TIMEOUT, "file on the PV's host path", || {
        let path = host_pv_dir.join("out");
        async move { (std::fs::read_to_string(path).ok()? == "hello\n").then_some(()) }
    })
    .await;
    assert_eq!(
        node.exec_in(&container_id(&writer), "cat /data/out").await,
        "hello"
    );

    // readOnly on the claim: the container reads the same files and may not write.
    node.create_pod("reader", pod("reader", "data", true, "true"))
        .await;
    let reader = node
        .wait_pod("reader", "reader Running", |p| phase(p) == "Running")
        .await;
    let id = container_id(&reader);
    assert_eq!(node.exec_in(&id, "cat /data/out").await, "hello");
    assert!(node
        .exec_in(&id, "touch /data/x 2>&1 || echo refused")
        .await
        .contains("refused"));
    assert!(!host_pv_dir.join("x").exists());

    // A local PV on this node.
    node.create_pod(
        "local",
        pod("local", "disk", false, "echo mine > /data/written"),
    )
    .await;
    let local = node
        .wait_pod("local", "local Running", |p| phase(p) == "Running")
        .await;
    assert_eq!(
        node.exec_in(&container_id(&local), "cat /data/seed").await,
        "from-the-disk"
    );
    wait_until(TIMEOUT, "file on the local PV", || {
        let path = local_dir.join("written");
        async move { (std::fs::read_to_string(path).ok()? == "mine\n").then_some(()) }
    })
    .await;

    // A local PV of another node is refused with a FailedMount event.
    bound_claim(
        &client,
        "elsewhere",
        serde_json::json!({"metadata": {"name": "pv-elsewhere"},
            "spec": {"local": {"path": local_dir},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": ["other-node"]}]}]}}}}),
    )
    .await;
    node.create_pod("stranger", pod("stranger", "elsewhere", false, "true"))
        .await;
    let events = node.wait_events("stranger", &["FailedMount"]).await;
    assert!(
        events.iter().any(|e| e
            .message
            .as_deref()
            .is_some_and(|m| m.contains("node affinity"))),
        "{events:?}"
    );
    // The PV directories are the user's: deleting the pods leaves the data.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for name in ["writer", "reader", "local", "stranger"] {
        pods.delete(name, &DeleteParams::default()).await.unwrap();
    }
    wait_until(TIMEOUT, "pods gone", || {
        let pods = pods.clone();
        async move {
            pods.list(&Default::default())
                .await
                .ok()?
                .items
                .is_empty()
                .then_some(())
        }
    })
    .await;
    assert!(host_pv_dir.join("out").exists());
    assert!(local_dir.join("seed").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbound_claim_keeps_the_pod_pending() {
    let node = TestNode::start().await;
    let client = node.client.clone();
    let _: PersistentVolumeClaim = create(
        &client,
        serde_json::json!({
            "metadata": {"name": "later"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
        }),
    )
    .await;
    node.create_pod(
        "waiting",
        serde_json::json!({
            "terminationGracePeriodSeconds": 1,
            "volumes": [{"name": "vol", "persistentVolumeClaim": {"claimName": "later"}}],
            "containers": [{"name": "main", "image": "busybox:1.35", "command": ["sleep", "3600"],
                "volumeMounts": [{"name": "vol", "mountPath": "/data"}]}]
        }),
    )
    .await;
    let events = node.wait_events("waiting", &["FailedMount"]).await;
    let message = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("FailedMount"))
        .and_then(|e| e.message.clone())
        .unwrap();
    assert!(
        message.contains("unmounted volumes=[vol]")
            && message.contains("error processing PVC default/later: PVC is not bound"),
        "{message}"
    );
    let pod = node
        .wait_pod("waiting", "container waiting in ContainerCreating", |p| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.first())
                .and_then(|c| c.state.as_ref())
                .and_then(|s| s.waiting.as_ref())
                .is_some_and(|w| w.reason.as_deref() == Some("ContainerCreating"))
        })
        .await;
    assert_eq!(phase(&pod), "Pending");

    // Once the claim is bound, the pod starts.
    let storage = tempfile::tempdir().unwrap();
    let pv: PersistentVolume = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "pv-later"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "hostPath": {"path": storage.path()},
                 "claimRef": {"namespace": "default", "name": "later"}}
    }))
    .unwrap();
    Api::<PersistentVolume>::all(client.clone())
        .create(&PostParams::default(), &pv)
        .await
        .unwrap();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    claims
        .patch(
            "later",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"volumeName": "pv-later"}})),
        )
        .await
        .unwrap();
    claims
        .patch_status(
            "later",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"phase": "Bound"}})),
        )
        .await
        .unwrap();
    node.wait_pod("waiting", "pod Running once bound", |p| {
        phase(p) == "Running"
    })
    .await;
    Api::<Pod>::namespaced(client.clone(), "default")
        .delete("waiting", &DeleteParams::default())
        .await
        .unwrap();
}
