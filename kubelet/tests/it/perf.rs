//! Figures, not assertions (run with `--ignored --nocapture`): pod start-up latency
//! (create → Running seen through a watch, image present) for 30 and 100 pods on one
//! node, and the resident memory of the kubelet binary idle and with 100 pods. The
//! kubelet runs as its own process (this test's build profile: a debug build's figures
//! are an upper bound).

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;
use kubelet::cri::RuntimeService;

use crate::common::{containerd, wait_until, TestApi};

struct Kubelet(Child);

impl Drop for Kubelet {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Bridge(&'static str);

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", self.0]).output();
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn start_pods(
    client: &kube::Client,
    node: &str,
    run: &str,
    n: usize,
    uids: &mut Vec<String>,
) -> Vec<Duration> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let watch_pods = pods.clone();
    let selector = format!("perf={run}");
    let watch = tokio::spawn(async move {
        let mut stream =
            watcher::watcher(watch_pods, watcher::Config::default().labels(&selector)).boxed();
        while let Some(Ok(event)) = stream.next().await {
            if let watcher::Event::Apply(p) | watcher::Event::InitApply(p) = event {
                if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
                    let _ = tx.send((p.metadata.name.unwrap_or_default(), Instant::now()));
                }
            }
        }
    });
    let mut created = HashMap::new();
    for i in 0..n {
        let name = format!("{run}-{i}");
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"perf": run}},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "main", "image": "busybox:1.35", "command": ["sleep", "3600"]}]}
        }))
        .unwrap();
        created.insert(name, Instant::now());
        let created_pod = pods.create(&PostParams::default(), &pod).await.unwrap();
        uids.extend(created_pod.metadata.uid);
    }
    let mut latencies = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while latencies.len() < n && Instant::now() < deadline {
        if let Ok(Some((name, at))) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await
        {
            if let Some(start) = created.get(&name) {
                latencies.entry(name).or_insert(at - *start);
            }
        }
    }
    watch.abort();
    assert_eq!(latencies.len(), n, "pods running in time");
    let mut v: Vec<Duration> = latencies.into_values().collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "prints figures; run with --ignored --nocapture"]
async fn pod_startup_latency_and_kubelet_memory() {
    let api = TestApi::start().await;
    let client = api.client().await;
    let containerd = containerd().await;
    let dir = tempfile::tempdir().unwrap();
    let node = format!("perf-{}", std::process::id());
    let config = dir.path().join("kubelet.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\npodLogsDir: {}\n",
            dir.path().join("pods").display()
        ),
    )
    .unwrap();
    let _bridge = Bridge("pkperf0");
    let log = std::fs::File::create(dir.path().join("kubelet.log")).unwrap();
    let kubelet = Kubelet(
        Command::new(env!("CARGO_BIN_EXE_kubelet"))
            .arg(format!("--kubeconfig={}", api.kubeconfig_path().display()))
            .arg(format!("--hostname-override={node}"))
            .arg("--node-ip=127.0.0.1")
            .arg(format!(
                "--container-runtime-endpoint={}",
                containerd.endpoint()
            ))
            .arg(format!("--root-dir={}", dir.path().join("root").display()))
            .arg(format!(
                "--cni-conf-dir={}",
                containerd.cni_conf_dir().display()
            ))
            .arg("--cni-bridge-name=pkperf0")
            .arg("--pod-cidr=10.199.0.0/24")
            .arg("--port=0")
            .arg("--healthz-port=0")
            .arg(format!("--config={}", config.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let pid = kubelet.0.id();
    let nodes: Api<Node> = Api::all(client.clone());
    wait_until(Duration::from_secs(60), "node Ready", || {
        let nodes = nodes.clone();
        let node = node.clone();
        async move {
            let n = nodes.get_opt(&node).await.ok().flatten()?;
            n.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
                .then_some(())
        }
    })
    .await;
    let idle = rss_kib(pid);
    let mut report = vec![format!("kubelet RSS idle: {:.1} MiB", idle as f64 / 1024.0)];
    let runtime = containerd.runtime();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut uids = Vec::new();
    for (run, n) in [("a", 30usize), ("b", 100)] {
        let latencies = start_pods(&client, &node, run, n, &mut uids).await;
        report.push(format!(
            "{n} pods: p50 {:?}, p99 {:?}, max {:?}",
            percentile(&latencies, 50.0),
            percentile(&latencies, 99.0),
            latencies.last().unwrap()
        ));
        if n == 100 {
            report.push(format!(
                "kubelet RSS with 100 pods: {:.1} MiB",
                rss_kib(pid) as f64 / 1024.0
            ));
        }
        pods.delete_collection(
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            },
            &ListParams::default().labels(&format!("perf={run}")),
        )
        .await
        .unwrap();
        wait_until(
            Duration::from_secs(300),
            "pods removed from containerd",
            || {
                let runtime = runtime.clone();
                async move {
                    runtime
                        .list_pod_sandbox(None)
                        .await
                        .ok()?
                        .is_empty()
                        .then_some(())
                }
            },
        )
        .await;
    }
    // The kubelet removes a pod's cgroups after its sandbox: let it finish.
    wait_until(Duration::from_secs(60), "pod cgroups removed", || {
        let uids = uids.clone();
        async move {
            let left = std::fs::read_dir("/sys/fs/cgroup/memory/kubepods")
                .into_iter()
                .flatten()
                .flatten()
                .flat_map(|qos| {
                    std::fs::read_dir(qos.path())
                        .into_iter()
                        .flatten()
                        .flatten()
                })
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect::<Vec<_>>();
            (!uids.iter().any(|u| left.contains(&format!("pod{u}")))).then_some(())
        }
    })
    .await;
    println!(
        "\n--- kubelet figures ({} build) ---",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    for line in &report {
        println!("{line}");
    }
    drop(kubelet);
}
