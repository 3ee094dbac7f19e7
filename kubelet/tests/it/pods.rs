//! Pods on a real containerd: a busybox pod reaches Running and Ready with an address from
//! the node's podCIDR and its limits in its cgroups; init containers run in order; a
//! crashing container backs off; a graceful delete stops the pod and removes it from the
//! API and from containerd.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};
use kubelet::cri::{api, RuntimeService};

use crate::common::{phase, pod_condition, wait_until, TestNode, TIMEOUT};

fn container_id(pod: &Pod, index: usize) -> String {
    pod.status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[index]
        .container_id
        .clone()
        .unwrap()
        .trim_start_matches("containerd://")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busybox_pod_runs_ready_with_an_ip_and_its_limits() {
    let node = TestNode::start().await;
    let created = node
        .create_pod(
            "sleeper",
            serde_json::json!({"containers": [{
                "name": "main", "image": "busybox:1.35", "command": ["sleep", "3600"],
                "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}
            }]}),
        )
        .await;
    let pod = node
        .wait_pod("sleeper", "pod Running and Ready", |p| {
            phase(p) == "Running" && pod_condition(p, "Ready")
        })
        .await;
    let status = pod.status.clone().unwrap();
    let ip: std::net::Ipv4Addr = status.pod_ip.clone().unwrap().parse().unwrap();
    assert!(
        node.pod_cidr.contains(&ip),
        "{ip} outside {}",
        node.pod_cidr
    );
    assert_eq!(status.host_ip.as_deref(), Some("127.0.0.1"));
    assert!(status.start_time.is_some());
    assert_eq!(status.qos_class.as_deref(), Some("Guaranteed"));
    for t in [
        "PodReadyToStartContainers",
        "Initialized",
        "ContainersReady",
        "PodScheduled",
    ] {
        assert!(pod_condition(&pod, t), "{t}: {status:?}");
    }
    let cs = &status.container_statuses.clone().unwrap()[0];
    assert_eq!(cs.name, "main");
    assert!(cs.ready);
    assert_eq!(cs.restart_count, 0);
    assert_eq!(cs.image, "busybox:1.35");
    assert!(!cs.image_id.is_empty());
    assert!(cs
        .container_id
        .as_deref()
        .unwrap()
        .starts_with("containerd://"));
    assert!(cs.state.as_ref().unwrap().running.is_some());

    // What happened, as `kubectl describe pod` shows it.
    let events = node
        .wait_events("sleeper", &["Pulled", "Created", "Started"])
        .await;
    let started = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("Started"))
        .unwrap();
    assert_eq!(started.message.as_deref(), Some("Started container main"));
    assert_eq!(
        started.source.as_ref().unwrap().component.as_deref(),
        Some("kubelet")
    );
    assert_eq!(
        started.involved_object.field_path.as_deref(),
        Some("spec.containers{main}")
    );

    // The limits, as the container sees its own cgroups (v1 or v2).
    let id = container_id(&pod, 0);
    let memory = node.exec_in(
        &id,
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max",
    )
    .await;
    assert_eq!(memory, (64 * 1024 * 1024).to_string());
    let cpu = node.exec_in(
        &id,
        "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cut -d' ' -f1 /sys/fs/cgroup/cpu.max",
    )
    .await;
    assert_eq!(cpu, "50000");
    // The pod's hostname is its name, its address is the one reported.
    assert_eq!(node.exec_in(&id, "hostname").await, "sleeper");
    let hosts = node.exec_in(&id, "cat /etc/hosts").await;
    assert!(
        hosts.starts_with("# Kubernetes-managed hosts file."),
        "{hosts}"
    );
    assert!(hosts.contains(&format!("{ip}\tsleeper")), "{hosts}");
    let addrs = node.exec_in(&id, "ip -4 -o addr show eth0").await;
    assert!(addrs.contains(&ip.to_string()), "{addrs}");

    // The relist counts what runs.
    wait_until(TIMEOUT, "running pod and container counted", || {
        let text = node.metrics_text();
        async move {
            (text.contains("kubelet_running_pods 1")
                && text.contains("kubelet_running_containers{container_state=\"running\"} 1"))
            .then_some(())
        }
    })
    .await;
    let text = node.metrics_text();
    assert!(
        text.contains("kubelet_runtime_operations_total{operation_type=\"run_podsandbox\"} 1"),
        "{text}"
    );

    // A restarted kubelet adopts the running pod: same container, no restart, and no
    // status write once it has looked at it.
    let mut node = node;
    node.stop_kubelet().await;
    node.start_kubelet().await;
    wait_until(TIMEOUT, "the new kubelet synced the pod", || {
        let text = node.metrics_text();
        async move {
            text.contains("kubelet_pod_start_duration_seconds_count 1")
                .then_some(())
        }
    })
    .await;
    let again = Api::<Pod>::namespaced(node.client.clone(), "default")
        .get("sleeper")
        .await
        .unwrap();
    assert_eq!(again.metadata.uid, created.metadata.uid);
    assert_eq!(container_id(&again, 0), id);
    assert_eq!(phase(&again), "Running");
    assert_eq!(
        again.metadata.resource_version, pod.metadata.resource_version,
        "{:?}",
        again.status
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_containers_run_in_order_and_crashes_back_off() {
    let node = TestNode::start().await;
    node.create_pod(
        "initialized",
        serde_json::json!({
            "initContainers": [
                {"name": "first", "image": "busybox:1.35", "command": ["sh", "-c", "sleep 1"]},
                {"name": "second", "image": "busybox:1.35", "command": ["true"]}
            ],
            "containers": [{"name": "main", "image": "busybox:1.35", "command": ["sleep", "3600"]}]
        }),
    )
    .await;
    node.create_pod(
        "completer",
        serde_json::json!({"restartPolicy": "Never", "containers": [{
            "name": "main", "image": "busybox:1.35", "command": ["true"]
        }]}),
    )
    .await;
    node.create_pod(
        "on-host",
        serde_json::json!({"hostNetwork": true, "containers": [{
            "name": "main", "image": "busybox:1.35", "command": ["sleep", "3600"]
        }]}),
    )
    .await;
    node.create_pod(
        "crasher",
        serde_json::json!({"containers": [{
            "name": "main", "image": "busybox:1.35", "command": ["sh", "-c", "echo bye; exit 3"]
        }]}),
    )
    .await;

    let pod = node
        .wait_pod(
            "initialized",
            "pod Running after its init containers",
            |p| phase(p) == "Running" && pod_condition(p, "Ready"),
        )
        .await;
    assert!(pod_condition(&pod, "Initialized"));
    let inits = pod.status.unwrap().init_container_statuses.unwrap();
    let done = |i: usize| inits[i].state.clone().unwrap().terminated.unwrap();
    assert_eq!(
        (inits[0].name.as_str(), inits[1].name.as_str()),
        ("first", "second")
    );
    assert_eq!(done(0).exit_code, 0);
    assert_eq!(done(1).exit_code, 0);
    assert_eq!(done(0).reason.as_deref(), Some("Completed"));
    let first_finished = done(0).finished_at.unwrap().0;
    let second_started = done(1).started_at.unwrap().0;
    assert!(
        first_finished <= second_started,
        "{first_finished} > {second_started}"
    );

    let pod = node
        .wait_pod("completer", "pod Succeeded", |p| phase(p) == "Succeeded")
        .await;
    let cs = &pod
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0];
    let done = cs.state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(
        (done.exit_code, done.reason.as_deref()),
        (0, Some("Completed"))
    );
    let ready = pod
        .status
        .as_ref()
        .unwrap()
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
        .clone();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_deref()),
        ("False", Some("PodCompleted"))
    );

    let pod = node
        .wait_pod("on-host", "host-network pod Running", |p| {
            phase(p) == "Running" && pod_condition(p, "Ready")
        })
        .await;
    assert_eq!(
        pod.status.as_ref().unwrap().pod_ip.as_deref(),
        Some("127.0.0.1")
    );

    let pod = node
        .wait_pod("crasher", "CrashLoopBackOff", |p| {
            let Some(cs) = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.first())
            else {
                return false;
            };
            cs.restart_count > 0
                && cs
                    .state
                    .as_ref()
                    .and_then(|s| s.waiting.as_ref())
                    .and_then(|w| w.reason.as_deref())
                    == Some("CrashLoopBackOff")
        })
        .await;
    let cs = &pod
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0];
    let last = cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(last.exit_code, 3);
    assert_eq!(last.reason.as_deref(), Some("Error"));
    node.wait_events("crasher", &["BackOff"]).await;
    assert!(!cs.ready);
    assert_eq!(phase(&pod), "Running");
    assert!(!pod_condition(&pod, "Ready"));
    let message = cs
        .state
        .as_ref()
        .unwrap()
        .waiting
        .as_ref()
        .unwrap()
        .message
        .clone();
    assert!(
        message.unwrap_or_default().contains("back-off 10s"),
        "{cs:?}"
    );

    // Garbage collection: after the second restart containerd holds the running (or
    // just exited) instance and the one before it, not every instance that ever ran.
    let pod = node
        .wait_pod("crasher", "second restart", |p| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.first())
                .is_some_and(|cs| cs.restart_count >= 2)
        })
        .await;
    let ours = HashMap::from([(
        "io.kubernetes.pod.uid".to_owned(),
        pod.metadata.uid.clone().unwrap(),
    )]);
    let instances = node
        .containerd
        .runtime()
        .list_containers(Some(api::ContainerFilter {
            label_selector: ours,
            ..Default::default()
        }))
        .await
        .unwrap();
    assert!(
        (1..=2).contains(&instances.len()),
        "{} instances kept: {instances:?}",
        instances.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_delete_stops_and_removes_the_pod() {
    let node = TestNode::start().await;
    let pod = node
        .create_pod(
            "leaver",
            serde_json::json!({
                "terminationGracePeriodSeconds": 20,
                "containers": [{"name": "main", "image": "busybox:1.35",
                    "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"]}]
            }),
        )
        .await;
    let uid = pod.metadata.uid.clone().unwrap();
    node.wait_pod("leaver", "pod Running", |p| phase(p) == "Running")
        .await;
    let runtime = node.containerd.runtime();
    let ours = HashMap::from([("io.kubernetes.pod.uid".to_owned(), uid.clone())]);
    let listed = runtime
        .list_containers(Some(api::ContainerFilter {
            label_selector: ours.clone(),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);

    let pods: Api<Pod> = Api::namespaced(node.client.clone(), "default");
    let started = std::time::Instant::now();
    // kubectl shows the pod, then deletes it and waits until the kubelet finalised it.
    let wide = node
        .api
        .kubectl_ok(&["get", "pod", "leaver", "-o", "wide", "--no-headers"]);
    assert!(
        wide.contains("Running") && wide.contains(&node.name),
        "{wide}"
    );
    let out = node
        .api
        .kubectl_ok(&["delete", "pod", "leaver", "--timeout=60s"]);
    assert!(out.contains("pod \"leaver\" deleted"), "{out}");
    assert!(pods.get_opt("leaver").await.unwrap().is_none());
    // It stopped on SIGTERM, well within its grace period.
    assert!(started.elapsed() < Duration::from_secs(15));
    let containers = runtime
        .list_containers(Some(api::ContainerFilter {
            label_selector: ours.clone(),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert!(containers.is_empty(), "{containers:?}");
    let sandboxes = runtime
        .list_pod_sandbox(Some(api::PodSandboxFilter {
            label_selector: ours,
            ..Default::default()
        }))
        .await
        .unwrap();
    assert!(sandboxes.is_empty(), "{sandboxes:?}");

    // A pod removed from the API at once (grace period 0) is removed from the runtime.
    let pod = node
        .create_pod(
            "vanisher",
            serde_json::json!({"containers": [{"name": "main", "image": "busybox:1.35",
                "command": ["sleep", "3600"]}]}),
        )
        .await;
    node.wait_pod("vanisher", "pod Running", |p| phase(p) == "Running")
        .await;
    let force = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    pods.delete("vanisher", &force).await.unwrap();
    let theirs = HashMap::from([(
        "io.kubernetes.pod.uid".to_owned(),
        pod.metadata.uid.clone().unwrap(),
    )]);
    wait_until(TIMEOUT, "force-deleted pod removed from containerd", || {
        let runtime = runtime.clone();
        let theirs = theirs.clone();
        async move {
            let sandboxes = runtime
                .list_pod_sandbox(Some(api::PodSandboxFilter {
                    label_selector: theirs,
                    ..Default::default()
                }))
                .await
                .ok()?;
            sandboxes.is_empty().then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_from_config_maps_and_secrets() {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    use kube::api::PostParams;

    let node = TestNode::start().await;
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "creds"}, "stringData": {"password": "hunter2"}
    }))
    .unwrap();
    Api::<Secret>::namespaced(node.client.clone(), "default")
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    // The ConfigMap does not exist yet: the container cannot be configured.
    node.create_pod(
        "configured",
        serde_json::json!({"containers": [{
            "name": "main", "image": "busybox:1.35", "command": ["sleep", "3600"],
            "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
            "env": [
                {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "greeting"}}},
                {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "MESSAGE", "value": "$(GREETING), $(POD_NAME)"}
            ]
        }]}),
    )
    .await;
    let pod = node
        .wait_pod("configured", "CreateContainerConfigError", |p| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.first())
                .and_then(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
                .as_deref()
                == Some("CreateContainerConfigError")
        })
        .await;
    assert_eq!(phase(&pod), "Pending");
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "settings"}, "data": {"greeting": "hello", "mode": "fast"}
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(node.client.clone(), "default")
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    let pod = node
        .wait_pod("configured", "pod Running", |p| phase(p) == "Running")
        .await;
    let id = container_id(&pod, 0);
    let env = node
        .exec_in(
            &id,
            "echo \"$CFG_greeting|$CFG_mode|$GREETING|$PASSWORD|$MESSAGE\"",
        )
        .await;
    assert_eq!(env, "hello|fast|hello|hunter2|hello, configured");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_port_reaches_the_pod() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let node = TestNode::start().await;
    // Distinct per test process: hostPorts are the host's.
    let port = 20000 + u16::try_from(std::process::id() % 20000).unwrap();
    node.create_pod(
        "served",
        serde_json::json!({"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "main", "image": "busybox:1.35",
            "command": ["sh", "-c", "mkdir -p /www; echo hello-from-pod > /www/index.html; exec httpd -f -p 8080 -h /www"],
            "ports": [{"containerPort": 8080, "hostPort": port}],
            "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}
        }]}),
    )
    .await;
    node.wait_pod("served", "pod Ready", |p| pod_condition(p, "Ready"))
        .await;
    let host_ip = kubelet::app::default_node_ip();
    let body = wait_until(TIMEOUT, "the host port answers", || async move {
        let mut conn = tokio::net::TcpStream::connect((host_ip, port)).await.ok()?;
        conn.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
            .await
            .ok()?;
        let mut response = String::new();
        conn.read_to_string(&mut response).await.ok()?;
        response.contains("hello-from-pod").then_some(response)
    })
    .await;
    assert!(
        body.starts_with("HTTP/1.1 200") || body.starts_with("HTTP/1.0 200"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_sandbox_is_recreated() {
    let node = TestNode::start().await;
    let pod = node
        .create_pod(
            "phoenix",
            serde_json::json!({"terminationGracePeriodSeconds": 1, "containers": [{
                "name": "main", "image": "busybox:1.35", "command": ["sleep", "3600"]}]}),
        )
        .await;
    let uid = pod.metadata.uid.clone().unwrap();
    let running = node
        .wait_pod("phoenix", "pod Running", |p| phase(p) == "Running")
        .await;
    assert!(running.status.as_ref().unwrap().pod_ip.is_some());
    let runtime = node.containerd.runtime();
    let ours = HashMap::from([("io.kubernetes.pod.uid".to_owned(), uid)]);
    let sandboxes = runtime
        .list_pod_sandbox(Some(api::PodSandboxFilter {
            label_selector: ours.clone(),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(sandboxes.len(), 1);
    // The sandbox dies under the kubelet.
    runtime.stop_pod_sandbox(&sandboxes[0].id).await.unwrap();
    let again = node
        .wait_pod("phoenix", "Running in a new sandbox", |p| {
            phase(p) == "Running"
                && p.status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .is_some_and(|c| c[0].restart_count == 1 && c[0].ready)
        })
        .await;
    assert!(again.status.as_ref().unwrap().pod_ip.is_some());
    let sandboxes = runtime
        .list_pod_sandbox(Some(api::PodSandboxFilter {
            label_selector: ours,
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(sandboxes.len(), 1, "{sandboxes:?}");
    assert_eq!(sandboxes[0].metadata.as_ref().unwrap().attempt, 1);
    node.wait_events("phoenix", &["SandboxChanged"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn termination_messages_from_the_file_and_the_log() {
    let node = TestNode::start().await;
    node.create_pod(
        "last-words",
        serde_json::json!({"restartPolicy": "Never", "containers": [
            {"name": "file", "image": "busybox:1.35",
             "command": ["sh", "-c", "echo noise; printf bye > /dev/termination-log; exit 3"],
             "terminationMessagePolicy": "FallbackToLogsOnError"},
            {"name": "logs", "image": "busybox:1.35",
             "command": ["sh", "-c", "echo one; echo oops >&2; exit 2"],
             "terminationMessagePolicy": "FallbackToLogsOnError"},
            {"name": "quiet", "image": "busybox:1.35",
             "command": ["sh", "-c", "echo unreported; exit 1"]},
        ]}),
    )
    .await;
    // The log fallback reads what the runtime has written of the log when the kubelet
    // sees the exit; a later sync reports the rest if it was still being copied. The
    // runtime copies stdout and stderr separately, so their lines may come in either
    // order.
    let both_lines = |m: &str| m == "one\noops\n" || m == "oops\none\n";
    let pod = node
        .wait_pod("last-words", "pod Failed with every message", |p| {
            let logs_message = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .into_iter()
                .flatten()
                .find(|s| s.name == "logs")
                .and_then(|s| s.state.as_ref()?.terminated.as_ref()?.message.clone());
            phase(p) == "Failed" && logs_message.as_deref().is_some_and(both_lines)
        })
        .await;
    let statuses = pod.status.unwrap().container_statuses.unwrap();
    let terminated = |name: &str| {
        statuses
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.state.clone()?.terminated)
            .unwrap_or_else(|| panic!("{name} terminated: {statuses:?}"))
    };
    let file = terminated("file");
    assert_eq!(file.exit_code, 3);
    assert_eq!(file.message.as_deref(), Some("bye"));
    let logs = terminated("logs");
    assert_eq!(logs.exit_code, 2);
    assert!(
        logs.message.as_deref().is_some_and(both_lines),
        "{:?}",
        logs.message
    );
    // Policy File: nothing written, nothing reported.
    assert_eq!(terminated("quiet").message, None);
}

/// Another writer marks a running pod not ready, as the node lifecycle controller does
/// while its node is cut off: the kubelet writes its own conditions again and keeps the
/// condition the other writer owns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_another_writer_changed_is_written_again() {
    let node = TestNode::start().await;
    node.create_pod(
        "marked",
        serde_json::json!({"containers": [{
            "name": "main", "image": "busybox:1.35", "command": ["sleep", "3600"]
        }]}),
    )
    .await;
    let pod = node
        .wait_pod("marked", "pod Running and Ready", |p| {
            phase(p) == "Running" && pod_condition(p, "Ready")
        })
        .await;
    // Twice: the first mark may land while the kubelet still reports the start.
    let api = Api::<Pod>::namespaced(node.client.clone(), "default");
    let mut pod = pod;
    for round in 0..2 {
        let mut conditions = pod.status.clone().unwrap().conditions.unwrap();
        for c in &mut conditions {
            if c.type_ == "Ready" || c.type_ == "ContainersReady" {
                c.status = "False".into();
                c.reason = Some("NodeNotReady".into());
            }
        }
        conditions.retain(|c| c.type_ != "example.com/Checked");
        conditions.push(k8s_openapi::api::core::v1::PodCondition {
            type_: "example.com/Checked".into(),
            status: "True".into(),
            reason: Some(format!("Round{round}")),
            ..Default::default()
        });
        let marked = api
            .patch_status(
                "marked",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(serde_json::json!({"status": {"conditions": conditions}})),
            )
            .await
            .unwrap();
        assert!(!pod_condition(&marked, "Ready"));
        pod = node
            .wait_pod("marked", "Ready written again", |p| {
                pod_condition(p, "Ready") && pod_condition(p, "ContainersReady")
            })
            .await;
    }
    assert!(pod_condition(&pod, "example.com/Checked"), "{pod:?}");
    assert_eq!(phase(&pod), "Running");
}
